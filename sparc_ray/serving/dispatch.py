"""One micro-batch through the Model deployment, version by version, without letting a
candidate (or one bad request) fail anyone.

Requests routed to the same version go out as one Model call naming that version (Serve
model multiplexing). If the candidate's call fails, or fails some of its requests, those
requests are scored again by the serving version and the candidate is charged a server
error for each one that production then answers. If the serving version itself cannot be
loaded, the last version that answered here serves instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

from sparc_ray.inference.columns import Columns, concat, take
from sparc_ray.inference.input_rules import FeatureCheck, checks_from_metadata
from sparc_ray.inference.labels import labels_from_proba
from sparc_ray.inference.loader import ModelLoader
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.serving.messages import (
    NoModelError,
    ReplicaLost,
    RequestMeta,
    Scored,
    ScoredGroup,
    VersionUnavailable,
)
from sparc_ray.serving.requests import PredictInput, RequestError, detail
from sparc_ray.serving.tasks import Failures

REPLICA_LOST = (RayActorError, ActorUnavailableError)  # (ActorDiedError is a RayActorError)

Call = Callable[[str, Columns, list[int]], Awaitable[Scored]]


@dataclass(frozen=True)
class Job:
    """One validated request waiting in the Validator's micro-batch."""

    prediction_id: str
    data: PredictInput
    version: str


@dataclass
class Group:
    """Requests one version answered: what their responses and the monitoring record hold."""

    version: str
    indices: list[int]
    proba: np.ndarray
    columns: Columns
    model_ms: float


@dataclass
class BatchOutcome:
    groups: list[Group] = field(default_factory=list)
    failures: dict[int, Exception] = field(default_factory=dict)  # request index -> error
    server_errors: dict[str, int] = field(default_factory=dict)  # version -> requests
    unavailable: dict[str, str] = field(default_factory=dict)  # version -> reason


class VersionCatalog:
    """Per version: a Model handle naming it (multiplexed id) and its metadata / input checks
    (read once from the registry; a version never changes)."""

    def __init__(
        self,
        model: DeploymentHandle,
        loader: ModelLoader,
        failures: Failures,
        max_cached: int = 16,
        retry_refused_s: float = 5.0,
    ) -> None:
        self.model, self.loader, self.failures = model, loader, failures
        self.max_cached, self.retry_refused_s = max_cached, retry_refused_s
        self._handles: dict[str, DeploymentHandle] = {}
        self._meta: dict[str, tuple[ModelMetadata, list[FeatureCheck]]] = {}
        self._failed: dict[str, tuple[float, Exception | None]] = {}

    def handle(self, version: str) -> DeploymentHandle:
        if version not in self._handles:
            if len(self._handles) >= self.max_cached:
                self._handles.clear()
            self._handles[version] = self.model.options(multiplexed_model_id=version)
        return self._handles[version]

    async def score(self, version: str, columns: Columns, sizes: list[int]) -> Scored:
        """Score on a Model replica. Scoring has no side effect: a call whose replica died
        under it (its node was lost) goes once more to a live one, then fails with a 503."""
        try:
            return await self.handle(version).predict.remote(columns, sizes)
        except REPLICA_LOST as exc:
            self.failures.record("model_replica_lost", exc)
        try:
            return await self.handle(version).predict.remote(columns, sizes)
        except REPLICA_LOST as exc:
            raise ReplicaLost(f"the Model replica was lost twice: {type(exc).__name__}") from exc

    async def _load(self, version: str) -> tuple[ModelMetadata, list[FeatureCheck]]:
        if version not in self._meta:
            if len(self._meta) >= self.max_cached:
                self._meta.clear()
            failed_at, error = self._failed.get(version, (0.0, None))
            if error is not None and time.monotonic() - failed_at < self.retry_refused_s:
                raise error  # no registry read per request for a version that is refused
            try:
                meta = await asyncio.to_thread(self.loader.load_metadata, version)
            except Exception as exc:
                if len(self._failed) >= self.max_cached:
                    self._failed.clear()
                self._failed[version] = (time.monotonic(), exc)
                raise
            self._failed.pop(version, None)
            self._meta[version] = meta, checks_from_metadata(meta)
        return self._meta[version]

    async def metadata(self, version: str) -> ModelMetadata:
        return (await self._load(version))[0]

    def cached_metadata(self, version: str | None) -> ModelMetadata | None:
        """The metadata if it was read already (for synchronous callers)."""
        return self._meta[version][0] if version in self._meta else None

    async def checks(self, version: str) -> list[FeatureCheck]:
        return (await self._load(version))[1]

    async def checks_for(
        self, version: str, fallbacks: Iterable[str | None]
    ) -> tuple[str, list[FeatureCheck], str | None]:
        """The input checks of ``version`` or, if its metadata cannot be read or verified, of
        the first fallback that can: (version that answers, its checks, why ``version`` was
        passed over, or None)."""
        try:
            return version, await self.checks(version), None
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
        for other in dict.fromkeys(filter(None, fallbacks)):
            if other != version:
                try:
                    return other, await self.checks(other), reason
                except Exception as exc:
                    self.failures.record("fallback_metadata", exc)
        raise NoModelError(f"version {version}: {reason}")


