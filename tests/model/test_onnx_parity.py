"""ONNX export: parity with sklearn for every family (numeric-only and mixed data with missing
values and unseen categories), integrity check, clean fallback. Speed: bench/serve_bench.py."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from sparc_ray.data.loading import columns_from_frame, load_dataset
from sparc_ray.inference.onnx_model import OnnxModel
from sparc_ray.registry.artifacts import IntegrityError, sha256_bytes
from sparc_ray.training import onnx_export
from sparc_ray.training.estimator import MODEL_FAMILIES, SPARCClassificationModel
from sparc_ray.training.onnx_export import TOLERANCE, export_onnx

SMALL = {
    "random_forest": {"n_estimators": 30},
    "logistic_regression": {},
    "hist_gradient_boosting": {"max_iter": 30},
}


@pytest.fixture(scope="module")
def datasets(loans) -> dict[str, tuple[pd.DataFrame, pd.Series, pd.DataFrame]]:
    """name -> (X_train, y_train, X_holdout)."""
    bc, target = load_dataset("builtin:breast_cancer")
    cat = loans[["employment", "region", "decision"]]
    out = {}
    for name, df, y in (("breast_cancer", bc, target), ("loans", loans, "decision")):
        out[name] = (df.drop(columns=y).iloc[:420], df[y].iloc[:420], df.drop(columns=y).iloc[420:])
    out["loans_categorical"] = (cat.iloc[:420, :2], cat["decision"].iloc[:420], cat.iloc[420:, :2])
    return out


@pytest.fixture(scope="module")
def fitted(datasets) -> dict[tuple[str, str], SPARCClassificationModel]:
    models = {}
    for name, (X, y, _) in datasets.items():
        for family in MODEL_FAMILIES:
            config = {"model_type": family, "model": SMALL[family]}
            models[family, name] = SPARCClassificationModel(config).fit(X, y)
    return models


def kinds_of(model: SPARCClassificationModel) -> list[str]:
    by_name = {s.name: s.kind for s in model.schema}
    return [by_name[n] for n in model.feature_names]


def odd_rows(X: pd.DataFrame, kinds: list[str]) -> pd.DataFrame:
    """Holdout rows with missing numerics, missing (None / NaN) and unseen categories."""
    rows = X.head(12).astype(object).reset_index(drop=True)
    for i, (name, kind) in enumerate(zip(X.columns, kinds, strict=True)):
        rows.loc[i % 4, name] = np.nan
        if kind == "categorical":
            rows.loc[4, name] = None
            rows.loc[5 + i % 3, name] = f"never-seen-{i}"
            rows.loc[8, name] = "astronaut"
    rows.loc[9, :] = np.nan
    for name, kind in zip(X.columns, kinds, strict=True):
        if kind == "numeric":
            rows[name] = rows[name].astype(float)
    return rows


def scorer_for(model: SPARCClassificationModel, data: bytes) -> OnnxModel:
    return OnnxModel.from_bytes(
        data, sha256_bytes(data), model.feature_names, kinds_of(model), model.classes
    )


@pytest.mark.parametrize("dataset", ["breast_cancer", "loans", "loans_categorical"])
@pytest.mark.parametrize("family", list(MODEL_FAMILIES))
def test_export_and_parity(family, dataset, datasets, fitted):
    model, (_, _, X_hold) = fitted[family, dataset], datasets[dataset]
    data, report = export_onnx(model, X_hold)
    json.dumps(report, allow_nan=False)  # destined for metadata.json
    assert report["status"] == "ok", report["reason"]
    assert data is not None and report["reason"] is None and report["labels_equal"] is True
    assert report["max_abs_diff"] <= report["tolerance"] == TOLERANCE
    assert report["rows_checked"] > len(X_hold) and report["opset"] == onnx_export.OPSET
    assert set(report["versions"]) == {"skl2onnx", "onnxruntime", "onnx"}
    assert report["file"] == "model.onnx" and report["sha256"] == sha256_bytes(data)

    kinds = kinds_of(model)
    X = pd.concat([X_hold, odd_rows(X_hold, kinds)], ignore_index=True)
    got = scorer_for(model, data).predict_proba(columns_from_frame(X, model.feature_names, kinds))
    want = model.predict_proba(X)
    assert got.dtype == np.float64 and got.shape == want.shape == (len(X), len(model.classes))
    np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))
    assert np.abs(got - want).max() <= TOLERANCE
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize(
    ("family", "params", "labels"),
    [
        ("random_forest", {"n_estimators": 3, "min_samples_split": 10_000}, None),  # lone leaves
        ("hist_gradient_boosting", {"max_iter": 3, "min_samples_leaf": 10_000}, None),
        ("random_forest", {"n_estimators": 5}, {"approved": 2, "review": 1, "rejected": 0}),
        ("hist_gradient_boosting", {"max_iter": 10}, {"approved": "yes", "review": "no"}),
    ],
)
def test_degenerate_trees_binary_and_integer_labels(family, params, labels, datasets):
    X, y, X_hold = datasets["loans"]
    y = y if labels is None else y.map(labels).fillna("no")
    model = SPARCClassificationModel({"model_type": family, "model": params}).fit(X, y)
    data, report = export_onnx(model, X_hold)
    assert report["status"] == "ok", report["reason"]
    assert data is not None and report["max_abs_diff"] <= TOLERANCE


def test_validator_columns_missing_and_unseen(datasets, fitted):
    """Columns exactly as the HTTP validator builds them; unseen == all-zero one-hot."""
    model = fitted["hist_gradient_boosting", "loans"]
    data, _ = export_onnx(model, datasets["loans"][2])
    columns = {
        "income": np.array([40000.0, np.nan, 52000.0, 52000.0]),
        "age": np.array([np.nan, 41.0, 30.0, 30.0]),
        "debt": np.array([1200.0, 300.0, np.nan, np.nan]),
        "employment": np.array([None, np.nan, "astronaut", "pirate"], dtype=object),
        "region": np.array(["east", "west", "mars", "venus"], dtype=object),
    }
    got = scorer_for(model, data).predict_proba(columns)
    frame = pd.DataFrame({k: list(v) for k, v in columns.items()})[model.feature_names]
    want = model.predict_proba(frame)
    assert np.abs(got - want).max() <= TOLERANCE
    np.testing.assert_array_equal(got[2], got[3])  # two different unseen values, same encoding
    empty = {k: v[:0] for k, v in columns.items()}
    assert scorer_for(model, data).predict_proba(empty).shape == (0, len(model.classes))


def test_categorical_cells_that_are_not_str_score_as_their_text(datasets, fitted):
    """A categorical column holding other objects (a JSON number, numpy's str) scores as the
    same values written as text: ONNX Runtime converts them (the input rules let only str or
    missing cells in, so no path sends them today). Missing cells either way score as the
    training fill value."""
    model = fitted["logistic_regression", "loans_categorical"]
    data, _ = export_onnx(model, datasets["loans_categorical"][2])
    scorer = scorer_for(model, data)
    texts = {
        "employment": np.array(["salaried", "7", None, "retired"], dtype=object),
        "region": np.array(["east", "west", "north", np.nan], dtype=object),
    }
    objects = {
        "employment": np.array([np.str_("salaried"), 7, None, np.str_("retired")], dtype=object),
        "region": np.array(["east", "west", "north", None], dtype=object),
    }
    want = scorer.predict_proba(texts)
    np.testing.assert_array_equal(scorer.predict_proba(objects), want)
    frame = pd.DataFrame({k: list(v) for k, v in texts.items()})[model.feature_names]
    assert np.abs(want - model.predict_proba(frame)).max() <= TOLERANCE


def test_tampered_bytes_and_mismatched_schema(datasets, fitted):
    model = fitted["random_forest", "loans"]
    data, _ = export_onnx(model, datasets["loans"][2])
    digest, kinds = sha256_bytes(data), kinds_of(model)
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(IntegrityError):
        OnnxModel.from_bytes(bytes(tampered), digest, model.feature_names, kinds, model.classes)
    with pytest.raises(IntegrityError):
        OnnxModel.from_bytes(data, "0" * 64, model.feature_names, kinds, model.classes)
    with pytest.raises(ValueError, match="classes"):
        OnnxModel.from_bytes(data, digest, model.feature_names, kinds, ["a", "b", "c"])
    with pytest.raises(ValueError, match="inputs"):
        OnnxModel.from_bytes(data, digest, model.feature_names, ["numeric"] * 5, model.classes)


class _Unconvertible(ClassifierMixin, BaseEstimator):
    """A classifier skl2onnx has no converter for."""

    def __init__(self, inner=None):
        self.inner = inner
        self.classes_ = inner.classes_

    def predict_proba(self, X):
        return self.inner.predict_proba(X)


def test_fallbacks(datasets, fitted, monkeypatch):
    model, X_hold = fitted["logistic_regression", "loans"], datasets["loans"][2]
    odd = copy.copy(model)
    odd.pipeline = copy.copy(model.pipeline)
    odd.pipeline.steps = [
        *model.pipeline.steps[:-1],
        ("classifier", _Unconvertible(model.pipeline[-1])),
    ]
    data, report = export_onnx(odd, X_hold)
    assert data is None and report["status"] == "fallback"
    assert report["reason"].startswith("conversion failed") and "_Unconvertible" in report["reason"]
    json.dumps(report, allow_nan=False)

    import skl2onnx

    def boom(*args, **kwargs):
        raise RuntimeError("converter exploded")

    with monkeypatch.context() as m:
        m.setattr(skl2onnx, "convert_sklearn", boom)
        data, report = export_onnx(model, X_hold)
    assert data is None and report["status"] == "fallback"
    assert report["reason"] == "conversion failed: RuntimeError: converter exploded"

    with monkeypatch.context() as m:  # a parity miss also falls back, with the figures
        m.setattr(onnx_export, "TOLERANCE", -1.0)
        data, report = export_onnx(model, X_hold)
    assert data is None and report["status"] == "fallback" and report["reason"].startswith("parity")
    assert report["labels_equal"] is True and report["max_abs_diff"] is not None

    data, report = export_onnx(model, X_hold.head(0))
    assert data is None and "no holdout rows" in report["reason"]
