"""Prometheus metrics exported through Ray's metrics agent (``ray.serve.metrics``).

Ray prefixes custom metrics with ``ray_`` and adds ``_total`` to counters, and Serve adds the
``application``, ``deployment`` and ``replica`` labels. Exported names:

======================================  =========  =======================================
exported series                         recorded   meaning
======================================  =========  =======================================
ray_ml_predictions_total                Post       successful /predict requests
ray_ml_prediction_errors_total          Validator  failed requests, ``reason`` and ``kind``
ray_ml_prediction_duration_seconds_*    Validator  /predict latency inside the app
ray_ml_batch_size_*                     Model      rows per predict_proba call
ray_ml_model_version_info               Model      1 for the version a replica serves
ray_ml_feature_drift_score              Post       PSI per feature over the recent window
ray_ml_model_drift_score                Post       PSI of the predicted-class mix
ray_ml_model_accuracy                   Post       rolling accuracy from /feedback labels
ray_ml_release_weight                   Post       percent of traffic the candidate gets
ray_ml_shadow_agreement                 Post       shadow: share of rows labelled as production
ray_ml_release_decisions_total          Post       policy decisions, label ``decision``
ray_ml_captured_rows_total              Post       rows written by the traffic capture
ray_ml_capture_dropped_total            Post       rows the capture dropped, ``reason``
                                                   (queue_full, write_failed, error)
ray_ml_feedback_conflicts_total         Post       later /feedback labels for a labelled row
ray_ml_internal_errors_total            all        failures kept off the request path,
                                                   ``where`` (logged too)
======================================  =========  =======================================

Every series carries ``model_name`` and ``model_version`` (the version that answered, or
the candidate for the release series; ``none`` when no version was routed). The quality
gauges (drift, accuracy) also carry ``role``: ``serving`` for versions answering requests as
production (or a pin), ``candidate`` for a release candidate, so alerts watch what serves
and the release policy watches the candidate.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.serve import metrics

if TYPE_CHECKING:
    from sparc_ray.serving.tasks import Failures


def _keys(*names: str) -> Any:
    """Tag keys as Ray takes them. Ray 2.60 annotates ``tag_keys`` as ``Tuple[str]`` (exactly
    one key) while it accepts any number; this is the one place that typing gap is bridged."""
    return names


LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
VERSIONED = ("model_name", "model_version")
ROLES = (*VERSIONED, "role")
BATCH_BUCKETS = [1.0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]


def internal_errors() -> metrics.Counter:
    return metrics.Counter(
        "ml_internal_errors",
        description="Failures kept off the request path (metrics, monitoring, preloads).",
        tag_keys=_keys("where"),
    )


def feedback_conflicts() -> metrics.Counter:
    return metrics.Counter(
        "ml_feedback_conflicts",
        "/feedback labels for a row that already had one (the first label wins).",
        tag_keys=_keys("model_name"),
    )


def predictions() -> metrics.Counter:
    return metrics.Counter(
        "ml_predictions",
        "Successful prediction requests.",
        tag_keys=_keys("model_name", "model_version"),
    )


def captured_rows() -> metrics.Counter:
    return metrics.Counter(
        "ml_captured_rows",
        "Rows written by the traffic capture (model_version none: labels).",
        tag_keys=_keys(*VERSIONED),
    )


def capture_dropped() -> metrics.Counter:
    return metrics.Counter(
        "ml_capture_dropped",
        "Rows the traffic capture dropped; reason: queue_full, write_failed or error.",
        tag_keys=_keys("model_name", "reason"),
    )


def prediction_errors() -> metrics.Counter:
    return metrics.Counter(
        "ml_prediction_errors",
        "Failed prediction requests by reason; kind: client (4xx) or server (5xx).",
        tag_keys=_keys("model_name", "model_version", "reason", "kind"),
    )


def prediction_duration() -> metrics.Histogram:
    return metrics.Histogram(
        "ml_prediction_duration_seconds",
        "Prediction request latency inside the app (seconds).",
        boundaries=LATENCY_BUCKETS,
        tag_keys=_keys(*VERSIONED),
    )


def batch_size() -> metrics.Histogram:
    return metrics.Histogram(
        "ml_batch_size",
        "Rows per predict_proba call.",
        boundaries=BATCH_BUCKETS,
        tag_keys=_keys(*VERSIONED),
    )


def version_info() -> metrics.Gauge:
    return metrics.Gauge(
        "ml_model_version_info",
        "1 for the model version a replica serves.",
        tag_keys=_keys("model_name", "model_version"),
    )


def feature_drift() -> metrics.Gauge:
    return metrics.Gauge(
        "ml_feature_drift_score",
        "PSI of a feature's recent values.",
        tag_keys=_keys(*VERSIONED, "role", "feature_name"),
    )


def model_drift() -> metrics.Gauge:
    return metrics.Gauge(
        "ml_model_drift_score", "PSI of the recent predicted-class mix.", tag_keys=_keys(*ROLES)
    )


def model_accuracy() -> metrics.Gauge:
    return metrics.Gauge(
        "ml_model_accuracy", "Rolling accuracy of labelled predictions.", tag_keys=_keys(*ROLES)
    )


def release_weight() -> metrics.Gauge:
    return metrics.Gauge(
        "ml_release_weight",
        "Percent of requests routed to (canary) or copied for (shadow) the candidate.",
        tag_keys=_keys(*VERSIONED, "mode"),
    )


def shadow_agreement() -> metrics.Gauge:
    return metrics.Gauge(
        "ml_shadow_agreement",
        "Share of shadowed rows where the candidate predicted production's label.",
        tag_keys=_keys(*VERSIONED, "mode"),
    )


def release_decisions() -> metrics.Counter:
    return metrics.Counter(
        "ml_release_decisions",
        "Releases the policy ended: promoted or rolled_back.",
        tag_keys=_keys(*VERSIONED, "decision"),
    )


class LatencySummary:
    """Bounded in-process request log behind the JSON ``GET /metrics`` (seed contract)."""

    def __init__(self, size: int = 10_000) -> None:
        self.latencies_ms: deque[float] = deque(maxlen=size)
        self.requests = 0
        self.errors = 0
        self.rows = 0
        self.started = time.time()

    def record(self, ms: float, rows: int, ok: bool) -> None:
        self.requests += 1
        self.errors += 0 if ok else 1
        self.rows += rows if ok else 0
        if ok:
            self.latencies_ms.append(ms)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "total_requests": self.requests,
            "successful_requests": self.requests - self.errors,
            "failed_requests": self.errors,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "rows_predicted": self.rows,
            "latency_ms": {f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 95, 99)}
            | {"mean": float(lat.mean()), "window": len(self.latencies_ms)},
        }


class RequestMetrics:
    """What the ingress records per ``/predict``: the JSON summary, the latency histogram and
    the error counter. Recording never fails a prediction (failures are counted)."""

    def __init__(self, model_name: str, failures: Failures) -> None:
        self.model_name, self.failures = model_name, failures
        self.summary = LatencySummary()
        self.errors = prediction_errors()
        self.latency = prediction_duration()

    def record(
        self, elapsed_s: float, rows: int, version: str | None, reason: str | None, status: int
    ) -> None:
        tags = {"model_name": self.model_name, "model_version": version or "none"}
        try:
            self.summary.record(elapsed_s * 1000, rows, reason is None)
            if reason is None:
                self.latency.observe(elapsed_s, tags=tags)
            else:
                kind = "client" if status < 500 else "server"
                self.errors.inc(tags={**tags, "reason": reason, "kind": kind})
        except Exception as exc:
            self.failures.record("request_metrics", exc)
