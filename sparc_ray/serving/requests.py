"""``/predict`` bodies: JSON parsing and the request's shape, then every feature's values
through the shared input rules (``sparc_ray.inference.input_rules``).

Bad input raises ``RequestError`` carrying the HTTP status and the body
``{"error": ..., "details": [{"row": i, "feature": name, "message": ...}]}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import orjson

from sparc_ray.inference.columns import Columns
from sparc_ray.inference.input_rules import FeatureCheck, NonFinite, Overflow, check_columns

MAX_DETAILS = 20


class RequestError(Exception):
    def __init__(self, status: int, error: str, details: list[dict[str, Any]] | None = None):
        super().__init__(error)
        self.status, self.error, self.details = status, error, details or []

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "details": self.details}


@dataclass(frozen=True)
class PredictInput:
    """A checked scoring request, as the micro-batch carries it."""

    columns: Columns
    n_rows: int
    include_probabilities: bool
    explain: bool = False  # per-row feature contributions asked for (the Explainer answers)

    def predict_input(self) -> PredictInput:
        return self

    def check_explain_rows(self, limit: int) -> None:
        """413 when explanations are asked for more than ``limit`` rows (checked before the
        rows are scored: the request is refused whole)."""
        if self.explain and self.n_rows > limit:
            raise RequestError(
                413,
                f"{self.n_rows} rows with explain; the limit is {limit} per request (split it, "
                "or ask without explain)",
                [detail(None, "explain", f"at most {limit} rows per request")],
            )


def detail(row: int | None, feature: str | None, message: str) -> dict[str, Any]:
    return {"row": row, "feature": feature, "message": message}


def _json_float(text: str) -> float | Overflow:
    number = float(text)
    return number if math.isfinite(number) else Overflow(text)


def parse_json(raw: bytes, max_bytes: int) -> Any:
    if len(raw) > max_bytes:
        raise RequestError(413, f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        return orjson.loads(raw)  # fast path; strict JSON only
    except orjson.JSONDecodeError:
        pass
    try:  # NaN / Infinity tokens and 1e400 (named with their position later), or the error
        return json.loads(raw, parse_constant=NonFinite, parse_float=_json_float)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RequestError(400, f"request body is not valid JSON: {str(exc)[:200]}") from exc


def safe_name(name: str) -> str:
    """A client-sent name as it can be echoed in a JSON body (lone surrogates escaped)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return ascii(name)[:200]
    return name[:200]


def check_structure(rows: list[Any], features: list[FeatureCheck]) -> list[dict[str, Any]]:
    """Rows that are not objects, or miss / add features."""
    expected = {f.name for f in features}
    details: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            details.append(detail(i, None, "each instance must be a JSON object"))
        elif row.keys() != expected:
            details += [detail(i, n, "missing feature") for n in sorted(expected - row.keys())]
            details += [
                detail(i, safe_name(n), "unknown feature") for n in sorted(row.keys() - expected)
            ]
        if len(details) >= MAX_DETAILS:
            break
    return details[:MAX_DETAILS]


def build_columns(
    rows: list[dict[str, Any]], features: list[FeatureCheck]
) -> tuple[Columns, list[dict[str, Any]]]:
    """One checked array per feature in the model's order, and the problems found."""
    values = [[row[f.name] for row in rows] for f in features]
    columns: Columns = {}
    details: list[dict[str, Any]] = []
    for f, checked in zip(features, check_columns(values, features), strict=True):
        columns[f.name] = checked.values
        details += [detail(i, f.name, why) for i, why in sorted(checked.reasons.items())]
        if len(details) >= MAX_DETAILS:
            break
    return columns, details[:MAX_DETAILS]


def parse_predict(body: Any, features: list[FeatureCheck], max_instances: int) -> PredictInput:
    """Check the /predict body and return one array per feature, in the model's order."""
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object with an 'instances' list")
    unknown_keys = sorted(set(body) - {"instances", "include_probabilities", "explain"})
    if unknown_keys:
        raise RequestError(
            422,
            "unknown request fields",
            [detail(None, safe_name(k), "unknown field") for k in unknown_keys[:MAX_DETAILS]],
        )
    include, explain = body.get("include_probabilities", False), body.get("explain", False)
    for name, flag in (("include_probabilities", include), ("explain", explain)):
        if not isinstance(flag, bool):
            raise RequestError(
                422, "invalid request", [detail(None, name, "must be true or false")]
            )
    rows = body.get("instances")
    if not isinstance(rows, list) or not rows:
        raise RequestError(
            422,
            "'instances' must be a non-empty list of objects",
            [detail(None, "instances", "missing, empty or not a list")],
        )
    if len(rows) > max_instances:
        raise RequestError(
            413,
            f"{len(rows)} instances; the limit is {max_instances} per request (split it)",
        )
    if details := check_structure(rows, features):
        raise RequestError(422, "instances do not match the model's features", details)
    columns, details = build_columns(rows, features)
    if details:
        raise RequestError(422, "invalid feature values", details)
    return PredictInput(columns, len(rows), include, explain)


def parse_feedback(body: Any) -> list[dict[str, Any]]:
    """``/feedback``: one item or a list, each with ``prediction_id`` and ``label``."""
    items = body if isinstance(body, list) else [body]
    bad = [
        detail(i, None, "needs prediction_id and label")
        for i, it in enumerate(items)
        if not isinstance(it, dict) or "prediction_id" not in it or "label" not in it
    ]
    if bad or not items:
        raise RequestError(422, "invalid feedback", bad[:MAX_DETAILS])
    return items
