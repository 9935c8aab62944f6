"""The Validator's read-only and admin routes: ``/health``, ``/model``, ``/openapi.json``,
``/metrics``, ``/reload-model`` and ``/feedback``. Mixed into the Validator (Serve's ingress
finds inherited routes); they read its state and write nothing but through the registry and
the Postprocessor."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sparc_ray.serving import admin
from sparc_ray.serving.api_docs import route
from sparc_ray.serving.messages import NoModelError, VersionUnavailable
from sparc_ray.serving.requests import RequestError, parse_feedback, parse_json
from sparc_ray.serving.responses import error_response, json_response, read_body, redact

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ray.serve.handle import DeploymentHandle

    from sparc_ray.inference.loader import ModelLoader
    from sparc_ray.serving.auth import BearerToken
    from sparc_ray.serving.dispatch import VersionCatalog
    from sparc_ray.serving.metrics import RequestMetrics
    from sparc_ray.serving.openapi import OpenAPIDocument
    from sparc_ray.serving.routing import ReleaseWatcher
    from sparc_ray.serving.settings import ValidatorSettings
    from sparc_ray.serving.tasks import Failures

router = APIRouter()


class AdminRoutes:
    """What the routes read from the Validator."""

    name: str
    store: str
    started: float
    settings: ValidatorSettings
    watcher: ReleaseWatcher
    versions: VersionCatalog
    loader: ModelLoader
    post: DeploymentHandle
    openapi: OpenAPIDocument
    requests: RequestMetrics
    failures: Failures
    admin_token: BearerToken
    feedback_token: BearerToken
    last_good: str | None
    unavailable: dict[str, str]

    if TYPE_CHECKING:

        def _describe(self, version: str, wait_s: float) -> Awaitable[dict[str, Any]]: ...

    # -- read-only endpoints ------------------------------------------------------------------
    @route(router, "health")
    async def health(self) -> Response:
        status, body = await admin.health_response(
            view=self.watcher.view,
            last_good=self.last_good,
            describe=self._describe,
            release_status=self.post.release_status.remote,
            loader=self.loader,
            unavailable=self.unavailable,
            uptime_s=time.time() - self.started,
            wait_s=self.settings.health_wait_s,
        )
        return json_response(status, body)

    @route(router, "model")
    async def model_info(
        self, request: Request, full: bool = False, version: str | None = None
    ) -> Response:
        """Anyone: what a request needs (``public_metadata``). The admin token: the whole
        metadata.json (``full=true`` adds the drift references)."""
        meta = await self._described(request, version, self.settings.reload_wait_s)
        if isinstance(meta, Response):
            return meta
        if not self._is_admin(request):
            return json_response(200, admin.public_metadata(meta))
        return json_response(
            200, meta if full else {k: v for k, v in meta.items() if k != "reference"}
        )

    async def _refused(self, request: Request, version: str) -> Response | None:
        """A version asked for by name: anyone may name what serves, any other needs the
        admin token (``version_denied``), and it must exist and verify (no load for nothing).
        None, or the response refusing it."""
        denied = self.admin_token.check(request.headers.get("authorization"))
        return admin.version_denied(version, self.watcher.view, denied) or (
            await admin.check_version(version, self.versions.metadata, self.store)
        )

    async def _described(
        self, request: Request, version: str | None, wait_s: float
    ) -> dict[str, Any] | Response:
        """The metadata of ``version`` (default: what serves) as a Model replica describes it,
        or the response refusing it (``_refused``; 503 when no replica can load it)."""
        if version and (refused := await self._refused(request, version)):
            return refused
        version = version or self.watcher.view.serving
        try:
            if version is None:
                raise NoModelError(self.watcher.view.error or "no version is promoted yet")
            described: dict[str, Any] = await self._describe(version, wait_s)
        except (TimeoutError, NoModelError, VersionUnavailable) as exc:
            message = redact(str(exc), self.store)
            return error_response(503, "no model is loaded", [(None, "version", message)])
        return described

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi_json(self, request: Request) -> Response:
        full = self.settings.openapi_training_values or self._is_admin(request)
        meta = self.versions.cached_metadata(self.watcher.view.serving)
        return json_response(200, self.openapi.render(meta, self.settings.max_instances, full))

    def _is_admin(self, request: Request) -> bool:
        return self.admin_token.allows(request.headers.get("authorization"))

    @route(router, "metrics")
    async def metrics_summary(self, request: Request) -> Response:
        stats = await self.post.stats.remote()
        body = admin.metrics_body(
            name=self.name,
            serving=self.watcher.view.serving,
            uptime_s=time.time() - self.started,
            requests=self.requests.summary.summary(),
            monitoring=stats,
            internal_errors=self.failures.counts,
            admin=self._is_admin(request),
        )
        return json_response(200, body)

    # -- write endpoints (bearer token) -----------------------------------------------------
    @route(router, "reload")
    async def reload_model(self, request: Request) -> Response:
        if denied := self.admin_token.check(request.headers.get("authorization")):
            return denied
        limit = self.settings.max_admin_body_bytes
        try:
            ask = admin.ReloadRequest.parse(await read_body(request, limit), limit)
            previous = await asyncio.to_thread(admin.promote_for_reload, self.loader, ask)
        except RequestError as exc:
            return json_response(exc.status, exc.body())
        status, body = await admin.reload_response(
            watcher=self.watcher,
            describe=self._describe,
            previous=previous,
            poll_interval_s=self.settings.poll_interval_s,
            wait_s=self.settings.reload_wait_s,
        )
        return json_response(status, body)

    @route(router, "feedback")
    async def feedback(self, request: Request) -> Response:
        if denied := self.feedback_token.check(request.headers.get("authorization")):
            return denied
        try:
            limit = self.settings.max_body_bytes
            items = parse_feedback(parse_json(await read_body(request, limit), limit))
        except RequestError as exc:
            return json_response(exc.status, exc.body())
        return json_response(200, await self.post.feedback.remote(items))
