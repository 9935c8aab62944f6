"""The release in progress, watched live: evidence per version, the shadow copy, the decision.

Lives in the Postprocessor, which sees every answered batch and every feedback label.
Canary: the Validator reports each batch's Model-call time and any server errors per
version. Shadow: a sample (``weight`` percent) of production's batches is queued here and
scored by the candidate off the request path, in merged calls; production scores the same
rows in the same call shape so their latencies compare like for like, and the candidate's
labels are kept beside production's for agreement and for feedback accuracy.
Every second the policy (``policy.decide``) runs on the evidence; a decision is written to
the registry (``releases.finish_release``), which every replica reads.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sparc_ray.inference.columns import Columns, concat
from sparc_ray.registry import releases
from sparc_ray.registry.releases import Decision, Release
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.serving import metrics
from sparc_ray.serving.messages import RequestMeta, Scored
from sparc_ray.serving.release.policy import Agreement, VersionEvidence, decide
from sparc_ray.serving.routing import ReleaseView

logger = logging.getLogger("ray.serve")
SHADOW_QUEUE_ROWS = 20_000  # beyond this, shadow copies are dropped (and counted)
SHADOW_CALL_ROWS = 1_000  # rows per shadow call


@dataclass(frozen=True)
class Labelled:
    """A Model call's result with its labels."""

    scored: Scored
    labels: list[Any]


@dataclass(frozen=True)
class ShadowBatch:
    """Production rows queued for the candidate, with production's labels."""

    requests: tuple[RequestMeta, ...]
    columns: Columns
    labels: list[Any]


@dataclass(frozen=True)
class ShadowResult:
    """What the candidate said about a shadow call's rows; its labels per prediction id."""

    version: str
    columns: Columns
    scored: Scored
    labels_by_id: dict[str, list[Any]]


Score = Callable[[str, Columns, list[int]], Awaitable[Labelled]]


class ReleaseMonitor:
    def __init__(self, name: str, registry: ModelRegistry, score: Score) -> None:
        self.name, self.registry, self.score = name, registry, score
        self.view = ReleaseView()
        self.release_id: str | None = None
        self.evidence: dict[str, VersionEvidence] = {}
        self.agreement = Agreement()
        self.shadow_queue: deque[ShadowBatch] = deque()
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

    @property
    def active(self) -> Release | None:
        """The release being watched (None when there is none, or under a pin)."""
        return self.view.release if self.release_id is not None else None

    def role(self, version: str | None) -> VersionEvidence | None:
        """The evidence record of ``version`` if it takes part in the release."""
        release = self.active
        if release is None or version is None:
            return None
        if version not in (release.version, self.view.production):
            return None
        return self.evidence.setdefault(version, VersionEvidence())

    # -- what the request path reports -------------------------------------------------------
    def record_batch(self, version: str, n_requests: int, model_ms: float) -> None:
        if (release := self.active) is None or release.mode != "canary":
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

    def offer_shadow(
        self, requests: tuple[RequestMeta, ...], columns: Columns, labels: list[Any]
    ) -> None:
        """Queue a production batch for the candidate (a ``weight`` percent sample)."""
        shadow = self.view.shadow
        # B311: a traffic sample, not a secret
        if shadow is None or random.random() * 100 >= shadow.weight:  # nosec B311
            return
        if self.shadow_rows + len(labels) > SHADOW_QUEUE_ROWS:
            self.shadow_dropped += len(requests)
            return
        self.shadow_queue.append(ShadowBatch(requests, columns, labels))
        self.shadow_rows += len(labels)

    # -- shadow scoring (background) -----------------------------------------------------------
    async def shadow_once(self) -> ShadowResult | None:
        """Score queued rows with the candidate (and production, for timing)."""
        shadow, production = self.view.shadow, self.view.production
        if shadow is None or production is None or not self.shadow_queue:
            return None
        batch: list[ShadowBatch] = []
        rows = 0
        while self.shadow_queue and rows < SHADOW_CALL_ROWS:
            batch.append(self.shadow_queue.popleft())
            rows += len(batch[-1].labels)
        self.shadow_rows -= rows
        items = [r for b in batch for r in b.requests]
        columns = concat([b.columns for b in batch])
        labels = [label for b in batch for label in b.labels]
        sizes = [r.n_rows for r in items]
        cand, prod = self.role(shadow.version), self.role(production)
        if cand is None or prod is None:  # the release changed under the queued rows
            return None
        timings: dict[str, float] = {}
        results: dict[str, Labelled] = {}
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
        shadow_labels = results[shadow.version].labels
        cand.requests += len(items)
        self.agreement.same += sum(a == b for a, b in zip(shadow_labels, labels, strict=True))
        self.agreement.rows += len(labels)
        for version, ms in timings.items():
            (cand if version == shadow.version else prod).latencies_ms.extend([ms] * len(items))
        by_id, start = {}, 0
        for r in items:
            by_id[r.prediction_id] = shadow_labels[start : start + r.n_rows]
            start += r.n_rows
        return ShadowResult(shadow.version, columns, results[shadow.version].scored, by_id)

    # -- decision -------------------------------------------------------------------------------
    def decide(self, drift: dict[str, float | None]) -> tuple[Decision, str] | None:
        release, production = self.active, self.view.production
        if release is None or production is None:
            return None
        cand = self.evidence.setdefault(release.version, VersionEvidence())
        prod = self.evidence.setdefault(production, VersionEvidence())
        cand.drift, prod.drift = drift.get(release.version), drift.get(production)
        return decide(release.policy, release.mode, prod, cand, self.agreement)

    def finish(self, decision: Decision, reason: str) -> bool:
        """Write the decision to the registry (blocking I/O: call it in a thread)."""
        release = self.active
        if release is None:
            return False
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
        if (release := self.active) is None:
            return
        tags = {"model_name": self.name, "model_version": release.version, "mode": release.mode}
        self.weight.set(release.weight, tags=tags)
        if self.agreement.rate is not None:
            self.agreement_gauge.set(self.agreement.rate, tags={**tags})

    def status(self) -> dict[str, Any]:
        release = self.active
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
