"""Postprocessor deployment: labels and response shape, prediction metrics, drift, feedback.

Drift windows and the feedback store live in this deployment, which runs one replica by
default so the scores cover all traffic. With more replicas each exports its own series
(label ``replica``); the alert rules take the max per model.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from typing import Any

import numpy as np
from ray import serve

from sparc_ray.drift import DriftMonitor
from sparc_ray.serving import metrics
from sparc_ray.serving.loader import ModelLoader

DRIFT_EVERY_S = 1.0  # recompute PSI at most this often on the request path
GAUGE_REFRESH_S = 5.0


@serve.deployment(name="Postprocessor", ray_actor_options={"num_cpus": 0.25})
class Postprocessor:
    def __init__(self, loader: ModelLoader) -> None:
        self.loader = loader
        self.name = loader.name
        self.window_rows, self.min_rows = 2000, 200
        self.feedback_capacity, self.accuracy_window = 100_000, 1000
        self._metadata: dict[str, dict[str, Any]] = {}
        self._drift: dict[str, DriftMonitor] = {}
        self._drift_checked = 0.0
        self.last_drift: dict[str, Any] | None = None
        self._recent: OrderedDict[str, tuple[list, str]] = OrderedDict()
        self._outcomes: deque[bool] = deque(maxlen=self.accuracy_window)
        self.predictions = metrics.predictions()
        self.feature_drift = metrics.feature_drift()
        self.model_drift = metrics.model_drift()
        self.accuracy = metrics.model_accuracy()
        self._refresher = asyncio.get_event_loop().create_task(self._refresh_gauges())

    async def _refresh_gauges(self) -> None:
        """Re-set the gauges periodically: Ray's exporter drops a gauge not set for ~2 export
        intervals, and drift / accuracy would otherwise vanish between requests."""
        while True:
            await asyncio.sleep(GAUGE_REFRESH_S)
            self._publish_drift()
            if self._outcomes:
                self.accuracy.set(float(np.mean(self._outcomes)), tags={"model_name": self.name})

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.window_rows = int(config.get("drift_window_rows", self.window_rows))
        self.min_rows = int(config.get("drift_min_rows", self.min_rows))
        self.feedback_capacity = int(config.get("feedback_capacity", self.feedback_capacity))
        self.accuracy_window = int(config.get("accuracy_window", self.accuracy_window))
        self._outcomes = deque(self._outcomes, maxlen=self.accuracy_window)
        self._drift.clear()  # new window sizes start new windows

    def _meta(self, version: str) -> dict[str, Any]:
        if version not in self._metadata:
            self._metadata[version] = self.loader.load_metadata(version)
        return self._metadata[version]

    def process(
        self,
        items: list[dict[str, Any]],
        columns: dict[str, np.ndarray],
        version: str,
        proba: np.ndarray,
    ) -> list[dict[str, Any]]:
        """Shape one ingress batch: ``items`` hold each request's id, row count and flags;
        ``proba`` stacks their probability rows in the same order as ``columns``."""
        meta = self._meta(version)
        classes = meta["classes"]
        index = proba.argmax(axis=1)
        labels = np.asarray(classes, dtype=object)[index].tolist()
        out, start = [], 0
        for item in items:
            end = start + item["n_rows"]
            preds = labels[start:end]
            out.append(
                {
                    "predictions": preds,
                    "probabilities": proba[start:end].round(6).tolist()
                    if item["include_probabilities"]
                    else None,
                    "classes": classes,
                    "model_version": version,
                }
            )
            self._remember(item["prediction_id"], list(preds), version)
            start = end
        self.predictions.inc(len(items), tags={"model_name": self.name, "model_version": version})
        self._update_drift(version, meta, columns, index)
        return out

    # -- drift ----------------------------------------------------------------------------
    def _update_drift(
        self, version: str, meta: dict[str, Any], columns: dict[str, np.ndarray], index: np.ndarray
    ) -> None:
        if "reference" not in meta:
            return
        if version not in self._drift:  # a new version starts a new window
            self._drift = {
                version: DriftMonitor(meta["reference"], self.window_rows, self.min_rows)
            }
        self._drift[version].update(columns, index)
        if time.monotonic() - self._drift_checked >= DRIFT_EVERY_S:
            self._publish_drift()

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
        while len(self._recent) > self.feedback_capacity:
            self._recent.popitem(last=False)

    def feedback(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Join ground-truth labels to remembered predictions; update rolling accuracy."""
        matched, unknown, invalid = 0, [], []
        for i, item in enumerate(items):
            entry = self._recent.get(str(item.get("prediction_id")))
            row = item.get("row", 0)
            if entry is None:
                unknown.append(item.get("prediction_id"))
                continue
            labels, _ = entry
            if not isinstance(row, int) or not 0 <= row < len(labels) or labels[row] is None:
                invalid.append({"index": i, "message": "row is out of range or already labelled"})
                continue
            self._outcomes.append(str(labels[row]) == str(item.get("label")))
            labels[row] = None  # one label per predicted row
            matched += 1
        accuracy = float(np.mean(self._outcomes)) if self._outcomes else None
        if accuracy is not None:
            self.accuracy.set(accuracy, tags={"model_name": self.name})
        return {
            "matched": matched,
            "unknown": unknown,
            "invalid": invalid,
            "accuracy": accuracy,
            "labelled": len(self._outcomes),
        }

    def stats(self) -> dict[str, Any]:
        return {
            "drift": self.last_drift,
            "accuracy": float(np.mean(self._outcomes)) if self._outcomes else None,
            "labelled_predictions": len(self._outcomes),
            "remembered_predictions": len(self._recent),
        }
