"""The rules for values to score, written once and applied column by column.

``check_column(values, check)`` takes one feature's values as they arrive (a list of JSON
values from ``/predict``, a NumPy or pandas column for ``DataValidator``, an Arrow column in
batch scoring) and returns the column the model takes, the mask of cells it cannot take and
why, in the same words on every path. The common case (every cell fine) is vectorised, across
all numeric features of a request at once (``check_columns``); the reasons of bad cells come
from one per-cell function, ``bad_value``.

A numeric feature takes a finite number within the model's input limit (``input_limits`` in
``metadata.json``); a categorical one a string of at most ``MAX_STRING_CHARS`` characters with
no lone UTF-16 surrogate. Missing is ``None`` (JSON ``null``, Arrow null, pandas NaN) and is
always allowed: the pipeline imputes it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparc_ray.registry.metadata import ModelMetadata

MAX_STRING_CHARS = 1000
FLOAT32_MAX = float(np.finfo(np.float32).max)
TOO_LONG = f"string longer than {MAX_STRING_CHARS} characters"
_NON_FINITE_TEXT = {
    "nan": "NaN",
    "+nan": "NaN",
    "-nan": "NaN",
    "inf": "Infinity",
    "+inf": "Infinity",
    "infinity": "Infinity",
    "+infinity": "Infinity",
    "-inf": "-Infinity",
    "-infinity": "-Infinity",
}


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


class NonFinite:
    """A NaN / Infinity token (JSON's, or text that spells one): refused, named as written."""

    def __init__(self, token: str) -> None:
        self.token = token


class Overflow:
    """A number literal too large for a float (``1e400``)."""

    def __init__(self, text: str) -> None:
        self.text = text


def number_from_text(text: str) -> float | NonFinite | Overflow | str:
    """What a cell of text (CSV) stands for: a float, a non-finite token, an overflowing
    literal, or the text itself when it is no number."""
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number):
        return number
    token = _NON_FINITE_TEXT.get(text.strip().lower())
    return NonFinite(token) if token else Overflow(text)


def show(value: Any) -> str:
    """A value as it may be echoed in an error (escaped, at most 80 characters)."""
    return ascii(value)[:80]


def bad_value(value: Any, check: FeatureCheck) -> str | None:
    """Why ``value`` cannot be scored for a feature, or None if it can (None / NaN: missing)."""
    if _missing(value):
        return None
    if isinstance(value, NonFinite):
        return f"non-finite number {value.token} is not allowed"
    if isinstance(value, Overflow):
        return "number out of range (overflows to inf)"
    if check.numeric:
        if type(value) is not int and type(value) is not float:
            return f"expected a number, got {type(value).__name__} {show(value)}"
        try:
            number = float(value)
        except OverflowError:
            return "number out of range (too large for a float)"
        if math.isinf(number):
            return f"non-finite number {'-' if number < 0 else ''}Infinity is not allowed"
        if abs(number) > check.limit:
            return f"number out of range: |value| must be <= {check.limit:.3g} for this model"
        return None
    if type(value) is not str:
        return f"expected a string category, got {type(value).__name__} {show(value)}"
    if len(value) > MAX_STRING_CHARS:
        return TOO_LONG
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "string contains a lone UTF-16 surrogate"
    return None


@dataclass(frozen=True)
class CheckedColumn:
    """One feature's column as the model takes it (float64 or object, NaN = missing, NaN
    where a cell is bad), the mask of bad cells, and why each one is bad (row -> reason)."""

    values: np.ndarray
    bad: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)


