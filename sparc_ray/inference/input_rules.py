"""The rules for rows to score: one module for the HTTP API, ``DataValidator(features=...)``
and batch scoring (no Ray, no pandas on the hot path).

A numeric feature takes a JSON number or null (missing); a categorical one a string or null.
Values the model cannot score are refused here, before they can reach a batch: non-finite
numbers, integers too large for a float, magnitudes beyond the model's input limit, lone
UTF-16 surrogates and over-long strings. Bad input raises ``RequestError`` carrying the HTTP
status and the body ``{"error": ..., "details": [{"row": i, "feature": name, "message": ...}]}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from sparc_ray.registry.metadata import ModelMetadata

MAX_DETAILS = 20
MAX_STRING_CHARS = 1000
FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RequestError(400, f"request body is not valid JSON: {str(exc)[:200]}") from exc


@dataclass(frozen=True)
class FeatureCheck:
    name: str
    numeric: bool
    limit: float = FLOAT32_MAX  # largest |value| the model can score (numeric features)


def checks_from_metadata(meta: ModelMetadata) -> list[FeatureCheck]:
    """The checks of a version's features, in the model's order, from its metadata.json."""
    limits = meta.input_limits
    return [
        FeatureCheck(f.name, f.kind == "numeric", limits.get(f.name, FLOAT32_MAX))
        for f in meta.features
    ]


@dataclass
class PredictInput:
    columns: dict[str, np.ndarray]
    n_rows: int
    include_probabilities: bool


def detail(row: int | None, feature: str | None, message: str) -> dict[str, Any]:
    return {"row": row, "feature": feature, "message": message}


def _show(value: Any) -> str:
    return ascii(value)[:80]


def _safe(name: str) -> str:
    """A client-sent name as it can be echoed in a JSON body (lone surrogates escaped)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return ascii(name)[:200]
    return name[:200]


def bad_value(value: Any, check: FeatureCheck) -> str | None:
    """Why ``value`` cannot be scored for a feature, or None if it can (None = missing)."""
    if value is None:
        return None
    if isinstance(value, _NonFinite):
        return f"non-finite number {value.token} is not allowed"
    if check.numeric:
        if type(value) is not int and type(value) is not float:
            return f"expected a number, got {type(value).__name__} {_show(value)}"
        try:
            number = float(value)
        except OverflowError:
            return "number out of range (too large for a float)"
        if not math.isfinite(number):
            return "number out of range (overflows to inf)"
        if abs(number) > check.limit:
            return f"number out of range: |value| must be <= {check.limit:.3g} for this model"
        return None
    if type(value) is not str:
        return f"expected a string category, got {type(value).__name__} {_show(value)}"
    if len(value) > MAX_STRING_CHARS:
        return f"string longer than {MAX_STRING_CHARS} characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "string contains a lone UTF-16 surrogate"
    return None


def _numeric_fast(rows: list[dict[str, Any]], numeric: list[FeatureCheck]) -> np.ndarray | None:
    """All numeric features at once, one row of the result per feature, when every value is a
    plain finite number within its feature's limit (the common case); else None."""
    names = [f.name for f in numeric]
    values = [row[n] for n in names for row in rows]
    if not set(map(type, values)) <= {float, int}:
        return None
    try:
        matrix = np.array(values, dtype=np.float64).reshape(len(names), len(rows))
    except OverflowError:
        return None
    limits = np.fromiter((f.limit for f in numeric), np.float64, len(numeric))
    if not np.isfinite(matrix).all() or (np.abs(matrix).max(axis=1) > limits).any():
        return None
    return matrix


def _categorical_fast(values: list[Any]) -> bool:
    return all(type(v) is str and v.isascii() and len(v) <= MAX_STRING_CHARS for v in values)


def build_columns(
    rows: list[dict[str, Any]], features: list[FeatureCheck]
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """One array per feature in the model's order (numeric float64 with NaN for missing,
    categorical object with NaN for missing), and the problems found (row, feature)."""
    numeric = [f for f in features if f.numeric]
    matrix = _numeric_fast(rows, numeric) if numeric else None
    fast = {f.name: matrix[i] for i, f in enumerate(numeric)} if matrix is not None else {}
    columns: dict[str, np.ndarray] = {}
    details: list[dict[str, Any]] = []
    for f in features:
        if f.name in fast:
            columns[f.name] = fast[f.name]
            continue
        values = [row[f.name] for row in rows]
        if not f.numeric and _categorical_fast(values):
            columns[f.name] = np.array(values, dtype=object)
            continue
        for i, v in enumerate(values):
            if problem := bad_value(v, f):
                details.append(detail(i, f.name, problem))
        if len(details) >= MAX_DETAILS:
            break
        if not details:  # once a problem is found no column is needed, only the details
            dtype = np.float64 if f.numeric else object
            columns[f.name] = np.array([np.nan if v is None else v for v in values], dtype)
    return columns, details[:MAX_DETAILS]


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
                detail(i, _safe(n), "unknown feature") for n in sorted(row.keys() - expected)
            ]
        if len(details) >= MAX_DETAILS:
            break
    return details[:MAX_DETAILS]


def parse_predict(body: Any, features: list[FeatureCheck], max_instances: int) -> PredictInput:
    """Check the /predict body and return one array per feature, in the model's order."""
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object with an 'instances' list")
    unknown_keys = sorted(set(body) - {"instances", "include_probabilities"})
    if unknown_keys:
        raise RequestError(
            422,
            "unknown request fields",
            [detail(None, _safe(k), "unknown field") for k in unknown_keys[:MAX_DETAILS]],
        )
    include = body.get("include_probabilities", False)
    if not isinstance(include, bool):
        raise RequestError(
            422, "invalid request", [detail(None, "include_probabilities", "must be true or false")]
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
    return PredictInput(columns, len(rows), include)
