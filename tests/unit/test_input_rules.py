"""/predict request parsing and validation (no Ray): every bad input names field and row.
The same hostile cells get the same decision and reason on all three paths (HTTP JSON, a
DataFrame through ``DataValidator``, Arrow in batch scoring): ``test_three_paths``."""

import numpy as np
import pytest

from sparc_ray.inference.input_rules import FeatureCheck
from sparc_ray.serving.requests import RequestError, parse_json, parse_predict

FEATURES = [
    FeatureCheck("income", True),
    FeatureCheck("age", True),
    FeatureCheck("employment", False),
]
ROW = {"income": 52000, "age": 41.5, "employment": "salaried"}


def fail(body, status, max_instances=100):
    with pytest.raises(RequestError) as info:
        parse_predict(body, FEATURES, max_instances)
    assert info.value.status == status, info.value.body()
    return info.value.body()


def test_valid_rows_become_typed_columns_in_model_order():
    data = parse_predict(
        {
            "instances": [ROW, {**ROW, "age": None, "employment": None}],
            "include_probabilities": True,
        },
        FEATURES,
        100,
    )
    assert list(data.columns) == ["income", "age", "employment"]
    assert data.columns["income"].dtype == np.float64 and data.n_rows == 2
    assert np.isnan(data.columns["age"][1]) and data.columns["employment"][1] != "None"
    assert data.include_probabilities


def test_unseen_category_is_accepted_the_pipeline_ignores_it():
    assert parse_predict({"instances": [{**ROW, "employment": "astronaut"}]}, FEATURES, 10)


@pytest.mark.parametrize(
    ("body", "status", "row", "feature", "message"),
    [
        ({"instances": [{"income": 1, "age": 2}]}, 422, 0, "employment", "missing feature"),
        ({"instances": [ROW, {**ROW, "zip": "x"}]}, 422, 1, "zip", "unknown feature"),
        ({"instances": [ROW, {**ROW, "age": "forty"}]}, 422, 1, "age", "expected a number"),
        ({"instances": [{**ROW, "age": True}]}, 422, 0, "age", "expected a number, got bool"),
        ({"instances": [{**ROW, "employment": 3}]}, 422, 0, "employment", "expected a string"),
        (
            parse_json(b'{"instances": [{"income": 1e400, "age": 1, "employment": "x"}]}', 999),
            422,
            0,
            "income",
            "overflows to inf",
        ),
        ({"instances": []}, 422, None, "instances", "missing, empty"),
        ({"instances": [ROW, 5]}, 422, 1, None, "must be a JSON object"),
        (
            {"instances": [ROW], "include_probabilities": "yes"},
            422,
            None,
            "include_probabilities",
            "true or false",
        ),
        ({"instances": [ROW], "extra": 1}, 422, None, "extra", "unknown field"),
    ],
)
def test_each_bad_input_names_row_and_feature(body, status, row, feature, message):
    details = fail(body, status)["details"]
    assert any(
        d["row"] == row and d["feature"] == feature and message in d["message"] for d in details
    ), details


def test_nan_and_infinity_tokens_are_reported_with_their_position():
    body = parse_json(
        b'{"instances": [{"income": NaN, "age": -Infinity, "employment": "x"}]}', 10_000
    )
    details = fail(body, 422)["details"]
    assert {(d["row"], d["feature"]) for d in details} == {(0, "income"), (0, "age")}
    assert "NaN" in details[0]["message"]


def test_size_limits_and_bad_json():
    with pytest.raises(RequestError) as info:
        parse_json(b"x" * 101, 100)
    assert info.value.status == 413
    with pytest.raises(RequestError) as info:
        parse_json(b'{"instances": [', 100)
    assert info.value.status == 400 and "not valid JSON" in info.value.error
    assert "limit is 2" in fail({"instances": [ROW, ROW, ROW]}, 413, max_instances=2)["error"]
    assert fail([ROW], 400)["error"].startswith("request body must be a JSON object")