def check_column(
    values: Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray, check: FeatureCheck
) -> CheckedColumn:
    """Check one feature's values: JSON values, a NumPy / pandas column, or an Arrow column."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return _from_arrow(values, check)
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        if check.numeric:
            return _numbers(values.astype(np.float64, copy=False), check)
        values = values.tolist()  # numbers in a categorical column: each one is refused
    return _from_python(values if isinstance(values, list) else list(values), check)


def clean_numeric_block(
    cells: list[list[Any]], checks: Sequence[FeatureCheck]
) -> list[np.ndarray] | None:
    """``cells[j]``: the JSON values of numeric feature ``checks[j]``, one per row. When every
    cell passes the rules (a plain number or None, finite, within the limit: the common case)
    returns the float64 columns, checked in one vectorised pass over all features; otherwise
    None, and ``check_column`` takes the features one by one and says which cells fail."""
    if not cells:
        return []
    if not set(map(type, itertools.chain.from_iterable(cells))) <= {float, int, type(None)}:
        return None
    try:
        block = np.array(cells, dtype=np.float64)
    except OverflowError:  # an integer too large for a float
        return None
    limits = np.array([c.limit for c in checks], dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore"):
        if (np.isinf(block) | (np.abs(block) > limits)).any():
            return None
    return list(block)


def check_columns(
    columns: Sequence[list[Any]], checks: Sequence[FeatureCheck]
) -> Iterator[CheckedColumn]:
    """Each feature's JSON values (``columns[j]`` for ``checks[j]``) through the rules, in
    order: the numeric features in one pass when they are all clean, else and for the
    categorical ones column by column (``check_column``, naming every bad cell)."""
    numeric = [j for j, c in enumerate(checks) if c.numeric]
    block = clean_numeric_block([columns[j] for j in numeric], [checks[j] for j in numeric])
    clean = {} if block is None else dict(zip(numeric, block, strict=True))
    none_bad = np.zeros(len(columns[0]) if columns else 0, bool)  # shared: read, never written
    for j, (values, check) in enumerate(zip(columns, checks, strict=True)):
        if j in clean:
            yield CheckedColumn(clean[j], none_bad)
        else:
            yield check_column(values, check)


def _numbers(floats: np.ndarray, check: FeatureCheck, raw: Any = None) -> CheckedColumn:
    """float64 values (NaN = missing): bad when infinite or beyond the limit. ``raw`` gives
    each bad cell's original value for its reason (default: the float itself)."""
    with np.errstate(invalid="ignore"):
        bad = np.isinf(floats) | (np.abs(floats) > check.limit)
    if not bad.any():
        return CheckedColumn(floats, bad)
    index = np.flatnonzero(bad)
    reasons = {
        int(i): bad_value(raw(int(i)) if raw else float(floats[i]), check) or "cannot be scored"
        for i in index
    }
    return CheckedColumn(np.where(bad, np.nan, floats), bad, reasons)


def _from_python(values: list[Any], check: FeatureCheck) -> CheckedColumn:
    kinds = set(map(type, values))
    if check.numeric and kinds <= {float, int, type(None)}:
        try:
            floats = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        except OverflowError:  # an integer too large for a float: the slow path names it
            pass
        else:
            return _numbers(floats, check, raw=values.__getitem__)
    if not check.numeric and kinds <= {str} and _plain_strings(values):
        return CheckedColumn(np.array(values, dtype=object), np.zeros(len(values), bool))
    reasons = {i: r for i, v in enumerate(values) if (r := bad_value(v, check))}
    bad = np.zeros(len(values), bool)
    bad[list(reasons)] = True
    kept = [np.nan if bad[i] or _missing(v) else v for i, v in enumerate(values)]
    return CheckedColumn(np.array(kept, np.float64 if check.numeric else object), bad, reasons)


def _missing(value: Any) -> bool:
    return value is None or (type(value) is float and math.isnan(value))


def _plain_strings(values: list[str]) -> bool:
    return all(v.isascii() and len(v) <= MAX_STRING_CHARS for v in values)


def _from_arrow(column: pa.Array | pa.ChunkedArray, check: FeatureCheck) -> CheckedColumn:
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    stringy = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
    if check.numeric and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        floats = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        present = ~np.asarray(column.is_null(), bool)
        nan = present & np.isnan(floats)
        checked = _numbers(np.where(present, floats, np.nan), check)
        if not nan.any():
            return checked
        why = bad_value(NonFinite("NaN"), check) or ""
        reasons = {**checked.reasons, **{int(i): why for i in np.flatnonzero(nan)}}
        return CheckedColumn(checked.values, checked.bad | nan, reasons)
    if check.numeric and stringy:
        try:
            floats = pc.cast(column, pa.float64())
        except pa.ArrowInvalid:  # a cell that is no number: read each cell as text
            return _from_python([_cell(v) for v in column.to_pylist()], check)
        checked = check_column(floats, check)
        if not checked.bad.any():
            return checked
        text = column.to_pylist()
        reasons = {i: bad_value(_cell(text[i]), check) or "" for i in checked.reasons}
        return CheckedColumn(checked.values, checked.bad, reasons)
    if not check.numeric and stringy:
        column = pc.cast(column, pa.string())
        too_long = pc.fill_null(pc.greater(pc.utf8_length(column), MAX_STRING_CHARS), False)
        bad = np.asarray(too_long, bool)
        values = column.to_numpy(zero_copy_only=False)
        values[np.asarray(column.is_null(), bool) | bad] = np.nan
        reasons = {int(i): TOO_LONG for i in np.flatnonzero(bad)}
        return CheckedColumn(values, bad, reasons)
    return _from_python(column.to_pylist(), check)  # e.g. booleans, or numbers as categories


def _cell(value: Any) -> Any:
    """A text cell as the number it spells (or the text); other values unchanged."""
    return number_from_text(value) if isinstance(value, str) else value
