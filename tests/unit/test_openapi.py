"""The OpenAPI document describes the served version's real request schema."""

import jsonschema
import pytest

from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.serving.openapi import build_openapi, example_row
from sparc_ray.serving.validator import api

META = ModelMetadata.from_json(
    {
        "name": "loans",
        "version": "v1",
        "sha256": "0" * 64,
        "classes": ["no", "yes"],
        "features": [
            {"name": "income", "kind": "numeric", "min": 10.0, "max": 30.0},
            {"name": "purpose", "kind": "categorical", "categories": ["car", "home"]},
        ],
        "input_limits": {"income": 1e6},
    }
)


@pytest.fixture(scope="module")
def doc():
    """The admin's document: with the version's training values."""
    return build_openapi(api, META, max_instances=50, training_values=True)


def _body_schema(doc, path):
    return doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_predict_rows_have_exactly_the_versions_features(doc):
    schema = _body_schema(doc, "/predict")
    check = jsonschema.Draft202012Validator(schema)
    row = example_row(META)
    assert row == {"income": 20.0, "purpose": "car"}
    assert check.is_valid({"instances": [row, {"income": None, "purpose": "boat"}]})
    for bad in (
        {"instances": [{"income": 1.0}]},  # a feature missing
        {"instances": [{**row, "zip": 1}]},  # an unknown one
        {"instances": [{**row, "income": 2e6}]},  # beyond the input limit
        {"instances": [{**row, "income": "high"}]},
        {"instances": [row] * 51},  # over max_instances
        {"instances": []},
    ):
        assert not check.is_valid(bad), bad
    items = schema["properties"]["instances"]["items"]
    assert items["properties"]["purpose"]["examples"] == ["car", "home"]


def test_the_anonymous_document_shows_no_training_values():
    """Issue 18, item 5: no training categories and no mid-range of a feature's training
    range, unless the admin token is presented (or the setting allows it)."""
    import json

    from sparc_ray.serving.openapi import OpenAPIDocument

    rendered = OpenAPIDocument(api)
    anonymous = rendered.render(META, 50)
    text = json.dumps(anonymous)
    assert '"car"' not in text and '"home"' not in text
    schema = _body_schema(anonymous, "/predict")
    example = anonymous["paths"]["/predict"]["post"]["requestBody"]["content"]
    row = example["application/json"]["example"]["instances"][0]
    assert row == {"income": 0.0, "purpose": None}  # not the training mid-range, 20.0
    assert jsonschema.Draft202012Validator(schema).is_valid({"instances": [row]})
    assert schema["properties"]["instances"]["items"]["required"] == ["income", "purpose"]
    admin = rendered.render(META, 50, training_values=True)
    assert '"car"' in json.dumps(admin) and rendered.render(META, 50) == anonymous


def test_without_a_served_version_rows_stay_generic():
    doc = build_openapi(api, None, max_instances=50)
    items = _body_schema(doc, "/predict")["properties"]["instances"]["items"]
    assert "required" not in items


def test_errors_security_and_links_are_precise(doc):
    schemes = doc["components"]["securitySchemes"]
    assert {s["scheme"] for s in schemes.values()} == {"bearer"}
    assert doc["paths"]["/reload-model"]["post"]["security"] == [{"adminToken": []}]
    assert doc["paths"]["/feedback"]["post"]["security"] == [{"feedbackToken": []}]
    assert doc["paths"]["/model"]["get"]["security"] == [{}, {"adminToken": []}]
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for status, response in op["responses"].items():
                if status >= "400":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["required"] == ["error", "details"], (path, status)
    link = doc["paths"]["/predict"]["post"]["responses"]["200"]["links"]["feedback"]
    assert link["operationId"] == "feedback"
    assert {op["operationId"] for ops in doc["paths"].values() for op in ops.values()} >= {
        "predict",
        "feedback",
        "reload",
    }
    feedback = jsonschema.Draft202012Validator(_body_schema(doc, "/feedback"))
    assert feedback.is_valid([{"prediction_id": "p", "label": "car", "row": 0}])
    assert not feedback.is_valid([{"prediction_id": "p"}])
