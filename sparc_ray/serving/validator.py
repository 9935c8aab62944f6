"""Validator deployment: the FastAPI ingress.

It routes each request to a version (production, or the canary's share; see
``sparc_ray.serving.routing``), checks it against that version's features
(``serving.requests``, the shared input rules), micro-batches concurrent requests
(``@serve.batch``) so that one Model call per version and one Postprocessor call serve many
HTTP requests (``serving.dispatch``), and answers with the seed's response fields.
"""

import asyncio
import logging
import time
import uuid
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from ray import serve
from ray.serve.handle import DeploymentHandle

from sparc_ray import __version__
from sparc_ray.inference.labels import labels_from_proba
from sparc_ray.inference.loader import ModelLoader
from sparc_ray.serving import admin, metrics
from sparc_ray.serving.api_docs import DOCS, route
from sparc_ray.serving.auth import Tokens
from sparc_ray.serving.dispatch import (
    Dispatcher,
    Job,
    VersionCatalog,
    answers_from,
    batching,
    post_groups,
)
from sparc_ray.serving.messages import NoModelError, PostBatch, VersionUnavailable
from sparc_ray.serving.openapi import OpenAPIDocument
from sparc_ray.serving.requests import RequestError, parse_feedback, parse_json, parse_predict
from sparc_ray.serving.responses import (
    error_response,
    failed_prediction,
    invalid_parameters,
    json_response,
    now_iso,
    read_body,
    redact,
    shape_responses,
)
from sparc_ray.serving.routing import ROUTE_KEY_HEADER, ReleaseWatcher
from sparc_ray.serving.settings import MAX_CONCURRENT_BATCHES, ValidatorSettings
from sparc_ray.serving.tasks import BackgroundTasks, Failures, flush_logs_forever

logger = logging.getLogger("ray.serve")
# FastAPIOffline: /docs and /redoc load Swagger UI / ReDoc from the app, not from a CDN.
api = FastAPIOffline(title="sparc-ray model API", version=__version__, description=DOCS)
api.add_exception_handler(RequestValidationError, invalid_parameters)
# /openapi.json is served by the Validator (below): training values only for the admin token.
api.router.routes = [r for r in api.router.routes if getattr(r, "path", "") != api.openapi_url]
DEFAULTS = ValidatorSettings()


