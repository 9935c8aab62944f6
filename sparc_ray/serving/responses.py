"""HTTP plumbing of the API: capped request bodies, JSON responses and errors, the
bearer tokens."""

import datetime as dt
import hmac
import logging
import os
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from sparc_ray.inference.input_rules import RequestError

JSON_TYPES = {"application/json", "text/json"}
MIN_TOKEN_CHARS = 32  # e.g. `openssl rand -hex 16`; secrets.token_urlsafe(32) gives 43
logger = logging.getLogger("ray.serve")


def json_response(status: int, body: Any) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def error_response(status: int, error: str, details: list[tuple] = (), **extra: Any) -> Response:
    """``{"error", "details": [{"row", "feature", "message"}], **extra}``."""
    rows = [{"row": r, "feature": f, "message": m} for r, f, m in details]
    return json_response(status, {"error": error, "details": rows, **extra})


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


@dataclass(frozen=True)
class Tokens:
    """The env vars holding the bearer tokens: release control (``/reload-model``, the full
    ``/model`` and ``/metrics``) and ``/feedback``. Each token opens only its own endpoints."""

    release_env: str = "SPARC_ADMIN_TOKEN"
    feedback_env: str = "SPARC_FEEDBACK_TOKEN"

    def read(self) -> tuple["BearerToken", "BearerToken"]:
        release = BearerToken(self.release_env, "release-control")
        feedback = BearerToken(self.feedback_env, "feedback")
        if release.token and release.token == feedback.token:
            problem = "must differ from the release-control token"
            feedback = BearerToken(self.feedback_env, "feedback", problem)
        return release, feedback


class BearerToken:
    """One endpoint group's token, read from ``env``. A missing token, one shorter than
    ``MIN_TOKEN_CHARS`` or one refused for another ``problem`` disables the group: 403 saying
    why (and an error in the log), never a weak check."""

    def __init__(self, env: str, purpose: str, problem: str | None = None) -> None:
        value = os.environ.get(env) or ""
        if not value:
            problem = f"no {purpose} token is configured (${env})"
        elif len(value) < MIN_TOKEN_CHARS:
            problem = f"the {purpose} token (${env}) is shorter than {MIN_TOKEN_CHARS} characters"
        elif problem:
            problem = f"the {purpose} token (${env}) {problem}"
        self.token = None if problem else value
        self.problem = problem
        if problem and value:
            logger.error("endpoint disabled: %s", problem)

    def check(self, header: str | None) -> Response | None:
        """None if ``header`` carries the token; else the 403 (disabled) or 401 to send."""
        if self.token is None:
            return error_response(403, f"endpoint disabled: {self.problem}")
        if not hmac.compare_digest((header or "").encode(), f"Bearer {self.token}".encode()):
            return error_response(401, "missing or wrong bearer token")
        return None

    def allows(self, header: str | None) -> bool:
        return self.check(header) is None


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


async def invalid_parameters(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's own parameter checks answer with the API's error body too."""
    details = [
        (None, ".".join(str(p) for p in e.get("loc", ())[1:]) or None, e.get("msg", "invalid"))
        for e in exc.errors()[:20]
    ]
    return error_response(422, "invalid request parameters", details)
