"""OpenAPI descriptions and examples for the HTTP API (served at /docs and /openapi.json),
and ``route``: each endpoint's method, path, summary and description in one table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI

from sparc_ray.serving.api_schemas import (
    ADMIN_TOKEN,
    ADMIN_TOKEN_OPTIONAL,
    FEEDBACK_REQUEST,
    FEEDBACK_TOKEN,
    PREDICT_REQUEST,
    PREDICT_RESPONSE,
    errors,
    json_content,
)

DOCS = """
Predictions from the model promoted in the sparc-ray registry.

* `POST /predict` scores rows; `GET /model` lists the features a row needs.
* Errors are JSON `{"error", "details": [{"row", "feature", "message"}]}` with status
  400 (not JSON), 413 (body or row count over the limit), 422 (rows do not match the
  model's features), 503 (no model loaded). A 500 carries an `error_id` found in the logs.
* `POST /reload-model` needs the admin token and `POST /feedback` the feedback
  token (`Authorization: Bearer <token>`, each at least 32 characters); with no token
  configured they answer 403.
"""

_EXAMPLE_ROW = {"mean radius": 14.1, "mean texture": 19.3, "...": "every other feature"}

OPENAPI_EXTRA: dict[str, dict[str, Any]] = {
    "predict": {
        "requestBody": {
            "required": True,
            **json_content(
                PREDICT_REQUEST, {"instances": [_EXAMPLE_ROW], "include_probabilities": True}
            ),
        },
        "responses": {
            "200": {
                "description": "Predictions",
                **json_content(
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
            **errors(400, 413, 415, 422, 503),
        },
    },
    "health": {
        "responses": {
            "200": {
                "description": "A model is loaded",
                **json_content(
                    {"type": "object"},
                    {
                        "status": "healthy",
                        "model_loaded": True,
                        "model_version": "v20261126-061517-005972-7910a4",
                        "production": "v20261126-061517-005972-7910a4",
                        "verified_production": "v20261126-061517-005972-7910a4",
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
                        "errors": {
                            "load": None,
                            "unavailable": None,
                            "registry": None,
                            "refused": None,
                        },
                        "timestamp": "2026-11-27T09:35:17+00:00",
                        "uptime_seconds": 12.5,
                    },
                ),
            },
            **errors(503),
        }
    },
    "model": {
        "security": ADMIN_TOKEN_OPTIONAL,
        "responses": {
            "200": {
                "description": "The served version (or ?version=): name, version, created_at, "
                "model_type, target, classes, each feature's name / kind / categories and the "
                "engine. With the admin token: the whole metadata.json (drift "
                "references with ?full=true), `serving` saying why sklearn serves if it does"
            },
            **errors(401, 403, 404, 422, 503),
        },
    },
    "metrics": {
        "security": ADMIN_TOKEN_OPTIONAL,
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
        "security": ADMIN_TOKEN,
        "requestBody": {
            "required": False,
            **json_content(
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
                **json_content(
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
            **errors(400, 401, 403, 404, 409, 413, 415, 422),
        },
    },
    "feedback": {
        "security": FEEDBACK_TOKEN,
        "requestBody": {
            "required": True,
            **json_content(
                FEEDBACK_REQUEST,
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
                "description": "Matched labels and rolling accuracy. A label is matched only "
                "if its prediction id is remembered (else `unknown`), its row is within the "
                "prediction's rows and it is one of the version's classes (else `invalid`, "
                "by item index); the first label of a row wins, later ones are `conflicts`. "
                "Only matched labels are captured.",
                **json_content(
                    {"type": "object"},
                    {
                        "matched": 1,
                        "unknown": [],
                        "invalid": [],
                        "conflicts": 0,
                        "accuracy": 0.97,
                        "labelled": 250,
                    },
                ),
            },
            **errors(400, 401, 403, 413, 415, 422),
        },
    },
}


ENDPOINTS: dict[str, tuple[str, str, str]] = {  # operation id -> (method, path, summary)
    "predict": ("post", "/predict", "Predict labels (and probabilities) for rows"),
    "health": ("get", "/health", "Liveness / readiness"),
    "model": ("get", "/model", "Metadata of a served version"),
    "metrics": ("get", "/metrics", "JSON summary of this ingress replica and the node"),
    "reload": (
        "post",
        "/reload-model",
        "Promote a version to production (or re-read the registry)",
    ),
    "feedback": ("post", "/feedback", "Ground-truth labels for earlier predictions"),
}


def route(api: FastAPI | APIRouter, operation: str) -> Callable[[Any], Any]:
    """The FastAPI route decorator of one operation, described as above."""
    method, path, summary = ENDPOINTS[operation]
    add = getattr(api, method)
    return add(
        path, operation_id=operation, summary=summary, openapi_extra=OPENAPI_EXTRA[operation]
    )
