"""Traffic capture: what the service scored, and the labels that arrived later, as Parquet.

    <root>/predictions/capture_date=YYYY-MM-DD/model_version=V/part-<time>-<id>.parquet
        prediction_id, row, timestamp, features (a struct: one field per feature),
        prediction, probabilities (in the version's class order)
    <root>/labels/capture_date=YYYY-MM-DD/part-<time>-<id>.parquet
        prediction_id, row, label, timestamp

``root`` is ``<model store>/<name>/_capture`` unless configured (any pyarrow URI; a
location of its own is recommended, docs/serving.md). The serving side (``CaptureWriter``)
only appends to a bounded queue; a thread writes (files 0600 and directories 0700 on local
disks), leaves out the ``exclude`` features and deletes days older than ``retention_days``.
``sparc_ray.data.captured`` reads it back for the drift report and retraining.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import pyarrow as pa

from sparc_ray.monitoring import capture_files
from sparc_ray.registry import storage
from sparc_ray.registry.layout import (
    CAPTURE_DATE_KEY,
    CAPTURE_LABELS,
    CAPTURE_PREDICTIONS,
    CAPTURE_VERSION_KEY,
)

logger = logging.getLogger(__name__)
# Hive partition keys of the directories (both hold text; labels have no version).
EXPIRE_EVERY_S = 3600.0  # how often the retention is enforced (and once at start)
MAX_ROW = 2**31  # rows are stored as int32
LOG_EVERY_S = 30.0  # a failure that repeats is logged at most this often (always counted)


def _today(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


class CaptureWriter:
    """Sampled, asynchronous, bounded capture. ``offer_*`` never block and never raise: when
    more than ``max_queued_rows`` wait, or a write fails, rows are dropped and reported to
    ``on_drop(n_rows, reason)``; the next flush tries the sink again. ``on_write(n_rows,
    version)`` reports what was written (``"none"`` for labels).

    Counters: ``written`` / ``dropped`` rows; ``errors``, failures of the capture code itself
    (a batch that could not be queued: its rows are also dropped with reason ``"error"``; a
    callback that raised); ``skipped``, labels not captured because their ``row`` is not
    a row index (the Postprocessor only offers labels its feedback store matched)."""

    def __init__(
        self,
        root: str,
        rate: float,
        flush_s: float = 2.0,
        max_queued_rows: int = 100_000,
        on_drop: Callable[[int, str], None] = lambda n, reason: None,
        on_write: Callable[[int, str], None] = lambda n, version: None,
        retention_days: int | None = None,
        exclude: Collection[str] = (),
    ) -> None:
        self.root, self.rate, self.flush_s = root, rate, flush_s
        self.retention_days, self.exclude = retention_days, frozenset(exclude)
        self.max_queued_rows, self.on_drop, self.on_write = max_queued_rows, on_drop, on_write
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued_rows = 0
        self._lock = threading.RLock()  # the queue's row count and the counters
        self._rng = np.random.default_rng()
        self._stop = threading.Event()
        self._last_log: dict[str, float] = {}
        self.written = self.dropped = self.errors = self.skipped = 0
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    # -- request side (the Postprocessor's background loop) ----------------------------------
    def offer_predictions(
        self,
        version: str,
        items: list[dict[str, Any]],
        columns: dict[str, np.ndarray],
        labels: list,
        proba: np.ndarray,
    ) -> None:
        """One scored group: ``items`` hold each request's ``prediction_id`` and ``n_rows``;
        ``columns`` / ``labels`` / ``proba`` stack their rows. Requests are sampled whole."""
        try:
            sizes = np.fromiter((i["n_rows"] for i in items), int, len(items))
            keep = self._rng.random(len(items)) < self.rate
            if not keep.any():
                return
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            rows = np.concatenate(
                [np.arange(s, s + n) for s, n in zip(starts[keep], sizes[keep], strict=True)]
            )
            ids = np.repeat([i["prediction_id"] for i in items], sizes)[rows]
            within = np.concatenate([np.arange(n) for n in sizes[keep]])
            record = {
                "prediction_id": ids,
                "row": within,
                "timestamp": time.time(),
                "features": {n: c[rows] for n, c in columns.items() if n not in self.exclude},
                "prediction": [labels[r] for r in rows],
                "probabilities": proba[rows],
            }
            self._put((CAPTURE_PREDICTIONS, version, record), len(rows))
        except Exception:  # capture never fails a prediction
            self._error("could not queue a scored batch", len(labels))

    def offer_labels(self, items: list[dict[str, Any]]) -> None:
        """Matched ``/feedback`` labels (``prediction_id``, ``row``, ``label``; the feedback
        store checked them), never sampled: labels are few, and each one is worth keeping.
        Each item is queued on its own, so no item can make another one drop."""
        for item in items:
            try:
                if not _is_label(item):
                    with self._lock:
                        self.skipped += 1
                    self._log("skipped", "capture: a label skipped (%d so far)", self.skipped)
                    continue
                record = {
                    "prediction_id": [str(item["prediction_id"])],
                    "row": [item.get("row", 0)],
                    "label": [str(item["label"])],
                    "timestamp": time.time(),
                }
                self._put((CAPTURE_LABELS, None, record), 1)
            except Exception:  # capture never fails a /feedback request
                self._error("could not queue a /feedback label", 1)

    def _put(self, entry: tuple, n_rows: int) -> None:
        with self._lock:
            if self._queued_rows + n_rows > self.max_queued_rows:
                self._drop(n_rows, "queue_full")
                return
            self._queued_rows += n_rows
        self._queue.put((entry, n_rows))

    def _drop(self, n_rows: int, reason: str) -> None:
        with self._lock:
            self.dropped += n_rows
        try:
            self.on_drop(n_rows, reason)
        except Exception:
            self._error("the on_drop callback failed")

    def _error(self, what: str, dropped_rows: int = 0) -> None:
        """A failure of the capture code (called in an ``except`` block): counted in
        ``errors``, logged with its traceback, never raised; ``dropped_rows`` lost with it."""
        with self._lock:
            self.errors += 1
        self._log("error", "capture: %s (%d errors so far)", what, self.errors, exc_info=True)
        if dropped_rows:
            self._drop(dropped_rows, "error")

    def _log(self, key: str, message: str, *args: Any, exc_info: bool = False) -> None:
        """A warning, at most once per ``LOG_EVERY_S`` for each ``key`` (the counters say how
        many times it happened)."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_log.get(key, -LOG_EVERY_S) < LOG_EVERY_S:
                return
            self._last_log[key] = now
        logger.warning(message, *args, exc_info=exc_info)

    # -- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        next_expiry = 0.0
        while True:
            if self.retention_days is not None and time.monotonic() >= next_expiry:
                next_expiry = time.monotonic() + EXPIRE_EVERY_S
                self.expire()
            if self._stop.wait(self.flush_s):
                break
            self.flush()
        self.flush()

    def expire(self) -> None:
        """Delete the date partitions older than ``retention_days`` (failures counted)."""
        try:
            if self.retention_days is not None:
                capture_files.expire(self.root, self.retention_days)
        except Exception:
            self._error(f"could not enforce the retention under {self.root}")

    def flush(self) -> None:
        """Write everything queued, one file per dataset partition."""
        batches: dict[tuple, list] = {}
        while True:
            try:
                (kind, version, record), n_rows = self._queue.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                self._queued_rows -= n_rows
            key = (kind, version, _today(record["timestamp"]))
            batches.setdefault(key, []).append((record, n_rows))
        for (kind, version, day), records in batches.items():
            self._write_partition(kind, version, day, records)

    def _write_partition(
        self, kind: str, version: str | None, day: str, records: list[tuple[dict, int]]
    ) -> None:
        """One file for the records of a partition; a record that cannot be made into a
        table drops alone (reason ``error``): the others are written without it."""
        try:
            table = _table(kind, [r for r, _ in records])
        except Exception:
            good = []
            for record, n in records:
                try:
                    _table(kind, [record])
                    good.append((record, n))
                except Exception:
                    self._error("a captured record could not be made into a table", n)
            if not good:
                return
            records, table = good, _table(kind, [r for r, _ in good])
        n_rows = sum(n for _, n in records)
        try:
            self._write(kind, version, day, table)
        except Exception as exc:
            self._drop(n_rows, "write_failed")
            self._log(
                "write", "capture: %d rows dropped, sink %s failed: %s", n_rows, self.root, exc
            )
            return
        with self._lock:
            self.written += n_rows
        try:
            self.on_write(n_rows, version or "none")
        except Exception:
            self._error("the on_write callback failed")

    def _write(self, kind: str, version: str | None, day: str, table: pa.Table) -> None:
        parts = [kind, f"{CAPTURE_DATE_KEY}={day}"] + (
            [f"{CAPTURE_VERSION_KEY}={version}"] if version else []
        )
        fs, root = storage.open_fs(self.root)
        directory = capture_files.make_dirs(fs, root, parts)
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        capture_files.write_table(fs, directory, name, table)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _is_label(item: Any) -> bool:
    """A ``/feedback`` item the capture can record: a prediction id, a label, and a ``row``
    that is a row index (absent: 0), as ``/feedback`` itself accepts them."""
    if not isinstance(item, dict) or item.get("prediction_id") is None or "label" not in item:
        return False
    row = item.get("row", 0)
    return type(row) is int and 0 <= row < MAX_ROW


