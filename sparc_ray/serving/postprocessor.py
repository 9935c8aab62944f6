"""Postprocessor deployment: monitoring and releases, off the request path.

``record`` takes an answered micro-batch (one group per answering version, with the labels
its responses carried), sent by the Validator as the responses go out, and queues it; a
background loop folds the queue into the monitoring state. No response waits for any of
it, and a failure in it is logged and counted, never raised. Its parts:
``FeedbackStore`` (labels joined to predictions), ``DriftTracker`` (PSI per version), the
traffic capture (``monitoring.capture``) and the ``ReleaseMonitor`` (evidence, shadow copies,
the policy's decision). The deployment runs one replica by default so the scores cover all
traffic (with more, each exports its own series, the alert rules take the max per model, and
the first to write a release decision wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from sparc_ray.inference.columns import Columns
from sparc_ray.inference.labels import class_index, labels_from_proba
from sparc_ray.inference.loader import ModelLoader
from sparc_ray.monitoring.capture import CaptureWriter
from sparc_ray.registry.layout import capture_root
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.serving import metrics
from sparc_ray.serving.drift_tracker import DriftTracker
from sparc_ray.serving.feedback import FeedbackStore, could_be_issued
from sparc_ray.serving.messages import PostBatch, ScoredGroup
from sparc_ray.serving.release.monitor import Labelled, ReleaseMonitor
from sparc_ray.serving.routing import ReleaseWatcher
from sparc_ray.serving.settings import PostprocessorSettings
from sparc_ray.serving.tasks import BackgroundTasks, Failures, flush_logs_forever

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class _Queued:
    group: ScoredGroup
    pinned: bool


@serve.deployment(name="Postprocessor")
class Postprocessor:
    # An async constructor: Serve awaits it (mypy expects __init__ to return None).
    async def __init__(self, model: DeploymentHandle, loader: ModelLoader) -> None:  # type: ignore[misc]
        self.model, self.loader, self.name = model, loader, loader.name
        self.settings = s = PostprocessorSettings()
        self.serving: str | None = None  # what answers as production, as the last batch said
        self._metadata: dict[str, ModelMetadata] = {}
        self._queue: deque[_Queued] = deque(maxlen=s.max_queued_batches)
        self._recorded = asyncio.Event()  # set by ``record``: feedback waiting on it looks again
        self.feedback_store = FeedbackStore(s.feedback_rows, s.accuracy_window, s.versions_tracked)
        self.drift = DriftTracker(s.drift_window_rows, s.drift_min_rows, s.versions_tracked)
        self.last_drift: dict[str, Any] | None = None
        self.failures = Failures()
        self.watcher = ReleaseWatcher(loader, s.release_every_s)
        self.release = ReleaseMonitor(self.name, loader.registry, self._score_copy)
        self.predictions = metrics.predictions()
        self.feature_drift, self.model_drift = metrics.feature_drift(), metrics.model_drift()
        self.accuracy = metrics.model_accuracy()
        self.captured_rows = metrics.captured_rows()
        self.capture_dropped = metrics.capture_dropped()
        self.conflicts, self._name_tag = metrics.feedback_conflicts(), {"model_name": self.name}
        self.capture: CaptureWriter | None = None
        self.tasks = BackgroundTasks()
        self.tasks.start("monitor", self._monitor_forever())
        self.tasks.start("release", self._release_forever())
        self.tasks.start("shadow", self._shadow_forever())
        self.tasks.start("log_flush", flush_logs_forever(self.failures))

    async def reconfigure(self, config: dict[str, Any]) -> None:
        self.settings = s = PostprocessorSettings.model_validate(config)
        self.feedback_store.resize(s.feedback_rows, s.accuracy_window, s.versions_tracked)
        self.drift = DriftTracker(s.drift_window_rows, s.drift_min_rows, s.versions_tracked)
        self._queue = deque(self._queue, maxlen=s.max_queued_batches)
        self.watcher.poll_interval_s = s.release_every_s
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
                retention_days=s.capture_retention_days,
                exclude=s.capture_exclude_features,
            )

    async def _meta(self, version: str) -> ModelMetadata:
        if version not in self._metadata:
            self._metadata[version] = await asyncio.to_thread(self.loader.load_metadata, version)
        return self._metadata[version]

    async def record(self, batch: PostBatch) -> None:
        """Queue one answered micro-batch for monitoring, group by group (one group per
        version that answered). Its responses are already out: the Validator shapes them and
        does not wait for this call."""
        if batch.serving is not None:
            self.serving = batch.serving
        # Under a pin no release is watched or decided (ReleaseMonitor.update sees the pin).
        self.watcher.pin(batch.serving if batch.pinned else None)
        for g in batch.groups:
            await self._meta(g.version)  # drift reference, and the classes /feedback checks
            if len(self._queue) == self._queue.maxlen:  # the oldest queued group goes
                full = OverflowError(f"{len(self._queue)} groups queued; the oldest dropped")
                self.failures.record("monitoring_backlog", full)
            self._queue.append(_Queued(g, batch.pinned))
        self._recorded.set()
        if batch.server_errors and not batch.pinned:
            self._guarded(
                "release_evidence", self.release.record_server_errors, batch.server_errors
            )

    # -- monitoring (background) ----------------------------------------------------------------
    def _guarded(self, where: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # predictions are not affected
            self.failures.record(where, exc)

    async def _monitor_forever(self) -> None:
        last_gauges = last_drift = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.monitor_every_s)
            self._drain()
            now = time.monotonic()
            if now - last_drift >= self.settings.drift_every_s:
                last_drift = now
                self._guarded("drift", self._publish_drift)
            if now - last_gauges >= self.settings.gauge_refresh_s:
                last_gauges = now
                self._guarded("gauges", self._refresh_gauges)

    def _drain(self) -> None:
        """Fold every queued group into the counters, drift windows, feedback store, capture
        and release evidence."""
        while self._queue:
            queued = self._queue.popleft()
            self._guarded("monitoring", self._record, queued.group, queued.pinned)

    def _record(self, group: ScoredGroup, pinned: bool) -> None:
        version, requests, columns = group.version, group.requests, group.columns
        labels = group.labels
        start = 0
        for request in requests:
            end = start + request.n_rows
            self.feedback_store.remember(request.prediction_id, labels[start:end], version)
            start = end
        tags = {"model_name": self.name, "model_version": version}
        self.predictions.inc(len(requests), tags=tags)
        if self.capture is not None:
            items = [{"prediction_id": r.prediction_id, "n_rows": r.n_rows} for r in requests]
            self.capture.offer_predictions(version, items, columns, labels, group.proba)
        self._observe_drift(version, columns, group.proba)
        if not pinned:
            self.release.record_batch(version, len(requests), group.model_ms)
            if version == self.release.view.production:
                self.release.offer_shadow(requests, columns, labels)

    def _observe_drift(self, version: str, columns: Columns, proba: np.ndarray) -> None:
        meta = self._metadata.get(version)  # read by ``record`` or ``_score_copy``
        self.drift.observe(version, meta.reference if meta else None, columns, class_index(proba))

    def _tags(self, version: str) -> dict[str, str] | None:
        """Quality-gauge tags: ``candidate`` for the release candidate, ``serving`` for what
        answers as production (pin included); None for any other version (not published)."""
        release = self.release.view.release
        if release is not None and version == release.version:
            role = "candidate"
        elif version == self.serving:
            role = "serving"
        else:
            return None
        return {"model_name": self.name, "model_version": version, "role": role}

    def _publish_drift(self) -> None:
        scores = self.drift.publish(self._tags, self.feature_drift, self.model_drift)
        if self.serving in scores:
            self.last_drift = {"model_version": self.serving, **scores[self.serving]}

    def _refresh_gauges(self) -> None:
        """Re-set the gauges periodically: Ray drops a gauge that is not refreshed (which is
        how a version that no longer serves leaves the dashboard)."""
        self._publish_drift()
        for version, outcomes in self.feedback_store.outcomes.items():
            if outcomes and (tags := self._tags(version)):
                self.accuracy.set(float(np.mean(outcomes)), tags=tags)
        self.release.publish()

    # -- releases (background) ------------------------------------------------------------------
    async def _score_copy(self, version: str, columns: Columns, sizes: list[int]) -> Labelled:
        """A shadow call: the Model scores ``columns`` as ``version``."""
        handle = self.model.options(multiplexed_model_id=version)
        scored = await handle.predict.remote(columns, sizes)
        classes = (await self._meta(version)).classes
        return Labelled(scored, labels_from_proba(scored.proba, classes).tolist())

    async def _release_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.release_every_s)
            try:
                self.release.update(await self.watcher.refresh())
                drift = {v: s["predictions"] for v, s in self.drift.scores().items()}
                if (decision := self.release.decide(drift)) is not None:
                    await asyncio.to_thread(self.release.finish, *decision)
                    self.release.update(await self.watcher.refresh(force=True))
            except Exception as exc:  # predictions are not affected
                self.failures.record("release_check", exc)

    async def _shadow_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.monitor_every_s)
            try:
                while (result := await self.release.shadow_once()) is not None:
                    self._observe_drift(result.version, result.columns, result.scored.proba)
                    self.feedback_store.add_shadow_labels(result.labels_by_id)
            except Exception as exc:  # predictions are not affected
                self.failures.record("shadow", exc)

    # -- feedback and status ----------------------------------------------------------------------
    async def feedback(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Check and join ground-truth labels to remembered predictions (``FeedbackStore``);
        update rolling accuracy (and, for shadowed rows, the candidate's). Only the labels
        matched here are captured."""
        await self._await_predictions(items)
        matched = self.feedback_store.match(items, self._classes)
        if matched.conflicts:
            self._guarded("feedback", self.conflicts.inc, matched.conflicts, self._name_tag)
        if self.capture is not None and matched.accepted:
            self.capture.offer_labels(matched.accepted)  # never raises
        shadow = self.release.view.shadow
        for outcome in matched.outcomes:
            self.release.record_outcome(outcome.version, outcome.correct)
            if shadow is not None and outcome.shadow_correct is not None:
                self.release.record_outcome(shadow.version, outcome.shadow_correct)
        self._guarded("gauges", self._refresh_gauges)
        return {
            "matched": len(matched.outcomes),
            "unknown": matched.unknown,
            "invalid": matched.invalid,
            "conflicts": matched.conflicts,
            **self.feedback_store.accuracy(self.serving),
        }

    async def _await_predictions(self, items: list[dict[str, Any]]) -> None:
        """Fold queued records in, waiting up to ``feedback_wait_s`` for the issued-form
        prediction ids of ``items`` not remembered yet: a record is sent as its response goes
        out, so a label posted at once can arrive first."""
        ids = [i.get("prediction_id") for i in items if isinstance(i, dict)]
        ids = [i for i in ids if could_be_issued(i)]  # any other id is unknown at once
        deadline = time.monotonic() + self.settings.feedback_wait_s
        while True:
            self._recorded.clear()
            self._drain()
            recent = self.feedback_store.recent
            left = deadline - time.monotonic()
            if all(i in recent for i in ids) or left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recorded.wait(), left)

    def _classes(self, version: str) -> list[Any] | None:
        meta = self._metadata.get(version)  # read by ``record`` when the version answered
        return None if meta is None else list(meta.classes)

    async def stats(self) -> dict[str, Any]:
        self._drain()
        accuracy = self.feedback_store.accuracy(self.serving)
        return {
            "drift": self.last_drift,
            "accuracy": accuracy["accuracy"],
            "labelled_predictions": accuracy["labelled"],
            "accuracy_by_version": accuracy["accuracy_by_version"],
            "remembered_predictions": len(self.feedback_store.recent),
            "remembered_rows": self.feedback_store.rows,
            "feedback_conflicts": self.feedback_store.conflicts,
            "monitoring_errors": sum(self.failures.counts.values()),
        }

    async def release_status(self) -> dict[str, Any]:
        """Live evidence of the release in progress (``/health``)."""
        return self.release.status()

    async def check_health(self) -> None:
        self.tasks.check()
