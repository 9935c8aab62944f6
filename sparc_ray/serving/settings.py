"""Typed settings of the three deployments: defaults live here and only here.

Each deployment takes its settings as Serve's ``user_config`` (``serve_config.yaml``,
``deployments[].user_config``) and validates them in ``reconfigure``: an unknown key or a
broken rule fails the deploy with the message in ``serve status``; a valid change is applied
in place, without restarting replicas. With one batching stage (the Validator's) no rule
spans two deployments.

``DEPLOYMENT_OPTIONS`` are the deployments' Serve options when the app is built without a
config file (``serve run sparc_ray.serving.app:build_app``); ``serve_config.yaml`` states the
same values and may override them. The few values Serve reads from a decorator at import
time (``MAX_VERSIONS_PER_REPLICA``, ``MAX_CONCURRENT_BATCHES``) are constants here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sparc_ray.registry.layout import ALIAS
from sparc_ray.registry.store import LATEST, VERSION_RE

MAX_VERSIONS_PER_REPLICA = 3  # Model: production, candidate, and the one being replaced
MAX_CONCURRENT_BATCHES = 4  # Validator: Model calls in flight while earlier batches finish
DEPLOYMENT_OPTIONS: dict[str, dict[str, Any]] = {
    "Validator": {"ray_actor_options": {"num_cpus": 0.125}},
    "Model": {"ray_actor_options": {"num_cpus": 0.375}},
    "Postprocessor": {"ray_actor_options": {"num_cpus": 0.25}},
    "Explainer": {"ray_actor_options": {"num_cpus": 0.125}},
}


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidatorSettings(_Settings):
    model_version: str | None = Field(
        None,
        description="pin: serve this version id to every request, whatever the registry says; "
        "remove the key to follow the registry again",
    )
    poll_interval_s: float = Field(
        1.0, gt=0, description="how often the registry's release records are re-read"
    )
    max_instances: int = Field(1000, ge=1, description="rows per request; more => 413")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="request body cap; more => 413")
    max_explain_instances: int = Field(
        100,
        ge=1,
        description="rows per request that asks for explanations; more => 413 (TreeSHAP on a "
        "fully grown 100-tree forest costs about 50 ms a row: keep the request under the "
        "proxy's request_timeout_s)",
    )
    batch_max_rows: int = Field(
        1000, ge=1, description="rows per micro-batch (one Model call); >= max_instances"
    )
    batch_wait_timeout_s: float = Field(
        0.003,
        ge=0,
        le=1,
        description="how long a batch waits for more requests while another batch is in "
        "flight; with nothing in flight a request is sent at once",
    )

    records_in_flight: int = Field(
        64,
        ge=1,
        description="monitoring records sent to the Postprocessor and not yet taken; beyond "
        "it a record is dropped and counted (a stalled Postprocessor never stalls predictions)",
    )
    health_wait_s: float = Field(5.0, gt=0, description="per call /health makes to a replica")
    reload_wait_s: float = Field(
        20.0,
        gt=0,
        description="how long /reload-model waits for the new version to load (keep it under "
        "the proxy's request_timeout_s)",
    )
    max_admin_body_bytes: int = Field(10_000, ge=100, description="/reload-model body cap")
    versions_cached: int = Field(
        16, ge=2, description="versions whose metadata and Model handle a replica keeps"
    )
    retry_refused_s: float = Field(
        5.0, ge=0, description="a version whose metadata was refused is read again after this"
    )
    openapi_training_values: bool = Field(
        False,
        description="anonymous /openapi.json shows training values (categories as examples, "
        "mid-range numbers in the example row); off: only with the admin token",
    )

    @field_validator("model_version")
    @classmethod
    def _pin_is_a_version(cls, value: str | None) -> str | None:
        if value is not None and (not VERSION_RE.match(value) or value in (ALIAS, LATEST)):
            raise ValueError(
                f"model_version pins one version id, got {value!r}; remove the key to follow "
                "the registry's production alias"
            )
        return value

    @model_validator(mode="after")
    def _batch_holds_a_request(self) -> ValidatorSettings:
        if self.batch_max_rows < self.max_instances:
            raise ValueError(
                f"batch_max_rows ({self.batch_max_rows}) must be >= max_instances "
                f"({self.max_instances}): a batch must hold the largest request"
            )
        return self


class ModelSettings(_Settings):
    poll_interval_s: float = Field(
        5.0, gt=0, description="how often the release records are read to preload versions"
    )


class PostprocessorSettings(_Settings):
    drift_window_rows: int = Field(2000, ge=10, description="rows per drift window")
    drift_min_rows: int = Field(200, ge=1, description="no drift score before this many rows")
    feedback_rows: int = Field(
        100_000, ge=1, description="predicted rows remembered for /feedback (oldest go first)"
    )
    accuracy_window: int = Field(1000, ge=1, description="labelled rows in the rolling accuracy")
    versions_tracked: int = Field(
        4, ge=2, description="versions whose drift and accuracy windows are kept"
    )
    monitor_every_s: float = Field(
        0.2, gt=0, description="how often queued batches are folded into the monitoring state"
    )
    drift_every_s: float = Field(1.0, gt=0, description="PSI is recomputed at most this often")
    gauge_refresh_s: float = Field(
        5.0, gt=0, description="gauges are re-set this often (Ray drops stale ones)"
    )
    release_every_s: float = Field(
        1.0, gt=0, description="how often the release records are read and the policy applied"
    )
    feedback_wait_s: float = Field(
        1.0,
        ge=0,
        description="how long /feedback waits for a prediction id it does not know yet: its "
        "monitoring record is sent as the response goes out, and a label can overtake it "
        "(an id not of the issued UUID form is unknown at once)",
    )
    max_queued_batches: int = Field(
        10_000,
        ge=1,
        description="groups waiting for monitoring; beyond it the oldest is dropped and counted "
        '(ray_ml_internal_errors_total{where="monitoring_backlog"})',
    )
    capture_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of requests whose rows are captured (monitoring/capture.py); 0: off",
    )
    capture_uri: str | None = Field(
        None,
        description="where captures go (path or URI); default <model_store>/<name>/_capture. "
        "A location of its own, readable only by the serving and retraining jobs, is advised",
    )
    capture_retention_days: int = Field(
        30, ge=1, description="captured date partitions older than this are deleted"
    )
    capture_exclude_features: list[str] = Field(
        [], description="features never written to the capture (e.g. direct identifiers)"
    )
    capture_flush_s: float = Field(2.0, gt=0, description="how often captured rows are written")
    capture_max_queued_rows: int = Field(
        100_000, ge=1, description="rows waiting to be written; beyond it rows are dropped"
    )

    @model_validator(mode="after")
    def _window_reaches_min(self) -> PostprocessorSettings:
        if self.drift_min_rows > self.drift_window_rows:
            raise ValueError("drift_min_rows must be <= drift_window_rows")
        return self


class ServingSettings(_Settings):
    """The deployments' settings together, as ``serve_config.yaml`` states them (the
    Explainer has none: a ``user_config`` for it is refused like any unknown one)."""

    Validator: ValidatorSettings = ValidatorSettings()
    Model: ModelSettings = ModelSettings()
    Postprocessor: PostprocessorSettings = PostprocessorSettings()

    @classmethod
    def from_app(cls, app: dict[str, Any]) -> ServingSettings:
        """Check one application of a Serve config file (``applications[i]``)."""
        deployments = app.get("deployments", [])
        return cls(**{d["name"]: d["user_config"] for d in deployments if "user_config" in d})
