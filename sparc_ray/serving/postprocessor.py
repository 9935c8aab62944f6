"""Postprocessor deployment: labels and response shape, then monitoring off the request path.

``process`` shapes a micro-batch's responses (one group per answering version) and queues
the groups for monitoring (prediction counter, drift windows per version, the feedback
store, the release evidence); a background task drains the queue, so monitoring work never
delays a response, and a failure in it is logged, never raised. The release in progress is
watched and decided here (``ReleaseMonitor``). The deployment runs one replica by default so
the scores cover all traffic (with more, each exports its own series, the alert rules take
the max per model, and the first to write a release decision wins).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from sparc_ray.inference.labels import labels_from_proba
from sparc_ray.inference.loader import ModelLoader
from sparc_ray.monitoring.capture import CaptureWriter, capture_root
from sparc_ray.monitoring.drift import DriftMonitor
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.serving import metrics
from sparc_ray.serving.fastpath import flush_logs_forever
from sparc_ray.serving.release.monitor import ReleaseMonitor
from sparc_ray.serving.routing import ReleaseWatcher
from sparc_ray.serving.settings import PostprocessorSettings

logger = logging.getLogger("ray.serve")
MONITOR_EVERY_S = 0.2  # how often queued batches are folded into the monitoring state
DRIFT_EVERY_S = 1.0  # recompute PSI at most this often
GAUGE_REFRESH_S = 5.0  # Ray's exporter drops a gauge not set for ~2 export intervals
MAX_QUEUED_BATCHES = 10_000  # beyond this, monitoring drops batches rather than memory
RELEASE_EVERY_S = 1.0  # re-read the release records and apply the policy this often
MAX_VERSIONS_TRACKED = 4  # drift windows / accuracy windows kept per version
SERVING_TTL_S = 60.0  # a version that answered as production this recently is "serving"


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
    async def __init__(self, model: DeploymentHandle, loader: ModelLoader) -> None:
        self.model, self.loader = model, loader
        self.name = loader.name
        self.settings = PostprocessorSettings()
        self._metadata: dict[str, ModelMetadata] = {}
        self._drift: dict[str, DriftMonitor] = {}
        self._drift_checked = 0.0
        self.last_drift: dict[str, Any] | None = None
        # prediction id -> [labels, version, candidate's shadow labels or None]
        self._recent: OrderedDict[str, list] = OrderedDict()
        self._recent_rows = 0  # rows held in _recent: the bound is in rows, not requests
        self._outcomes: dict[str, deque[bool]] = {}
        self._queue: deque[tuple] = deque(maxlen=MAX_QUEUED_BATCHES)
        self._serving_seen: dict[str, float] = {}  # version -> when it last answered as such
        self.monitoring_errors = 0
        self.watcher = ReleaseWatcher(loader, RELEASE_EVERY_S)
        self.release = ReleaseMonitor(self.name, loader.registry, self._score_copy)
        self.predictions = metrics.predictions()
        self.feature_drift = metrics.feature_drift()
        self.model_drift = metrics.model_drift()
        self.accuracy = metrics.model_accuracy()
        self.captured_rows, self.capture_dropped = (
            metrics.captured_rows(),
            metrics.capture_dropped(),
        )
        self.capture: CaptureWriter | None = None
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._monitor_forever()),
            loop.create_task(self._release_forever()),
            loop.create_task(self._shadow_forever()),
            loop.create_task(flush_logs_forever()),
        ]

    async def reconfigure(self, config: dict[str, Any]) -> None:
        self.settings = PostprocessorSettings.model_validate(config)
        self._outcomes = {
            v: deque(o, maxlen=self.settings.accuracy_window) for v, o in self._outcomes.items()
        }
        self._drift.clear()  # new window sizes start new windows
        self._configure_capture()

    def _configure_capture(self) -> None:
        """(Re)start the traffic capture as the settings say; rows queued so far are written."""
        s = self.settings
        if self.capture is not None:
            old, self.capture = self.capture, None
            threading.Thread(target=old.close, daemon=True).start()  # flushes off the loop
        if s.capture_rate > 0:
            name = {"model_name": self.name}
            self.capture = CaptureWriter(
                s.capture_uri or capture_root(self.loader.registry.store, self.name),
                s.capture_rate,
                s.capture_flush_s,
                s.capture_max_queued_rows,
                on_drop=lambda n, reason: self.capture_dropped.inc(
                    n, tags={**name, "reason": reason}
                ),
                on_write=lambda n, v: self.captured_rows.inc(n, tags={**name, "model_version": v}),
            )

    def _meta(self, version: str) -> ModelMetadata:
        if version not in self._metadata:
            self._metadata[version] = self.loader.load_metadata(version)
        return self._metadata[version]

    async def process(
        self, groups: list[dict[str, Any]], server_errors: dict[str, int], pinned: bool
    ) -> list[list[dict[str, Any]]]:
        """Shape one micro-batch's responses, group by group (one group per version that
        answered); monitoring happens later, off this path."""
        out = []
        for g in groups:
            version = g["version"]
            if version not in self._metadata:
                await asyncio.to_thread(self._meta, version)
            classes = self._metadata[version].classes
            labels = labels_from_proba(g["proba"], classes).tolist()
            self._queue.append((g, labels, pinned))
            out.append(shape_responses(g["items"], g["proba"], labels, classes, version))
        if server_errors and not pinned:
            self._guarded(self.release.record_server_errors, server_errors)
        return out

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
        """Fold every queued group into the counters, drift windows, feedback store and
        release evidence."""
        while self._queue:
            self._guarded(self._record, *self._queue.popleft())
        if time.monotonic() - self._drift_checked >= DRIFT_EVERY_S:
            self._guarded(self._publish_drift)

    def _record(self, group: dict[str, Any], labels: list, pinned: bool) -> None:
        version, items, columns = group["version"], group["items"], group["columns"]
        start = 0
        for item in items:
            end = start + item["n_rows"]
            self._remember(item["prediction_id"], labels[start:end], version)
            start = end
        self.predictions.inc(len(items), tags={"model_name": self.name, "model_version": version})
        if self.capture is not None:
            self.capture.offer_predictions(version, items, columns, labels, group["proba"])
        self._observe_drift(version, columns, group["proba"])
        if self._role(version) != "candidate":
            self._serving_seen[version] = time.monotonic()
        if not pinned:
            self.release.record_batch(version, len(items), group["model_ms"])
            if version == self.release.view.production:
                self.release.offer_shadow(items, columns, labels)

    def _observe_drift(self, version: str, columns: dict, proba: np.ndarray) -> None:
        meta = self._meta(version)
        if meta.reference is None:
            return
        if version not in self._drift:  # each version has its own window
            while len(self._drift) >= MAX_VERSIONS_TRACKED:
                self._drift.pop(next(iter(self._drift)))
            s = self.settings
            self._drift[version] = DriftMonitor(
                meta.reference, s.drift_window_rows, s.drift_min_rows
            )
        self._drift[version].update(columns, proba.argmax(axis=1))

    def _role(self, version: str) -> str | None:
        """``candidate`` / ``serving`` for the gauges; None: stop publishing this version."""
        release = self.release.view.release
        if release is not None and version == release.version:
            return "candidate"
        seen = self._serving_seen.get(version)
        return "serving" if seen and time.monotonic() - seen < SERVING_TTL_S else None

    def _tags(self, version: str) -> dict[str, str] | None:
        role = self._role(version)
        return role and {"model_name": self.name, "model_version": version, "role": role}

    def _refresh_gauges(self) -> None:
        """Re-set the gauges periodically: drift / accuracy would vanish between requests
        (and do vanish, once a version no longer serves or is no longer the candidate)."""
        self._publish_drift()
        for version, outcomes in self._outcomes.items():
            if outcomes and (tags := self._tags(version)):
                self.accuracy.set(float(np.mean(outcomes)), tags=tags)
        self.release.publish()

    def _drift_scores(self) -> dict[str, dict[str, Any]]:
        return {v: s for v, m in self._drift.items() if (s := m.scores()) is not None}

    def _publish_drift(self) -> None:
        self._drift_checked = time.monotonic()
        for version, scores in self._drift_scores().items():
            if version == self.release.view.serving:
                self.last_drift = {"model_version": version, **scores}
            if (tags := self._tags(version)) is None:
                continue
            for feature, value in scores["features"].items():
                self.feature_drift.set(value, tags={**tags, "feature_name": feature})
            self.model_drift.set(scores["predictions"], tags=tags)

    # -- releases (background) ------------------------------------------------------------------
    async def _score_copy(self, version: str, columns: dict, sizes: list[int]) -> tuple:
        """A shadow call: the Model scores ``columns`` as ``version``; returns (Scored, labels)."""
        handle = self.model.options(multiplexed_model_id=version)
        scored = await handle.predict.remote(columns, sizes)
        if version not in self._metadata:
            await asyncio.to_thread(self._meta, version)
        return scored, labels_from_proba(scored.proba, self._metadata[version].classes).tolist()

    async def _release_forever(self) -> None:
        while True:
            await asyncio.sleep(RELEASE_EVERY_S)
            try:
                self.release.update(await self.watcher.refresh())
                drift = {v: s["predictions"] for v, s in self._drift_scores().items()}
                if (decision := self.release.decide(drift)) is not None:
                    await asyncio.to_thread(self.release.finish, *decision)
                    self.release.update(await self.watcher.refresh(force=True))
            except Exception:
                self.monitoring_errors += 1
                logger.exception("release check failed (predictions are not affected)")

    async def _shadow_forever(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_EVERY_S)
            try:
                while (result := await self.release.shadow_once()) is not None:
                    version, columns, scored, by_id = result
                    self._observe_drift(version, columns, scored.proba)
                    for prediction_id, labels in by_id.items():
                        if (entry := self._recent.get(prediction_id)) is not None:
                            entry[2] = labels
            except Exception:
                self.monitoring_errors += 1
                logger.exception("shadow scoring failed (predictions are not affected)")

    # -- feedback -------------------------------------------------------------------------
    def _remember(self, prediction_id: str, labels: list, version: str) -> None:
        self._recent[prediction_id] = [labels, version, None]
        self._recent_rows += len(labels)
        while self._recent_rows > self.settings.feedback_rows and len(self._recent) > 1:
            self._recent_rows -= len(self._recent.popitem(last=False)[1][0])

    def _outcome(self, version: str, correct: bool) -> None:
        if version not in self._outcomes:
            while len(self._outcomes) >= MAX_VERSIONS_TRACKED:
                self._outcomes.pop(next(iter(self._outcomes)))
            self._outcomes[version] = deque(maxlen=self.settings.accuracy_window)
        self._outcomes[version].append(correct)
        self.release.record_outcome(version, correct)

    async def feedback(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Join ground-truth labels to remembered predictions; update rolling accuracy (and,
        for shadowed rows, the candidate's)."""
        self._drain()  # predictions answered a moment ago are still queued
        if self.capture is not None:
            self.capture.offer_labels(items)
        matched, unknown, invalid = 0, [], []
        shadow = self.release.view.shadow
        for i, item in enumerate(items):
            entry = self._recent.get(str(item.get("prediction_id")))
            row = item.get("row", 0)
            if entry is None:
                unknown.append(item.get("prediction_id"))
                continue
            labels, version, shadow_labels = entry
            if type(row) is not int or not 0 <= row < len(labels) or labels[row] is None:
                invalid.append({"index": i, "message": "row is out of range or already labelled"})
                continue
            truth = str(item.get("label"))
            self._outcome(version, str(labels[row]) == truth)
            if shadow is not None and shadow_labels is not None:
                self.release.record_outcome(shadow.version, str(shadow_labels[row]) == truth)
            labels[row] = None  # one label per predicted row
            matched += 1
        self._guarded(self._refresh_gauges)
        return {"matched": matched, "unknown": unknown, "invalid": invalid, **self._accuracy()}

    def _accuracy(self) -> dict[str, Any]:
        serving = self._outcomes.get(self.release.view.serving or "") or deque()
        return {
            "accuracy": float(np.mean(serving)) if serving else None,
            "labelled": len(serving),
            "accuracy_by_version": {
                v: {"accuracy": float(np.mean(o)), "labelled": len(o)}
                for v, o in self._outcomes.items()
                if o
            },
        }

    async def stats(self) -> dict[str, Any]:
        self._drain()
        accuracy = self._accuracy()
        return {
            "drift": self.last_drift,
            "accuracy": accuracy["accuracy"],
            "labelled_predictions": accuracy["labelled"],
            "accuracy_by_version": accuracy["accuracy_by_version"],
            "remembered_predictions": len(self._recent),
            "remembered_rows": self._recent_rows,
            "monitoring_errors": self.monitoring_errors,
        }

    async def release_status(self) -> dict[str, Any]:
        """Live evidence of the release in progress (``/health``)."""
        return self.release.status()
