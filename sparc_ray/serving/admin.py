"""The admin side of the HTTP API: what ``/reload-model`` accepts and does, what ``/health``,
``/model`` and ``/metrics`` say. Both go through the registry; nothing here holds version
state, and every function takes what it reads."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil
from fastapi.responses import Response

from sparc_ray.inference.loader import ModelLoader
from sparc_ray.registry import releases
from sparc_ray.registry.artifacts import IntegrityError
from sparc_ray.registry.layout import ALIAS
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.registry.store import VERSION_RE, RegistryError, check_name
from sparc_ray.serving.messages import VersionUnavailable
from sparc_ray.serving.requests import RequestError, detail, parse_json
from sparc_ray.serving.responses import error_response, now_iso, redact
from sparc_ray.serving.routing import ReleaseView, ReleaseWatcher

# A version's metadata as its Model replica describes it, within a time limit.
Describe = Callable[[str, float], Awaitable[dict[str, Any]]]


def _invalid(field: str, message: str) -> RequestError:
    return RequestError(422, f"invalid '{field}'", [detail(None, field, message)])


@dataclass(frozen=True)
class ReloadRequest:
    """``{"version": ID | "latest" | "production", "force": bool}``; both optional. Without a
    version (or with ``production``) the replica re-reads the registry and reports."""

    version: str | None = None
    force: bool = False

    @classmethod
    def parse(cls, raw: bytes, max_bytes: int) -> ReloadRequest:
        body = parse_json(raw, max_bytes) if raw.strip() else {}
        if not isinstance(body, dict):
            raise RequestError(422, "the body must be a JSON object", [detail(None, None, "")])
        for key in set(body) - {"version", "force"}:
            raise _invalid(key, "unknown field; expected 'version' and 'force'")
        version = body.get("version")
        if "version" in body and (type(version) is not str or not version.strip()):
            raise _invalid("version", "expected a version id, 'latest' or 'production'")
        force = body.get("force", False)
        if type(force) is not bool:
            raise _invalid("force", "expected true or false")
        return cls(None if version == ALIAS else version, force)


def promote_for_reload(loader: ModelLoader, ask: ReloadRequest) -> str | None:
    """Move production as the CLI would (verified files and signature; gates passed, since a
    version that failed them would not serve through the record even with ``force``: it
    needs a pin); returns the version it replaced, or None when nothing was asked."""
    if ask.version is None:
        return None
    reg = loader.registry
    try:
        version = reg.resolve(loader.name, ask.version)
        reg.metadata(loader.name, version)
    except RegistryError as exc:
        raise RequestError(404, str(exc), [detail(None, "version", str(exc))]) from None
    try:
        if ask.force and not (meta := loader.load_metadata(version)).gates.passed:
            raise releases.GatesFailed(
                f"{version} failed its gates {meta.gates.failed}: it serves only when pinned "
                "(the Validator's user_config.model_version), not through production"
            )
        return releases.promote(
            reg, loader.name, version, force=ask.force, by="api", public_key=loader.public_key
        )
    except (IntegrityError, RegistryError) as exc:
        raise RequestError(
            409,
            f"version {version} was not promoted; production is unchanged",
            [detail(None, "version", str(exc))],
        ) from None


def health_body(
    *,
    view: ReleaseView,
    answering: str | None,
    error: str | None,
    evidence: dict[str, Any],
    loader: ModelLoader,
    unavailable: Mapping[str, str],
    uptime_s: float,
) -> dict[str, Any]:
    """``/health``: whether a version answers, and the registry's release state (reads the
    release log: blocking I/O)."""
    store = str(loader.registry.store)
    try:
        log, log_error = releases.release_log(loader.registry, loader.name), None
    except Exception as exc:  # a refused record is reported, never a 500
        log, log_error = [], f"{type(exc).__name__}: {exc}"
    decisions = [e for e in log if e.get("event") != "started"]
    release = view.release.model_dump() if view.release else None
    return {
        "status": "healthy" if answering else "unhealthy",
        "model_loaded": answering is not None,
        "model_version": answering,
        "production": view.alias if view.alias is not None else view.production,  # the record
        "verified_production": view.production,  # what serves as production (a refused
        # record leaves the last verified one serving; errors.refused says why)
        "pinned": view.pinned,
        "release": release,
        "release_evidence": evidence,
        "last_release_decision": decisions[-1] if decisions else None,
        "errors": {
            "load": redact(error, store),
            "unavailable": {v: redact(r, store) for v, r in unavailable.items()} or None,
            "registry": redact(view.error or log_error, store),
            # versions the release records name that may not serve through them, and why
            "refused": {v: redact(r, store) for v, r in view.refused} or None,
        },
        "timestamp": now_iso(),
        "uptime_seconds": uptime_s,
    }


def version_denied(version: str, view: ReleaseView, denied: Response | None) -> Response | None:
    """``/model?version=``: anyone may name what serves (production, the pin, the candidate);
    any other version needs the admin token (``denied``: its check), so that anonymous
    callers cannot make Model replicas load versions (and evict production)."""
    release = view.release.version if view.release else None
    return None if version in {view.serving, view.production, release} else denied


async def check_version(
    version: str, metadata: Callable[[str], Awaitable[ModelMetadata]], store: str
) -> Response | None:
    """``/model?version=``: None if the version exists and verifies, else the error to send
    (422 for a malformed id, 404 for an unknown one, 503 for a refused one)."""
    try:
        await metadata(check_name(version))
    except RegistryError as exc:
        status = 404 if VERSION_RE.fullmatch(version) else 422
        return error_response(
            status, "unknown version", [(None, "version", redact(str(exc), store))]
        )
    except IntegrityError as exc:  # e.g. unsigned, or changed after it was signed
        return error_response(503, "version refused", [(None, "version", redact(str(exc), store))])
    return None


PUBLIC_FIELDS = ("name", "version", "created_at", "model_type", "target", "classes")


def public_metadata(described: dict[str, Any]) -> dict[str, Any]:
    """What any caller needs to build a request, from a version's ``describe()``: the version,
    its classes and each feature's name, kind and allowed categories. No paths, data sources,
    library versions or metrics."""
    meta = ModelMetadata.from_json(described)
    present = meta.model_dump(include=set(PUBLIC_FIELDS), exclude_unset=True)
    return {
        **{k: present[k] for k in PUBLIC_FIELDS if k in present},
        "features": [
            {"name": f.name, "kind": f.kind, "categories": list(f.categories)}
            for f in meta.features
        ],
        "serving": {"engine": described.get("serving", {}).get("engine")},
    }


def reload_state(view: ReleaseView, previous: str | None) -> dict[str, Any]:
    """The registry state a ``/reload-model`` answer reports."""
    return {
        "production": view.production,
        "previous": previous,
        "pinned": view.pinned,
        "model_version": view.serving,
        "release": view.release.model_dump(exclude={"policy"}) if view.release else None,
    }


def metrics_body(
    *,
    name: str,
    serving: str | None,
    uptime_s: float,
    requests: dict[str, Any],
    monitoring: dict[str, Any],
    internal_errors: Mapping[str, int],
    admin: bool,
) -> dict[str, Any]:
    """``GET /metrics``: this ingress replica's request summary and monitoring; the node's
    CPU / memory / disk only for the admin token."""
    body = {
        "uptime_seconds": uptime_s,
        "model_name": name,
        "model_version": serving,
        "prediction_metrics": requests,
        "monitoring": monitoring,
        "internal_errors": dict(internal_errors),
    }
    if admin:
        body["system_metrics"] = {
            "cpu_percent": psutil.cpu_percent(),
            "memory_percent": psutil.virtual_memory().percent,
            "disk_percent": psutil.disk_usage("/").percent,
            "load_average": list(os.getloadavg()),
        }
    return body


async def health_response(
    *,
    view: ReleaseView,
    last_good: str | None,
    describe: Describe,
    release_status: Callable[[], Awaitable[dict[str, Any]]],
    loader: ModelLoader,
    unavailable: Mapping[str, str],
    uptime_s: float,
    wait_s: float,
) -> tuple[int, dict[str, Any]]:
    """``/health``: 200 when the serving version (or the last one that answered here)
    answers a metadata call, with the registry's release state and the live evidence."""
    answering, error = await answering_version((view.serving, last_good), describe, wait_s)
    try:
        evidence = await asyncio.wait_for(release_status(), wait_s)
    except Exception as exc:
        evidence = {"error": repr(exc)}
    if view.serving is None:
        error = view.error or "no version is promoted yet"
    body = await asyncio.to_thread(
        health_body,
        view=view,
        answering=answering,
        error=error,
        evidence=evidence,
        loader=loader,
        unavailable=unavailable,
        uptime_s=uptime_s,
    )
    return (200 if answering else 503), body


