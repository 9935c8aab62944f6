"""The admin side of the HTTP API: what ``/reload-model`` accepts and does, what ``/health``
says. Both go through the registry; nothing here holds version state."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import psutil

from sparc_ray import releases
from sparc_ray.input_rules import RequestError, detail, parse_json
from sparc_ray.models import IntegrityError
from sparc_ray.registry import ALIAS, RegistryError
from sparc_ray.serving.loader import ModelLoader
from sparc_ray.serving.responses import now_iso
from sparc_ray.serving.routing import ReleaseView

MAX_ADMIN_BODY = 10_000


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
    """Move production as the CLI would (verified files; gates unless ``force``); returns the
    version it replaced, or None when nothing was asked."""
    if ask.version is None:
        return None
    reg = loader.registry
    try:
        version = reg.resolve(loader.name, ask.version)
        reg.metadata(loader.name, version)
    except RegistryError as exc:
        raise RequestError(404, str(exc), [detail(None, "version", str(exc))]) from None
    try:
        return releases.promote(reg, loader.name, version, force=ask.force, by="api")
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


def public_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """What any caller needs to build a request: the version, its classes and each feature's
    name, kind and allowed categories. No paths, data sources, library versions or metrics."""
    return {
        **{k: meta[k] for k in PUBLIC_FIELDS if k in meta},
        "features": [
            {"name": f["name"], "kind": f["kind"], "categories": f.get("categories") or []}
            for f in meta["features"]
        ],
        "serving": {"engine": meta.get("serving", {}).get("engine")},
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
