"""``metadata.json`` as a typed, versioned model (pydantic and the standard library only).

Training writes the file (``sparc_ray.training.job``), the registry adds ``name``, ``version``,
``model_file`` and ``sha256`` and stamps ``schema_version``; every reader goes through
``ModelMetadata.from_json``. Schema versions:

* 1: the files written before the schema was versioned (no ``schema_version`` key). Read and
  upgraded in memory: ``schema_version`` becomes 2 and ``input_limits`` ``{}`` when absent.
* 2: the same keys plus ``schema_version``.

A file from newer code (a higher ``schema_version``) is refused with a ``MetadataError``
saying which versions this code reads; keys this code does not know are kept
(``extra="allow"``) and written back by ``to_dict``. Content that does not fit the schema
is a ``MetadataError`` naming the field.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)

from sparc_ray.registry.layout import MODEL_FILE

SCHEMA_VERSION = 2
MAX_ERRORS_SHOWN = 5


class MetadataError(ValueError):
    """metadata.json is not valid JSON, does not fit the schema, or is from newer code."""


def _label(value: Any) -> str | int | float | bool:
    if isinstance(value, (str, int, float)):  # bool is an int
        return value
    raise ValueError(f"a class label is a string or a number, not {type(value).__name__}")


# A class label exactly as training saw it (str, int, float or bool), never coerced.
Label = Annotated[str | int | float | bool, PlainValidator(_label)]


class _Part(BaseModel):
    """A section of metadata.json: unknown keys are kept."""

    model_config = ConfigDict(extra="allow")


class FeatureMeta(_Part):
    """One input feature as training saw it (``sparc_ray.data.loading.FeatureSpec``)."""

    name: str
    kind: Literal["numeric", "categorical"]
    dtype: str | None = None
    missing_rate: float | None = None
    min: float | None = None
    max: float | None = None
    categories: list[str] = []


class OnnxInfo(_Part):
    """The ONNX export report (``sparc_ray.training.onnx_export.export_onnx``)."""

    status: Literal["ok", "fallback"]
    reason: str | None = None  # why the sklearn fallback serves (status "fallback")
    labels_equal: bool | None = None
    max_abs_diff: float | None = None
    tolerance: float | None = None
    rows_checked: int | None = None
    opset: int | None = None
    versions: dict[str, str] | None = None
    file: str | None = None  # status "ok": the exported file and its sha256
    sha256: str | None = None

    @model_validator(mode="after")
    def _ok_names_its_file(self) -> OnnxInfo:
        if self.status == "ok" and not (self.file and self.sha256):
            raise ValueError('status "ok" needs "file" and "sha256"')
        return self


class ExplanationInfo(_Part):
    """The publish-time explanation check (``sparc_ray.training.explain_check``); a version
    that is not ``ok`` serves without explanations, for ``reason``."""

    ok: bool
    space: Literal["probability", "log_odds"] | None = None
    reason: str | None = None


class GateResult(_Part):
    value: int | float | None = None  # the holdout metric; None (missing) fails the gate
    threshold: float
    passed: bool


class GateResults(_Part):
    """The acceptance gates (``sparc_ray.training.evaluation.apply_gates``); absent = not passed."""

    thresholds: dict[str, float] = {}
    results: dict[str, GateResult] = {}
    passed: bool = False
    failed: list[str] = []


class CvScore(_Part):
    mean: float | None = None
    std: float | None = None
    n_folds: int | None = None
    scoring: str | None = None


class HoldoutMetrics(_Part):
    """``sparc_ray.training.evaluation.metrics_from_proba`` on the holdout split."""

    n_rows: int | None = None
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    confusion_matrix: list[list[int]] | None = None
    labels: list[str] | None = None


class Metrics(_Part):
    cv: CvScore | None = None
    holdout: HoldoutMetrics | None = None


class TrainingData(_Part):
    source: str | None = None
    rows: int | None = None
    train_rows: int | None = None
    holdout_rows: int | None = None
    fingerprint: str | None = (
        None  # sha256 of the frame's values (sparc_ray.data.loading.fingerprint)
    )
    data_version: dict[str, str] | None = None  # DVC md5 or object-store version of the file


class SearchInfo(_Part):
    experiment_path: str | None = None
    trials: int | None = None
    stopped_early: int | None = None
    scheduler: str | None = None
    sampler: str | None = None


class FeatureReference(_Part):
    """Training distribution of one feature: bucket probabilities
    (``sparc_ray.monitoring.drift``)."""

    kind: Literal["numeric", "categorical"]
    edges: list[float] = []  # numeric: bin edges
    categories: list[str] = []  # categorical: known categories
    probs: list[float]


class PredictionReference(_Part):
    classes: list[str]
    probs: list[float]


class DriftReference(_Part):
    """What drift is measured against (``sparc_ray.monitoring.drift.build_reference``)."""

    method: str = "psi"
    features: dict[str, FeatureReference]
    predictions: PredictionReference


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` in the current schema; raises MetadataError for an unknown version."""
    version = data.get("schema_version", 1)
    if type(version) is not int:
        raise MetadataError(f"schema_version: expected an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise MetadataError(
            f"metadata.json has schema_version {version}, written by newer code; this code "
            f"reads schema versions 1 to {SCHEMA_VERSION}: upgrade sparc-ray to load it"
        )
    if version < 1:
        raise MetadataError(f"schema_version {version} is not a metadata schema version")
    if version == 1:
        rest = {k: v for k, v in data.items() if k != "schema_version"}
        data = {"schema_version": SCHEMA_VERSION, **rest}
        if data.get("input_limits") is None:
            data["input_limits"] = {}
    return data


