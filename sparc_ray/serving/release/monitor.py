"""The release in progress, watched live: evidence per version, the shadow copy, the decision.

Lives in the Postprocessor, which sees every answered batch and every feedback label.
Canary: the Validator reports each batch's Model-call time and any server errors per
version. Shadow: a sample (``weight`` percent) of production's batches is queued here and
scored by the candidate off the request path, in merged calls; production scores the same
rows in the same call shape so their latencies compare like for like, and the candidate's
labels are kept beside production's for agreement and for feedback accuracy.
Every second the policy (``judge.decide``) runs on the evidence; a decision is written to
the registry (``releases.finish_release``), which every replica reads.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from sparc_ray.registry import releases
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.serving import metrics
from sparc_ray.serving.release.policy import Agreement, VersionEvidence, decide
from sparc_ray.serving.routing import ReleaseView

logger = logging.getLogger("ray.serve")
SHADOW_QUEUE_ROWS = 20_000  # beyond this, shadow copies are dropped (and counted)
SHADOW_CALL_ROWS = 1_000  # rows per shadow call

Score = Callable[[str, dict[str, np.ndarray], list[int]], Awaitable[Any]]


class ReleaseMonitor:
    def __init__(self, name: str, registry: ModelRegistry, score: Score) -> None:
        self.name, self.registry, self.score = name, registry, score
        self.view = ReleaseView()
        self.release_id: str | None = None
        self.evidence: dict[str, VersionEvidence] = {}
        self.agreement = Agreement()
        self.shadow_queue: deque[tuple[list[dict], dict[str, np.ndarray], list]] = deque()
        self.shadow_rows = 0
        self.shadow_dropped = 0
        self.last_decision: dict[str, Any] | None = None
        self.decisions = metrics.release_decisions()
        self.weight = metrics.release_weight()
        self.agreement_gauge = metrics.shadow_agreement()

    # -- state ----------------------------------------------------------------------------
    def update(self, view: ReleaseView) -> None:
        """Start a fresh record when the release in progress changes."""
        release = view.release if not view.pinned else None
        rid = release.id if release else None
        if rid != self.release_id:
            self.release_id = rid
            self.evidence = {}
            self.agreement = Agreement()
            self.shadow_queue.clear()
            self.shadow_rows = 0
        self.view = view

    def role(self, version: str) -> VersionEvidence | None:
        """The evidence record of ``version`` if it takes part in the release."""
        release = self.view.release
        if self.release_id is None or version not in (release.version, self.view.production):
            return None
        return self.evidence.setdefault(version, VersionEvidence())

    # -- what the request path reports -------------------------------------------------------
    def record_batch(self, version: str, n_requests: int, model_ms: float) -> None:
        if self.release_id is None or self.view.release.mode != "canary":
            return
        if (ev := self.role(version)) is not None:
            ev.requests += n_requests
            ev.latencies_ms.extend([model_ms] * n_requests)

    def record_server_errors(self, errors: dict[str, int]) -> None:
        for version, n in errors.items():
            if (ev := self.role(version)) is not None:
                ev.server_errors += n
                ev.requests += n

    def record_outcome(self, version: str | None, correct: bool) -> None:
        if version is not None and (ev := self.role(version)) is not None:
            ev.outcomes.append(correct)

    def offer_shadow(self, items: list[dict], columns: dict[str, np.ndarray], labels: list) -> None:
        """Queue a production batch for the candidate (a ``weight`` percent sample)."""
        shadow = self.view.shadow
        # B311: a traffic sample, not a secret
        if shadow is None or random.random() * 100 >= shadow.weight:  # nosec B311
            return
        if self.shadow_rows + len(labels) > SHADOW_QUEUE_ROWS:
            self.shadow_dropped += len(items)
            return
        self.shadow_queue.append((items, columns, labels))
        self.shadow_rows += len(labels)

    # -- shadow scoring (background) -----------------------------------------------------------
    async def shadow_once(self) -> tuple[str, dict[str, np.ndarray], Any, dict[str, list]] | None:
        """Score queued rows with the candidate (and production, for timing). Returns the
        candidate version, the rows, its Scored result and its labels per prediction id."""
        shadow, production = self.view.shadow, self.view.production
        if shadow is None or not self.shadow_queue:
            return None
        batch, rows = [], 0
        while self.shadow_queue and rows < SHADOW_CALL_ROWS:
            batch.append(self.shadow_queue.popleft())
            rows += len(batch[-1][2])
        self.shadow_rows -= rows
        items = [it for b in batch for it in b[0]]
        columns = {n: np.concatenate([b[1][n] for b in batch]) for n in batch[0][1]}
        labels = [lab for b in batch for lab in b[2]]
        sizes = [it["n_rows"] for it in items]
        cand, prod = self.role(shadow.version), self.role(production)
        timings, results = {}, {}
        for version in (shadow.version, production):
            start = time.perf_counter()
            try:
                results[version] = await self.score(version, columns, sizes)
            except Exception as exc:
                logger.warning("shadow call to %s failed: %r", version, exc)
                if version == shadow.version:
                    cand.server_errors += len(items)
                    cand.requests += len(items)
                    return None
                continue
            timings[version] = (time.perf_counter() - start) * 1000
        scored, shadow_labels = results[shadow.version]
        cand.requests += len(items)
        self.agreement.same += sum(a == b for a, b in zip(shadow_labels, labels, strict=True))
        self.agreement.rows += len(labels)
        for version, ms in timings.items():
            (cand if version == shadow.version else prod).latencies_ms.extend([ms] * len(items))
        by_id, start = {}, 0
        for it in items:
            by_id[it["prediction_id"]] = shadow_labels[start : start + it["n_rows"]]
            start += it["n_rows"]
        return shadow.version, columns, scored, by_id

    # -- decision -------------------------------------------------------------------------------
    def decide(self, drift: dict[str, float | None]) -> tuple[str, str] | None:
        release = self.view.release
        if self.release_id is None:
            return None
        cand = self.evidence.setdefault(release.version, VersionEvidence())
        prod = self.evidence.setdefault(self.view.production, VersionEvidence())
        cand.drift, prod.drift = drift.get(release.version), drift.get(self.view.production)
        return decide(release.policy, release.mode, prod, cand, self.agreement)

    def finish(self, decision: str, reason: str) -> bool:
        """Write the decision to the registry (blocking I/O: call it in a thread)."""
        release = self.view.release
        evidence = self.status()
        done = releases.finish_release(
            self.registry, self.name, release.id, decision, reason, evidence
        )
        if done:
            self.last_decision = {"decision": decision, "reason": reason, **evidence}
            tags = {"model_name": self.name, "model_version": release.version}
            self.decisions.inc(tags={**tags, "decision": decision})
            logger.warning("release %s of %s %s: %s", release.id, release.version, decision, reason)
        return done

    def publish(self) -> None:
        release = self.view.release
        if self.release_id is None:
            return
        tags = {"model_name": self.name, "model_version": release.version, "mode": release.mode}
        self.weight.set(release.weight, tags=tags)
        if self.agreement.rate is not None:
            self.agreement_gauge.set(self.agreement.rate, tags={**tags})

    def status(self) -> dict[str, Any]:
        release = self.view.release if self.release_id else None
        return {
            "release_id": self.release_id,
            "candidate": release.version if release else None,
            "mode": release.mode if release else None,
            "versions": {v: ev.summary() for v, ev in self.evidence.items()},
            "shadow": {
                "agreement": self.agreement.rate,
                "rows": self.agreement.rows,
                "queued_rows": self.shadow_rows,
                "dropped_requests": self.shadow_dropped,
            }
            if release and release.mode == "shadow"
            else None,
            "last_decision": self.last_decision,
        }
