"""Per-prediction feature contributions, in the model's original features.

* ``random_forest``: exact TreeSHAP (shap's ``TreeExplainer``, path-dependent: the reference is
  the training data as the trees' node counts recorded it), in probability space.
* ``hist_gradient_boosting``: exact TreeSHAP on the raw score, in log-odds space (multiclass:
  the class's softmax logit, ``decision_function``).
* ``logistic_regression``: coefficient x (scaled value - background mean), in log-odds space;
  the base value is intercept + coefficient · background mean. The background mean is the mean
  of the preprocessed background rows (the training rows), computed once and kept; a published
  version records it in ``metadata.json["explanations"]["background"]``.

Contributions of the preprocessor's output columns are summed back to the feature they come
from (``SPARCClassificationModel._output_owners``: a categorical's one-hot columns), and
``imputed`` marks each missing input the imputer filled. Which class is explained: binary, the
positive class (``classes[1]``) for every row; multiclass, each row's predicted class (argmax,
the served label). ``explain(df, class_index=k)`` explains class ``k`` for every row. For each
row, ``base_value + sum(contributions) == output`` (the model's output for that class, in
``space``) up to float rounding; ``outputs`` are computed by the model, not from the sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sparc_ray.data.loading import normalize_features
from sparc_ray.inference.labels import class_index as argmax_class
from sparc_ray.registry.layout import MODEL_FILE

if TYPE_CHECKING:  # scikit-learn and shap are imported only when an explainer is built
    from sparc_ray.registry.metadata import ModelMetadata
    from sparc_ray.registry.store import ModelRegistry
    from sparc_ray.training.estimator import SPARCClassificationModel

PROBABILITY, LOG_ODDS = "probability", "log_odds"
SPACES = {
    "random_forest": PROBABILITY,
    "hist_gradient_boosting": LOG_ODDS,
    "logistic_regression": LOG_ODDS,
}
CHUNK_ROWS = 2048  # rows per TreeSHAP call: bounds the [rows, columns, classes] buffer


class ExplanationError(ValueError):
    """This model or version cannot be explained (family, preprocessor, failed check)."""


@dataclass(frozen=True, eq=False)
class Explanation:
    """Contributions of ``N`` rows over ``F`` features; arrays indexed [row] or [row, feature]."""

    space: str  # "probability" | "log_odds"
    classes: tuple[Any, ...]  # the model's classes
    class_index: np.ndarray  # [N] int: position in ``classes`` of the class explained
    feature_names: tuple[str, ...]  # column order of ``contributions`` and ``imputed``
    base_values: np.ndarray  # [N] the expected output (reference) of the explained class
    contributions: np.ndarray  # [N, F]
    imputed: np.ndarray  # [N, F] bool: the input was missing and the imputer filled it
    outputs: np.ndarray  # [N] the model's output for the explained class, in ``space``

    def __len__(self) -> int:
        return len(self.base_values)

    @property
    def explained_classes(self) -> list[Any]:
        return [self.classes[i] for i in self.class_index.tolist()]

    def additivity_error(self) -> np.ndarray:
        """|base + sum(contributions) - output| per row."""
        return np.abs(self.base_values + self.contributions.sum(axis=1) - self.outputs)

    def mean_abs(self) -> dict[str, float]:
        """Mean |contribution| per feature over the rows (0 for no rows)."""
        width = len(self.feature_names)
        means = np.abs(self.contributions).mean(axis=0) if len(self) else np.zeros(width)
        return {f: float(m) for f, m in zip(self.feature_names, means, strict=True)}

    def to_rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per row: ``class``, ``space``, ``output``, ``base_value``,
        ``contributions`` {feature: value} and ``imputed`` [features]."""
        names = self.feature_names
        return [
            {
                "class": label,
                "space": self.space,
                "output": out,
                "base_value": base,
                "contributions": dict(zip(names, row, strict=True)),
                "imputed": [n for n, m in zip(names, mask, strict=True) if m],
            }
            for label, out, base, row, mask in zip(
                self.explained_classes,
                self.outputs.tolist(),
                self.base_values.tolist(),
                self.contributions.tolist(),
                self.imputed.tolist(),
                strict=True,
            )
        ]


