"""Per-prediction contributions for every family, on binary numeric data (breast cancer) and
on mixed categorical + missing-value data with three string classes (loans): additivity,
one-hot columns summed back, imputed values marked, the logistic-regression formula by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sparc_ray.data.loading import load_dataset, normalize_features
from sparc_ray.inference.explain import Explainer, ExplanationError
from sparc_ray.training.estimator import MODEL_FAMILIES, SPARCClassificationModel

SMALL = {
    "random_forest": {"n_estimators": 30},
    "logistic_regression": {},
    "hist_gradient_boosting": {"max_iter": 30},
}
SPACE = {
    "random_forest": "probability",
    "logistic_regression": "log_odds",
    "hist_gradient_boosting": "log_odds",
}
CASES = [(f, d) for f in MODEL_FAMILIES for d in ("breast_cancer", "loans")]


@pytest.fixture(scope="module")
def datasets(loans) -> dict[str, tuple[pd.DataFrame, pd.Series, pd.DataFrame]]:
    """name -> (X_train, y_train, X_holdout)."""
    bc, target = load_dataset("builtin:breast_cancer")
    out = {}
    for name, df, y in (("breast_cancer", bc, target), ("loans", loans, "decision")):
        X = df.drop(columns=y)
        out[name] = (X.iloc[:420], df[y].iloc[:420], X.iloc[420:].reset_index(drop=True))
    return out


@pytest.fixture(scope="module")
def fitted(datasets) -> dict[tuple[str, str], tuple[SPARCClassificationModel, Explainer]]:
    out = {}
    for family, name in CASES:
        X, y, _ = datasets[name]
        model = SPARCClassificationModel({"model_type": family, "model": SMALL[family]}).fit(X, y)
        out[family, name] = model, Explainer.from_model(model, background=X)
    return out


def model_output(model: SPARCClassificationModel, X: pd.DataFrame, k: np.ndarray, space: str):
    """The model's own output for class ``k[i]`` of row ``i``, through the whole pipeline."""
    rows = np.arange(len(X))
    if space == "probability":
        return model.predict_proba(X)[rows, k]
    raw = model.pipeline.decision_function(normalize_features(X[model.feature_names]))
    if raw.ndim == 1:  # binary: the positive class's logit
        return np.where(k == 1, raw, -raw)
    return raw[rows, k]


@pytest.mark.parametrize(("family", "name"), CASES)
def test_contributions_add_up_to_the_models_output_for_the_class_it_says(
    family, name, fitted, datasets
):
    model, explainer = fitted[family, name]
    X = datasets[name][2]
    e = explainer.explain(X)
    assert e.space == SPACE[family] and len(e) == len(X)
    assert e.feature_names == tuple(model.feature_names)  # original features only
    assert e.contributions.shape == (len(X), len(model.feature_names))
    if len(model.classes) == 2:  # binary: the positive class, every row
        assert set(e.class_index.tolist()) == {1}
    else:  # multiclass: the predicted (served) class
        assert e.explained_classes == model.predict(X).tolist()
    np.testing.assert_allclose(e.outputs, model_output(model, X, e.class_index, e.space), atol=1e-9)
    assert e.additivity_error().max() <= 1e-6
    # the reference is the same for every row of a class
    for k in set(e.class_index.tolist()):
        assert np.ptp(e.base_values[e.class_index == k]) == 0


@pytest.mark.parametrize("family", list(MODEL_FAMILIES))
def test_another_class_can_be_explained_and_still_adds_up(family, fitted, datasets):
    X = datasets["breast_cancer"][2]
    model, explainer = fitted[family, "breast_cancer"]
    e = explainer.explain(X, class_index=0)
    assert set(e.class_index.tolist()) == {0} and e.additivity_error().max() <= 1e-6
    np.testing.assert_allclose(e.outputs, model_output(model, X, e.class_index, e.space), atol=1e-9)
    with pytest.raises(ExplanationError, match="class_index 2"):
        explainer.explain(X, class_index=2)


@pytest.mark.parametrize("family", list(MODEL_FAMILIES))
def test_one_hot_columns_are_summed_back_to_their_feature(family, fitted, datasets):
    """The per-column values (by the preprocessor's own output names) summed per feature."""
    import shap

    model, explainer = fitted[family, "loans"]
    X = datasets["loans"][2].head(40)
    e = explainer.explain(X)
    pre, clf = model.pipeline.named_steps["preprocess"], model.pipeline.named_steps["classifier"]
    Z = pre.transform(normalize_features(X[model.feature_names]))
    rows = np.arange(len(X))
    if family == "logistic_regression":
        mean = pre.transform(normalize_features(datasets["loans"][0])).mean(axis=0)
        per_column = (Z - mean) * clf.coef_[e.class_index]
    else:
        values = shap.TreeExplainer(clf).shap_values(Z, check_additivity=False)
        per_column = np.asarray(values)[rows, :, e.class_index]
    names = list(pre.get_feature_names_out())
    kinds = {spec.name: spec.kind for spec in model.schema}
    covered = []
    for j, feature in enumerate(model.feature_names):
        if kinds[feature] == "numeric":
            cols = [names.index(f"num__{feature}")]
        else:  # one column per category seen in training ("__missing__" included)
            cols = [i for i, n in enumerate(names) if n.startswith(f"cat__{feature}_")]
            assert len(cols) >= 2
        covered += cols
        np.testing.assert_allclose(e.contributions[:, j], per_column[:, cols].sum(axis=1))
    assert sorted(covered) == list(range(len(names)))  # each column counted once
    assert {"employment", "region"} <= {f for f, k in kinds.items() if k == "categorical"}
    row = e.to_rows()[0]
    assert list(row["contributions"]) == list(model.feature_names)


