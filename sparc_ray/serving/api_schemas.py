"""JSON Schemas of the HTTP API's bodies and its security requirements, for the OpenAPI
document (``api_docs``, ``openapi``)."""

from __future__ import annotations

from typing import Any

ERROR_BODY = {
    "type": "object",
    "required": ["error", "details"],
    "properties": {
        "error": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["row", "feature", "message"],
                "properties": {
                    "row": {"type": ["integer", "null"]},
                    "feature": {"type": ["string", "null"]},
                    "message": {"type": "string"},
                },
            },
        },
        "prediction_id": {"type": "string"},
        "error_id": {"type": "string", "description": "500 only: the id in the log line"},
    },
}
Security = list[dict[str, list[str]]]
ADMIN_TOKEN: Security = [{"adminToken": []}]  # /reload-model
ADMIN_TOKEN_OPTIONAL: Security = [{}, {"adminToken": []}]  # more detail with the admin token
FEEDBACK_TOKEN: Security = [{"feedbackToken": []}]


def json_content(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"content": {"application/json": content}}


def errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Body is not JSON (or nested too deep), or a malformed Content-Length",
        401: "Wrong bearer token",
        403: "Endpoint disabled",
        404: "Unknown version",
        409: "Version refused (failed gates, sha256 or signature mismatch) or not loadable; "
        "production is unchanged or the previous version keeps serving",
        413: "Body (counted as it streams) or instance count over the limit",
        415: "Content-Type is not JSON",
        422: "Invalid input: rows, fields or parameters (the details name each)",
        503: "No model loaded",
    }
    return {str(c): {"description": text[c], **json_content(ERROR_BODY)} for c in codes}


PREDICT_REQUEST = {
    "type": "object",
    "required": ["instances"],
    "additionalProperties": False,
    "properties": {
        "instances": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": {"type": ["number", "string", "null"]},
            },
            "description": "Rows: every feature of GET /model, by name. null = missing "
            "(imputed). Numbers for numeric features, strings for categorical.",
        },
        "include_probabilities": {"type": "boolean", "default": False},
        "explain": {
            "type": "boolean",
            "default": False,
            "description": "per-row feature contributions (`explanations`)",
        },
    },
}
PREDICT_RESPONSE = {
    "type": "object",
    "required": [
        "predictions",
        "probabilities",
        "classes",
        "model_name",
        "model_version",
        "prediction_id",
        "timestamp",
        "processing_time_ms",
    ],
    "properties": {
        "predictions": {"type": "array", "items": {}},
        "probabilities": {
            "type": ["array", "null"],
            "items": {"type": "array", "items": {"type": "number"}},
            "description": "One list per row, in `classes` order",
        },
        "classes": {"type": "array", "items": {}},
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "prediction_id": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "processing_time_ms": {"type": "number"},
        "explanations": {
            "type": ["array", "null"],
            "items": {"type": "object"},
            "description": "With `explain`: per row, base_value + contributions (by feature) = "
            "the model's output in `space`, for `class`; null when the version has none",
        },
        "explanation_error": {"type": "string", "description": "why there are none"},
    },
}
FEEDBACK_ITEM = {
    "type": "object",
    "required": ["prediction_id", "label"],
    "properties": {
        "prediction_id": {"type": "string", "description": "from the /predict response"},
        "row": {"type": "integer", "minimum": 0, "default": 0, "description": "row index"},
        "label": {"description": "the true class of that row"},
    },
}
FEEDBACK_REQUEST = {
    "oneOf": [FEEDBACK_ITEM, {"type": "array", "minItems": 1, "items": FEEDBACK_ITEM}]
}
