"""The publish-time explanation check (``metadata.json["explanations"]``): a sound model passes
and records what serving needs, a broken explainer or a mismatched importance fails it without
stopping the publish, and a published version gives back the explainer that was checked, only
through its signature."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sparc_ray.data.loading import load_dataset
from sparc_ray.inference.explain import (
    Explainer,
    Explanation,
    ExplanationError,
    load_explainer,
)
from sparc_ray.registry import signing
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training.estimator import MODEL_FAMILIES, SPARCClassificationModel
from sparc_ray.training.explain_check import TOLERANCE, agreement, check_explanations

SMALL = {
    "random_forest": {"n_estimators": 30},
    "logistic_regression": {},
    "hist_gradient_boosting": {"max_iter": 30},
}


@pytest.fixture(scope="module")
def loans_split(loans) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    X, y = loans.drop(columns="decision"), loans["decision"]
    return X.iloc[:450], y.iloc[:450], X.iloc[450:]


@pytest.fixture(scope="module")
def loans_models(loans_split) -> dict[str, SPARCClassificationModel]:
    X, y, _ = loans_split
    return {
        f: SPARCClassificationModel({"model_type": f, "model": SMALL[f]}).fit(X, y)
        for f in MODEL_FAMILIES
    }


@pytest.fixture(scope="module")
def breast_cancer_forest() -> tuple[SPARCClassificationModel, pd.DataFrame]:
    """30 numeric features: enough for the agreement rule to tell rankings apart."""
    df, target = load_dataset("builtin:breast_cancer")
    X, y = df.drop(columns=target), df[target]
    model = SPARCClassificationModel(
        {"model_type": "random_forest", "model": SMALL["random_forest"]}
    )
    return model.fit(X.iloc[:420], y.iloc[:420]), X.iloc[420:]


def publish(tmp_path, model: SPARCClassificationModel, entry: dict, key=None) -> tuple:
    reg = ModelRegistry(tmp_path / "store")
    meta = {
        "model_type": model.model_type,
        "classes": model.classes,
        "features": [f.to_dict() for f in model.schema],
        "explanations": entry,
    }
    return reg, reg.publish("loans", model, meta, signing_key=key)


class Broken(Explainer):
    """Explains as the model's explainer does, then changes the result."""

    def __init__(self, inner: Explainer, change) -> None:
        vars(self).update(vars(inner))
        self._change = change

    def explain(self, df: pd.DataFrame, class_index: int | None = None) -> Explanation:
        return self._change(super().explain(df, class_index))


@pytest.mark.parametrize("family", list(MODEL_FAMILIES))
def test_a_sound_model_passes_and_the_entry_is_what_metadata_json_records(
    family, loans_models, loans_split, tmp_path
):
    X_train, _, holdout = loans_split
    model = loans_models[family]
    check = check_explanations(model, holdout, background=X_train)
    entry = json.loads(json.dumps(check.to_metadata()))
    assert check.ok and entry["ok"] is True and "reason" not in entry, check.reason
    assert entry["space"] == ("probability" if family == "random_forest" else "log_odds")
    assert entry["rows_checked"] == len(holdout) and entry["tolerance"] == TOLERANCE
    assert 0 <= entry["max_additivity_error"] <= TOLERANCE
    assert set(entry["top_features"]) == set(model.feature_names)  # 5 features: all of them
    ranked = list(entry["mean_abs_contribution"].values())
    assert (
        ranked == sorted(ranked, reverse=True)
        and list(entry["mean_abs_contribution"]) == (entry["top_features"])
    )
    assert entry["agreement"]["captured"] >= entry["agreement"]["required"] == 0.75
    assert entry["agreement"]["compared"] == 3
    if family == "logistic_regression":  # the reference is recorded for serving
        assert entry["background"]["rows"] == len(X_train)
        assert len(entry["background"]["mean"]) > len(model.feature_names)  # one-hot columns
    else:
        assert "background" not in entry
    # the registry validates and keeps it; serving gets back the explainer that was checked
    reg, version = publish(tmp_path, model, entry)
    meta = reg.metadata("loans", version)
    assert meta.explanations is not None and meta.explanations.ok
    assert meta.explanations.space == entry["space"] and meta.to_dict()["explanations"] == entry
    again = Explainer.from_metadata(model, meta).explain(holdout)
    first = Explainer.from_model(model, X_train).explain(holdout)
    np.testing.assert_array_equal(again.contributions, first.contributions)
    np.testing.assert_array_equal(again.base_values, first.base_values)


