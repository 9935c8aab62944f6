"""Releases: what production is, a candidate version served beside it, and the policy that
decides it. This module is the only way production moves: ``promote`` (by hand or after
training), ``rollback``, and the end of a release (``finish_release``); each ends the release
in progress, so a candidate is never compared with a stale baseline.

The registry holds the whole release state in the model's records directory (``layout``)::

    <name>/_records/production      the promoted version; production.history, the promotions
    <name>/_records/candidate.json  the release in progress: version, mode, weight, policy
    <name>/_records/releases.json   every release started and how it ended (newest last)

``canary`` sends ``weight`` percent of requests to the candidate; ``shadow`` scores a copy of
``weight`` percent of production's requests with it, off the request path. Serving reads
these records and nothing else; the Postprocessor applies the policy and ends the release
(promoted or rolled back) through ``finish_release``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sparc_ray.registry.layout import CANDIDATE_FILE, RELEASE_LOG
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.registry.store import ModelRegistry, RegistryError, check_name

MAX_LOG_ENTRIES = 500
Decision = Literal["promoted", "rolled_back", "aborted"]


class GatesFailed(RegistryError):
    """The version's signed metadata says it failed its acceptance gates."""


class ReleasePolicy(BaseModel):
    """When a candidate is promoted or rolled back. A check that has enough evidence and
    fails rolls back at once; promotion waits until every check has enough and passes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_requests: int = Field(
        300, ge=1, description="requests the candidate answered (canary) or shadowed"
    )
    min_feedback_rows: int = Field(
        50, ge=0, description="labelled rows per version before accuracy counts; 0: none needed"
    )
    max_accuracy_drop: float = Field(0.03, ge=0, le=1, description="production - candidate")
    max_error_rate_increase: float = Field(0.01, ge=0, le=1, description="server errors")
    max_p99_ratio: float = Field(1.5, ge=1, description="candidate p99 / production p99")
    p99_slack_ms: float = Field(5.0, ge=0, description="added to the p99 allowance")
    min_agreement: float = Field(0.9, ge=0, le=1, description="shadow: same label as production")
    max_drift_increase: float = Field(0.25, ge=0, description="prediction-mix PSI over production")
    confidence_z: float = Field(
        2.33, gt=0, description="a rate check fails only when this many standard errors out"
    )
    auto_promote: bool = True
    auto_rollback: bool = True


class Release(BaseModel):
    """The candidate record (``candidate.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    version: str
    mode: Literal["canary", "shadow"]
    weight: float = Field(gt=0, le=100, description="percent of requests routed or copied")
    baseline: str = Field(description="production when the release started")
    policy: ReleasePolicy = ReleasePolicy()
    started_at: str
    started_by: str = "cli"


def load_policy(path: str | Path | None) -> ReleasePolicy:
    """A policy YAML (any subset of the fields; the rest keep their defaults)."""
    if path is None:
        return ReleasePolicy()
    try:
        return ReleasePolicy.model_validate(yaml.safe_load(Path(path).read_text()) or {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise RegistryError(f"release policy {path}: {exc}") from exc


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _schema(meta: ModelMetadata) -> list[tuple[str, str]]:
    return [(f.name, f.kind) for f in meta.features]


def _check_gates(meta: ModelMetadata, force: bool, action: str) -> None:
    """A version that failed its gates is promoted or released only with ``force``."""
    if not force and not meta.gates.passed:
        raise GatesFailed(
            f"version {meta.version} failed its gates {meta.gates.failed}; use force to {action} it"
        )


def _move_production(reg: ModelRegistry, name: str, version: str) -> None:
    """Point production at a version already checked; the history keeps it last."""
    reg._set_alias(name, version, [v for v in reg.history(name) if v != version] + [version])


def current_release(reg: ModelRegistry, name: str) -> Release | None:
    """candidate.json, schema-checked (size-capped by the store); RegistryError if refused."""
    raw = reg.read_json(name, CANDIDATE_FILE)
    try:
        release = Release.model_validate(raw) if raw else None
    except ValidationError as exc:
        raise RegistryError(f"{CANDIDATE_FILE} refused: {exc}") from None
    if release is not None:
        check_name(release.version)
    return release


def release_log(reg: ModelRegistry, name: str) -> list[dict[str, Any]]:
    """releases.json: a list of objects (size-capped by the store); RegistryError if not."""
    log = reg.read_json(name, RELEASE_LOG) or []
    if not isinstance(log, list) or not all(isinstance(e, dict) for e in log):
        raise RegistryError(f"{RELEASE_LOG} refused: expected a list of objects")
    return log


@dataclass(frozen=True)
class ReleaseRecords:
    """The release records as read for serving: the alias, the candidate and the history.
    A record that is refused (schema, size) is left out and named in ``error``."""

    alias: str | None
    release: Release | None
    history: tuple[str, ...] = ()
    error: str | None = None


def read_records(reg: ModelRegistry, name: str) -> ReleaseRecords:
    """Every release record, each read on its own: a forged candidate.json does not hide
    production, a forged alias does not hide the history."""
    errors: list[str] = []

    def attempt(what: str, read: Any, default: Any) -> Any:
        try:
            return read()
        except Exception as exc:
            errors.append(f"{what}: {type(exc).__name__}: {exc}")
            return default

    alias = attempt("production", lambda: reg.alias(name), None)
    release = attempt(CANDIDATE_FILE, lambda: current_release(reg, name), None)
    history = attempt("history", lambda: tuple(map(check_name, reg.history(name))), ())
    return ReleaseRecords(alias, release, history, "; ".join(errors) or None)


def _log(reg: ModelRegistry, name: str, entry: dict[str, Any]) -> None:
    entries = [*release_log(reg, name), {**entry, "at": _now()}]
    reg.write_json(name, RELEASE_LOG, entries[-MAX_LOG_ENTRIES:])


def start_release(
    reg: ModelRegistry,
    name: str,
    version: str,
    mode: Literal["canary", "shadow"],
    weight: float | None = None,
    policy: ReleasePolicy | None = None,
    force: bool = False,
    by: str = "cli",
    public_key: bytes | None = None,
) -> Release:
    """Make ``version`` the candidate. Same rules as a promotion (verified files, and the
    signature with a ``public_key``; gates passed unless ``force``), plus: production exists,
    accepts the same features, and no other release is in progress."""
    meta = reg.verify(name, version, public_key)
    _check_gates(meta, force, "release")
    production = reg.alias(name)
    if production is None:
        raise RegistryError(f"model {name!r} has no production version to compare against")
    if version == production:
        raise RegistryError(f"{version} is already production")
    if _schema(meta) != _schema(reg.metadata(name, production)):
        raise RegistryError(
            f"{version} does not take the same features as production {production}: "
            "a candidate must accept every request production accepts"
        )
    if (running := current_release(reg, name)) is not None:
        raise RegistryError(
            f"release {running.id} ({running.mode} of {running.version}) is in progress; "
            "abort it first"
        )
    release = Release(
        id=f"r-{uuid.uuid4().hex[:10]}",
        version=version,
        mode=mode,
        weight=weight if weight is not None else (10.0 if mode == "canary" else 100.0),
        baseline=production,
        policy=policy or ReleasePolicy(),
        started_at=_now(),
        started_by=by,
    )
    reg.write_json(name, CANDIDATE_FILE, release.model_dump())
    _log(reg, name, {"event": "started", **release.model_dump(exclude={"policy"})})
    return release


def finish_release(
    reg: ModelRegistry,
    name: str,
    release_id: str,
    decision: Decision,
    reason: str,
    evidence: dict[str, Any] | None = None,
) -> bool:
    """End the release ``release_id`` if it is still the one in progress: ``promoted`` moves
    production to the candidate (its files checked again; history kept, so ``rollback`` undoes
    it); ``rolled_back`` and ``aborted`` clear the candidate. Returns False when another writer
    ended it first."""
    release = current_release(reg, name)
    if release is None or release.id != release_id:
        return False
    if decision == "promoted":  # the record is unsigned: gates are checked again
        _check_gates(reg.verify(name, release.version), False, "promote")
        _move_production(reg, name, release.version)
    reg.delete_record(name, CANDIDATE_FILE)
    _log(
        reg,
        name,
        {
            "event": decision,
            "id": release.id,
            "version": release.version,
            "mode": release.mode,
            "baseline": release.baseline,
            "reason": reason,
            "evidence": evidence or {},
        },
    )
    return True


def promote(
    reg: ModelRegistry,
    name: str,
    version: str,
    force: bool = False,
    by: str = "cli",
    public_key: bytes | None = None,
) -> str | None:
    """Move production (by hand, or after training): verified files, and the signature with a
    ``public_key``; gates passed unless ``force``. Returns the version it replaced. Promoting
    the candidate ends its release as promoted; promoting anything else aborts the release in
    progress (its baseline would no longer be production)."""
    previous, release = reg.alias(name), current_release(reg, name)
    meta = reg.verify(name, version, public_key)
    if release is not None and release.version == version:
        if finish_release(reg, name, release.id, "promoted", f"promoted by {by}"):
            return previous
        release = None  # ended by another writer meanwhile: promote it as any version
    _check_gates(meta, force, "promote")
    _move_production(reg, name, version)
    if release is not None:
        finish_release(reg, name, release.id, "aborted", f"production moved to {version} by {by}")
    return previous


def rollback(reg: ModelRegistry, name: str, by: str = "cli") -> str:
    """Re-promote the version promoted before the current one (it must still exist) and
    return it; aborts the release in progress."""
    history, current = reg.history(name), reg.alias(name)
    if current in history:
        history = history[: history.index(current)]
    if not history:
        raise RegistryError(f"model {name!r} has no earlier promoted version to roll back to")
    previous = history[-1]
    reg.metadata(name, previous)  # must still exist
    if (release := current_release(reg, name)) is not None:
        finish_release(reg, name, release.id, "aborted", f"production rolled back by {by}")
    reg._set_alias(name, previous, history)
    return previous
