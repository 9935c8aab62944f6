"""Training-job configuration: a tune/*.yaml file with command-line overrides, validated into
typed sections (pydantic). An unknown key or a bad value anywhere is a ``ConfigError`` naming
the file and the dotted key, one line per problem."""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from sparc_ray.registry.layout import DEFAULT_STORE, DEFAULT_TUNE_STORAGE

# Seed thresholds: a model below any of them is stored but never promoted.
DEFAULT_GATES = {"accuracy": 0.70, "precision": 0.65, "recall": 0.65}
# Holdout metrics a gate can name (sparc_ray.training.evaluation.metrics_from_proba).
GATE_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
# The estimator families of sparc_ray.training.estimator.MODEL_FAMILIES (named here so that
# reading a
# config does not import scikit-learn).
MODEL_FAMILY_NAMES = ("random_forest", "logistic_regression", "hist_gradient_boosting")
# Keys that were renamed: the old name's error says what it is now.
RENAMED = {"search.cpus_per_trial": "`search.cpus_per_fold` (CPUs per fold task)"}
SECTIONS = ("data", "cv", "search", "gates", "registry")

DEFAULT_CONFIG = "tune/default.yaml"
CAPTURE_PREFIX = "capture:"  # --data capture:STORE/NAME: the rows the service captured

# Numbers as YAML writes them: an int or a float, never a bool or a string.
Int = Annotated[int, Strict()]
Number = Annotated[float, Strict()]


class ConfigError(ValueError):
    """The YAML or a flag is invalid; the message names the key."""


def _rule(text: str, flag: str | None = None) -> Any:
    """A field's ``description``: the rule an invalid value's error message quotes (and the
    flag that sets it, for a missing required key)."""
    return {"description": text, "json_schema_extra": {"flag": flag} if flag else None}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """``data``: what to train on and how the holdout is split."""

    path: str = Field(
        min_length=1, **_rule("must be a CSV / Parquet path or URI, or builtin:NAME", "--data")
    )
    target: str | None = Field(None, **_rule("must be the label column's name", "--target"))
    test_size: Number = Field(0.2, gt=0, lt=1, **_rule("must be a number between 0 and 1"))
    seed: Int = Field(42, ge=0, **_rule("must be a non-negative integer"))
    since: str | None = Field(
        None, **_rule("must be e.g. 24h, 7d or an ISO date (capture: data only)", "--since")
    )
    with_training_data: StrictBool = Field(
        False, **_rule("must be true or false (capture: data only)", "--with-training-data")
    )

    @model_validator(mode="after")
    def _target_for_files(self) -> DataConfig:
        captured = self.path.startswith(CAPTURE_PREFIX)
        if not self.target and not self.path.startswith("builtin:") and not captured:
            raise ValueError("`target` is required for a file dataset (or pass --target)")
        if (self.since or self.with_training_data) and not captured:
            raise ValueError("`since` / `with_training_data` apply to capture: data only")
        return self


class CVConfig(_Section):
    """``cv``: the stratified k-fold CV inside every trial (the model's ``cross_validation``)."""

    n_folds: Int = Field(5, ge=2, **_rule("must be an integer, at least 2"))
    scoring: str = Field("accuracy", min_length=1, **_rule("must be a scikit-learn scorer name"))


class AshaConfig(_Section):
    """``search.asha``: the rungs of the ASHA scheduler, in folds."""

    grace_period: Int = Field(1, ge=1, **_rule("must be an integer, at least 1 (folds)"))
    reduction_factor: Number = Field(2.0, gt=1, **_rule("must be a number greater than 1"))


class SearchConfig(_Section):
    """``search``: the Tune search. ``space`` maps a model family to its parameters (lists,
    scalars, distributions: the grammar of ``sparc_ray.training.search_space``)."""

    sampler: Literal["grid", "random"] = Field("grid", **_rule("must be grid or random"))
    num_samples: Int = Field(1, ge=1, **_rule("must be an integer, at least 1"))
    scheduler: Literal["asha", "fifo"] = Field("asha", **_rule("must be asha or fifo"))
    asha: AshaConfig = Field(
        default_factory=AshaConfig, **_rule("must map grace_period / reduction_factor")
    )
    cpus_per_fold: Number = Field(1.0, gt=0, **_rule("must be a positive number of CPUs"))
    max_concurrent_trials: Int | None = Field(
        None, ge=1, **_rule("must be a positive integer, or null for 2 x CPUs / cpus_per_fold")
    )
    max_failures: Int = Field(
        3, ge=0, **_rule("must be an integer, at least 0 (restarts of a failed trial)")
    )
    fold_retries: Int = Field(
        3, ge=0, **_rule("must be an integer, at least 0 (retries of a fold whose node died)")
    )
    allow_incomplete: bool = Field(
        False, strict=True, **_rule("must be true or false", "--allow-incomplete")
    )
    storage_path: str = Field(
        DEFAULT_TUNE_STORAGE,
        min_length=1,
        **_rule("must be a directory or URI (Tune experiments)"),
    )
    space: dict[str, Any] = Field(**_rule("must map model families to parameters"))

    @field_validator("space")
    @classmethod
    def _families(cls, space: dict[str, Any]) -> dict[str, dict[str, Any]]:
        if not space:
            raise ValueError("must map model families to parameters")
        problems = []
        for family, params in space.items():
            if family not in MODEL_FAMILY_NAMES:
                problems.append(f"`{family}`: unknown model family; use {list(MODEL_FAMILY_NAMES)}")
            elif not isinstance(params or {}, dict):
                problems.append(f"`{family}` must be a mapping of parameters")
        if problems:
            raise ValueError("\n".join(problems))
        return {family: dict(params or {}) for family, params in space.items()}


