"""One rule engine, three paths: the same hostile cells through ``/predict``'s parser (real
JSON bytes), ``DataValidator`` (a DataFrame) and batch scoring's ``check_batch`` (Arrow, as the
batch source reads it) get the same accept / reject decision and the same reason."""

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sparc_ray.batch.scorer import check_batch
from sparc_ray.data.loading import FeatureSpec
from sparc_ray.data.validation import DataValidator
from sparc_ray.inference.input_rules import FeatureCheck
from sparc_ray.serving.requests import RequestError, parse_json, parse_predict

LIMIT = 1e6
CHECKS = [FeatureCheck("num", True, LIMIT), FeatureCheck("cat", False)]
SPECS = [
    FeatureSpec("num", "numeric", "float64", 0.0),
    FeatureSpec("cat", "categorical", "object", 0.0),
]
GOOD = {"num": 1.5, "cat": "a"}
SURROGATE = "\ud800"

CASES = [  # feature, hostile value, the reason every path gives (None: accepted)
    ("num", None, None),
    ("num", -2.5e5, None),
    ("num", math.inf, "non-finite number Infinity is not allowed"),
    ("num", -math.inf, "non-finite number -Infinity is not allowed"),
    ("num", 2e6, "number out of range: |value| must be <= 1e+06 for this model"),
    ("num", -3e38, "number out of range: |value| must be <= 1e+06 for this model"),
    ("num", "abc", "expected a number, got str 'abc'"),
    ("cat", None, None),
    ("cat", "unseen category", None),
    ("cat", 5, "expected a string category, got int 5"),
    ("cat", 2.5, "expected a string category, got float 2.5"),
    ("cat", "x" * 1001, "string longer than 1000 characters"),
    ("cat", SURROGATE, "string contains a lone UTF-16 surrogate"),
]


def via_http(rows: list[dict]) -> dict[tuple[int, str], str]:
    raw = json.dumps({"instances": rows}).encode()  # Infinity tokens, \ud800 escapes
    try:
        parse_predict(parse_json(raw, 10**6), CHECKS, 100)
    except RequestError as exc:
        assert exc.status == 422, exc.body()
        return {(d["row"], d["feature"]): d["message"] for d in exc.details}
    return {}


def via_dataframe(rows: list[dict]) -> dict[tuple[int, str], str]:
    # object dtype keeps each record's value as sent (pandas would turn [None, 5] into floats
    # and store strings in Arrow, which cannot hold a lone surrogate).
    frame = pd.DataFrame(rows, dtype=object)
    result = DataValidator(features=SPECS, input_limits={"num": LIMIT}).validate_dataframe(frame)
    found = {}
    for error in result["errors"]:  # "feature 'num' row 1: reason"
        head, reason = error.split(": ", 1)
        name, row = head.removeprefix("feature ").split(" row ")
        found[(int(row), name.strip("'"))] = reason
    return found


def arrow_column(values: list) -> pa.Array:
    """As the batch source reads a column: Parquet keeps one type per column; a column that
    mixes types can only come from CSV, where every cell is text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def via_arrow(rows: list[dict]) -> dict[tuple[int, str], str]:
    table = pa.table({c.name: arrow_column([r[c.name] for r in rows]) for c in CHECKS})
    _, _, problems = check_batch(table, CHECKS)
    return {(p["index"], p["feature"]): p["reason"] for p in problems}


@pytest.mark.parametrize(("feature", "value", "reason"), CASES)
def test_three_paths_decide_alike_with_the_same_reason(feature, value, reason):
    # The first row leaves the feature missing, so an Arrow column keeps the hostile value's
    # own type, as a Parquet file would (CSV has text only: "5" is a category there).
    rows = [{**GOOD, feature: None}, {**GOOD, feature: value}]
    expected = {} if reason is None else {(1, feature): reason}
    assert via_http(rows) == expected
    assert via_dataframe(rows) == expected
    if value == SURROGATE:  # Arrow strings are UTF-8: a lone surrogate cannot be stored
        with pytest.raises(UnicodeEncodeError):
            pa.array([value])
        return
    assert via_arrow(rows) == expected


def test_every_path_keeps_missing_values_as_nan_for_the_imputer():
    rows = [GOOD, {"num": None, "cat": None}]
    data = parse_predict({"instances": rows}, CHECKS, 10)
    table = pa.table({c.name: arrow_column([r[c.name] for r in rows]) for c in CHECKS})
    columns, good, _ = check_batch(table, CHECKS)
    assert good.all()
    for cols in (data.columns, columns):
        assert np.isnan(cols["num"][1]) and pd.isna(cols["cat"][1])
        assert cols["num"][0] == 1.5 and cols["cat"][0] == "a"