class Dispatcher:
    def __init__(self, call: Call) -> None:
        self.call = call

    async def run(
        self,
        inputs: list[PredictInput],
        versions: list[str],
        serving: str | None,
        fallback: str | None,
    ) -> BatchOutcome:
        """Score ``inputs[i]`` with ``versions[i]``; ``serving`` answers what another version
        could not, ``fallback`` answers when ``serving`` cannot be loaded."""
        out = BatchOutcome()
        by_version: dict[str, list[int]] = {}
        for i, version in enumerate(versions):
            by_version.setdefault(version, []).append(i)
        await asyncio.gather(
            *(self._score(v, idx, inputs, serving, fallback, out) for v, idx in by_version.items())
        )
        return out

    async def _score(
        self,
        version: str,
        idx: list[int],
        inputs: list[PredictInput],
        serving: str | None,
        fallback: str | None,
        out: BatchOutcome,
    ) -> set[int]:
        """Score ``idx`` with ``version``; returns the request indices answered."""
        part = [inputs[i] for i in idx]
        columns = concat([j.columns for j in part])
        start = time.perf_counter()
        try:
            scored = await self.call(version, columns, [j.n_rows for j in part])
        except Exception as exc:
            if isinstance(exc, VersionUnavailable):
                out.unavailable[version] = exc.reason
            retry = serving if version != serving else fallback
            if retry is not None and retry != version:
                answered = await self._score(retry, idx, inputs, serving, None, out)
                if version != serving:
                    out.server_errors[version] = out.server_errors.get(version, 0) + len(answered)
                return answered
            if not isinstance(exc, (NoModelError, VersionUnavailable)):
                out.server_errors[version] = out.server_errors.get(version, 0) + len(idx)
            out.failures.update((i, exc) for i in idx)
            return set()
        model_ms = (time.perf_counter() - start) * 1000
        ok = [k for k in range(len(idx)) if k not in scored.failed]
        answered = {idx[k] for k in ok}
        if ok:
            keep = np.concatenate(
                [np.full(j.n_rows, k not in scored.failed) for k, j in enumerate(part)]
            )
            proba, kept = scored.proba, columns
            if not keep.all():
                proba, kept = proba[keep], take(columns, keep)
            out.groups.append(Group(scored.version, [idx[k] for k in ok], proba, kept, model_ms))
        failed = [idx[k] for k in scored.failed]
        if failed and serving is not None and version != serving:  # production tries them
            rescued = await self._score(serving, failed, inputs, serving, fallback, out)
            out.server_errors[version] = out.server_errors.get(version, 0) + len(rescued)
            return answered | rescued
        for k, failure in scored.failed.items():
            out.failures[idx[k]] = RequestError(
                422,
                "the model cannot score this input",
                [detail(failure.row, None, failure.message[:300])],
            )
        return answered


def post_groups(
    outcome: BatchOutcome, jobs: list[Job], classes: Mapping[str, Sequence[Any]]
) -> tuple[ScoredGroup, ...]:
    """Each answering version's requests, probabilities and labels (``classes``: by version)."""
    return tuple(
        ScoredGroup(
            g.version,
            tuple(
                RequestMeta(
                    jobs[i].prediction_id, jobs[i].data.n_rows, jobs[i].data.include_probabilities
                )
                for i in g.indices
            ),
            g.proba,
            labels_from_proba(g.proba, classes[g.version]).tolist(),
            g.columns,
            g.model_ms,
        )
        for g in outcome.groups
    )


def answers_from(outcome: BatchOutcome, bodies: list[list[dict[str, Any]]], n: int) -> list:
    """Each request's response body (or its error), in request order."""
    answers: list[Any] = [None] * n
    for group, group_bodies in zip(outcome.groups, bodies, strict=True):
        for i, body in zip(group.indices, group_bodies, strict=True):
            answers[i] = body
    for i, exc in outcome.failures.items():
        answers[i] = exc
    return answers


class Batching(Protocol):
    """The controls ``@serve.batch`` adds to the method it wraps."""

    def set_max_batch_size(self, new_max_batch_size: int) -> None: ...

    def set_batch_wait_timeout_s(self, new_batch_wait_timeout_s: float) -> None: ...


def batching(method: object) -> Batching:
    return cast(Batching, method)  # Ray types @serve.batch's result as a plain callable
