"""``SPARCClassificationModel``: the seed's model interface over a scikit-learn Pipeline."""

from __future__ import annotations

import io
import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from sparc_ray.data.loading import FeatureSpec, infer_schema, normalize_features, split_features
from sparc_ray.inference.labels import labels_from_proba
from sparc_ray.registry.artifacts import IntegrityError, sha256_bytes
from sparc_ray.registry.layout import METADATA_FILE, MODEL_FILE
from sparc_ray.training.evaluation import evaluate

MODEL_FAMILIES = {
    "random_forest": RandomForestClassifier,
    "logistic_regression": LogisticRegression,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
}
_DEFAULT_PARAMS = {
    "random_forest": {"random_state": 42},
    "logistic_regression": {"max_iter": 2000},
    "hist_gradient_boosting": {"random_state": 42},
}


def build_pipeline(
    model_type: str, params: dict[str, Any], numeric: list[str], categorical: list[str]
) -> Pipeline:
    """Impute + scale numeric features, impute + one-hot categorical ones, then the estimator."""
    if model_type not in MODEL_FAMILIES:
        raise ValueError(f"unknown model_type {model_type!r}; choose one of {list(MODEL_FAMILIES)}")
    num = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    cat = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    pre = ColumnTransformer([("num", num, numeric), ("cat", cat, categorical)])
    estimator = MODEL_FAMILIES[model_type](**{**_DEFAULT_PARAMS[model_type], **params})
    return Pipeline([("preprocess", pre), ("classifier", estimator)])


