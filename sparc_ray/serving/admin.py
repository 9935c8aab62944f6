"""The admin side of the HTTP API: what ``/reload-model`` accepts and does, what ``/health``
says. Both go through the registry; nothing here holds version state."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import psutil

from sparc_ray.inference.input_rules import RequestError, detail, parse_json
from sparc_ray.inference.loader import ModelLoader
from sparc_ray.registry import releases
from sparc_ray.registry.artifacts import IntegrityError
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.registry.store import ALIAS, RegistryError
from sparc_ray.serving.model import VersionUnavailable
from sparc_ray.serving.responses import now_iso
from sparc_ray.serving.routing import ReleaseView

MAX_ADMIN_BODY = 10_000
HEALTH_WAIT_S = 5.0  # per call /health makes
RELOAD_WAIT_S = 20.0  # /reload-model answers well within the proxy's request_timeout_s (30)


def _invalid(field: str, message: str) -> RequestError:
    return RequestError(422, f"invalid '{field}'", [detail(None, field, message)])


@dataclass(frozen=True)
class ReloadRequest:
    """``{"version": ID | "latest" | "production", "force": bool}``; both optional. Without a
    version (or with ``production``) the replica re-reads the registry and reports."""

    version: str | None = None
    force: bool = False

    @classmethod
    def parse(cls, raw: bytes) -> ReloadRequest:
        body = parse_json(raw, MAX_ADMIN_BODY) if raw.strip() else {}
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
    """Move production as the CLI would (verified files and signature; gates unless
    ``force``); returns the version it replaced, or None when nothing was asked."""
    if ask.version is None:
        return None
    reg = loader.registry
    try:
        version = reg.resolve(loader.name, ask.version)
        reg.metadata(loader.name, version)
    except RegistryError as exc:
        raise RequestError(404, str(exc), [detail(None, "version", str(exc))]) from None
    try:
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
    validator: Any,
    view: ReleaseView,
    answering: str | None,
    error: str | None,
    evidence: dict[str, Any],
) -> dict[str, Any]:
    """``/health``: whether a version answers, and the registry's release state."""
    log = releases.release_log(validator.loader.registry, validator.name)
    decisions = [e for e in log if e["event"] != "started"]
    release = view.release.model_dump() if view.release else None
    store = str(validator.loader.registry.store)
    return {
        "status": "healthy" if answering else "unhealthy",
        "model_loaded": answering is not None,
        "model_version": answering,
        "production": view.production,
        "pinned": view.pinned,
        "release": release,
        "release_evidence": evidence,
        "last_release_decision": decisions[-1] if decisions else None,
        "errors": {
            "load": redact(error, store),
            "unavailable": {v: redact(r, store) for v, r in validator.unavailable.items()} or None,
            "registry": redact(view.error, store),
        },
        "timestamp": now_iso(),
        "uptime_seconds": time.time() - validator.started,
    }


def redact(text: str | None, store: str) -> str | None:
    """No storage paths in what anonymous callers read."""
    return text.replace(store, "<store>") if text else text


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


def metrics_body(validator: Any, monitoring: dict[str, Any], admin: bool) -> dict[str, Any]:
    """``GET /metrics``: this ingress replica's request summary and monitoring; the node's
    CPU / memory / disk only for the admin token."""
    body = {
        "uptime_seconds": time.time() - validator.started,
        "model_name": validator.name,
        "model_version": validator.watcher.view.serving,
        "prediction_metrics": validator.summary.summary(),
        "monitoring": monitoring,
    }
    if admin:
        body["system_metrics"] = {
            "cpu_percent": psutil.cpu_percent(),
            "memory_percent": psutil.virtual_memory().percent,
            "disk_percent": psutil.disk_usage("/").percent,
            "load_average": list(os.getloadavg()),
        }
    return body


async def health_response(validator: Any) -> tuple[int, dict[str, Any]]:
    """``/health``: 200 when the serving version (or the last one that answered here)
    answers a metadata call, with the registry's release state and the live evidence."""
    view = validator.watcher.view
    answering, error = None, None
    for version in dict.fromkeys(filter(None, (view.serving, validator.last_good))):
        try:
            await validator.describe(version, HEALTH_WAIT_S)
            answering = version
            break
        except Exception as exc:
            error = error or f"{version}: {getattr(exc, 'reason', None) or exc!r}"
    try:
        evidence = await asyncio.wait_for(validator.post.release_status.remote(), HEALTH_WAIT_S)
    except Exception as exc:
        evidence = {"error": repr(exc)}
    if view.serving is None:
        error = view.error or "no version is promoted yet"
    body = await asyncio.to_thread(health_body, validator, view, answering, error, evidence)
    return (200 if answering else 503), body


async def reload_response(validator: Any, previous: str | None) -> tuple[int, dict[str, Any]]:
    """After a promotion (or none): the state every replica routes by, once they all do
    (each re-reads the registry within ``poll_interval_s``), and whether it loads."""
    settled = asyncio.create_task(asyncio.sleep(validator.settings.poll_interval_s + 0.25))
    view = await validator.watcher.refresh(force=True)
    state = reload_state(view, previous)
    status, body = 200, {"status": "ok", **state, "engine": None}
    if view.serving is not None:
        try:
            meta = await validator.describe(view.serving, RELOAD_WAIT_S)
            body["engine"] = meta["serving"]["engine"]
        except asyncio.TimeoutError:  # still loading: the replicas finish on their own
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
