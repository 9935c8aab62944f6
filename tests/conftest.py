"""Shared fixtures: small real datasets and a trained model, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def loans() -> pd.DataFrame:
    """600 rows: numeric + categorical features, missing values, 3 string classes."""
    return pd.read_csv(DATA / "loans.csv")


@pytest.fixture(scope="session")
def trained_loans_model(loans):
    from sparc_ray.training.estimator import SPARCClassificationModel

    model = SPARCClassificationModel(
        {
            "model_type": "random_forest",
            "model": {"n_estimators": 30},
            "cross_validation": {"n_folds": 3},
        }
    )
    model.fit(loans.drop(columns="decision"), loans["decision"])
    return model
