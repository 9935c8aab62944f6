"""The seed's model tests, re-run for every model family, plus string-label / mixed-type data.

``make test-model MODEL_TYPE=logistic_regression`` selects one family (``-k``).
"""

import numpy as np
import pandas as pd
import pytest

from sparc_ray.training.estimator import MODEL_FAMILIES, SPARCClassificationModel
from tests.model.test_model_performance import TestModelPerformance as SeedTests

SMALL = {
    "random_forest": {"n_estimators": 10, "random_state": 42},
    "logistic_regression": {"C": 1.0},
    "hist_gradient_boosting": {"max_iter": 50, "random_state": 42},
}


class TestEveryFamily(SeedTests):
    @pytest.fixture(params=list(MODEL_FAMILIES))
    def trained_model(self, request, sample_data):
        X_train, X_test, y_train, y_test = sample_data
        model = SPARCClassificationModel(
            {
                "model_type": request.param,
                "model": SMALL[request.param],
                "cross_validation": {"n_folds": 3, "scoring": "accuracy"},
            }
        )
        metrics = model.train(X_train, y_train, X_test, y_test)
        assert len(metrics["cv_scores"]) == 3 and metrics["validation"]["accuracy"] >= 0.7
        return model, X_test, y_test


@pytest.mark.parametrize("model_type", list(MODEL_FAMILIES))
def test_mixed_types_missing_values_string_labels(model_type, loans):
    X, y = loans.drop(columns="decision"), loans["decision"]
    model = SPARCClassificationModel(
        {"model_type": model_type, "model": SMALL[model_type], "cross_validation": {"n_folds": 3}}
    )
    metrics = model.train(X.iloc[:450], y.iloc[:450], X.iloc[450:], y.iloc[450:])
    assert metrics["validation"]["accuracy"] > 0.7
    assert set(model.classes) == {"approved", "review", "rejected"}
    proba = model.predict_proba(X.iloc[450:])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # labels come from the same probabilities: argmax, the estimator's own rule
    np.testing.assert_array_equal(model.predict(X.iloc[450:]), model.pipeline.predict(X.iloc[450:]))
    importance = model.get_feature_importance()
    assert set(importance) == set(X.columns) and min(importance.values()) >= 0
    assert sum(importance.values()) == pytest.approx(1.0)
    # unseen category and missing values at prediction time are handled by the pipeline
    odd = X.iloc[:2].copy()
    odd["employment"] = ["astronaut", None]
    odd["age"] = [np.nan, 30]
    assert len(model.predict(odd)) == 2


def test_column_order_does_not_matter(trained_loans_model, loans):
    X = loans.drop(columns="decision").head(20)
    shuffled = X[list(reversed(X.columns))]
    np.testing.assert_array_equal(
        trained_loans_model.predict(X), trained_loans_model.predict(shuffled)
    )


def test_numeric_labels_stay_numeric():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=list("abc"))
    y = pd.Series((X["a"] > 0).astype(int) + (X["b"] > 1).astype(int))
    model = SPARCClassificationModel({"model_type": "logistic_regression", "model": {}})
    model.train(X, y)
    assert model.classes == [0, 1, 2] and model.predict(X).dtype.kind == "i"