def _table(kind: str, records: list[dict[str, Any]]) -> pa.Table:
    """One table from the records of one partition, each column built once."""

    def joined(key: str) -> np.ndarray:
        return np.concatenate([np.asarray(r[key]) for r in records])

    stamps = np.concatenate([np.full(len(r["prediction_id"]), r["timestamp"]) for r in records])
    common = {
        "prediction_id": pa.array(joined("prediction_id").astype(str), pa.string()),
        "row": pa.array(joined("row"), pa.int32()),
    }
    if kind == CAPTURE_LABELS:
        label = pa.array(joined("label").astype(str), pa.string())
        return pa.table({**common, "label": label, "timestamp": pa.array(stamps)})
    names = list(records[0]["features"])
    features = []
    for name in names:
        values = np.concatenate([r["features"][name] for r in records])
        numeric = values.dtype.kind == "f"
        features.append(
            pa.array(values, pa.float64() if numeric else pa.string(), from_pandas=True)
        )
    proba = np.concatenate([r["probabilities"] for r in records])
    return pa.table(
        {
            **common,
            "timestamp": pa.array(stamps),
            "features": pa.StructArray.from_arrays(features, names),
            "prediction": pa.array(joined("prediction").astype(str), pa.string()),
            "probabilities": pa.FixedSizeListArray.from_arrays(
                pa.array(proba.ravel(), pa.float64()), proba.shape[1]
            ),
        }
    )
