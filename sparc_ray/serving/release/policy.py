"""What the release policy compares: live evidence per version, and the decision rule.

Pure code (no Ray): the Postprocessor feeds it and acts on ``decide``'s answer.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparc_ray.registry.releases import Decision, ReleasePolicy

WINDOW = 5000  # latency samples / labelled rows kept per version


@dataclass
class VersionEvidence:
    """One version's live record since the release started."""

    requests: int = 0
    server_errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=WINDOW))
    drift: float | None = None  # PSI of the predicted-class mix

    @property
    def error_rate(self) -> float:
        return self.server_errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return float(np.mean(self.outcomes)) if self.outcomes else None

    @property
    def p99_ms(self) -> float | None:
        return float(np.percentile(self.latencies_ms, 99)) if self.latencies_ms else None

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "server_errors": self.server_errors,
            "p99_ms": _round(self.p99_ms),
            "labelled_rows": len(self.outcomes),
            "accuracy": _round(self.accuracy),
            "prediction_drift": _round(self.drift),
        }


@dataclass
class Agreement:
    """Shadow: rows where the candidate gave production's label."""

    same: int = 0
    rows: int = 0

    @property
    def rate(self) -> float | None:
        return self.same / self.rows if self.rows else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _se(p1: float, n1: int, p2: float, n2: int) -> float:
    """Standard error of the difference of two proportions (floored: 0/n is not certain)."""
    return math.sqrt(max(p1 * (1 - p1), 0.25 / n1) / n1 + max(p2 * (1 - p2), 0.25 / n2) / n2)


def decide(
    policy: ReleasePolicy,
    mode: str,
    prod: VersionEvidence,
    cand: VersionEvidence,
    agreement: Agreement,
) -> tuple[Decision, str] | None:
    """``("rolled_back" | "promoted", reason)`` or None while the evidence is not enough.

    A check fails as soon as it has the evidence it needs (rates only when the gap is
    ``confidence_z`` standard errors beyond the allowance); promotion needs every check
    to have its evidence and pass."""
    p, z = policy, policy.confidence_z
    failures: list[str] = []
    waiting: list[str] = []

    if cand.server_errors and cand.requests:
        gap = cand.error_rate - prod.error_rate - p.max_error_rate_increase
        se = _se(cand.error_rate, cand.requests, prod.error_rate, max(prod.requests, 1))
        if gap > 0 and gap / se > z:
            failures.append(
                f"server-error rate {cand.error_rate:.3f} vs production {prod.error_rate:.3f}"
            )

    need = p.min_feedback_rows
    if need and (len(cand.outcomes) < need or len(prod.outcomes) < need):
        waiting.append(f"labelled rows {len(cand.outcomes)}/{len(prod.outcomes)} of {need}")
    elif need and (c_acc := cand.accuracy) is not None and (p_acc := prod.accuracy) is not None:
        drop = p_acc - c_acc
        se = _se(c_acc, len(cand.outcomes), p_acc, len(prod.outcomes))
        if drop > p.max_accuracy_drop and (drop - p.max_accuracy_drop) / se > z:
            failures.append(f"accuracy {c_acc:.3f} vs production {p_acc:.3f}")
        elif drop > p.max_accuracy_drop:
            waiting.append(f"accuracy {c_acc:.3f} vs {p_acc:.3f}: not yet clear")

    if mode == "shadow":
        rate = agreement.rate
        if rate is None or agreement.rows < p.min_requests:
            waiting.append(f"shadowed rows {agreement.rows} of {p.min_requests}")
        elif rate < p.min_agreement:
            failures.append(f"agreement {rate:.3f} < {p.min_agreement}")

    c_p99, p_p99 = cand.p99_ms, prod.p99_ms
    if (
        cand.requests < p.min_requests
        or len(prod.latencies_ms) < p.min_requests
        or c_p99 is None
        or p_p99 is None
    ):
        waiting.append(f"requests {cand.requests} of {p.min_requests}")
    else:
        allowed = p_p99 * p.max_p99_ratio + p.p99_slack_ms
        if c_p99 > allowed:
            failures.append(f"p99 {c_p99:.1f} ms > allowed {allowed:.1f} ms")

    if cand.drift is not None and prod.drift is not None:
        if cand.drift - prod.drift > p.max_drift_increase:
            failures.append(f"prediction drift {cand.drift:.3f} vs production {prod.drift:.3f}")
    elif cand.drift is None:
        waiting.append("no prediction-drift score yet")

    if failures:
        return ("rolled_back", "; ".join(failures)) if p.auto_rollback else None
    if waiting or not p.auto_promote:
        return None
    return "promoted", "every check passed"
