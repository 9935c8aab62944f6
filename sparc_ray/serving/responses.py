"""JSON responses of the HTTP API: bodies, errors and the bearer-token check."""

import datetime as dt
import hmac
from typing import Any

import orjson
from fastapi.responses import Response


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


def check_bearer(token: str | None, header: str | None) -> Response | None:
    """None if ``header`` carries the bearer token; else the 403 (no token configured: the
    endpoint is disabled) or 401 response to send."""
    if not token:
        return error_response(403, "endpoint disabled: no admin token is configured")
    if not hmac.compare_digest((header or "").encode(), f"Bearer {token}".encode()):
        return error_response(401, "missing or wrong bearer token")
    return None
