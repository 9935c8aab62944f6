"""Typed settings of the three deployments: defaults live here and only here.

Each deployment takes its settings as Serve's ``user_config`` (``serve_config.yaml``,
``deployments[].user_config``) and validates them in ``reconfigure``: an unknown key or a
broken rule fails the deploy with the message in ``serve status``; a valid change is applied
in place, without restarting replicas. With one batching stage (the Validator's) no rule
spans two deployments.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sparc_ray.registry.store import VERSION_RE


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

    @field_validator("model_version")
    @classmethod
    def _pin_is_a_version(cls, value: str | None) -> str | None:
        if value is not None and (not VERSION_RE.match(value) or value in ("production", "latest")):
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
    capture_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of requests whose rows are captured (monitoring/capture.py); 0: off",
    )
    capture_uri: str | None = Field(
        None, description="where captures go (path or URI); default <model_store>/<name>/_capture"
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
    """The three deployments' settings together, as ``serve_config.yaml`` states them."""

    Validator: ValidatorSettings = ValidatorSettings()
    Model: ModelSettings = ModelSettings()
    Postprocessor: PostprocessorSettings = PostprocessorSettings()

    @classmethod
    def from_app(cls, app: dict[str, Any]) -> ServingSettings:
        """Check one application of a Serve config file (``applications[i]``)."""
        return cls(**{d["name"]: d.get("user_config", {}) for d in app.get("deployments", [])})
