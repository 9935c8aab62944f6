"""The Open Inference Protocol (V2) codec (no Ray): metadata shapes, infer bodies as real
clients build them checked into the same columns ``/predict`` builds, every refusal naming
input and row in ``/predict``'s words, and infer answers a client decodes."""

import copy
import inspect
import json

import numpy as np
import orjson
import pandas as pd
import pytest

from sparc_ray import __version__
from sparc_ray.inference.input_rules import MAX_STRING_CHARS, FeatureCheck, checks_from_metadata
from sparc_ray.inference.labels import labels_from_proba
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.serving.oip import parse_infer
from sparc_ray.serving.oip_answers import (
    infer_response,
    label_datatype,
    model_metadata,
    server_metadata,
)
from sparc_ray.serving.requests import RequestError, parse_json, parse_predict

FEATURES = [
    FeatureCheck("income", True, limit=1e9),
    FeatureCheck("age", True),
    FeatureCheck("employment", False),
]
NUMERIC = FEATURES[:2]
ROWS = [
    {"income": 52000, "age": 41.5, "employment": "salaried"},
    {"income": 18000.25, "age": None, "employment": None},
    {"income": 0, "age": 19, "employment": "astronaut"},  # unseen category: scored
]
TYPES = {"income": "FP64", "age": "FP64", "employment": "BYTES"}


def v2_body(rows, nested=False, **extra):
    """One input per feature, as MLServer's pandas codec sends a DataFrame (shape [N, 1] when
    ``nested``, data as one list per row), otherwise shape [N] and flat data."""
    inputs = []
    for f in FEATURES:
        values = [row[f.name] for row in rows]
        shape = [len(rows), 1] if nested else [len(rows)]
        data = [[v] for v in values] if nested else values
        inputs.append({"name": f.name, "shape": shape, "datatype": TYPES[f.name], "data": data})
    return {"inputs": inputs, **extra}


def same_columns(got, want):
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert pd.Series(got[name]).equals(pd.Series(want[name])), name


def refused(body, status=400, features=FEATURES, max_instances=100) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_infer(body, features, max_instances)
    assert info.value.status == status, info.value.body()
    assert info.value.details, "details name what is wrong"
    return info.value


def meta(classes) -> ModelMetadata:
    features = [
        {"name": "income", "kind": "numeric"},
        {"name": "age", "kind": "numeric"},
        {"name": "employment", "kind": "categorical", "categories": ["salaried"]},
    ]
    base = {"name": "loans", "version": "v7", "sha256": "0" * 64, "classes": classes}
    return ModelMetadata.from_json({**base, "features": features})


# -- metadata ----------------------------------------------------------------------------------
def test_server_metadata_names_the_server_and_its_version():
    assert server_metadata() == {"name": "sparc-ray", "version": __version__, "extensions": []}


