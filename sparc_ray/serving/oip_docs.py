"""The V2 (Open Inference Protocol) operations as the OpenAPI document describes them: path,
summary, request and response schemas, and the errors each one answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from sparc_ray.serving.api_schemas import ADMIN_TOKEN_OPTIONAL, errors, json_content

MODEL = "/v2/models/{name}"
VERSION = "/v2/models/{name}/versions/{version}"
DATATYPES = ["BOOL", "BYTES", "FP32", "FP64"] + [
    f"{s}INT{b}" for s in ("", "U") for b in (8, 16, 32, 64)
]
_PARAMETERS = {"type": ["object", "null"]}
TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string", "description": "a feature (or one [N, F] input)"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": DATATYPES},
        "parameters": _PARAMETERS,
        "data": {"type": "array", "description": "row-major values; null = missing"},
    },
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": ["object", "null"],
            "properties": {
                "content_type": {"type": "string", "enum": ["pd", "np"]},
                "explain": {"type": "boolean", "description": "per-row feature contributions"},
            },
        },
        "inputs": {"type": "array", "minItems": 1, "items": TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {
                        "type": "string",
                        "enum": ["predict", "predict_proba", "explanations"],
                    },
                    "parameters": _PARAMETERS,
                },
            },
        },
    },
}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "model_version", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "outputs": {"type": "array", "items": TENSOR},
    },
}
_TENSOR_META = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
MODEL_METADATA = {
    "type": "object",
    "required": ["name", "versions", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR_META},
        "outputs": {"type": "array", "items": _TENSOR_META},
        "parameters": {"type": "object"},
    },
}
SERVER_METADATA = {
    "type": "object",
    "required": ["name", "version", "extensions"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
    },
}
LIVE = {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}
READY = {
    "type": "object",
    "required": ["ready"],
    "properties": {"ready": {"type": "boolean"}, "version": {"type": "string"}},
}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"200": {"description": description, **json_content(schema)}}


def _operation(
    summary: str, responses: dict[str, Any], versioned: bool, body: bool = False
) -> dict[str, Any]:
    extra: dict[str, Any] = {"responses": responses}
    if versioned:  # as /model?version=: what serves is open, another version needs the token
        extra["security"] = ADMIN_TOKEN_OPTIONAL
        extra["responses"] |= errors(401, 404, 422)
    if body:
        example = {
            "inputs": [{"name": "mean radius", "shape": [1], "datatype": "FP64", "data": [14.1]}],
            "parameters": {"content_type": "pd"},
        }
        extra["requestBody"] = {"required": True, **json_content(INFER_REQUEST, example)}
    return {"summary": summary, "openapi_extra": extra}


_META = _ok("Model metadata: inputs (one per feature), outputs", MODEL_METADATA)
_READY = _ok("Ready", READY) | errors(503)
_INFER = _ok("Outputs: predict, predict_proba (and explanations)", INFER_RESPONSE) | errors(
    400, 404, 413, 415, 503
)
OPERATIONS: dict[str, tuple[str, str, dict[str, Any]]] = {  # id -> (method, path, options)
    "v2_server": ("get", "/v2", _operation("V2: server metadata", _ok("", SERVER_METADATA), False)),
    "v2_live": ("get", "/v2/health/live", _operation("V2: live", _ok("Live", LIVE), False)),
    "v2_ready": ("get", "/v2/health/ready", _operation("V2: ready", _READY, False)),
    "v2_model": ("get", MODEL, _operation("V2: model metadata", _META | errors(404, 503), False)),
    "v2_model_version": (
        "get",
        VERSION,
        _operation("V2: a version's metadata", _META | errors(503), True),
    ),
    "v2_model_ready": (
        "get",
        MODEL + "/ready",
        _operation("V2: model ready", _READY | errors(404), False),
    ),
    "v2_version_ready": ("get", VERSION + "/ready", _operation("V2: version ready", _READY, True)),
    "v2_infer": ("post", MODEL + "/infer", _operation("V2: infer", _INFER, False, body=True)),
    "v2_version_infer": (
        "post",
        VERSION + "/infer",
        _operation("V2: infer with a version", _INFER, True, body=True),
    ),
}


def v2_route(router: APIRouter, operation: str) -> Callable[[Any], Any]:
    """The router's decorator for one V2 operation, described as above."""
    method, path, options = OPERATIONS[operation]
    return getattr(router, method)(path, operation_id=operation, **options)