def test_a_broken_explainer_fails_additivity_and_the_version_serves_without_it(
    loans_models, loans_split, tmp_path
):
    holdout = loans_split[2]
    model = loans_models["hist_gradient_boosting"]
    shifted = Broken(
        Explainer.from_model(model),
        lambda e: dataclasses.replace(e, base_values=e.base_values + 1e-5),
    )
    check = check_explanations(model, holdout, explainer=shifted)
    assert not check.ok and check.max_additivity_error == pytest.approx(1e-5, rel=1e-3)
    entry = check.to_metadata()
    assert entry["ok"] is False and "additivity error" in entry["reason"]
    # still publishes; the version says why it has no explanations
    key = Ed25519PrivateKey.generate()
    reg, version = publish(tmp_path, model, entry, key=key)
    meta = reg.metadata("loans", version)
    assert meta.explanations is not None and not meta.explanations.ok
    with pytest.raises(ExplanationError, match="serves without explanations: additivity"):
        Explainer.from_metadata(model, meta)
    with pytest.raises(ExplanationError, match="additivity"):
        load_explainer(reg, "loans", version, signing.raw_public(key))


def test_a_mismatched_importance_fails_the_agreement(breast_cancer_forest):
    model, holdout = breast_cancer_forest
    assert check_explanations(model, holdout).ok  # its own importance agrees
    importance = model.get_feature_importance()
    ranked = sorted(importance, key=lambda f: -importance[f])
    swapped = copy.copy(model)  # the most important features now count least, and back
    swapped.importance = dict(zip(ranked, sorted(importance.values()), strict=True))
    check = check_explanations(swapped, holdout)
    assert not check.ok and check.max_additivity_error <= TOLERANCE
    assert check.agreement is not None and check.agreement.compared == 10  # ceil(30 / 3)
    assert check.agreement.captured < 0.75 and "hold" in check.reason
    assert check.to_metadata()["agreement"]["importance_top_features"] == ranked[::-1][:10]


def test_contributions_moved_to_other_features_fail_the_agreement(breast_cancer_forest):
    model, holdout = breast_cancer_forest
    rolled = Broken(
        Explainer.from_model(model),
        lambda e: dataclasses.replace(e, contributions=np.roll(e.contributions, 15, axis=1)),
    )
    check = check_explanations(model, holdout, explainer=rolled)
    assert not check.ok and check.max_additivity_error <= TOLERANCE  # still adds up
    assert check.agreement is not None and not check.agreement.ok


def test_the_agreement_rule_by_hand():
    contribution = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0}
    importance = {"a": 0.1, "b": 0.4, "c": 0.0, "d": 0.3, "e": 0.2}
    got = agreement(contribution, importance)  # F = 5: the top 3 are compared
    assert got.compared == 3 and got.contribution_top_features == ("a", "b", "c")
    assert got.importance_top_features == ("b", "d", "e")
    assert got.captured == pytest.approx((0.1 + 0.4 + 0.0) / (0.4 + 0.3 + 0.2))
    assert not got.ok  # 0.56 < 0.75
    assert agreement(contribution, {**importance, "c": 0.3, "d": 0.0}).ok  # 0.8 / 0.9
    assert agreement({"x": 1.0, "y": 2.0}, {"x": 1.0, "y": 0.0}).captured == 1.0  # F <= 3
    many = {f"f{i}": float(i) for i in range(31)}
    assert agreement(many, many).compared == 11 and agreement(many, many).captured == 1.0


def test_an_explainer_that_raises_is_a_failed_check_not_a_failed_publish(loans_models, loans_split):
    model = loans_models["random_forest"]

    def boom(e):
        raise RuntimeError("no TreeSHAP today")

    check = check_explanations(model, loans_split[2], explainer=Broken(Explainer(model), boom))
    entry = check.to_metadata()
    assert entry["ok"] is False and entry["rows_checked"] == 0
    assert entry["reason"] == "explainer failed: RuntimeError: no TreeSHAP today"
    assert entry["space"] == "probability" and entry["max_additivity_error"] is None
    # logistic regression without its background cannot be explained: failed, not raised
    lr = check_explanations(loans_models["logistic_regression"], loans_split[2])
    assert not lr.ok and "needs a background" in lr.reason


