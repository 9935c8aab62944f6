"""Request parsing and validation against a model's feature schema (no Ray, no pandas).

Bad input raises ``RequestError`` carrying the HTTP status and a JSON body
``{"error": ..., "details": [{"row": i, "feature": name, "message": ...}]}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

MAX_DETAILS = 20


class RequestError(Exception):
    def __init__(self, status: int, error: str, details: list[dict[str, Any]] | None = None):
        super().__init__(error)
        self.status, self.error, self.details = status, error, details or []

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "details": self.details}


class _NonFinite:
    """Stands for a NaN / Infinity token so validation can name its row and feature."""

    def __init__(self, token: str) -> None:
        self.token = token


def parse_json(raw: bytes, max_bytes: int) -> Any:
    if len(raw) > max_bytes:
        raise RequestError(413, f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        return orjson.loads(raw)  # fast path; strict JSON only
    except orjson.JSONDecodeError:
        pass
    try:  # NaN / Infinity tokens (reported with their position later), or the error message
        return json.loads(raw, parse_constant=_NonFinite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from exc


@dataclass
class FeatureCheck:
    name: str
    numeric: bool


@dataclass
class PredictInput:
    columns: dict[str, np.ndarray]
    n_rows: int
    include_probabilities: bool


def _detail(row: int | None, feature: str | None, message: str) -> dict[str, Any]:
    return {"row": row, "feature": feature, "message": message}


def _bad_value(value: Any, numeric: bool) -> str | None:
    """Why ``value`` cannot be used for a feature, or None if it can (null = missing)."""
    if value is None:
        return None
    if isinstance(value, _NonFinite):
        return f"non-finite number {value.token} is not allowed"
    if numeric:
        if type(value) is int:
            return None
        if type(value) is float:
            return None if math.isfinite(value) else "number out of range (overflows to inf)"
        return f"expected a number, got {type(value).__name__} {value!r}"[:200]
    if type(value) is str:
        return None
    return f"expected a string category, got {type(value).__name__} {value!r}"[:200]


def parse_predict(body: Any, features: list[FeatureCheck], max_instances: int) -> PredictInput:
    """Check the /predict body and return one array per feature, in the model's order."""
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object with an 'instances' list")
    unknown_keys = sorted(set(body) - {"instances", "include_probabilities"})
    if unknown_keys:
        raise RequestError(
            422, "unknown request fields", [_detail(None, k, "unknown field") for k in unknown_keys]
        )
    include = body.get("include_probabilities", False)
    if not isinstance(include, bool):
        raise RequestError(
            422,
            "invalid request",
            [_detail(None, "include_probabilities", "must be true or false")],
        )
    rows = body.get("instances")
    if not isinstance(rows, list) or not rows:
        raise RequestError(
            422,
            "'instances' must be a non-empty list of objects",
            [_detail(None, "instances", "missing, empty or not a list")],
        )
    if len(rows) > max_instances:
        raise RequestError(
            413,
            f"{len(rows)} instances; the limit is {max_instances} per "
            "request (split it into chunks)",
        )
    expected = {f.name for f in features}
    details: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            details.append(_detail(i, None, "each instance must be a JSON object"))
        elif row.keys() != expected:
            details += [_detail(i, n, "missing feature") for n in sorted(expected - row.keys())]
            details += [_detail(i, n, "unknown feature") for n in sorted(row.keys() - expected)]
        if len(details) >= MAX_DETAILS:
            break
    if details:
        raise RequestError(
            422, "instances do not match the model's features", details[:MAX_DETAILS]
        )

    columns: dict[str, np.ndarray] = {}
    for f in features:
        values = [row[f.name] for row in rows]
        if f.numeric and all(type(v) is float or type(v) is int for v in values):
            arr = np.array(values, dtype=np.float64)
            if np.isfinite(arr).all():
                columns[f.name] = arr
                continue
        for i, v in enumerate(values):
            problem = _bad_value(v, f.numeric)
            if problem:
                details.append(_detail(i, f.name, problem))
        if len(details) >= MAX_DETAILS:
            break
        if details:  # keep collecting problems; no column is needed any more
            continue
        if f.numeric:
            columns[f.name] = np.array([np.nan if v is None else v for v in values], np.float64)
        else:
            columns[f.name] = np.array([np.nan if v is None else v for v in values], object)
    if details:
        raise RequestError(422, "invalid feature values", details[:MAX_DETAILS])
    return PredictInput(columns, len(rows), include)
