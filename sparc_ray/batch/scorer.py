"""What a scoring actor does with one Arrow batch: check each cell against the model's input
rules (those of the HTTP API, ``sparc_ray.inference.input_rules``), score the good rows with the
version
loaded as a Serve replica loads it, and write one reject record per bad cell.
"""

from __future__ import annotations

import contextlib
import posixpath
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sparc_ray.batch.source import ROW_ID, SOURCE
from sparc_ray.inference.input_rules import (
    MAX_STRING_CHARS,
    FeatureCheck,
    _NonFinite,
    bad_value,
    checks_from_metadata,
)
from sparc_ray.registry import storage


def _reason(raw: Any, check: FeatureCheck) -> str:
    """Why a cell was refused, in the HTTP API's words (``input_rules.bad_value``)."""
    value = raw
    if check.numeric and isinstance(raw, str):
        with contextlib.suppress(ValueError):  # else: "expected a number, got str ..."
            value = float(raw)
    if isinstance(value, float) and not np.isfinite(value):
        value = _NonFinite(str(raw))
    return bad_value(value, check) or "cannot be scored"


def _numeric(col: pa.ChunkedArray, check: FeatureCheck) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN = missing) and the mask of values the model cannot take."""
    try:
        values = pc.cast(col, pa.float64())
    except pa.ArrowInvalid:  # a cell that is not a number: find it row by row
        raw = col.to_pylist()
        out, bad = np.full(len(raw), np.nan), np.zeros(len(raw), bool)
        for i, v in enumerate(raw):
            try:
                out[i] = float(v) if v is not None else np.nan
            except ValueError:
                bad[i] = True
        present = np.fromiter((v is not None for v in raw), bool, len(raw)) & ~bad
        with np.errstate(invalid="ignore"):
            bad |= present & (~np.isfinite(out) | (np.abs(out) > check.limit))
        return np.where(bad, np.nan, out), bad
    floats = values.to_numpy(zero_copy_only=False)
    present = ~np.asarray(values.is_null(), bool)
    with np.errstate(invalid="ignore"):
        bad = present & (~np.isfinite(floats) | (np.abs(floats) > check.limit))
    return np.where(present, floats, np.nan), bad


def _categorical(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    text = pc.cast(col, pa.string())
    bad = np.asarray(pc.fill_null(pc.greater(pc.utf8_length(text), MAX_STRING_CHARS), False))
    values = text.to_numpy(zero_copy_only=False)
    values[np.asarray(text.is_null(), bool)] = np.nan
    return values, bad


def check_batch(
    batch: pa.Table, checks: list[FeatureCheck]
) -> tuple[dict[str, np.ndarray], np.ndarray, list[dict[str, Any]]]:
    """The model's input columns, the mask of good rows, and one record per bad value:
    ``{"index": i, "feature": name, "value": text, "reason": why}``."""
    columns: dict[str, np.ndarray] = {}
    good = np.ones(batch.num_rows, bool)
    problems: list[dict[str, Any]] = []
    for check in checks:
        col = batch.column(check.name)
        values, bad = _numeric(col, check) if check.numeric else _categorical(col)
        columns[check.name] = values
        for i in np.flatnonzero(bad):
            raw = col[int(i)].as_py()
            problems.append(
                {
                    "index": int(i),
                    "feature": check.name,
                    "value": str(raw)[:200],
                    "reason": _reason(raw, check),
                }
            )
        good &= ~bad
    return columns, good, problems


class BatchScorer:
    """A Ray Data actor: checks rows, scores the good ones, writes the bad ones to rejects."""

    def __init__(
        self, store: str, name: str, version: str, public_key: bytes | None, rejects: str
    ) -> None:
        from sparc_ray.inference.loader import RegistryLoader

        self.model = RegistryLoader(store, name, public_key).load(version)
        self.checks = checks_from_metadata(self.model.metadata)
        self.classes = list(self.model.metadata.classes)
        self.rejects_fs, self.rejects_dir = storage.open_fs(rejects)

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns, good, problems = check_batch(batch, self.checks)
        proba, errors = self._score(columns, np.flatnonzero(good))
        good[[i for i, _ in errors]] = False
        problems += [{"index": i, "feature": None, "value": None, "reason": e} for i, e in errors]
        if problems:
            self._write_rejects(batch, problems)
        keep = pa.array(np.flatnonzero(good))
        out = {ROW_ID: batch.column(ROW_ID).take(keep)}
        if SOURCE in batch.column_names:
            out[SOURCE] = batch.column(SOURCE).take(keep)
        labels = np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
        out["prediction"] = pa.array(labels.tolist())
        for k, label in enumerate(self.classes):
            out[f"proba_{label}"] = pa.array(proba[:, k])
        out["model_version"] = pa.array([self.model.version] * len(proba), pa.string())
        return pa.table(out)

    def _score(self, columns: dict[str, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, list]:
        """Probabilities of ``rows``; if the model fails on a batch, the batch is split until
        the failing rows are found, so that only they are rejected."""
        part = {n: c[rows] for n, c in columns.items()}
        try:
            return self.model.scorer.predict_proba(part), []
        except Exception as exc:
            if len(rows) == 1:
                return np.empty((0, len(self.classes))), [(int(rows[0]), f"model error: {exc}")]
        half = len(rows) // 2
        (a, ea), (b, eb) = self._score(columns, rows[:half]), self._score(columns, rows[half:])
        return np.concatenate([a, b]), ea + eb

    def _write_rejects(self, batch: pa.Table, problems: list[dict[str, Any]]) -> None:
        index = pa.array([p["index"] for p in problems], pa.int64())
        table = {ROW_ID: batch.column(ROW_ID).take(index)}
        if SOURCE in batch.column_names:
            table[SOURCE] = batch.column(SOURCE).take(index)
        for key in ("feature", "value", "reason"):
            table[key] = pa.array([p[key] for p in problems], pa.string())
        first = batch.column(ROW_ID)[0].as_py()
        name = f"part-{first:012d}-{uuid.uuid4().hex[:8]}.parquet"
        pq.write_table(
            pa.table(table), posixpath.join(self.rejects_dir, name), filesystem=self.rejects_fs
        )