def test_model_metadata_lists_features_in_model_order_and_both_outputs():
    m = model_metadata(meta(["approve", "refer", "reject"]), "onnxruntime_onnx")
    assert (m["name"], m["versions"], m["platform"]) == ("loans", ["v7"], "onnxruntime_onnx")
    assert m["inputs"] == [
        {"name": "income", "datatype": "FP64", "shape": [-1]},
        {"name": "age", "datatype": "FP64", "shape": [-1]},
        {"name": "employment", "datatype": "BYTES", "shape": [-1]},
    ]
    assert m["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ]
    assert m["parameters"] == {"content_type": "pd"}
    explaining = model_metadata(meta([0, 1]), "sklearn", explanations=True)
    assert [o["datatype"] for o in explaining["outputs"]] == ["INT64", "FP64", "BYTES"]
    assert explaining["outputs"][1]["shape"] == [-1, 2] and explaining["platform"] == "sklearn"


@pytest.mark.parametrize(
    ("classes", "datatype"),
    [(["a", "b"], "BYTES"), ([0, 1, 2], "INT64"), ([False, True], "BOOL"), ([0.5, 1], "FP64")],
)
def test_label_datatype_follows_the_classes(classes, datatype):
    assert label_datatype(classes) == datatype


# -- parsing: the same columns as /predict -----------------------------------------------------
@pytest.mark.parametrize("nested", [False, True])
def test_one_input_per_feature_gives_the_columns_predict_gives(nested):
    data = parse_infer(v2_body(ROWS, nested=nested, id="req-1"), FEATURES, 100)
    same_columns(data.columns, parse_predict({"instances": ROWS}, FEATURES, 100).columns)
    assert (data.n_rows, data.request_id) == (3, "req-1")
    assert data.outputs == ("predict", "predict_proba") and not data.explain
    assert data.predict_input().include_probabilities


def test_inputs_in_any_order_with_int_types_and_mlserver_parameters():
    body = v2_body(ROWS, nested=True, parameters={"content_type": "pd"})
    body["inputs"].reverse()
    body["inputs"][0]["parameters"] = {"content_type": "str"}  # MLServer's string codec
    body["inputs"][2].update(datatype="INT64", data=[[52000], [18000], [0]])
    body["inputs"][1]["parameters"] = None  # the KServe SDK's InferInput.to_dict()
    want = parse_predict(
        {"instances": [{**r, "income": int(r["income"])} for r in ROWS]}, FEATURES, 9
    )
    same_columns(parse_infer(body, FEATURES, 100).columns, want.columns)


@pytest.mark.parametrize("nested", [False, True])
def test_a_single_2d_input_serves_an_all_numeric_model(nested):
    rows = [{"income": r["income"], "age": r["age"]} for r in ROWS]
    matrix = [[r["income"], r["age"]] for r in rows]
    data = matrix if nested else [v for row in matrix for v in row]
    body = {"inputs": [{"name": "input-0", "shape": [3, 2], "datatype": "FP64", "data": data}]}
    got = parse_infer(body, NUMERIC, 100)
    same_columns(got.columns, parse_predict({"instances": rows}, NUMERIC, 100).columns)


def test_nan_in_a_float_input_is_missing_infinity_is_refused_as_predict_refuses_it():
    raw = b'{"inputs": [{"name": "age", "shape": [2], "datatype": "FP32", "data": [NaN, 3]}]}'
    got = parse_infer(parse_json(raw, 10_000), FEATURES[1:2], 10)
    assert np.isnan(got.columns["age"][0]) and got.columns["age"][1] == 3
    raw = raw.replace(b"NaN", b"-Infinity")
    error = refused(parse_json(raw, 10_000), features=FEATURES[1:2])
    assert error.error == "input 'age' row 0: non-finite number -Infinity is not allowed"
    raw = raw.replace(b'"FP32"', b'"INT64"').replace(b"-Infinity", b"NaN")  # no NaN integer
    assert (
        "row 0: non-finite number NaN"
        in refused(parse_json(raw, 999), features=[FEATURES[1]]).error
    )


def test_bool_input_for_a_numeric_feature_is_zero_or_one():
    body = {
        "inputs": [{"name": "age", "shape": [3], "datatype": "BOOL", "data": [True, False, None]}]
    }
    assert parse_infer(body, [FEATURES[1]], 10).columns["age"].tolist()[:2] == [1.0, 0.0]


# -- refusals: the same words as /predict, naming input and row ---------------------------------
@pytest.mark.parametrize(
    ("feature", "value"),
    [
        ("age", "forty"),
        ("age", True),
        ("age", [1]),
        ("income", 2e9),  # beyond this model's input limit
        ("income", 10**400),
        ("employment", 3),
        ("employment", "x" * (MAX_STRING_CHARS + 1)),
        ("employment", {"a": 1}),
    ],
)
def test_a_bad_value_names_input_and_row_in_predicts_words(feature, value):
    rows = copy.deepcopy(ROWS)
    rows[2][feature] = value
    with pytest.raises(RequestError) as predict:
        parse_predict({"instances": rows}, FEATURES, 100)
    (want,) = predict.value.details
    error = refused(v2_body(rows))
    assert error.error == f"input {feature!r} row 2: {want['message']}"
    assert error.details == [want]


def test_an_overflowing_literal_is_named_like_predict_names_it():
    raw = b'{"inputs": [{"name": "age", "shape": [1], "datatype": "FP64", "data": [1e400]}]}'
    assert refused(parse_json(raw, 999), features=[FEATURES[1]]).error == (
        "input 'age' row 0: number out of range (overflows to inf)"
    )


def test_many_bad_values_are_all_in_details_and_the_first_ones_in_the_error():
    rows = [{**ROWS[0], "age": "x", "employment": 1} for _ in range(15)]
    error = refused(v2_body(rows))
    assert len(error.details) == 20 and error.error.endswith("(more in 'details')")
    assert error.error.startswith(
        "input 'age' row 0: expected a number, got str 'x'; input 'age' row 1"
    )


def test_a_bad_cell_of_a_2d_input_names_the_input_the_row_and_the_feature():
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, "a"]}]}
    error = refused(body, features=NUMERIC)
    assert error.error == "input 'x' (feature 'age') row 1: expected a number, got str 'a'"
    assert error.details == [
        {"row": 1, "feature": "age", "message": "expected a number, got str 'a'"}
    ]


