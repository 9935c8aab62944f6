"""Validator deployment: the FastAPI ingress.

It routes each request to a version (production, or the canary's share; see
``sparc_ray.serving.routing``), checks it against that version's feature schema,
micro-batches concurrent requests (``@serve.batch``) so that one Model call per version and
one Postprocessor call serve many HTTP requests, and answers with the seed's response fields.
"""

import asyncio
import contextlib
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
from sparc_ray.inference.input_rules import PredictInput, RequestError, parse_json, parse_predict
from sparc_ray.inference.labels import labels_from_proba
from sparc_ray.inference.loader import ModelLoader
from sparc_ray.registry.artifacts import IntegrityError
from sparc_ray.registry.store import VERSION_RE, RegistryError, check_name
from sparc_ray.serving import metrics
from sparc_ray.serving.admin import (
    MAX_ADMIN_BODY,
    RELOAD_WAIT_S,
    ReloadRequest,
    health_response,
    metrics_body,
    promote_for_reload,
    public_metadata,
    redact,
    reload_response,
)
from sparc_ray.serving.api_docs import DOCS, OPENAPI_EXTRA
from sparc_ray.serving.dispatch import Dispatcher, VersionCatalog, answers_from, post_groups
from sparc_ray.serving.fastpath import flush_logs_forever
from sparc_ray.serving.model import NoModelError, VersionUnavailable
from sparc_ray.serving.openapi import OpenAPIDocument
from sparc_ray.serving.postprocessor import shape_responses
from sparc_ray.serving.responses import (
    Tokens,
    error_response,
    invalid_parameters,
    json_response,
    now_iso,
    read_body,
)
from sparc_ray.serving.routing import ROUTE_KEY_HEADER, ReleaseWatcher
from sparc_ray.serving.settings import ValidatorSettings

logger = logging.getLogger("ray.serve")
# FastAPIOffline: /docs and /redoc load Swagger UI / ReDoc from the app, not from a CDN.
api = FastAPIOffline(title="sparc-ray model API", version=__version__, description=DOCS)
api.add_exception_handler(RequestValidationError, invalid_parameters)
CLIENT_ERRORS = {400: "bad_request", 413: "payload_too_large", 415: "unsupported_media_type"}


