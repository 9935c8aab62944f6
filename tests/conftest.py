"""Shared fixtures (small real datasets and a trained model, built once per session), and the
`cluster` marker made true: a test not marked `cluster` cannot start Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from tests.ray_guard import sitecustomize as ray_guard

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
RAY_GUARD = Path(ray_guard.__file__).parent

ray_guard.install()  # ray.init in this process raises while the guard's variable is set


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item):
    """For a test not marked `cluster`, from its setup (fixtures included) to its teardown:
    ray.init raises here and in every Python process it starts, and `ray start` exits, both
    with "this test starts Ray: mark it `cluster`" (tests/ray_guard/sitecustomize.py)."""
    if item.get_closest_marker("cluster") is not None:
        yield
        return
    saved = {k: os.environ.get(k) for k in (ray_guard.ENV, "PYTHONPATH")}
    os.environ[ray_guard.ENV] = item.nodeid
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(RAY_GUARD), saved["PYTHONPATH"]]))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