def _edit(path, value):
    """A valid body with one field replaced (``path``: keys and list indices)."""
    body = v2_body(ROWS)
    *parents, last = path
    target = body
    for key in parents:
        target = target[key]
    target[last] = value
    return body


def _without(name):
    body = v2_body(ROWS)
    body["inputs"] = [i for i in body["inputs"] if i["name"] != name]
    return body


def _plus(tensor):
    body = v2_body(ROWS)
    body["inputs"].append(tensor)
    return body


AGE = {"name": "age", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]}
BINARY_AGE = {
    "name": "age",
    "shape": [3],
    "datatype": "FP64",
    "parameters": {"binary_data_size": 24},
}
REFUSALS = {
    "missing input": (_without("employment"), "missing input 'employment'"),
    "unknown input": (_plus({**AGE, "name": "zip"}), "unknown input 'zip'"),
    "duplicate input": (_plus(AGE), "input 'age' is given twice"),
    "shape not a column": (_edit(["inputs", 1, "shape"], [1, 3]), "input 'age': shape [1, 3] is"),
    "rank 3": (_edit(["inputs", 1, "shape"], [3, 1, 1]), "input 'age': shape must be [N]"),
    "negative size": (_edit(["inputs", 1, "shape"], [-3]), "input 'age': shape must be"),
    "rows differ": (
        _edit(["inputs", 1], {**AGE, "shape": [2], "data": [1, 2]}),
        "input 'age' has 2 rows; input 'income' has 3",
    ),
    "numeric as BYTES": (
        _edit(["inputs", 1, "datatype"], "BYTES"),
        "input 'age': datatype 'BYTES' does not fit numeric feature 'age'; send FP64 or INT64",
    ),
    "category as FP64": (
        _edit(["inputs", 2, "datatype"], "FP64"),
        "input 'employment': datatype 'FP64' does not fit categorical feature 'employment'",
    ),
    "FP16 is not JSON": (_edit(["inputs", 1, "datatype"], "FP16"), "datatype 'FP16' does not fit"),
    "size differs from shape": (
        _edit(["inputs", 1, "data"], [1, 2, 3, 4]),
        "input 'age': 'data' has 4 values; shape [3] holds 3",
    ),
    "nested data off shape": (
        _edit(["inputs", 1], {**AGE, "shape": [3, 1], "data": [[1], [2, 3], [4]]}),
        "input 'age': nested 'data' does not match shape [3, 1]",
    ),
    "data not a list": (_edit(["inputs", 1, "data"], "1,2,3"), "input 'age': needs a 'datatype'"),
    "data missing": (_edit(["inputs", 1], {**AGE, "data": None}), "input 'age': needs a 'data"),
    "binary data": (
        _edit(["inputs", 1], BINARY_AGE),
        "input 'age': binary data and shared memory are not supported; send the values in 'data'",
    ),
    "shared memory": (
        _edit(["inputs", 1, "parameters"], {"shared_memory_region": "r"}),
        "input 'age': binary data and shared memory are not supported",
    ),
    "base64 content": (
        _edit(["inputs", 2, "parameters"], {"content_type": "base64"}),
        "input 'employment': content_type 'base64' is not supported",
    ),
    "unknown input field": (_edit(["inputs", 1, "dims"], [3]), "input 'age': unknown field 'dims'"),
    "input without name": (_edit(["inputs", 1, "name"], 7), "inputs[1] must be an object"),
    "no inputs": (_edit(["inputs"], []), "'inputs' must be a non-empty array"),
    "no rows": (
        {"inputs": [{**AGE, "shape": [0], "data": []}]},
        "the inputs hold no rows",
    ),
    "unknown output": (
        _edit(["outputs"], [{"name": "probabilities"}]),
        "unknown output 'probabilities'",
    ),
    "outputs not objects": (_edit(["outputs"], ["predict"]), "'outputs' must be an array"),
    "output classification": (
        _edit(["outputs"], [{"name": "predict", "parameters": {"classification": 2}}]),
        "output 'predict': only parameter binary_data is supported",
    ),
    "explain not a bool": (_edit(["parameters"], {"explain": "yes"}), "parameters.explain"),
    "parameters not an object": (_edit(["parameters"], [1]), "request: 'parameters' must be"),
    "content type": (_edit(["parameters"], {"content_type": "pd_json"}), "content_type 'pd_json'"),
    "unknown request field": (_edit(["instances"], []), "unknown request field 'instances'"),
    "id not text": (_edit(["id"], 5), "'id' must be a string"),
    "id with a lone surrogate": (_edit(["id"], "a\ud800"), "'id' must be a string"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_malformed_request_is_a_400_naming_what_is_wrong(case):
    body, words = REFUSALS[case]
    features = [FEATURES[1]] if case == "no rows" else FEATURES
    error = refused(body, features=features)
    assert words in error.error, error.error
    assert error.body() == {"error": error.error, "details": error.details}


def test_a_body_that_is_no_object_is_refused():
    assert "JSON object" in refused([v2_body(ROWS)]).error


def test_a_2d_input_needs_an_all_numeric_model_and_one_column_per_feature():
    matrix = {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}
    assert "all-numeric model (3 features)" in refused({"inputs": [matrix]}).error
    assert "all-numeric model (2 features)" in refused({"inputs": [matrix]}, features=NUMERIC).error


def test_more_rows_than_allowed_is_a_413():
    error = refused(v2_body(ROWS * 2), status=413, max_instances=5)
    assert error.error == "6 rows; the limit is 5 per request (split it)"


def test_an_unknown_input_name_with_a_lone_surrogate_is_escaped():
    error = refused(_plus({**AGE, "name": "z\ud800"}))
    error.error.encode("utf-8")  # the answer can be sent
    orjson.dumps(error.body())


# -- outputs and explain ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("outputs", "parameters", "want", "explain"),
    [
        (None, None, ("predict", "predict_proba"), False),
        ([], {"explain": True}, ("predict", "predict_proba"), True),
        (
            [{"name": "predict_proba", "parameters": {"binary_data": True}}],
            None,
            ("predict_proba",),
            False,
        ),
        ([{"name": "predict"}, {"name": "explanations"}], None, ("predict",), True),
        (
            [{"name": "predict"}, {"name": "predict"}],
            {"binary_data_output": True},
            ("predict",),
            False,
        ),
    ],
)
def test_requested_outputs_and_explain(outputs, parameters, want, explain):
    body = v2_body(ROWS, outputs=outputs, parameters=parameters, model_name="loans")
    got = parse_infer(body, FEATURES, 100)
    assert (got.outputs, got.explain) == (want, explain)
    assert got.predict_input().include_probabilities == ("predict_proba" in want)


# -- answers ------------------------------------------------------------------------------------
PROBA = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.3333334, 0.3333333, 0.3333333]])
CLASSES = ["approve", "refer", "reject"]