@serve.deployment(name="Validator", ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Validator:
    async def __init__(
        self,
        model: DeploymentHandle,
        post: DeploymentHandle,
        loader: ModelLoader,
        tokens: Tokens | None = None,
    ) -> None:
        self.model, self.post, self.loader = model, post, loader
        self.name = loader.name
        self.release_token, self.feedback_token = (tokens or Tokens()).read()
        self.started = time.time()
        self.settings = ValidatorSettings()
        self.watcher = ReleaseWatcher(loader, self.settings.poll_interval_s)
        self.versions = VersionCatalog(model, loader)
        self.dispatcher = Dispatcher(self.versions.score)
        self.summary = metrics.LatencySummary()
        self.errors = metrics.prediction_errors()
        self.latency = metrics.prediction_duration()
        self.last_good: str | None = None  # the last serving version that answered here
        self.unavailable: dict[str, str] = {}  # versions that could not be loaded, and why
        self._in_flight = 0  # micro-batches sent and not yet answered
        self.openapi = OpenAPIDocument(api)  # /openapi.json: the served version's features
        api.openapi = lambda: self.openapi.render(
            self.versions.cached_metadata(self.watcher.view.serving), self.settings.max_instances
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._watch_forever()),
            loop.create_task(flush_logs_forever()),
        ]

    async def reconfigure(self, config: dict[str, Any]) -> None:
        self.settings = ValidatorSettings.model_validate(config)
        self._score.set_max_batch_size(self.settings.batch_max_rows)
        self.watcher.poll_interval_s = self.settings.poll_interval_s
        self.watcher.pin(self.settings.model_version)

    async def _watch_forever(self) -> None:
        while True:
            view = await self.watcher.refresh(force=True)
            if view.serving is not None:  # read once, so /openapi.json can describe it
                with contextlib.suppress(Exception):
                    await self.versions.metadata(view.serving)
            await asyncio.sleep(self.settings.poll_interval_s)

    # -- /predict -------------------------------------------------------------------------
    @serve.batch(
        max_batch_size=ValidatorSettings().batch_max_rows,  # rows (batch_size_fn), not requests
        batch_wait_timeout_s=ValidatorSettings().batch_wait_timeout_s,
        max_concurrent_batches=4,  # keep the Model replicas busy while earlier batches finish
        batch_size_fn=lambda jobs: sum(j.n_rows for _, j, _ in jobs),
    )
    async def _score(self, jobs: list[tuple[str, PredictInput, str]]) -> list[Any]:
        """One Model call per version and one Postprocessor call for a micro-batch of
        validated requests. Returns each request's response body, or the error only it gets."""
        view = self.watcher.view
        self._in_flight += 1
        try:
            outcome = await self.dispatcher.run(
                [j for _, j, _ in jobs], [v for _, _, v in jobs], view.serving, self.last_good
            )
        finally:
            self._in_flight -= 1
        self.unavailable.update(outcome.unavailable)
        if any(g.version == view.serving for g in outcome.groups):
            self.last_good = view.serving
            self.unavailable.pop(view.serving, None)
        groups = post_groups(outcome, jobs)
        if not groups and not outcome.server_errors:  # every request failed: nothing to record
            return answers_from(outcome, [], len(jobs))
        try:
            bodies = await self.post.process.remote(
                groups, outcome.server_errors, bool(view.pinned)
            )
        except Exception:  # monitoring must not fail predictions: shape them here
            logger.exception("Postprocessor call failed; answering without it")
            bodies = []
            for g in groups:
                classes = (await self.versions.metadata(g["version"])).classes
                labels = labels_from_proba(g["proba"], classes).tolist()
                bodies.append(
                    shape_responses(g["items"], g["proba"], labels, classes, g["version"])
                )
        return answers_from(outcome, bodies, len(jobs))

    async def _submit(self, prediction_id: str, data: PredictInput, version: str) -> dict:
        # No batch window when nothing is in flight: a lone request goes out at once.
        wait = self.settings.batch_wait_timeout_s if self._in_flight else 0.0
        self._score.set_batch_wait_timeout_s(wait)
        answer = await self._score((prediction_id, data, version))
        if isinstance(answer, Exception):
            raise answer
        return answer

    @api.post(
        "/predict",
        operation_id="predict",
        summary="Predict labels (and probabilities) for rows",
        openapi_extra=OPENAPI_EXTRA["predict"],
    )
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
            result = await self._submit(prediction_id, data, version)
            rows, version = data.n_rows, result["model_version"]
            elapsed = time.perf_counter() - start
            response = {
                **result,
                "model_name": self.name,
                "prediction_id": prediction_id,
                "timestamp": now_iso(),
                "processing_time_ms": round(elapsed * 1000, 3),
            }
            logger.info(
                "predicted %d rows with %s in %.1f ms",
                rows,
                version,
                elapsed * 1000,
                extra={"prediction_id": prediction_id},
            )
            return json_response(200, response)
        except RequestError as exc:
            reason, status = CLIENT_ERRORS.get(exc.status, "invalid_input"), exc.status
            logger.info(
                "rejected request: %s %s",
                exc.status,
                exc.error,
                extra={"prediction_id": prediction_id},
            )
            return json_response(exc.status, {**exc.body(), "prediction_id": prediction_id})
        except (NoModelError, VersionUnavailable) as exc:
            reason, status = "no_model", 503
            message = redact(str(exc), str(self.loader.registry.store))
            return error_response(
                503, "no model is loaded", [(None, None, message)], prediction_id=prediction_id
            )
        except Exception:
            reason, status = "internal", 500
            error_id = uuid.uuid4().hex[:12]
            logger.exception(
                "internal error %s",
                error_id,
                extra={"prediction_id": prediction_id, "error_id": error_id},
            )
            return error_response(
                500, "internal error", error_id=error_id, prediction_id=prediction_id
            )
        finally:
            elapsed = time.perf_counter() - start
            tags = {"model_name": self.name, "model_version": version or "none"}
            with contextlib.suppress(Exception):  # metrics never fail a prediction
                self.summary.record(elapsed * 1000, rows, reason is None)
                if reason is None:
                    self.latency.observe(elapsed, tags=tags)
                else:
                    kind = "client" if status < 500 else "server"
                    self.errors.inc(tags={**tags, "reason": reason, "kind": kind})

    # -- read-only endpoints ------------------------------------------------------------------
    async def describe(self, version: str, wait_s: float) -> dict[str, Any]:
        return await asyncio.wait_for(self.versions.handle(version).metadata.remote(), wait_s)

    @api.get(
        "/health",
        operation_id="health",
        summary="Liveness / readiness",
        openapi_extra=OPENAPI_EXTRA["health"],
    )
    async def health(self) -> Response:
        status, body = await health_response(self)
        return json_response(status, body)

    @api.get(
        "/model",
        operation_id="model",
        summary="Metadata of a served version",
        openapi_extra=OPENAPI_EXTRA["model"],
    )
    async def model_info(
        self, request: Request, full: bool = False, version: str | None = None
    ) -> Response:
        """Anyone: what a request needs (``public_metadata``). The admin token: the whole
        metadata.json (``full=true`` adds the drift references)."""
        if version is not None:  # asked for by name: it must exist (no load for nothing)
            try:
                await self.versions.metadata(check_name(version))
            except RegistryError as exc:
                status = 404 if VERSION_RE.match(version) else 422
                message = redact(str(exc), str(self.loader.registry.store))
                return error_response(status, "unknown version", [(None, "version", message)])
            except IntegrityError as exc:  # e.g. unsigned, or changed after it was signed
                message = redact(str(exc), str(self.loader.registry.store))
                return error_response(503, "version refused", [(None, "version", message)])
        version = version or self.watcher.view.serving
        try:
            if version is None:
                raise NoModelError(self.watcher.view.error or "no version is promoted yet")
            meta = await self.describe(version, RELOAD_WAIT_S)
        except (NoModelError, VersionUnavailable, asyncio.TimeoutError) as exc:
            message = redact(str(exc), str(self.loader.registry.store))
            return error_response(503, "no model is loaded", [(None, "version", message)])
        if not self._is_admin(request):
            return json_response(200, public_metadata(meta))
        return json_response(
            200, meta if full else {k: v for k, v in meta.items() if k != "reference"}
        )

    def _is_admin(self, request: Request) -> bool:
        return self.release_token.allows(request.headers.get("authorization"))

    @api.get(
        "/metrics",
        operation_id="metrics",
        summary="JSON summary of this ingress replica and the node",
        openapi_extra=OPENAPI_EXTRA["metrics"],
    )
    async def metrics_summary(self, request: Request) -> Response:
        stats = await self.post.stats.remote()
        return json_response(200, metrics_body(self, stats, self._is_admin(request)))

    # -- write endpoints (bearer token) -----------------------------------------------------
    @api.post(
        "/reload-model",
        operation_id="reload",
        summary="Promote a version to production (or re-read the registry)",
        openapi_extra=OPENAPI_EXTRA["reload"],
    )
    async def reload_model(self, request: Request) -> Response:
        if denied := self.release_token.check(request.headers.get("authorization")):
            return denied
        try:
            ask = ReloadRequest.parse(await read_body(request, MAX_ADMIN_BODY))
            previous = await asyncio.to_thread(promote_for_reload, self.loader, ask)
        except RequestError as exc:
            return json_response(exc.status, exc.body())
        status, body = await reload_response(self, previous)
        return json_response(status, body)

    @api.post(
        "/feedback",
        operation_id="feedback",
        summary="Ground-truth labels for earlier predictions",
        openapi_extra=OPENAPI_EXTRA["feedback"],
    )
    async def feedback(self, request: Request) -> Response:
        if denied := self.feedback_token.check(request.headers.get("authorization")):
            return denied
        try:
            limit = self.settings.max_body_bytes
            body = parse_json(await read_body(request, limit), limit)
            items = body if isinstance(body, list) else [body]
            bad = [
                {"row": i, "feature": None, "message": "needs prediction_id and label"}
                for i, it in enumerate(items)
                if not isinstance(it, dict) or "prediction_id" not in it or "label" not in it
            ]
            if bad or not items:
                raise RequestError(422, "invalid feedback", bad[:20])
        except RequestError as exc:
            return json_response(exc.status, exc.body())
        return json_response(200, await self.post.feedback.remote(items))
