"""/predict request parsing and validation (no Ray): every bad input names field and row."""

import numpy as np
import pytest

from sparc_ray.serving.requests import FeatureCheck, RequestError, parse_json, parse_predict

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
        ({"instances": [{**ROW, "income": 1e400}]}, 422, 0, "income", "overflows to inf"),
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


def test_details_are_capped():
    body = {"instances": [{"income": "x", "age": "y", "employment": 1}] * 50}
    assert len(fail(body, 422)["details"]) == 20