class _Trees:
    """Exact path-dependent TreeSHAP over the preprocessed columns (all outputs at once)."""

    def __init__(self, clf: Any, space: str) -> None:
        import shap  # about 2 s and numba: only where explanations are built

        self._shap = shap.TreeExplainer(
            clf, feature_perturbation="tree_path_dependent", model_output="raw"
        )
        self._clf, self._space = clf, space
        self.base = np.atleast_1d(np.asarray(self._shap.expected_value, dtype=np.float64))

    def outputs(self, Z: np.ndarray) -> np.ndarray:
        if self._space == PROBABILITY:  # the forest's mean, without its per-call thread pool
            Z32 = np.ascontiguousarray(Z, dtype=np.float32)  # as the forest casts it
            total = sum(t.predict_proba(Z32, check_input=False) for t in self._clf.estimators_)
            return np.asarray(total, dtype=np.float64) / len(self._clf.estimators_)
        return np.asarray(self._clf.decision_function(Z), dtype=np.float64).reshape(len(Z), -1)

    def contributions(self, Z: np.ndarray, col: np.ndarray) -> np.ndarray:
        """[n, columns] for output ``col[i]`` of row ``i``."""
        values = self._shap.shap_values(Z, check_additivity=False)
        sv = np.stack(values, axis=-1) if isinstance(values, list) else np.asarray(values)
        sv = sv.reshape(len(Z), Z.shape[1], -1)  # a single output comes back [n, columns]
        return np.take_along_axis(sv, col[:, None, None], axis=2)[:, :, 0]


class _Linear:
    """Logistic regression: coef x (z - background mean), base = intercept + coef · mean."""

    def __init__(self, clf: Any, mean: np.ndarray) -> None:
        self._clf, self._coef, self.mean = clf, np.asarray(clf.coef_, dtype=np.float64), mean
        self.base = np.asarray(clf.intercept_, dtype=np.float64) + self._coef @ mean

    def outputs(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self._clf.decision_function(Z), dtype=np.float64).reshape(len(Z), -1)

    def contributions(self, Z: np.ndarray, col: np.ndarray) -> np.ndarray:
        return (Z - self.mean) * self._coef[col]