def test_without_importance_only_additivity_is_checked(loans_models, loans_split):
    model = copy.copy(loans_models["random_forest"])
    model.importance = None
    check = check_explanations(model, loans_split[2])
    assert check.ok and check.agreement is None and check.to_metadata()["agreement"] is None


def test_load_explainer_reads_only_a_signed_version(loans_models, loans_split, tmp_path):
    X_train, _, holdout = loans_split
    model = loans_models["logistic_regression"]
    entry = check_explanations(model, holdout, background=X_train).to_metadata()
    key = Ed25519PrivateKey.generate()
    reg, version = publish(tmp_path, model, entry, key=key)
    explainer = load_explainer(reg, "loans", version, signing.raw_public(key))
    expected = Explainer.from_model(model, X_train).explain(holdout)
    np.testing.assert_allclose(explainer.explain(holdout).contributions, expected.contributions)
    other = signing.raw_public(Ed25519PrivateKey.generate())
    with pytest.raises(signing.SignatureError):
        load_explainer(reg, "loans", version, other)


def test_a_version_published_before_the_check_has_no_explanations(loans_models, tmp_path):
    model = loans_models["random_forest"]
    meta = ModelMetadata.from_json(
        {
            "name": "loans",
            "version": "v1",
            "sha256": "0" * 64,
            "model_type": "random_forest",
            "classes": model.classes,
            "features": [f.to_dict() for f in model.schema],
        }
    )
    assert meta.explanations is None
    with pytest.raises(ExplanationError, match="no explanation check was recorded"):
        Explainer.from_metadata(model, meta)
    mismatched = ModelMetadata.from_json({**meta.to_dict(), "explanations": {"ok": True}})
    other = loans_models["hist_gradient_boosting"]
    with pytest.raises(ExplanationError, match="does not describe this model"):
        Explainer.from_metadata(other, mismatched)


def test_the_training_job_records_the_check_in_metadata_json(monkeypatch, loans, tmp_path):
    """``run_training`` with the Tune search and the refit task replaced (no Ray starts): the
    published, signed metadata.json carries the check, and serving's loader reads it back."""
    from sparc_ray.training import job, tuning
    from sparc_ray.training.config import (
        CVConfig,
        DataConfig,
        RegistryConfig,
        SearchConfig,
        TrainConfig,
    )
    from sparc_ray.training.search_result import SearchResult

    best = {"model_type": "logistic_regression", "params": {}, "cv_mean": 0.8, "cv_std": 0.01}
    trial = {**best, "label": "lr", "folds": 3, "stopped_early": False, "error": None}
    found = SearchResult(best, [trial], str(tmp_path / "tune" / "x"))
    monkeypatch.setattr(tuning, "build_tuner", lambda *args, **kwargs: None)
    monkeypatch.setattr(job, "run_search", lambda tuner, n_folds: found)

    def refit(X, y, best, cv, retries=3):
        config = {"model_type": best["model_type"], "model": best["params"]}
        return SPARCClassificationModel(config).fit(X, y)

    monkeypatch.setattr(tuning, "refit", refit)
    data = tmp_path / "loans.csv"
    loans.to_csv(data, index=False)
    cfg = TrainConfig(
        name="loans",
        data=DataConfig(path=str(data), target="decision"),
        cv=CVConfig(n_folds=3),
        search=SearchConfig(space={"logistic_regression": {}}, storage_path=str(tmp_path / "t")),
        registry=RegistryConfig(store=str(tmp_path / "store")),
    )
    key = Ed25519PrivateKey.generate()
    result = job.run_training(cfg, signing_key=key)
    raw = json.loads((tmp_path / "store" / "loans" / result.version / "metadata.json").read_text())
    entry = raw["explanations"]
    assert entry["ok"] is True and entry["space"] == "log_odds", entry.get("reason")
    assert entry["rows_checked"] == raw["training_data"]["holdout_rows"] == 120
    assert entry["background"]["rows"] == raw["training_data"]["train_rows"] == 480
    assert entry["max_additivity_error"] <= TOLERANCE
    reg = ModelRegistry(str(tmp_path / "store"))
    explainer = load_explainer(reg, "loans", result.version, signing.raw_public(key))
    rows = explainer.explain(loans.drop(columns="decision").head(10))
    assert rows.additivity_error().max() <= TOLERANCE and rows.space == "log_odds"
