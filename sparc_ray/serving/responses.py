"""HTTP plumbing of the API: capped request bodies, JSON responses and errors, and the
``/predict`` response bodies."""

import datetime as dt
import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from sparc_ray.serving.messages import NoModelError, RequestMeta, VersionUnavailable
from sparc_ray.serving.requests import RequestError

JSON_TYPES = {"application/json", "text/json"}
CLIENT_ERRORS = {400: "bad_request", 413: "payload_too_large", 415: "unsupported_media_type"}
logger = logging.getLogger("ray.serve")


def json_response(status: int, body: Any) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def error_response(
    status: int, error: str, details: Sequence[tuple[Any, ...]] = (), **extra: Any
) -> Response:
    """``{"error", "details": [{"row", "feature", "message"}], **extra}``."""
    rows = [{"row": r, "feature": f, "message": m} for r, f, m in details]
    return json_response(status, {"error": error, "details": rows, **extra})


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read chunk by chunk and refused (413) as soon as it passes ``limit``
    bytes, whether or not it declared its length; 415 for a Content-Type that is not JSON
    (a missing one is taken as JSON), 400 for a malformed Content-Length."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype and ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise RequestError(415, f"unsupported content type {ctype[:100]!r}; send application/json")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise RequestError(413, f"request body is {int(declared)} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def invalid_parameters(request: Request, exc: Exception) -> Response:
    """FastAPI's own parameter checks answer with the API's error body too."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    details = [
        (None, ".".join(str(p) for p in e.get("loc", ())[1:]) or None, e.get("msg", "invalid"))
        for e in errors[:20]
    ]
    return error_response(422, "invalid request parameters", details)


def shape_responses(
    requests: tuple[RequestMeta, ...], proba: np.ndarray, labels: list, classes: list, version: str
) -> list[dict[str, Any]]:
    """One ``/predict`` body per request (the seed's fields); ``proba`` and ``labels`` stack
    the requests' rows in request order."""
    out, start = [], 0
    for request in requests:
        end = start + request.n_rows
        out.append(
            {
                "predictions": labels[start:end],
                "probabilities": proba[start:end].round(6).tolist()
                if request.include_probabilities
                else None,
                "classes": classes,
                "model_version": version,
            }
        )
        start = end
    return out


_URI = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*")


def redact(text: str | None, store: str) -> str | None:
    """No storage locations in what anonymous callers read: the store as configured, without
    its query (e.g. ``?endpoint_override=``), its path or ``bucket/key`` without the scheme,
    and any other URI."""
    if not text:
        return text
    base = store.split("?", 1)[0]
    forms = {store, base, base.partition("://")[2] or base}
    for form in sorted((f.rstrip("/") for f in forms if f.strip("/")), key=len, reverse=True):
        text = text.replace(form, "<store>")
    return _URI.sub("<uri>", text)


def failed_prediction(exc: Exception, prediction_id: str, store: str) -> tuple[Response, str, int]:
    """A ``/predict`` that raised: its response, the ``reason`` label of
    ``ray_ml_prediction_errors_total`` and the status. Client errors are 4xx naming field and
    row, no model is 503, anything else a logged 500 with an ``error_id``."""
    if isinstance(exc, RequestError):
        logger.info(
            "rejected request: %s %s", exc.status, exc.error, extra={"prediction_id": prediction_id}
        )
        body = {**exc.body(), "prediction_id": prediction_id}
        return (
            json_response(exc.status, body),
            CLIENT_ERRORS.get(exc.status, "invalid_input"),
            exc.status,
        )
    if isinstance(exc, (NoModelError, VersionUnavailable)):
        details = [(None, None, redact(str(exc), store))]
        response = error_response(503, "no model is loaded", details, prediction_id=prediction_id)
        return response, "no_model", 503
    error_id = uuid.uuid4().hex[:12]
    logger.error(
        "internal error %s",
        error_id,
        exc_info=exc,
        extra={"prediction_id": prediction_id, "error_id": error_id},
    )
    response = error_response(500, "internal error", error_id=error_id, prediction_id=prediction_id)
    return response, "internal", 500