class Explainer:
    """Built once from a fitted model (``from_model`` or ``from_metadata``); ``explain`` rows."""

    def __init__(
        self,
        model: SPARCClassificationModel,
        background_mean: np.ndarray | None = None,
        background_rows: int | None = None,
    ) -> None:
        if model.model_type not in SPACES:
            raise ExplanationError(f"no explanation method for model_type {model.model_type!r}")
        pipe = model._require_fitted()
        self._pre, clf = pipe.named_steps["preprocess"], pipe.named_steps["classifier"]
        self.feature_names = tuple(model.feature_names)
        self.classes = tuple(model.classes)
        self.space = SPACES[model.model_type]
        self.columns = [str(c) for c in self._pre.get_feature_names_out()]
        owners = model._output_owners()
        if len(owners) != len(self.columns) or set(owners) - set(self.feature_names):
            raise ExplanationError("the preprocessor's output columns do not map to features")
        position = {f: i for i, f in enumerate(self.feature_names)}
        self._sum = np.zeros((len(owners), len(self.feature_names)))  # output column -> feature
        self._sum[np.arange(len(owners)), [position[o] for o in owners]] = 1.0
        self.background_rows = background_rows
        self._backend: _Trees | _Linear
        if model.model_type != "logistic_regression":
            self._backend = _Trees(clf, self.space)
        elif background_mean is None:
            raise ExplanationError("logistic regression needs a background (the training rows)")
        else:
            self._backend = _Linear(clf, np.asarray(background_mean, dtype=np.float64))
        self._n_outputs = len(self._backend.base)

    @classmethod
    def from_model(
        cls, model: SPARCClassificationModel, background: pd.DataFrame | None = None
    ) -> Explainer:
        """``background``: rows whose preprocessed mean is logistic regression's reference
        (required for it; the training rows). Trees need none: their reference is in them."""
        if background is None or model.model_type != "logistic_regression":
            return cls(model)
        pre = model._require_fitted().named_steps["preprocess"]
        Z = np.asarray(pre.transform(normalize_features(background[model.feature_names])))
        return cls(model, Z.astype(np.float64).mean(axis=0), len(Z))

    @classmethod
    def from_metadata(cls, model: SPARCClassificationModel, metadata: ModelMetadata) -> Explainer:
        """The explainer that a published version's check validated (its ``metadata.json``
        ``explanations`` entry, logistic regression's background mean included).
        ExplanationError, with the reason, when the version has no passing check or the entry
        does not fit ``model``: that version serves without explanations."""
        entry = checked_entry(metadata)
        if metadata.model_type != model.model_type or metadata.feature_names != list(
            model.feature_names
        ):
            raise ExplanationError(f"{metadata.version}: the metadata does not describe this model")
        if model.model_type != "logistic_regression":
            return cls(model)
        record = entry.get("background") or {}
        means: Mapping[str, float] = record.get("mean") or {}
        pre = model._require_fitted().named_steps["preprocess"]
        columns = [str(c) for c in pre.get_feature_names_out()]
        if sorted(means) != sorted(columns):
            raise ExplanationError(
                f"{metadata.version}: the background mean does not fit the model"
            )
        return cls(model, np.array([means[c] for c in columns], dtype=np.float64), record["rows"])

    def background_record(self) -> dict[str, Any] | None:
        """``{"rows", "mean": {output column: mean}}`` (logistic regression), else None."""
        if not isinstance(self._backend, _Linear):
            return None
        mean = dict(zip(self.columns, self._backend.mean.tolist(), strict=True))
        return {"rows": self.background_rows, "mean": mean}

    def explain(self, df: pd.DataFrame, class_index: int | None = None) -> Explanation:
        """Explain every row of ``df`` (the model's features; other columns are ignored).
        ``class_index``: explain that class for every row instead of the default (binary: the
        positive class; multiclass: each row's predicted class)."""
        n_classes = len(self.classes)
        if class_index is not None and not 0 <= class_index < n_classes:
            raise ExplanationError(f"class_index {class_index}: the model has {n_classes} classes")
        X = normalize_features(df[list(self.feature_names)])
        width = len(self.feature_names)
        k, base = np.zeros(0, np.int64), np.zeros(0)
        contrib, out = np.zeros((0, width)), np.zeros(0)
        parts = [
            self._explain_chunk(X.iloc[s : s + CHUNK_ROWS], class_index)
            for s in range(0, len(X), CHUNK_ROWS)
        ]
        if parts:
            k, base, contrib, out = (np.concatenate(p) for p in zip(*parts, strict=True))
        return Explanation(
            space=self.space,
            classes=self.classes,
            class_index=k.astype(np.int64),
            feature_names=self.feature_names,
            base_values=base,
            contributions=contrib,
            imputed=X.isna().to_numpy(dtype=bool),
            outputs=out,
        )

    def _explain_chunk(
        self, X: pd.DataFrame, class_index: int | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(class index, base values, contributions [n, F], outputs) of normalized rows."""
        Z = np.asarray(self._pre.transform(X), dtype=np.float64)
        outputs = self._backend.outputs(Z)
        n_classes = len(self.classes)
        if class_index is not None:
            k = np.full(len(Z), class_index, dtype=np.int64)
        elif n_classes == 2:
            k = np.ones(len(Z), dtype=np.int64)
        else:
            k = argmax_class(outputs)
        # A binary log-odds model has one output, the positive class's logit; class 0's
        # log-odds are its negation.
        col = k - (n_classes - self._n_outputs)
        sign = np.where(col < 0, -1.0, 1.0)
        col = np.maximum(col, 0)
        contrib = self._backend.contributions(Z, col) @ self._sum
        own = outputs[np.arange(len(Z)), col]
        return k, sign * self._backend.base[col], sign[:, None] * contrib, sign * own


def load_explainer(
    registry: ModelRegistry, name: str, version: str, public_key: bytes
) -> Explainer:
    """The explainer of a signed version: the signature is verified with the raw Ed25519
    ``public_key`` and ``model.joblib`` checked against its signed sha256 before it is
    unpickled (no unsigned path). ExplanationError when the version's check did not pass."""
    from sparc_ray.training.estimator import SPARCClassificationModel

    signed = registry.verify_signature(name, version, public_key)
    checked_entry(signed.metadata)  # refused before anything is unpickled
    model = SPARCClassificationModel.from_bytes(signed.read(MODEL_FILE), signed.metadata.sha256)
    return Explainer.from_metadata(model, signed.metadata)


def checked_entry(metadata: ModelMetadata) -> dict[str, Any]:
    """The version's passing ``explanations`` entry; ExplanationError saying why not."""
    entry: dict[str, Any] = metadata.to_dict().get("explanations") or {}
    if not entry.get("ok"):
        reason = entry.get("reason") or "no explanation check was recorded at publish time"
        raise ExplanationError(f"{metadata.version} serves without explanations: {reason}")
    return entry
