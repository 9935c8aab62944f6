"""The search benchmarks' data and spaces: what GridSearchCV and our Tune search are both
given (``tune_bench.py``, ``tune_scale_sim.py``, ``scale_validate.py``, ``scale_profile.py``,
``overhead.py``), and GridSearchCV's list of grids for a space.
"""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import make_classification
from sklearn.pipeline import Pipeline

from sparc_ray.training.estimator import build_pipeline

SPACES = {
    # A first, broad search: most configurations are clearly weaker after one fold, the
    # situation ASHA is made for. 8 + 8 + 12 = 28 configurations.
    "broad": {
        "random_forest": {
            "n_estimators": [60],
            "max_depth": [3, 6, 10, None],
            "min_samples_leaf": [1, 20],
        },
        "logistic_regression": {"C": [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0]},
        "hist_gradient_boosting": {
            "learning_rate": [0.01, 0.1, 0.3],
            "max_leaf_nodes": [4, 31],
            "max_iter": [30, 100],
        },
    },
    # A narrow search around good settings: the expensive deep forests are all near the
    # best, so ASHA can stop little. 8 + 8 + 12 = 28 configurations.
    "narrow": {
        "random_forest": {
            "n_estimators": [50, 100],
            "max_depth": [8, None],
            "min_samples_leaf": [1, 4],
        },
        "logistic_regression": {"C": [0.001, 0.01, 0.1, 1.0], "class_weight": [None, "balanced"]},
        "hist_gradient_boosting": {
            "learning_rate": [0.05, 0.1, 0.2],
            "max_leaf_nodes": [15, 31],
            "max_iter": [50, 100],
        },
    },
}
N_FOLDS = 5


def make_data(rows: int) -> tuple[pd.DataFrame, pd.Series]:
    X, y = make_classification(
        n_samples=rows,
        n_features=20,
        n_informative=10,
        n_redundant=4,
        flip_y=0.03,
        class_sep=0.8,
        random_state=0,
    )
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(20)]), pd.Series(y)


def grids(space: dict, columns: list[str]) -> tuple[Pipeline, list[dict]]:
    """One pipeline and GridSearchCV's list of grids: one grid per family, each swapping the
    ``classifier`` step (same preprocessing and defaults as ``build_pipeline``)."""
    pipe = build_pipeline("logistic_regression", {}, columns, [])
    return pipe, [
        {
            "classifier": [build_pipeline(family, {}, columns, [])["classifier"]],
            **{f"classifier__{k}": v for k, v in params.items()},
        }
        for family, params in space.items()
    ]