class SPARCClassificationModel:
    """Train, evaluate, persist and apply one classifier (seed contract).

    ``config = {"model_type": ..., "model": {params}, "cross_validation": {"n_folds", "scoring"},
    "n_jobs": cpus}``; ``n_jobs`` (default 1) bounds the estimator's threads.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.model_type: str = config.get("model_type", "random_forest")
        self.params: dict[str, Any] = dict(config.get("model", {}))
        cv = config.get("cross_validation", {})
        self.n_folds: int = int(cv.get("n_folds", 5))
        self.scoring: str = cv.get("scoring", "accuracy")
        self.n_jobs: int = int(config.get("n_jobs", 1))
        self.pipeline: Pipeline | None = None
        self.feature_names: list[str] = []
        self.schema: list[FeatureSpec] = []
        self.classes: list[Any] = []
        self.importance: dict[str, float] | None = None

    # -- training -------------------------------------------------------------------------
    def _new_pipeline(self, X: pd.DataFrame) -> Pipeline:
        numeric, categorical = split_features(self.schema or infer_schema(X))
        params = dict(self.params)
        if self.model_type == "random_forest":
            params.setdefault("n_jobs", self.n_jobs)
        return build_pipeline(self.model_type, params, numeric, categorical)

    def iter_cv_scores(self, X: pd.DataFrame, y: pd.Series, seed: int = 42) -> Iterator[float]:
        """Yield the score of each stratified fold in turn."""
        for fold in range(self.n_folds):
            yield self.fold_score(X, y, fold, seed)

    def fold_score(self, X: pd.DataFrame, y: pd.Series, fold: int, seed: int = 42) -> float:
        """Fit on all but stratified fold ``fold`` (shuffled with ``seed``, as GridSearchCV
        would split) and score on it; each fold can run on its own (one Ray task per fold)."""
        X = normalize_features(X)
        folds = StratifiedKFold(n_splits=self.n_folds, shuffle=True, random_state=seed)
        train_idx, val_idx = next(itertools.islice(folds.split(X, y), fold, None))
        pipe = self._new_pipeline(X)
        with threadpool_limits(self.n_jobs):
            pipe.fit(X.iloc[train_idx], y.iloc[train_idx])
            return float(get_scorer(self.scoring)(pipe, X.iloc[val_idx], y.iloc[val_idx]))

    def fit(self, X: pd.DataFrame, y: pd.Series) -> SPARCClassificationModel:
        """Fit on all rows (no CV) and compute feature importance."""
        X = normalize_features(X)
        self.feature_names = [str(c) for c in X.columns]
        self.schema = infer_schema(X)
        self.pipeline = self._new_pipeline(X)
        with threadpool_limits(self.n_jobs):
            self.pipeline.fit(X, y)
        self.classes = self.pipeline.classes_.tolist()
        self.importance = self._compute_importance(X, y)
        return self

    def train(
        self,
        X_train: pd.DataFrame,
        y_train: pd.Series,
        X_val: pd.DataFrame | None = None,
        y_val: pd.Series | None = None,
    ) -> dict[str, Any]:
        """Cross-validate on the training rows, fit on all of them, score the validation set."""
        y_train = pd.Series(y_train).reset_index(drop=True)
        X_train = X_train.reset_index(drop=True)
        scores = list(self.iter_cv_scores(X_train, y_train)) if self.n_folds > 1 else []
        self.fit(X_train, y_train)
        metrics: dict[str, Any] = {
            "cv_scores": scores,
            "cv_mean": float(np.mean(scores)) if scores else None,
            "cv_std": float(np.std(scores)) if scores else None,
            "train_accuracy": float(np.mean(self.predict(X_train) == y_train.to_numpy())),
        }
        if X_val is not None and y_val is not None:
            metrics["validation"] = evaluate(self, X_val, pd.Series(y_val))
        return metrics

    # -- inference --------------------------------------------------------------------------
    def _require_fitted(self) -> Pipeline:
        if self.pipeline is None:
            raise RuntimeError("model is not trained or loaded")
        return self.pipeline

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self._require_fitted().predict_proba(normalize_features(df[self.feature_names]))

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Labels derived from one ``predict_proba`` pass (argmax, sklearn's own rule)."""
        return labels_from_proba(self.predict_proba(df), self.classes)

    def input_limits(self) -> dict[str, float]:
        """Largest |value| per numeric feature the pipeline can score: scaled values must stay
        within float32 (trees cast their input to float32), with a factor of 2 to spare."""
        pre = self._require_fitted().named_steps["preprocess"]
        half = float(np.finfo(np.float32).max) / 2
        limits: dict[str, float] = {}
        for name, trans, cols in pre.transformers_:
            if name == "num" and len(cols):
                scaler = trans.named_steps["scale"]
                for col, mean, scale in zip(cols, scaler.mean_, scaler.scale_, strict=True):
                    limits[col] = float(max(0.0, min(half, half * min(1.0, scale) - abs(mean))))
        return limits

    def get_feature_importance(self) -> dict[str, float] | None:
        return dict(self.importance) if self.importance is not None else None

    def set_n_jobs(self, n_jobs: int) -> None:
        """Bound inference threads (serving replicas use their fractional CPU share)."""
        self.n_jobs = max(1, int(n_jobs))
        clf = self._require_fitted().named_steps["classifier"]
        if hasattr(clf, "n_jobs"):
            clf.n_jobs = self.n_jobs

    def _compute_importance(self, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
        """Impurity importance (forest), |coef| (linear), permutation importance (boosting),
        summed back from one-hot columns to the original features and normalised to 1."""
        pipe = self._require_fitted()
        clf = pipe.named_steps["classifier"]
        if hasattr(clf, "feature_importances_") or hasattr(clf, "coef_"):
            raw = (
                clf.feature_importances_
                if hasattr(clf, "feature_importances_")
                else np.abs(clf.coef_).mean(axis=0)
            )
            owners = self._output_owners()
            values = dict.fromkeys(self.feature_names, 0.0)
            for owner, v in zip(owners, raw, strict=True):
                values[owner] += float(v)
        else:
            sample = X.sample(n=min(len(X), 1000), random_state=0)
            with threadpool_limits(self.n_jobs):
                result = permutation_importance(
                    pipe, sample, y.loc[sample.index], n_repeats=3, random_state=0, n_jobs=1
                )
            values = {
                n: max(0.0, float(m))
                for n, m in zip(self.feature_names, result.importances_mean, strict=True)
            }
        total = sum(values.values()) or 1.0
        return {k: v / total for k, v in values.items()}

    def _output_owners(self) -> list[str]:
        """Original feature behind each column the preprocessor outputs."""
        pre = self._require_fitted().named_steps["preprocess"]
        owners: list[str] = []
        for name, trans, cols in pre.transformers_:
            if name == "num":
                owners += list(cols)
            elif name == "cat" and len(cols):
                enc = trans.named_steps["onehot"]
                for col, cats in zip(cols, enc.categories_, strict=True):
                    owners += [col] * len(cats)
        return owners

    # -- persistence ------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "pipeline": self._require_fitted(),
            "feature_names": self.feature_names,
            "schema": [s.to_dict() for s in self.schema],
            "classes": self.classes,
            "importance": self.importance,
            "config": self.config,
        }

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        joblib.dump(self._state(), buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, expected_sha256: str) -> SPARCClassificationModel:
        """Verify ``data`` against ``expected_sha256``, then deserialize it."""
        actual = sha256_bytes(data)
        if actual != expected_sha256:
            raise IntegrityError(f"model sha256 {actual} != recorded {expected_sha256}")
        state = joblib.load(io.BytesIO(data))
        model = cls(state["config"])
        model._restore(state)
        return model

    def _restore(self, state: dict[str, Any]) -> None:  # inverse of _state()
        self.pipeline = state["pipeline"]
        self.feature_names = state["feature_names"]
        self.schema = [FeatureSpec(**s) for s in state["schema"]]
        self.classes = state["classes"]
        self.importance = state["importance"]

    def save_model(self, path: str | Path, metadata: dict[str, Any] | None = None) -> str:
        """Write ``model.joblib`` and ``metadata.json`` (with its sha256) into ``path``.

        Each file is written to a temporary name and renamed, so readers never see half a file.
        Returns the sha256.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        data = self.to_bytes()
        digest = sha256_bytes(data)
        meta = {"model_type": self.model_type, "params": self.params, **(metadata or {})}
        meta.update(sha256=digest, model_file=MODEL_FILE)
        _atomic_write(path / MODEL_FILE, data)
        _atomic_write(path / METADATA_FILE, json.dumps(meta, indent=2, default=str).encode())
        return digest

    def load_model(self, path: str | Path) -> SPARCClassificationModel:
        """Load a directory written by ``save_model``, verifying the sha256 first."""
        path = Path(path)
        meta = json.loads((path / METADATA_FILE).read_text())
        loaded = self.from_bytes((path / meta["model_file"]).read_bytes(), meta["sha256"])
        vars(self).update(vars(loaded))  # its config and fitted state, in place
        return self


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
