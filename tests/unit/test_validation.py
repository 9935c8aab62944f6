"""Every training-data problem is reported as one message naming the column."""

import numpy as np
import pandas as pd
import pytest

from sparc_ray.data.loading import infer_schema
from sparc_ray.data.validation import DataValidator


def check(df, **kw):
    return DataValidator(target="y", n_folds=3, **kw).validate_dataframe(df)


def good(n=40):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"x": rng.normal(size=n), "c": rng.choice(["a", "b"], n), "y": ["p", "q"] * (n // 2)}
    )


def test_good_frame_is_valid():
    assert check(good()) == {"is_valid": True, "errors": []}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.iloc[0:0], "dataset is empty"),
        (lambda d: d.drop(columns="y"), "target column 'y' not found"),
        (lambda d: d.assign(y=[None, *d["y"].tolist()[1:]]), "'y' has 1 missing values"),
        (lambda d: d.assign(y="p"), "has 1 class(es); at least 2 needed"),
        (lambda d: d.assign(y=["q"] * 3 + ["p"] * (len(d) - 3)), "class 'q' has 3 rows; 5"),
        (lambda d: d.assign(empty=np.nan), "column 'empty' is entirely empty"),
        (lambda d: d.assign(x=[np.inf, -np.inf, *d["x"].tolist()[2:]]), "'x' has 2 infinite"),
        (lambda d: d[["y"]], "no feature columns"),
        (lambda d: d.assign(t=pd.Timestamp("2026-01-01")), "'t' has unsupported dtype"),
    ],
)
def test_each_bad_case_names_the_problem(mutate, message):
    result = check(mutate(good()))
    assert not result["is_valid"]
    assert any(message in e for e in result["errors"]), result["errors"]


def test_all_problems_are_reported_together():
    df = good().assign(empty=np.nan, x=np.inf)
    errors = check(df)["errors"]
    assert sorted(errors) == [
        "column 'empty' is entirely empty",
        "column 'x' has 40 infinite values",
    ]


def test_min_rows_per_class_accounts_for_the_holdout():
    v = DataValidator(target="y", n_folds=5, test_size=0.2)
    assert v.min_rows_per_class() == 8


def test_scoring_batch_checked_by_the_serving_rules():
    train = good().drop(columns="y")
    v = DataValidator(features=infer_schema(train))
    assert v.validate_dataframe(train)["is_valid"]
    # An all-empty column in a scoring batch is just missing values (imputed), not an error.
    assert v.validate_dataframe(train.assign(x=np.nan))["is_valid"]
    errors = v.validate_dataframe(train.drop(columns="c").assign(extra=1))["errors"]
    assert "feature 'c' row 0: missing feature" in errors
    assert "feature 'extra' row 0: unknown feature" in errors
    # Numbers must be numbers, as in a JSON request: numeric strings are refused too.
    bad = train.assign(x=["1.5", "oops"] + [0.0] * (len(train) - 2))
    errors = v.validate_dataframe(bad)["errors"]
    assert errors[:2] == [
        "feature 'x' row 0: expected a number, got str '1.5'",
        "feature 'x' row 1: expected a number, got str 'oops'",
    ]