class ModelMetadata(_Part):
    """A version's ``metadata.json``. Fields are in the order training and the registry write
    them, so ``to_dict`` gives back the file's keys and values (plus ``schema_version``)."""

    schema_version: int = SCHEMA_VERSION
    model_type: str | None = None
    params: dict[str, Any] = {}
    created_at: str | None = None
    target: str | None = None
    classes: list[Label]
    features: list[FeatureMeta]
    feature_importance: dict[str, float] | None = None
    metrics: Metrics | None = None
    gates: GateResults = Field(default_factory=GateResults)
    training_data: TrainingData | None = None
    search: SearchInfo | None = None
    reference: DriftReference | None = None
    library_versions: dict[str, str] = {}
    input_limits: dict[str, float] = {}  # largest |value| per numeric feature
    onnx: OnnxInfo | None = None
    explanations: ExplanationInfo | None = None  # absent: published before the check existed
    name: str
    version: str
    model_file: str = MODEL_FILE
    sha256: str

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return upgrade(data) if isinstance(data, dict) else data

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any]) -> ModelMetadata:
        """Parse metadata.json (its bytes, text or decoded dict), upgrading schema version 1;
        raises MetadataError naming what is wrong."""
        if isinstance(data, (bytes, str)):
            try:
                data = json.loads(data)
            except (ValueError, UnicodeDecodeError) as exc:
                raise MetadataError(f"metadata.json is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MetadataError(f"metadata.json must be a JSON object, not {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _metadata_error(exc) from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object metadata.json holds: the keys that were read (and the upgrade
        filled in), with their values unchanged. Python mode, not ``mode="json"``: the values
        are JSON types already, and non-finite floats stay as they were written."""
        return self.model_dump(exclude_unset=True)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def feature_kinds(self) -> list[str]:
        return [f.kind for f in self.features]

    def onnx_file(self) -> tuple[str, str] | None:
        """``(file, sha256)`` of the parity-checked ONNX export, or None (sklearn serves)."""
        onnx = self.onnx
        if onnx is None or onnx.status != "ok" or not onnx.file or not onnx.sha256:
            return None
        return onnx.file, onnx.sha256


def _metadata_error(exc: ValidationError) -> MetadataError:
    """The first few problems, each naming its field by dotted path."""
    problems = []
    for err in exc.errors(include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, MetadataError):  # from upgrade(): its own message
            return cause
        where = ".".join(str(p) for p in err["loc"]) or "metadata"
        problems.append(f"{where}: {err['msg']}")
    shown = "; ".join(problems[:MAX_ERRORS_SHOWN])
    more = (
        f" (and {len(problems) - MAX_ERRORS_SHOWN} more)"
        if len(problems) > MAX_ERRORS_SHOWN
        else ""
    )
    return MetadataError(f"invalid metadata.json: {shown}{more}")
