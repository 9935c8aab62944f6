"""OpenAPI descriptions and examples for the HTTP API (served at /docs and /openapi.json)."""

from __future__ import annotations

from typing import Any

DOCS = """
Predictions from the model promoted in the sparc-ray registry.

* `POST /predict` scores rows; `GET /model` lists the features a row needs.
* Errors are JSON `{"error", "details": [{"row", "feature", "message"}]}` with status
  400 (not JSON), 413 (body or row count over the limit), 422 (rows do not match the
  model's features), 503 (no model loaded). A 500 carries an `error_id` found in the logs.
* `POST /reload-model` needs the release-control token and `POST /feedback` the feedback
  token (`Authorization: Bearer <token>`, each at least 32 characters); with no token
  configured they answer 403.
"""

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
RELEASE_TOKEN = [{"releaseToken": []}]  # release control: /reload-model
RELEASE_TOKEN_OPTIONAL = [{}, {"releaseToken": []}]  # more detail with the release token
FEEDBACK_TOKEN = [{"feedbackToken": []}]


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"content": {"application/json": content}}


def _errors(*codes: int) -> dict[str, Any]:
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
    return {str(c): {"description": text[c], **_json(ERROR_BODY)} for c in codes}


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
_EXAMPLE_ROW = {"mean radius": 14.1, "mean texture": 19.3, "...": "every other feature"}

OPENAPI_EXTRA: dict[str, dict[str, Any]] = {
    "predict": {
        "requestBody": {
            "required": True,
            **_json(PREDICT_REQUEST, {"instances": [_EXAMPLE_ROW], "include_probabilities": True}),
        },
        "responses": {
            "200": {
                "description": "Predictions",
                **_json(
                    PREDICT_RESPONSE,
                    {
                        "predictions": ["benign"],
                        "probabilities": [[0.97, 0.03]],
                        "classes": ["benign", "malignant"],
                        "model_name": "breast_cancer",
                        "model_version": "v20261126-061517-005972-7910a4",
                        "prediction_id": "0f0b6c1e-3f55-4b8e-9d43-3f3f1f6f2a10",
                        "timestamp": "2026-11-26T06:15:17+00:00",
                        "processing_time_ms": 4.2,
                    },
                ),
                "links": {
                    "feedback": {
                        "operationId": "feedback",
                        "description": "Send the true label of a predicted row",
                        "requestBody": {
                            "prediction_id": "$response.body#/prediction_id",
                            "row": 0,
                            "label": "$response.body#/predictions/0",
                        },
                    }
                },
            },
            **_errors(400, 413, 415, 422, 503),
        },
    },
    "health": {
        "responses": {
            "200": {
                "description": "A model is loaded",
                **_json(
                    {"type": "object"},
                    {
                        "status": "healthy",
                        "model_loaded": True,
                        "model_version": "v20261126-061517-005972-7910a4",
                        "production": "v20261126-061517-005972-7910a4",
                        "pinned": None,
                        "release": {
                            "id": "r-3f2a9c1d0b",
                            "version": "v20261127-093000-000001-a1b2c3",
                            "mode": "canary",
                            "weight": 20.0,
                            "baseline": "v20261126-061517-005972-7910a4",
                            "started_at": "2026-11-27T09:31:00.000+00:00",
                            "started_by": "cli",
                            "policy": {"min_requests": 300, "min_feedback_rows": 50},
                        },
                        "release_evidence": {
                            "release_id": "r-3f2a9c1d0b",
                            "versions": {
                                "v20261127-093000-000001-a1b2c3": {
                                    "requests": 212,
                                    "server_errors": 0,
                                    "p99_ms": 4.1,
                                    "labelled_rows": 40,
                                    "accuracy": 0.95,
                                    "prediction_drift": 0.02,
                                }
                            },
                        },
                        "last_release_decision": None,
                        "errors": {"load": None, "unavailable": None, "registry": None},
                        "timestamp": "2026-11-27T09:35:17+00:00",
                        "uptime_seconds": 12.5,
                    },
                ),
            },
            **_errors(503),
        }
    },
    "model": {
        "security": RELEASE_TOKEN_OPTIONAL,
        "responses": {
            "200": {
                "description": "The served version (or ?version=): name, version, created_at, "
                "model_type, target, classes, each feature's name / kind / categories and the "
                "engine. With the release-control token: the whole metadata.json (drift "
                "references with ?full=true), `serving` saying why sklearn serves if it does"
            },
            **_errors(404, 422, 503),
        },
    },
    "metrics": {
        "security": RELEASE_TOKEN_OPTIONAL,
        "responses": {
            "200": {
                "description": (
                    "Requests, errors and latency percentiles seen by this ingress replica since "
                    "it started (latencies: last 10,000 requests), drift and feedback accuracy "
                    "from the "
                    "Postprocessor, and system metrics of the node running the ingress. Prometheus "
                    "metrics for all replicas are on the Ray metrics endpoint (ray_ml_*)."
                )
            }
        },
    },
    "reload": {
        "security": RELEASE_TOKEN,
        "requestBody": {
            "required": False,
            **_json(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "version": {
                            "type": "string",
                            "minLength": 1,
                            "description": "version id or 'latest' to promote; absent or "
                            "'production': re-read the registry",
                        },
                        "force": {
                            "type": "boolean",
                            "description": "promote a version that failed its gates",
                        },
                    },
                },
                {"version": "v20261126-061517-005972-7910a4"},
            ),
        },
        "responses": {
            "200": {
                "description": "production moved (or re-read); every replica routes by it",
                **_json(
                    {"type": "object"},
                    {
                        "status": "ok",
                        "production": "v20261126-061517-005972-7910a4",
                        "previous": "v20261120-101010-000001-0a0b0c",
                        "pinned": None,
                        "model_version": "v20261126-061517-005972-7910a4",
                        "release": None,
                        "engine": "onnx",
                    },
                ),
            },
            "202": {"description": "production moved; the version is still loading"},
            **_errors(400, 401, 403, 404, 409, 413, 415, 422),
        },
    },
    "feedback": {
        "security": FEEDBACK_TOKEN,
        "requestBody": {
            "required": True,
            **_json(
                {
                    "oneOf": [
                        FEEDBACK_ITEM,
                        {"type": "array", "minItems": 1, "items": FEEDBACK_ITEM},
                    ]
                },
                [
                    {
                        "prediction_id": "0f0b6c1e-3f55-4b8e-9d43-3f3f1f6f2a10",
                        "row": 0,
                        "label": "benign",
                    }
                ],
            ),
        },
        "responses": {
            "200": {
                "description": "Matched labels and rolling accuracy",
                **_json(
                    {"type": "object"},
                    {"matched": 1, "unknown": [], "invalid": [], "accuracy": 0.97, "labelled": 250},
                ),
            },
            **_errors(400, 401, 403, 413, 415, 422),
        },
    },
}