@serve.deployment(name="Validator")
@serve.ingress(api)
class Validator:
    # An async constructor: Serve awaits it (mypy expects __init__ to return None).
    async def __init__(  # type: ignore[misc]
        self,
        model: DeploymentHandle,
        post: DeploymentHandle,
        loader: ModelLoader,
        tokens: Tokens | None = None,
    ) -> None:
        self.model, self.post, self.loader = model, post, loader
        self.name, self.store = loader.name, str(loader.registry.store)
        self.admin_token, self.feedback_token = (tokens or Tokens()).read()
        self.started = time.time()
        self.settings = ValidatorSettings()
        self.failures = Failures()
        self.watcher = ReleaseWatcher(loader, self.settings.poll_interval_s)
        self.versions = VersionCatalog(model, loader, self.failures)
        self.dispatcher = Dispatcher(self.versions.score)
        self.requests = metrics.RequestMetrics(self.name, self.failures)
        self.last_good: str | None = None  # the last serving version that answered here
        self.unavailable: dict[str, str] = {}  # versions that could not be loaded, and why
        self._in_flight = 0  # micro-batches sent and not yet answered
        self.openapi = OpenAPIDocument(api)  # /openapi.json: the served version's features
        self.tasks = BackgroundTasks()
        self.tasks.start("registry_watch", self._watch_forever())
        self.tasks.start("log_flush", flush_logs_forever(self.failures))

    async def reconfigure(self, config: dict[str, Any]) -> None:
        self.settings = s = ValidatorSettings.model_validate(config)
        batching(self._score).set_max_batch_size(s.batch_max_rows)
        self.watcher.poll_interval_s = s.poll_interval_s
        self.watcher.pin(s.model_version)
        self.versions.max_cached, self.versions.retry_refused_s = (
            s.versions_cached,
            s.retry_refused_s,
        )

    async def _watch_forever(self) -> None:
        while True:
            view = await self.watcher.refresh(force=True)
            if view.serving is not None:  # read once, so /openapi.json can describe it
                try:
                    await self.versions.metadata(view.serving)
                except Exception as exc:  # /health and /predict report it
                    self.failures.record("serving_metadata", exc)
            await asyncio.sleep(self.settings.poll_interval_s)

    def _describe(self, version: str, wait_s: float) -> Any:
        return asyncio.wait_for(self.versions.handle(version).metadata.remote(), wait_s)

    # -- /predict -------------------------------------------------------------------------
    @serve.batch(
        max_batch_size=DEFAULTS.batch_max_rows,  # rows (batch_size_fn), not requests
        batch_wait_timeout_s=DEFAULTS.batch_wait_timeout_s,
        max_concurrent_batches=MAX_CONCURRENT_BATCHES,
        batch_size_fn=lambda jobs: sum(j.data.n_rows for j in jobs),
    )
    async def _score(self, jobs: list[Job]) -> list[Any]:
        """One Model call per version and one Postprocessor call for a micro-batch of
        validated requests. Returns each request's response body, or the error only it gets."""
        view = self.watcher.view
        self._in_flight += 1
        try:
            outcome = await self.dispatcher.run(
                [j.data for j in jobs], [j.version for j in jobs], view.serving, self.last_good
            )
        finally:
            self._in_flight -= 1
        self.unavailable.update(outcome.unavailable)
        if any(g.version == view.serving for g in outcome.groups):
            self.last_good = view.serving
            self.unavailable.pop(view.serving or "", None)
        groups = post_groups(outcome, jobs)
        if not groups and not outcome.server_errors:  # every request failed: nothing to record
            return answers_from(outcome, [], len(jobs))
        batch = PostBatch(groups, outcome.server_errors, view.serving, bool(view.pinned))
        try:
            bodies = await self.post.process.remote(batch)
        except Exception as exc:  # monitoring must not fail predictions: shape them here
            self.failures.record("postprocessor", exc)
            bodies = []
            for g in groups:
                classes = (await self.versions.metadata(g.version)).classes
                labels = labels_from_proba(g.proba, classes).tolist()
                bodies.append(shape_responses(g.requests, g.proba, labels, classes, g.version))
        return answers_from(outcome, bodies, len(jobs))

    async def _submit(self, job: Job) -> dict[str, Any]:
        # No batch window when nothing is in flight: a lone request goes out at once.
        wait = self.settings.batch_wait_timeout_s if self._in_flight else 0.0
        batching(self._score).set_batch_wait_timeout_s(wait)
        answer = await self._score(job)
        if isinstance(answer, Exception):
            raise answer
        return answer

    @route(api, "predict")
    async def predict(self, request: Request) -> Response:
        start = time.perf_counter()
        prediction_id = str(uuid.uuid4())
        rows, reason, version, status = 0, None, None, 200
        try:
            routed = self.watcher.view.route(request.headers.get(ROUTE_KEY_HEADER))
            if routed is None:
                raise NoModelError(self.watcher.view.error or "no version is promoted yet")
            limit = self.settings.max_body_bytes
            body = parse_json(await read_body(request, limit), limit)
            # A version whose metadata is refused (e.g. a bad signature) hands the request to
            # the serving version or the last one that answered here.
            fallbacks = (self.watcher.view.serving, self.last_good)
            version, checks, refused = await self.versions.checks_for(routed, fallbacks)
            if refused:
                self.unavailable[routed] = refused
            data = parse_predict(body, checks, self.settings.max_instances)
            result = await self._submit(Job(prediction_id, data, version))
            rows, version = data.n_rows, result["model_version"]
            elapsed_ms = (time.perf_counter() - start) * 1000
            body = {
                **result,
                "model_name": self.name,
                "prediction_id": prediction_id,
                "timestamp": now_iso(),
                "processing_time_ms": round(elapsed_ms, 3),
            }
            logger.info(
                "predicted %d rows with %s in %.1f ms",
                rows,
                version,
                elapsed_ms,
                extra={"prediction_id": prediction_id},
            )
            return json_response(200, body)
        except Exception as exc:
            failed, reason, status = failed_prediction(exc, prediction_id, self.store)
            return failed
        finally:
            self.requests.record(time.perf_counter() - start, rows, version, reason, status)

    # -- read-only endpoints ------------------------------------------------------------------
    @route(api, "health")
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

    @route(api, "model")
    async def model_info(
        self, request: Request, full: bool = False, version: str | None = None
    ) -> Response:
        """Anyone: what a request needs (``public_metadata``). The admin token: the whole
        metadata.json (``full=true`` adds the drift references)."""
        if version:  # asked for by name: it must exist (no load for nothing)
            denied = self.admin_token.check(request.headers.get("authorization"))
            refused = admin.version_denied(version, self.watcher.view, denied) or (
                await admin.check_version(version, self.versions.metadata, self.store)
            )
            if refused:
                return refused
        version = version or self.watcher.view.serving
        try:
            if version is None:
                raise NoModelError(self.watcher.view.error or "no version is promoted yet")
            meta = await self._describe(version, self.settings.reload_wait_s)
        except (TimeoutError, NoModelError, VersionUnavailable) as exc:
            message = redact(str(exc), self.store)
            return error_response(503, "no model is loaded", [(None, "version", message)])
        if not self._is_admin(request):
            return json_response(200, admin.public_metadata(meta))
        return json_response(
            200, meta if full else {k: v for k, v in meta.items() if k != "reference"}
        )

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi_json(self, request: Request) -> Response:
        full = self.settings.openapi_training_values or self._is_admin(request)
        meta = self.versions.cached_metadata(self.watcher.view.serving)
        return json_response(200, self.openapi.render(meta, self.settings.max_instances, full))

    def _is_admin(self, request: Request) -> bool:
        return self.admin_token.allows(request.headers.get("authorization"))

    @route(api, "metrics")
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
    @route(api, "reload")
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

    @route(api, "feedback")
    async def feedback(self, request: Request) -> Response:
        if denied := self.feedback_token.check(request.headers.get("authorization")):
            return denied
        try:
            limit = self.settings.max_body_bytes
            items = parse_feedback(parse_json(await read_body(request, limit), limit))
        except RequestError as exc:
            return json_response(exc.status, exc.body())
        return json_response(200, await self.post.feedback.remote(items))

    async def check_health(self) -> None:
        self.tasks.check()