@pytest.mark.parametrize("family", list(MODEL_FAMILIES))
def test_imputed_values_are_marked_exactly_where_the_input_was_missing(family, fitted, datasets):
    model, explainer = fitted[family, "loans"]
    X = datasets["loans"][2].head(8).astype(object).reset_index(drop=True)
    X.loc[0, "income"] = np.nan
    X.loc[1, "employment"] = None
    X.loc[2, "region"] = np.nan
    X.loc[2, "age"] = None
    X.loc[3, "employment"] = "astronaut"  # unseen: ignored by the encoder, not imputed
    e = explainer.explain(X)
    expected = normalize_features(X[model.feature_names]).isna().to_numpy()
    assert expected.sum() >= 4
    np.testing.assert_array_equal(e.imputed, expected)
    rows = e.to_rows()
    for row, mask in zip(rows, expected, strict=True):
        assert row["imputed"] == [f for f, m in zip(model.feature_names, mask, strict=True) if m]
    assert "income" in rows[0]["imputed"] and "employment" in rows[1]["imputed"]
    assert {"age", "region"} <= set(rows[2]["imputed"])
    assert "employment" not in rows[3]["imputed"]
    assert e.additivity_error().max() <= 1e-6


@pytest.mark.parametrize("name", ["breast_cancer", "loans"])
def test_logistic_regression_is_coefficient_times_scaled_value_minus_background_mean(
    name, fitted, datasets
):
    """By hand: scale with the fitted scaler's mean and scale, one-hot with the categories,
    against the background's mean of the same columns."""
    model, explainer = fitted["logistic_regression", name]
    X_train, _, X = datasets[name]
    X = X.head(25)
    pipe = model.pipeline
    num, cat = pipe.named_steps["preprocess"].named_transformers_["num"], None
    if name == "loans":
        cat = pipe.named_steps["preprocess"].named_transformers_["cat"]
    clf = pipe.named_steps["classifier"]

    def columns(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        frame = normalize_features(frame[model.feature_names])
        numeric = [s.name for s in model.schema if s.kind == "numeric"]
        medians = dict(zip(numeric, num.named_steps["impute"].statistics_, strict=True))
        scaler = num.named_steps["scale"]
        parts, owners = [], []
        for i, f in enumerate(numeric):
            filled = frame[f].fillna(medians[f]).to_numpy(float)
            parts.append((filled - scaler.mean_[i]) / scaler.scale_[i])
            owners.append(f)
        categorical = [s.name for s in model.schema if s.kind == "categorical"]
        categories = cat.named_steps["onehot"].categories_ if cat else []
        for f, cats in zip(categorical, categories, strict=True):
            filled = frame[f].fillna("__missing__")
            for c in cats:
                parts.append((filled == c).to_numpy(float))
                owners.append(f)
        return np.column_stack(parts), owners

    Z, owners = columns(X)
    mean = columns(X_train)[0].mean(axis=0)
    e = explainer.explain(X)
    k = e.class_index
    coef = clf.coef_ if len(model.classes) > 2 else np.vstack([-clf.coef_[0], clf.coef_[0]])
    icpt = clf.intercept_ if len(model.classes) > 2 else np.array([-1, 1]) * clf.intercept_[0]
    per_column = coef[k] * (Z - mean)
    for j, f in enumerate(model.feature_names):
        mine = [i for i, o in enumerate(owners) if o == f]
        np.testing.assert_allclose(e.contributions[:, j], per_column[:, mine].sum(axis=1))
    np.testing.assert_allclose(e.base_values, icpt[k] + (coef[k] * mean).sum(axis=1))
    np.testing.assert_allclose(e.outputs, icpt[k] + (coef[k] * Z).sum(axis=1))
    assert explainer.background_record()["rows"] == len(X_train)


def test_logistic_regression_needs_a_background(fitted):
    model, _ = fitted["logistic_regression", "loans"]
    with pytest.raises(ExplanationError, match="background"):
        Explainer.from_model(model)


def test_rows_are_json_ready_and_say_the_class_and_space(fitted, datasets):
    model, explainer = fitted["hist_gradient_boosting", "loans"]
    X = datasets["loans"][2].head(5)
    e = explainer.explain(X)
    rows = json.loads(json.dumps(e.to_rows()))
    assert [r["class"] for r in rows] == model.predict(X).tolist()
    for r, base, out in zip(rows, e.base_values, e.outputs, strict=True):
        assert r["space"] == "log_odds" and r["base_value"] == base and r["output"] == out
        assert r["base_value"] + sum(r["contributions"].values()) == pytest.approx(out, abs=1e-9)
    empty = explainer.explain(X.head(0))
    assert len(empty) == 0 and empty.contributions.shape == (0, 5) and empty.to_rows() == []
