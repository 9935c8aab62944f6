"""Validator deployment: the FastAPI ingress.

It routes each request to a version (production, or the canary's share; see
``sparc_ray.serving.routing``), checks it against that version's features
(``serving.requests``, the shared input rules), micro-batches concurrent requests
(``@serve.batch``) so that one Model call per version serves many HTTP requests
(``serving.dispatch``), and answers with the seed's response fields. Each answered
micro-batch's record goes to the Postprocessor (monitoring, releases) as the responses go
out: no response waits for it. The V2 routes (``serving.oip_routes``) take the same path;
the read-only and admin routes are in ``serving.admin_routes``; explanations come from the
Explainer (``serving.explainer``).
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from ray import serve
from ray.serve.handle import DeploymentHandle

from sparc_ray import __version__
from sparc_ray.inference.input_rules import FeatureCheck
from sparc_ray.inference.loader import ModelLoader
from sparc_ray.serving import admin_routes, metrics, oip_routes
from sparc_ray.serving.admin_routes import AdminRoutes
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
from sparc_ray.serving.explainer import Explanations
from sparc_ray.serving.feedback import new_prediction_id
from sparc_ray.serving.messages import NoModelError, PostBatch, VersionUnavailable
from sparc_ray.serving.oip import InferInput
from sparc_ray.serving.oip_routes import OipRoutes
from sparc_ray.serving.openapi import OpenAPIDocument
from sparc_ray.serving.requests import PredictInput, RequestError, parse_json, parse_predict
from sparc_ray.serving.responses import (
    failed_prediction,
    invalid_parameters,
    json_response,
    now_iso,
    read_body,
    shape_responses,
)
from sparc_ray.serving.routing import ROUTE_KEY_HEADER, ReleaseWatcher
from sparc_ray.serving.settings import MAX_CONCURRENT_BATCHES, ValidatorSettings
from sparc_ray.serving.tasks import BackgroundTasks, Failures, Unawaited, flush_logs_forever

logger = logging.getLogger("ray.serve")
# FastAPIOffline: /docs and /redoc load Swagger UI / ReDoc from the app, not from a CDN.
api = FastAPIOffline(title="sparc-ray model API", version=__version__, description=DOCS)
api.add_exception_handler(RequestValidationError, invalid_parameters)
# /openapi.json is served by the Validator (below): training values only for the admin token.
api.router.routes = [r for r in api.router.routes if getattr(r, "path", "") != api.openapi_url]
api.include_router(admin_routes.router)
api.include_router(oip_routes.router)
DEFAULTS = ValidatorSettings()
Parsed = TypeVar("Parsed", PredictInput, InferInput)


@serve.deployment(name="Validator")
@serve.ingress(api)
class Validator(AdminRoutes, OipRoutes):
    # An async constructor: Serve awaits it (mypy expects __init__ to return None).
    async def __init__(  # type: ignore[misc]
        self,
        model: DeploymentHandle,
        post: DeploymentHandle,
        loader: ModelLoader,
        tokens: Tokens | None = None,
        explainer: DeploymentHandle | None = None,
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
        self.explanations = Explanations(explainer, self.failures)
        # Monitoring records go to the Postprocessor as responses go out; failures counted.
        self.records = Unawaited(self.failures, "postprocessor", self.settings.records_in_flight)
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
        self.records.limit = s.records_in_flight
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
        """One Model call per version for a micro-batch of validated requests, and its record
        sent to the Postprocessor. Returns each request's response body, or the error only it
        gets."""
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
        classes = {
            g.version: (await self.versions.metadata(g.version)).classes for g in outcome.groups
        }
        groups = post_groups(outcome, jobs, classes)
        if groups or outcome.server_errors:  # monitoring, without the responses waiting for it
            batch = PostBatch(groups, outcome.server_errors, view.serving, bool(view.pinned))
            self.records.send(lambda: self.post.record.remote(batch))
        bodies = [
            shape_responses(g.requests, g.proba, g.labels, classes[g.version], g.version)
            for g in groups
        ]
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
        limit = self.settings.max_instances

        def parse(body: Any, checks: list[FeatureCheck]) -> PredictInput:
            return parse_predict(body, checks, limit)

        def shape(_: PredictInput, result: dict[str, Any], pid: str, ms: float) -> dict[str, Any]:
            return {
                **result,
                "model_name": self.name,
                "prediction_id": pid,
                "timestamp": now_iso(),
                "processing_time_ms": round(ms, 3),
            }

        return await self._serve(request, parse, shape)

    async def _serve(
        self,
        request: Request,
        parse: Callable[[Any, list[FeatureCheck]], Parsed],
        shape: Callable[[Parsed, dict[str, Any], str, float], dict[str, Any]],
        version: str | None = None,
        errors: Callable[[RequestError], RequestError] | None = None,
    ) -> Response:
        """One scoring request (``/predict``, V2 infer): routed to a version (or ``version``
        only), ``parse``d against its input checks, scored in the micro-batch, explained if
        asked, ``shape``d into the body; failures answered by ``failed_prediction`` (client
        errors through ``errors``)."""
        start = time.perf_counter()
        prediction_id = new_prediction_id()
        rows, reason, served, status = 0, None, None, 200
        try:
            view = self.watcher.view
            routed = version or view.route(request.headers.get(ROUTE_KEY_HEADER))
            if routed is None:
                raise NoModelError(view.error or "no version is promoted yet")
            limit = self.settings.max_body_bytes
            body = parse_json(await read_body(request, limit), limit)
            # A version whose metadata is refused (e.g. a bad signature) hands the request to
            # the serving version or the last one that answered here (not a named version).
            fallbacks = () if version else (view.serving, self.last_good)
            served, checks, refused = await self.versions.checks_for(routed, fallbacks)
            if refused:
                self.unavailable[routed] = refused
            data = parse(body, checks)
            scoring = data.predict_input()
            scoring.check_explain_rows(self.settings.max_explain_instances)
            result = await self._submit(Job(prediction_id, scoring, served))
            if version and result["model_version"] != version:
                raise VersionUnavailable(version, "it could not answer this request")
            rows, served = scoring.n_rows, result["model_version"]
            if scoring.explain:
                result |= await self.explanations.explain(served, scoring.columns)
            elapsed_ms = (time.perf_counter() - start) * 1000
            logger.info(
                "predicted %d rows with %s in %.1f ms",
                rows,
                served,
                elapsed_ms,
                extra={"prediction_id": prediction_id},
            )
            return json_response(200, shape(data, result, prediction_id, elapsed_ms))
        except Exception as exc:
            if errors and isinstance(exc, RequestError):
                exc = errors(exc)
            failed, reason, status = failed_prediction(exc, prediction_id, self.store)
            return failed
        finally:
            self.requests.record(time.perf_counter() - start, rows, served, reason, status)

    async def check_health(self) -> None:
        self.tasks.check()
