"""Postprocessor deployment: labels and response shape, then monitoring off the request path.

``process`` shapes a micro-batch's responses and queues the batch for monitoring (prediction
counter, drift windows, the feedback store); a background task drains the queue, so
monitoring work never delays a response, and a failure in it is logged, never raised.
Drift windows and the feedback store live here; the deployment runs one replica by default
so the scores cover all traffic (with more, each exports its own series and the alert rules
take the max per model).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from typing import Any

import numpy as np
from ray import serve

from sparc_ray.drift import DriftMonitor
from sparc_ray.labels import labels_from_proba
from sparc_ray.serving import metrics
from sparc_ray.serving.fastpath import flush_logs_forever
from sparc_ray.serving.loader import ModelLoader
from sparc_ray.serving.settings import PostprocessorSettings

logger = logging.getLogger("ray.serve")
MONITOR_EVERY_S = 0.2  # how often queued batches are folded into the monitoring state
DRIFT_EVERY_S = 1.0  # recompute PSI at most this often
GAUGE_REFRESH_S = 5.0  # Ray's exporter drops a gauge not set for ~2 export intervals
MAX_QUEUED_BATCHES = 10_000  # beyond this, monitoring drops batches rather than memory


def shape_responses(
    items: list[dict[str, Any]], proba: np.ndarray, labels: list, classes: list, version: str
) -> list[dict[str, Any]]:
    """One response body per request; ``items`` hold each request's ``n_rows`` and
    ``include_probabilities``, and ``proba`` / ``labels`` stack their rows in the same order."""
    out, start = [], 0
    for item in items:
        end = start + item["n_rows"]
        out.append(
            {
                "predictions": labels[start:end],
                "probabilities": proba[start:end].round(6).tolist()
                if item["include_probabilities"]
                else None,
                "classes": classes,
                "model_version": version,
            }
        )
        start = end
    return out


@serve.deployment(name="Postprocessor", ray_actor_options={"num_cpus": 0.25})
class Postprocessor:
    async def __init__(self, loader: ModelLoader) -> None:
        self.loader = loader
        self.name = loader.name
        self.settings = PostprocessorSettings()
        self._metadata: dict[str, dict[str, Any]] = {}
        self._drift: dict[str, DriftMonitor] = {}
        self._drift_checked = 0.0
        self.last_drift: dict[str, Any] | None = None
        self._recent: OrderedDict[str, tuple[list, str]] = OrderedDict()
        self._outcomes: deque[bool] = deque(maxlen=self.settings.accuracy_window)
        self._queue: deque[tuple] = deque(maxlen=MAX_QUEUED_BATCHES)
        self.monitoring_errors = 0
        self.predictions = metrics.predictions()
        self.feature_drift = metrics.feature_drift()
        self.model_drift = metrics.model_drift()
        self.accuracy = metrics.model_accuracy()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._monitor_forever()),
            loop.create_task(flush_logs_forever()),
        ]

    async def reconfigure(self, config: dict[str, Any]) -> None:
        self.settings = PostprocessorSettings.model_validate(config)
        self._outcomes = deque(self._outcomes, maxlen=self.settings.accuracy_window)
        self._drift.clear()  # new window sizes start new windows

    def _meta(self, version: str) -> dict[str, Any]:
        if version not in self._metadata:
            self._metadata[version] = self.loader.load_metadata(version)
        return self._metadata[version]

    async def process(
        self,
        items: list[dict[str, Any]],
        proba: np.ndarray,
        version: str,
        columns: dict[str, np.ndarray],
    ) -> list[dict[str, Any]]:
        """Shape one micro-batch's responses; monitoring happens later, off this path."""
        if version not in self._metadata:
            await asyncio.to_thread(self._meta, version)
        classes = self._metadata[version]["classes"]
        labels = labels_from_proba(proba, classes).tolist()
        self._queue.append((items, proba, labels, version, columns))
        return shape_responses(items, proba, labels, classes, version)

    # -- monitoring (background) ----------------------------------------------------------------
    async def _monitor_forever(self) -> None:
        last_gauges = time.monotonic()
        while True:
            await asyncio.sleep(MONITOR_EVERY_S)
            self._drain()
            if time.monotonic() - last_gauges >= GAUGE_REFRESH_S:
                last_gauges = time.monotonic()
                self._guarded(self._refresh_gauges)

    def _guarded(self, fn, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.monitoring_errors += 1
            logger.exception("monitoring failed (predictions are not affected)")

    def _drain(self) -> None:
        """Fold every queued batch into the counters, drift windows and feedback store."""
        while self._queue:
            self._guarded(self._record, *self._queue.popleft())
        if time.monotonic() - self._drift_checked >= DRIFT_EVERY_S:
            self._guarded(self._publish_drift)

    def _record(
        self,
        items: list[dict[str, Any]],
        proba: np.ndarray,
        labels: list,
        version: str,
        columns: dict[str, np.ndarray],
    ) -> None:
        meta = self._meta(version)
        start = 0
        for item in items:
            end = start + item["n_rows"]
            self._remember(item["prediction_id"], labels[start:end], version)
            start = end
        self.predictions.inc(len(items), tags={"model_name": self.name, "model_version": version})
        if "reference" in meta:
            if version not in self._drift:  # a new version starts a new window
                s = self.settings
                self._drift = {
                    version: DriftMonitor(meta["reference"], s.drift_window_rows, s.drift_min_rows)
                }
            self._drift[version].update(columns, proba.argmax(axis=1))

    def _refresh_gauges(self) -> None:
        """Re-set the gauges periodically: drift / accuracy would vanish between requests."""
        self._publish_drift()
        if self._outcomes:
            self.accuracy.set(float(np.mean(self._outcomes)), tags={"model_name": self.name})

    def _publish_drift(self) -> None:
        self._drift_checked = time.monotonic()
        for version, monitor in self._drift.items():
            scores = monitor.scores()
            if scores is None:
                continue
            self.last_drift = {"model_version": version, **scores}
            for feature, value in scores["features"].items():
                self.feature_drift.set(
                    value, tags={"model_name": self.name, "feature_name": feature}
                )
            self.model_drift.set(scores["predictions"], tags={"model_name": self.name})

    # -- feedback -------------------------------------------------------------------------
    def _remember(self, prediction_id: str, labels: list, version: str) -> None:
        self._recent[prediction_id] = (labels, version)
        while len(self._recent) > self.settings.feedback_capacity:
            self._recent.popitem(last=False)

    async def feedback(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Join ground-truth labels to remembered predictions; update rolling accuracy."""
        self._drain()  # predictions answered a moment ago are still queued
        matched, unknown, invalid = 0, [], []
        for i, item in enumerate(items):
            entry = self._recent.get(str(item.get("prediction_id")))
            row = item.get("row", 0)
            if entry is None:
                unknown.append(item.get("prediction_id"))
                continue
            labels, _ = entry
            if type(row) is not int or not 0 <= row < len(labels) or labels[row] is None:
                invalid.append({"index": i, "message": "row is out of range or already labelled"})
                continue
            self._outcomes.append(str(labels[row]) == str(item.get("label")))
            labels[row] = None  # one label per predicted row
            matched += 1
        accuracy = float(np.mean(self._outcomes)) if self._outcomes else None
        if accuracy is not None:
            self._guarded(self.accuracy.set, accuracy, {"model_name": self.name})
        return {
            "matched": matched,
            "unknown": unknown,
            "invalid": invalid,
            "accuracy": accuracy,
            "labelled": len(self._outcomes),
        }

    async def stats(self) -> dict[str, Any]:
        self._drain()
        return {
            "drift": self.last_drift,
            "accuracy": float(np.mean(self._outcomes)) if self._outcomes else None,
            "labelled_predictions": len(self._outcomes),
            "remembered_predictions": len(self._recent),
            "monitoring_errors": self.monitoring_errors,
        }
