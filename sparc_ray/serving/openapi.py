"""The OpenAPI document as served: the static descriptions (``api_docs``) plus the serving
version's own request schema, so client generators and fuzzers get the real contract.

``/predict`` rows are objects with exactly the version's features, all required: numbers
(or null = missing) within the version's input limits for numeric features, strings (or
null) for categorical ones (an unseen category is accepted: the model treats it as none of
the known ones). Bearer schemes guard the admin and feedback operations; a link leads from a
prediction to its feedback.

Training values (the categories, as examples, and each numeric feature's mid-range in the
example row) are only in the document rendered with ``training_values=True``: for the admin
token, or when ``ValidatorSettings.openapi_training_values`` says anyone may see them. The
anonymous document's example row holds 0 for numbers and null for categories.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from sparc_ray.inference.input_rules import FLOAT32_MAX, MAX_STRING_CHARS
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.serving.api_schemas import ERROR_BODY

SECURITY_SCHEMES = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin token (serve_config.yaml: admin_token_env): "
        "/reload-model, and the full /model and /metrics; with none configured, 403",
    },
    "feedbackToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The feedback token (serve_config.yaml: feedback_token_env): /feedback "
        "only; with none configured, 403",
    },
}


def row_schema(meta: ModelMetadata, training_values: bool = False) -> dict[str, Any]:
    """JSON Schema of one ``/predict`` row for the version described by ``meta`` (with its
    training categories as examples if ``training_values``)."""
    properties: dict[str, Any] = {}
    for f in meta.features:
        if f.kind == "numeric":
            limit = min(meta.input_limits.get(f.name, FLOAT32_MAX), FLOAT32_MAX)
            properties[f.name] = {
                "type": ["number", "null"],
                "minimum": -limit,
                "maximum": limit,
            }
        else:
            properties[f.name] = {
                "type": ["string", "null"],
                "maxLength": MAX_STRING_CHARS,
                **({"examples": f.categories[:50]} if f.categories and training_values else {}),
            }
    return {
        "type": "object",
        "required": meta.feature_names,
        "properties": properties,
        "additionalProperties": False,
    }


def example_row(meta: ModelMetadata, training_values: bool = True) -> dict[str, Any]:
    """A valid row: mid-range numbers, the first training category; without
    ``training_values``, 0 and null (valid for every version)."""
    row: dict[str, Any] = {}
    for f in meta.features:
        if not training_values:
            row[f.name] = 0.0 if f.kind == "numeric" else None
        elif f.kind == "numeric":
            lo, hi = f.min, f.max
            row[f.name] = round((lo + hi) / 2, 6) if lo is not None and hi is not None else 0.0
        else:
            row[f.name] = f.categories[0] if f.categories else None
    return row


def build_openapi(
    app: FastAPI, meta: ModelMetadata | None, max_instances: int, training_values: bool = False
) -> dict:
    """The app's OpenAPI document, with ``meta``'s features when a version serves (and their
    training values if ``training_values``: the admin's document)."""
    schema = copy.deepcopy(
        get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
    )
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    # FastAPI documents its own 422 body for query parameters; the app answers with ours
    # (Validator's RequestValidationError handler), so document that one.
    for ops in schema["paths"].values():
        for op in ops.values():
            response = op["responses"].get("422")
            if response and "$ref" in str(response.get("content")):
                response["content"] = {"application/json": {"schema": ERROR_BODY}}
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    if not components.get("schemas"):
        components.pop("schemas", None)
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    instances = body["schema"]["properties"]["instances"]
    instances["maxItems"] = max_instances
    if meta is not None:
        instances["items"] = row_schema(meta, training_values)
        instances["description"] = (
            f"Rows for {meta.name} version {meta.version}: every feature, by name"
        )
        row = example_row(meta, training_values)
        body["example"] = {"instances": [row], "include_probabilities": True}
    return schema


class OpenAPIDocument:
    """``build_openapi`` once per (served version, max_instances, training_values)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._cached: dict[bool, tuple[tuple, dict]] = {}

    def render(
        self, meta: ModelMetadata | None, max_instances: int, training_values: bool = False
    ) -> dict:
        key = (meta and meta.version, max_instances)
        cached = self._cached.get(training_values)
        if cached is None or cached[0] != key:
            doc = build_openapi(self.app, meta, max_instances, training_values)
            self._cached[training_values] = cached = key, doc
        return cached[1]