class RegistryConfig(_Section):
    """``registry``: where the version is published and how it is released."""

    store: str = Field(DEFAULT_STORE, min_length=1, **_rule("must be a directory or URI"))
    promote: bool = Field(True, strict=True, **_rule("must be true or false"))
    release: Literal["production", "canary", "shadow"] = Field(
        "production", **_rule("must be production, canary or shadow")
    )
    release_weight: Number | None = Field(
        None, gt=0, le=100, **_rule("must be a percent in (0, 100]")
    )
    release_policy: str | None = Field(None, **_rule("must be a release policy YAML path"))


class TrainConfig(_Section):
    """Everything one training run needs: the YAML's sections after flags and defaults.
    ``gates`` maps a holdout metric to its minimum (omitted or null: ``DEFAULT_GATES``)."""

    name: str = Field(
        min_length=1, **_rule("must be a non-empty string (the registry model name)", "--name")
    )
    data: DataConfig
    cv: CVConfig = Field(default_factory=CVConfig)
    search: SearchConfig
    gates: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_GATES),
        **_rule("must map holdout metrics to minimum values"),
    )
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    mlflow: str | None = Field(
        None, **_rule("must be an MLflow tracking URI or a directory", "--mlflow")
    )
    resume: bool = False  # --resume only, never from the YAML

    @field_validator("gates", mode="before")
    @classmethod
    def _gates(cls, gates: Any) -> Any:
        if gates is None:
            return dict(DEFAULT_GATES)
        if not isinstance(gates, dict):
            return gates  # the dict type check names it
        problems = []
        for metric, minimum in gates.items():
            if metric not in GATE_METRICS:
                problems.append(f"`{metric}`: unknown metric; use {list(GATE_METRICS)}")
            elif isinstance(minimum, bool) or not isinstance(minimum, int | float):
                problems.append(f"`{metric}` must be a number in [0, 1], got {minimum!r}")
            elif not 0 <= minimum <= 1:  # a percent (70) would fail every model
                problems.append(f"`{metric}` must be in [0, 1], got {minimum!r}")
        if problems:
            raise ValueError("\n".join(problems))
        return gates


def describe_errors(exc: ValidationError) -> list[str]:
    """One readable line per problem of a ``TrainConfig`` validation, naming the dotted key."""
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc)
        model, field = _lookup(loc)
        if err["type"] == "extra_forbidden":
            out.append(_unknown_key(loc, model))
        elif err["type"] == "missing":
            flag = (field.json_schema_extra or {}).get("flag") if field else None
            hint = f" (or pass {flag})" if flag else f": it {field.description}" if field else ""
            out.append(f"`{key}` is required{hint}")
        elif err["type"] == "value_error":  # our validators: keys relative to `loc`
            out += [_relative(key, line) for line in str(err["ctx"]["error"]).splitlines()]
        else:
            rule = field.description if field and field.description else err["msg"]
            out.append(f"`{key}` {rule}, got {err['input']!r}")
    return out


def _lookup(loc: tuple[str, ...]) -> tuple[type[BaseModel] | None, Any]:
    """The model holding the last key of ``loc`` and that key's field (None for either where
    ``loc`` leads into a mapping or to an unknown key)."""
    model: type[BaseModel] | None = TrainConfig
    holder, field = None, None
    for part in loc:
        if model is None:
            return None, None
        holder, field = model, model.model_fields.get(part)
        ann = field.annotation if field else None
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return holder, field


def _unknown_key(loc: tuple[str, ...], holder: type[BaseModel] | None) -> str:
    key = ".".join(loc)
    if key in RENAMED:
        return f"`{key}` is now {RENAMED[key]}"
    known = [name for name in (holder.model_fields if holder else ()) if name != "resume"]
    close = difflib.get_close_matches(loc[-1], known, n=1)
    hint = f" (did you mean `{'.'.join((*loc[:-1], close[0]))}`?)" if close else ""
    return f"unknown key `{key}`{hint}"


def _relative(key: str, message: str) -> str:
    """``message`` from a validator at ``key``: a leading `sub` key becomes `key.sub`."""
    m = re.match(r"`([^`]+)`(.*)", message, re.S)
    if m is None:
        return f"`{key}` {message}"
    return f"`{key + '.' if key else ''}{m[1]}`{m[2]}"
