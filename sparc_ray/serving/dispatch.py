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
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from sparc_ray.inference.input_rules import (
    FeatureCheck,
    PredictInput,
    RequestError,
    checks_from_metadata,
    detail,
)
from sparc_ray.inference.loader import ModelLoader
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.serving.model import NoModelError, Scored, VersionUnavailable

Call = Callable[[str, dict[str, np.ndarray], list[int]], Awaitable[Scored]]


@dataclass
class Group:
    """Requests one version answered: what the Postprocessor shapes and records."""

    version: str
    indices: list[int]
    proba: np.ndarray
    columns: dict[str, np.ndarray]
    model_ms: float


@dataclass
class BatchOutcome:
    groups: list[Group] = field(default_factory=list)
    failures: dict[int, Exception] = field(default_factory=dict)  # request index -> error
    server_errors: dict[str, int] = field(default_factory=dict)  # version -> requests
    unavailable: dict[str, str] = field(default_factory=dict)  # version -> reason


def stack(inputs: list[PredictInput]) -> dict[str, np.ndarray]:
    first = inputs[0].columns
    if len(inputs) == 1:
        return first
    return {n: np.concatenate([j.columns[n] for j in inputs]) for n in first}


def _rows(columns: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {n: c[keep] for n, c in columns.items()}


class VersionCatalog:
    """Per version: a Model handle naming it (multiplexed id) and its metadata / input checks
    (read once from the registry; a version never changes)."""

    MAX_CACHED = 16
    RETRY_FAILED_S = 5.0  # a version whose metadata failed is read again after this long

    def __init__(self, model: DeploymentHandle, loader: ModelLoader) -> None:
        self.model, self.loader = model, loader
        self._handles: dict[str, DeploymentHandle] = {}
        self._meta: dict[str, tuple[ModelMetadata, list[FeatureCheck]]] = {}
        self._failed: dict[str, tuple[float, Exception]] = {}

    def handle(self, version: str) -> DeploymentHandle:
        if version not in self._handles:
            if len(self._handles) >= self.MAX_CACHED:
                self._handles.clear()
            self._handles[version] = self.model.options(multiplexed_model_id=version)
        return self._handles[version]

    async def score(self, version: str, columns: dict, sizes: list[int]) -> Scored:
        return await self.handle(version).predict.remote(columns, sizes)

    async def _load(self, version: str) -> tuple[ModelMetadata, list[FeatureCheck]]:
        if version not in self._meta:
            if len(self._meta) >= self.MAX_CACHED:
                self._meta.clear()
            failed_at, error = self._failed.get(version, (0.0, None))
            if error is not None and time.monotonic() - failed_at < self.RETRY_FAILED_S:
                raise error  # no registry read per request for a version that is refused
            try:
                meta = await asyncio.to_thread(self.loader.load_metadata, version)
            except Exception as exc:
                if len(self._failed) >= self.MAX_CACHED:
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
                with contextlib.suppress(Exception):
                    return other, await self.checks(other), reason
        raise NoModelError(f"version {version}: {reason}")


class Dispatcher:
    def __init__(self, call: Call) -> None:
        self.call = call

    async def run(
        self,
        inputs: list[PredictInput],
        versions: list[str],
        serving: str,
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
        serving: str,
        fallback: str | None,
        out: BatchOutcome,
    ) -> set[int]:
        """Score ``idx`` with ``version``; returns the request indices answered."""
        part = [inputs[i] for i in idx]
        columns = stack(part)
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
                proba, kept = proba[keep], _rows(columns, keep)
            out.groups.append(Group(scored.version, [idx[k] for k in ok], proba, kept, model_ms))
        failed = [idx[k] for k in scored.failed]
        if failed and version != serving:  # the candidate failed them: production tries
            rescued = await self._score(serving, failed, inputs, serving, fallback, out)
            out.server_errors[version] = out.server_errors.get(version, 0) + len(rescued)
            return answered | rescued
        for k, failure in scored.failed.items():
            out.failures[idx[k]] = RequestError(
                422,
                "the model cannot score this input",
                [detail(failure["row"], None, failure["message"][:300])],
            )
        return answered


def post_groups(outcome: BatchOutcome, jobs: list[tuple]) -> list[dict[str, Any]]:
    """What the Postprocessor gets per answering version; ``jobs`` are the batch's
    ``(prediction_id, PredictInput, version)``."""
    return [
        {
            "version": g.version,
            "items": [
                {
                    "prediction_id": jobs[i][0],
                    "n_rows": jobs[i][1].n_rows,
                    "include_probabilities": jobs[i][1].include_probabilities,
                }
                for i in g.indices
            ],
            "proba": g.proba,
            "columns": g.columns,
            "model_ms": g.model_ms,
        }
        for g in outcome.groups
    ]


def answers_from(outcome: BatchOutcome, bodies: list[list[dict[str, Any]]], n: int) -> list:
    """Each request's response body (or its error), in request order."""
    answers: list[Any] = [None] * n
    for group, group_bodies in zip(outcome.groups, bodies, strict=True):
        for i, body in zip(group.indices, group_bodies, strict=True):
            answers[i] = body
    for i, exc in outcome.failures.items():
        answers[i] = exc
    return answers
