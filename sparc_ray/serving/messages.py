"""What crosses deployment handles: frozen dataclasses, never positional lists or tuples.

Validator → Model: ``predict(columns, sizes)`` → ``Scored``.
Validator → Postprocessor: ``record(PostBatch)``, sent without the response waiting for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparc_ray.inference.columns import Columns


class NoModelError(RuntimeError):
    """No model is loaded yet (nothing promoted, or every load failed)."""


class ReplicaLost(NoModelError):
    """Every Model replica the call was sent to died under it (its node was lost): a 503 the
    client may retry, as for no model at all."""


class VersionUnavailable(RuntimeError):
    """The version a call names cannot be loaded or verified here."""

    def __init__(self, version: str, reason: str) -> None:
        super().__init__(version, reason)
        self.version, self.reason = version, reason

    def __str__(self) -> str:
        return f"version {self.version} is unavailable: {self.reason}"


@dataclass(frozen=True)
class RowFailure:
    """Why the model failed a request: its first failing row and the model's error."""

    row: int
    message: str


@dataclass(frozen=True)
class Scored:
    """A micro-batch's probabilities (rows of failed requests are NaN) and what failed, by
    request index."""

    version: str
    proba: np.ndarray
    failed: dict[int, RowFailure] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestMeta:
    """One answered request of a group: what its response and its monitoring need."""

    prediction_id: str
    n_rows: int
    include_probabilities: bool


@dataclass(frozen=True)
class ScoredGroup:
    """The requests one version answered, their rows stacked in request order, with the
    labels their responses carry."""

    version: str
    requests: tuple[RequestMeta, ...]
    proba: np.ndarray
    labels: list[Any]
    columns: Columns
    model_ms: float


@dataclass(frozen=True)
class PostBatch:
    """One answered micro-batch for the Postprocessor's monitoring. ``serving`` is the version
    that answers what the canary does not take, as the Validator routed this batch (its pin
    included)."""

    groups: tuple[ScoredGroup, ...]
    server_errors: dict[str, int]
    serving: str | None
    pinned: bool