def test_infer_response_shapes_both_outputs_row_major():
    body = infer_response("loans", "v7", "req-1", PROBA, CLASSES, ("predict", "predict_proba"))
    assert body["model_name"] == "loans" and body["model_version"] == "v7"
    assert body["id"] == "req-1" and body["parameters"] == {"content_type": "pd"}
    predict, proba = body["outputs"]
    assert predict == {
        "name": "predict",
        "datatype": "BYTES",
        "shape": [3],
        "data": labels_from_proba(PROBA, CLASSES).tolist(),
        "parameters": {"content_type": "str"},
    }
    assert predict["data"] == ["approve", "reject", "approve"]
    assert proba["datatype"] == "FP64" and proba["shape"] == [3, 3]
    assert proba["data"] == PROBA.round(6).ravel().tolist()
    orjson.dumps(body)


def test_infer_response_answers_only_what_was_asked_and_adds_explanations():
    explanations = [{"base_value": 0.5, "contributions": {"age": np.float64(0.1)}}] * 3
    body = infer_response("m", "v", None, PROBA, [0, 1, 2], ("predict",), explanations)
    assert "id" not in body
    predict, explained = body["outputs"]
    assert predict["datatype"] == "INT64" and predict["data"] == [0, 2, 0]
    assert explained["name"] == "explanations" and explained["shape"] == [3]
    assert all(
        json.loads(e) == {"base_value": 0.5, "contributions": {"age": 0.1}}
        for e in explained["data"]
    )


def test_infer_response_takes_the_postprocessors_labels_and_extra_parameters():
    body = infer_response(
        "m", "v", None, None, CLASSES, ("predict",), labels=["refer"] * 3,
        parameters={"prediction_id": "p-1"},
    )  # fmt: skip
    assert body["outputs"][0]["data"] == ["refer"] * 3
    assert body["parameters"] == {"content_type": "pd", "prediction_id": "p-1"}