def test_explanations_are_asked_for_a_bounded_number_of_rows():
    explained = parse_predict({"instances": [ROW] * 3, "explain": True}, FEATURES, 100)
    explained.check_explain_rows(3)
    with pytest.raises(RequestError) as info:
        explained.check_explain_rows(2)
    assert info.value.status == 413 and "3 rows with explain" in info.value.error
    assert info.value.details[0]["feature"] == "explain"
    parse_predict({"instances": [ROW] * 3}, FEATURES, 100).check_explain_rows(2)  # no explain


def test_details_are_capped():
    body = {"instances": [{"income": "x", "age": "y", "employment": 1}] * 50}
    assert len(fail(body, 422)["details"]) == 20


LIMITED = [FeatureCheck("income", True, 1e6), FeatureCheck("employment", False)]


@pytest.mark.parametrize(
    ("value", "feature", "message"),
    [
        (1e39, "income", "out of range"),  # finite JSON, but not for this model
        (10**400, "income", "too large for a float"),  # an integer literal of 401 digits
        (-2e6, "income", "out of range"),
        ("\ud800", "employment", "lone UTF-16 surrogate"),
        ("x" * 5000, "employment", "longer than"),
        ([1.0], "income", "expected a number, got list"),
        ({"a": 1}, "employment", "expected a string category, got dict"),
    ],
)
def test_values_the_model_cannot_score_are_refused_before_any_batch(value, feature, message):
    row = {"income": 10.0, "employment": "salaried", feature: value}
    with pytest.raises(RequestError) as info:
        parse_predict({"instances": [{"income": 1, "employment": "x"}, row]}, LIMITED, 10)
    assert info.value.status == 422
    (d,) = info.value.details
    assert (d["row"], d["feature"]) == (1, feature) and message in d["message"], d


def test_hostile_json_is_a_400_not_a_crash():
    for raw in (b"[" * 5000, b'{"instances": [{"income": 1' + b"0" * 400 + b"}]}"):
        try:
            body = parse_json(raw, 100_000)
        except RequestError as exc:
            assert exc.status == 400
            continue
        with pytest.raises(RequestError) as info:  # parsed: the value rules refuse it
            parse_predict(body, LIMITED, 10)
        assert info.value.status in (400, 422)


def test_surrogate_keys_are_echoed_escaped():
    import orjson

    with pytest.raises(RequestError) as info:
        parse_predict({"instances": [{"income": 1, "employment": "x", "\udc00": 1}]}, LIMITED, 10)
    orjson.dumps(info.value.body())  # the 422 body can be encoded
    assert info.value.details[0]["message"] == "unknown feature"


@pytest.mark.parametrize(
    "cell",
    [None, 0, -3, 2.5, 1e6, -1e6, float("nan"), 1e6 + 1, float("inf"), True, "1.5", 10**400, [1]],
)
def test_one_pass_over_all_numbers_decides_as_the_column_rules(cell):
    """``clean_numeric_block`` answers a request's numeric features at once only when the
    per-column rules find nothing wrong, with the same arrays; else the columns decide
    (``check_columns``, used by /predict and V2 infer, gives the per-column answers)."""
    from sparc_ray.inference.input_rules import check_column, check_columns, clean_numeric_block

    checks = [FeatureCheck("a", True, 1e6), FeatureCheck("b", True)]
    cells = [[1.0, cell, None], [7, 8.5, -2]]
    per_column = [check_column(list(c), k) for c, k in zip(cells, checks, strict=True)]
    block = clean_numeric_block(cells, checks)
    if any(c.bad.any() for c in per_column) or cell is True or cell == "1.5":
        assert block is None  # bool and numeric text are refused by the column rules too
        assert any(c.bad.any() for c in per_column)
    else:
        assert block is not None
        for got, want in zip(block, per_column, strict=True):
            np.testing.assert_array_equal(got, want.values)
    for got, want in zip(check_columns(cells, checks), per_column, strict=True):
        np.testing.assert_array_equal(got.values, want.values)  # what every path uses
        np.testing.assert_array_equal(got.bad, want.bad)
        assert got.reasons == want.reasons
    assert clean_numeric_block([], []) == []