async def answering_version(
    candidates: tuple[str | None, ...], describe: Describe, wait_s: float
) -> tuple[str | None, str | None]:
    """The first of ``candidates`` (the serving version, then the last that answered) whose
    Model replica answers a metadata call, and the first error seen on the way."""
    error = None
    for version in dict.fromkeys(filter(None, candidates)):
        try:
            await describe(version, wait_s)
            return version, error
        except Exception as exc:
            error = error or f"{version}: {getattr(exc, 'reason', None) or exc!r}"
    return None, error


async def reload_response(
    *,
    watcher: ReleaseWatcher,
    describe: Describe,
    previous: str | None,
    poll_interval_s: float,
    wait_s: float,
) -> tuple[int, dict[str, Any]]:
    """After a promotion (or none): the state every replica routes by, once they all do
    (each re-reads the registry within ``poll_interval_s``), and whether it loads."""
    settled = asyncio.create_task(asyncio.sleep(poll_interval_s + 0.25))
    view = await watcher.refresh(force=True)
    state = reload_state(view, previous)
    status, body = 200, {"status": "ok", **state, "engine": None}
    if view.serving is not None:
        try:
            meta = await describe(view.serving, wait_s)
            body["engine"] = meta["serving"]["engine"]
        except TimeoutError:  # still loading: the replicas finish on their own
            status, body = 202, {"status": "loading", **state}
        except VersionUnavailable as exc:
            status = 409
            body = {
                "error": f"version {exc.version} cannot be loaded",
                "details": [detail(None, "version", exc.reason)],
                **state,
            }
    await settled
    return status, body