@pytest.mark.parametrize(
    ("proba", "outputs", "explanations"),
    [
        (None, ("predict",), None),  # neither labels nor probabilities
        (PROBA[:, :2], ("predict_proba",), None),  # one class missing
        (PROBA, ("predict",), [{}]),  # one explanation for three rows
        (PROBA, ("labels",), None),
    ],
)
def test_infer_response_refuses_what_it_cannot_answer(proba, outputs, explanations):
    with pytest.raises(ValueError):
        infer_response("m", "v", None, proba, CLASSES, outputs, explanations)


# -- real clients -------------------------------------------------------------------------------
def _triton():
    return pytest.importorskip(
        "tritonclient.http", reason="tritonclient[http] (dev extra) is not installed"
    )


def _triton_request(http, inputs, **kwargs):
    """The body ``InferenceServerClient.infer`` posts, and its JSON size (binary data)."""
    from tritonclient.http._utils import _get_inference_request

    args = {
        "inputs": inputs,
        "request_id": "",
        "outputs": None,
        "sequence_id": 0,
        "sequence_start": False,
        "sequence_end": False,
        "priority": 0,
        "timeout": None,
        "custom_parameters": None,
        **kwargs,
    }
    accepted = inspect.signature(_get_inference_request).parameters
    return _get_inference_request(**{k: v for k, v in args.items() if k in accepted})


def _triton_inputs(http, frame, binary_data=False):
    inputs = []
    for f in FEATURES:
        column = frame[f.name].to_numpy(dtype=object if not f.numeric else np.float64)
        tensor = http.InferInput(f.name, list(column.shape), "BYTES" if not f.numeric else "FP64")
        tensor.set_data_from_numpy(column, binary_data=binary_data)
        inputs.append(tensor)
    return inputs


def test_tritonclient_json_request_gives_predicts_columns_and_decodes_the_answer():
    http = _triton()
    frame = pd.DataFrame([{**r, "employment": r["employment"] or "salaried"} for r in ROWS])
    outputs = [http.InferRequestedOutput("predict"), http.InferRequestedOutput("predict_proba")]
    raw, json_size = _triton_request(
        http, _triton_inputs(http, frame), request_id="r-9", outputs=outputs
    )
    assert json_size is None  # the whole body is JSON
    data = parse_infer(parse_json(raw, 1_000_000), FEATURES, 100)  # age NaN: missing
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    same_columns(data.columns, parse_predict({"instances": rows}, FEATURES, 100).columns)
    assert data.request_id == "r-9"
    answer = infer_response("loans", "v7", data.request_id, PROBA, CLASSES, data.outputs)
    result = http.InferResult.from_response_body(orjson.dumps(answer))
    assert result.as_numpy("predict").tolist() == ["approve", "reject", "approve"]
    np.testing.assert_allclose(result.as_numpy("predict_proba"), PROBA.round(6))


def test_tritonclient_2d_fp32_input_with_the_explain_parameter():
    http = _triton()
    matrix = np.array([[52000.5, 41.5], [0.1, np.nan]], dtype=np.float32)
    tensor = http.InferInput("input-0", [2, 2], "FP32")
    tensor.set_data_from_numpy(matrix, binary_data=False)
    raw, _ = _triton_request(http, [tensor], custom_parameters={"explain": True})
    data = parse_infer(parse_json(raw, 1_000_000), NUMERIC, 100)
    assert data.explain and data.outputs == ("predict", "predict_proba")
    np.testing.assert_array_equal(data.columns["income"], matrix[:, 0].astype(np.float64))
    np.testing.assert_array_equal(data.columns["age"], matrix[:, 1].astype(np.float64))


def test_tritonclient_binary_request_is_refused_naming_the_input():
    http = _triton()
    raw, json_size = _triton_request(http, _triton_inputs(http, pd.DataFrame(ROWS[:1]), True))
    assert json_size is not None
    error = refused(parse_json(raw[:json_size], 1_000_000))
    assert error.error.startswith("input 'income': binary data and shared memory")


def test_metadata_checks_are_the_ones_parse_infer_applies():
    checks = checks_from_metadata(meta(CLASSES))
    assert [(c.name, c.numeric) for c in checks] == [(f.name, f.numeric) for f in FEATURES]
    body = v2_body(ROWS)
    assert parse_infer(body, checks, 10).n_rows == 3
    m = model_metadata(meta(CLASSES))
    assert [(i["name"], i["datatype"]) for i in m["inputs"]] == [
        (i["name"], i["datatype"]) for i in body["inputs"]
    ]
