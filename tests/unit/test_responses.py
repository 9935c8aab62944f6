"""The ``/predict`` bodies the Validator shapes from one micro-batch's stacked answers, and
the status, body and error label of a request that raised."""

import json

import numpy as np

from sparc_ray.serving.messages import NoModelError, RequestMeta
from sparc_ray.serving.requests import RequestError
from sparc_ray.serving.responses import failed_prediction, shape_responses


def test_each_request_gets_its_own_rows_in_order_and_probabilities_only_when_asked():
    requests = (RequestMeta("a", 2, True), RequestMeta("b", 1, False), RequestMeta("c", 1, True))
    proba = np.array([[0.1, 0.9], [0.6, 0.4], [0.3, 0.7], [0.123456789, 0.876543211]])
    labels = ["yes", "no", "yes", "yes"]

    bodies = shape_responses(requests, proba, labels, ["no", "yes"], "v7")

    assert [b["predictions"] for b in bodies] == [["yes", "no"], ["yes"], ["yes"]]
    assert bodies[0]["probabilities"] == [[0.1, 0.9], [0.6, 0.4]]
    assert bodies[1]["probabilities"] is None
    assert bodies[2]["probabilities"] == [[0.123457, 0.876543]]  # rounded to 6 places
    assert all(b["classes"] == ["no", "yes"] and b["model_version"] == "v7" for b in bodies)
    assert json.loads(json.dumps(bodies)) == bodies  # plain JSON types, no numpy left


def test_a_failed_request_is_a_4xx_naming_the_cell_a_503_or_a_500_with_an_error_id():
    cell = {"row": 3, "feature": "mean radius", "message": "must be a number"}
    refused = RequestError(422, "invalid feature values", [cell])
    response, reason, status = failed_prediction(refused, "p1", "s3://bucket/models")
    body = json.loads(response.body)
    assert (status, reason, response.status_code) == (422, "invalid_input", 422)
    assert body == {"error": "invalid feature values", "details": [cell], "prediction_id": "p1"}
    too_big = RequestError(413, "request body is over the limit of 10 bytes")
    assert failed_prediction(too_big, "p1", "store")[1:] == ("payload_too_large", 413)

    missing = NoModelError("cannot read s3://bucket/models/breast_cancer/v1/model.onnx")
    response, reason, status = failed_prediction(missing, "p2", "s3://bucket/models")
    body = json.loads(response.body)
    assert (status, reason) == (503, "no_model")
    assert "bucket" not in json.dumps(body)  # no storage location for anonymous callers

    response, reason, status = failed_prediction(KeyError("bug"), "p3", "store")
    body = json.loads(response.body)
    assert (status, reason) == (500, "internal") and len(body["error_id"]) == 12
    assert "bug" not in json.dumps(body)  # the cause is logged, not answered
