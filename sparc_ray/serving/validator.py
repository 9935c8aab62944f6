"""Validator deployment: the FastAPI ingress.

It checks each request against the served model's feature schema, micro-batches concurrent
requests (``@serve.batch``) so that one Model call and one Postprocessor call serve many HTTP
requests, and answers with the seed's response fields.
"""

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import Any

import numpy as np
import psutil
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from sparc_ray import __version__
from sparc_ray.input_rules import (
    FLOAT32_MAX,
    FeatureCheck,
    PredictInput,
    RequestError,
    detail,
    parse_json,
    parse_predict,
)
from sparc_ray.labels import labels_from_proba
from sparc_ray.registry import ALIAS, RegistryError
from sparc_ray.serving import metrics
from sparc_ray.serving.api_docs import DOCS, OPENAPI_EXTRA
from sparc_ray.serving.fastpath import flush_logs_forever
from sparc_ray.serving.loader import ModelLoader, served_version, switch_target, version_board
from sparc_ray.serving.model import NoModelError, SchemaMismatchError
from sparc_ray.serving.postprocessor import shape_responses
from sparc_ray.serving.responses import check_bearer, error_response, json_response, now_iso
from sparc_ray.serving.settings import ValidatorSettings

logger = logging.getLogger("ray.serve")
api = FastAPI(title="sparc-ray model API", version=__version__, description=DOCS)
RELOAD_TIMEOUT_S = 60.0


@serve.deployment(name="Validator", ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Validator:
    async def __init__(
        self,
        model: DeploymentHandle,
        post: DeploymentHandle,
        loader: ModelLoader,
        admin_token_env: str = "SPARC_ADMIN_TOKEN",
    ) -> None:
        self.model, self.post, self.loader = model, post, loader
        self.name = loader.name
        self.token = os.environ.get(admin_token_env) or None
        self.started = time.time()
        self.settings = ValidatorSettings()
        self.summary = metrics.LatencySummary()
        self.errors = metrics.prediction_errors()
        self.latency = metrics.prediction_duration()
        self._meta: dict[str, Any] | None = None
        self._checks: list[FeatureCheck] = []
        self._in_flight = 0  # micro-batches sent and not yet answered
        ctx = serve.get_replica_context()
        self.board = version_board(ctx.app_name)
        self._log_flusher = asyncio.get_running_loop().create_task(flush_logs_forever())

    async def reconfigure(self, config: dict[str, Any]) -> None:
        self.settings = ValidatorSettings.model_validate(config)
        self._score.set_max_batch_size(self.settings.batch_max_rows)

    async def _schema(self, refresh: bool = False) -> list[FeatureCheck]:
        if self._meta is None or refresh:
            self._meta = await self.model.metadata.remote()
            limits = self._meta.get("input_limits") or {}
            self._checks = [
                FeatureCheck(f["name"], f["kind"] == "numeric", limits.get(f["name"], FLOAT32_MAX))
                for f in self._meta["features"]
            ]
        return self._checks

    # -- /predict -------------------------------------------------------------------------
    @serve.batch(
        max_batch_size=ValidatorSettings().batch_max_rows,  # rows (batch_size_fn), not requests
        batch_wait_timeout_s=ValidatorSettings().batch_wait_timeout_s,
        max_concurrent_batches=4,  # keep the Model replicas busy while earlier batches finish
        batch_size_fn=lambda jobs: sum(j.n_rows for _, j in jobs),
    )
    async def _score(self, jobs: list[tuple[str, PredictInput]]) -> list[Any]:
        """One Model call and one Postprocessor call for a micro-batch of validated requests.
        Returns each request's response body, or the ``RequestError`` that only it gets."""
        self._in_flight += 1
        try:
            first = jobs[0][1].columns
            columns = (
                first
                if len(jobs) == 1
                else {n: np.concatenate([j.columns[n] for _, j in jobs]) for n in first}
            )
            scored = await self.model.predict.remote(columns, [j.n_rows for _, j in jobs])
        finally:
            self._in_flight -= 1
        ok = [i for i in range(len(jobs)) if i not in scored.failed]
        proba, kept = scored.proba, columns
        if scored.failed:  # keep the rows of the requests that were scored
            keep = np.concatenate(
                [np.full(j.n_rows, i not in scored.failed) for i, (_, j) in enumerate(jobs)]
            )
            proba, kept = proba[keep], {n: c[keep] for n, c in columns.items()}
        items = [
            {
                "prediction_id": jobs[i][0],
                "n_rows": jobs[i][1].n_rows,
                "include_probabilities": jobs[i][1].include_probabilities,
            }
            for i in ok
        ]
        try:
            bodies = (
                await self.post.process.remote(items, proba, scored.version, kept) if items else []
            )
        except Exception:  # monitoring must not fail predictions: shape them here
            logger.exception("Postprocessor call failed; answering without it")
            classes = self._meta["classes"]
            labels = labels_from_proba(proba, classes).tolist()
            bodies = shape_responses(items, proba, labels, classes, scored.version)
        answers: list[Any] = [None] * len(jobs)
        for i, body in zip(ok, bodies, strict=True):
            answers[i] = body
        for i, failure in scored.failed.items():
            answers[i] = RequestError(
                422,
                "the model cannot score this input",
                [detail(failure["row"], None, failure["message"][:300])],
            )
        return answers

    async def _submit(self, prediction_id: str, data: PredictInput) -> dict[str, Any]:
        # No batch window when nothing is in flight: a lone request goes out at once.
        wait = self.settings.batch_wait_timeout_s if self._in_flight else 0.0
        self._score.set_batch_wait_timeout_s(wait)
        answer = await self._score((prediction_id, data))
        if isinstance(answer, RequestError):
            raise answer
        return answer

    @api.post(
        "/predict",
        summary="Predict labels (and probabilities) for rows",
        openapi_extra=OPENAPI_EXTRA["predict"],
    )
    async def predict(self, request: Request) -> Response:
        start = time.perf_counter()
        prediction_id = str(uuid.uuid4())
        rows, reason = 0, None
        try:
            limit = self.settings.max_body_bytes
            declared = int(request.headers.get("content-length") or 0)
            if declared > limit:
                raise RequestError(413, f"request body is {declared} bytes; the limit is {limit}")
            body = parse_json(await request.body(), limit)
            max_rows = self.settings.max_instances
            try:
                data = parse_predict(body, await self._schema(), max_rows)
                result = await self._submit(prediction_id, data)
            except SchemaMismatchError:  # the model switched version; re-check and retry once
                data = parse_predict(body, await self._schema(refresh=True), max_rows)
                result = await self._submit(prediction_id, data)
            rows = data.n_rows
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
                result["model_version"],
                elapsed * 1000,
                extra={"prediction_id": prediction_id},
            )
            return json_response(200, response)
        except RequestError as exc:
            reason = {400: "bad_request", 413: "payload_too_large"}.get(exc.status, "invalid_input")
            logger.info(
                "rejected request: %s %s",
                exc.status,
                exc.error,
                extra={"prediction_id": prediction_id},
            )
            return json_response(exc.status, {**exc.body(), "prediction_id": prediction_id})
        except NoModelError as exc:
            reason = "no_model"
            return error_response(
                503, "no model is loaded", [(None, None, str(exc))], prediction_id=prediction_id
            )
        except Exception:
            reason = "internal"
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
            with contextlib.suppress(Exception):  # metrics never fail a prediction
                self.summary.record(elapsed * 1000, rows, reason is None)
                if reason is None:
                    self.latency.observe(elapsed, tags={"model_name": self.name})
                else:
                    self.errors.inc(tags={"model_name": self.name, "reason": reason})

    # -- read-only endpoints ------------------------------------------------------------------
    @api.get("/health", summary="Liveness / readiness", openapi_extra=OPENAPI_EXTRA["health"])
    async def health(self) -> Response:
        status = await self.board.status.remote()
        replicas = status["replicas"]
        version = served_version(status)
        errors = {k: r["last_error"] for k, r in replicas.items() if r["last_error"]}
        body = {
            "status": "healthy" if version else "unhealthy",
            "model_loaded": bool(version),
            "model_version": version,
            "timestamp": now_iso(),
            "uptime_seconds": time.time() - self.started,
            "target": status["ref"],
            "model_replicas": len(replicas),
            "reload_errors": errors or (None if replicas else "no Model replica has reported yet"),
        }
        return json_response(200 if version else 503, body)

    @api.get("/model", summary="Metadata of the served model", openapi_extra=OPENAPI_EXTRA["model"])
    async def model_info(self, full: bool = False) -> Response:
        try:
            meta = await self.model.metadata.remote()
        except NoModelError as exc:
            return error_response(503, "no model is loaded", [(None, None, str(exc))])
        return json_response(
            200, meta if full else {k: v for k, v in meta.items() if k != "reference"}
        )

    @api.get(
        "/metrics",
        summary="JSON summary of this ingress replica and the node",
        openapi_extra=OPENAPI_EXTRA["metrics"],
    )
    async def metrics_summary(self) -> Response:
        status, stats = await asyncio.gather(self.board.status.remote(), self.post.stats.remote())
        return json_response(
            200,
            {
                "uptime_seconds": time.time() - self.started,
                "model_name": self.name,
                "model_version": served_version(status),
                "prediction_metrics": self.summary.summary(),
                "monitoring": stats,
                "system_metrics": {
                    "cpu_percent": psutil.cpu_percent(),
                    "memory_percent": psutil.virtual_memory().percent,
                    "disk_percent": psutil.disk_usage("/").percent,
                    "load_average": list(os.getloadavg()),
                },
            },
        )

    # -- write endpoints (bearer token) -----------------------------------------------------
    @api.post(
        "/reload-model",
        summary="Switch every Model replica to a version",
        openapi_extra=OPENAPI_EXTRA["reload"],
    )
    async def reload_model(self, request: Request) -> Response:
        if denied := check_bearer(self.token, request.headers.get("authorization")):
            return denied
        raw = await request.body()
        try:
            body = parse_json(raw, 10_000) if raw.strip() else {}
            ref = (body.get("version") or ALIAS) if isinstance(body, dict) else None
            if not isinstance(ref, str):
                raise RequestError(
                    422,
                    "'version' must be a string",
                    [{"row": None, "feature": "version", "message": "expected a string"}],
                )
            version = await asyncio.to_thread(self.loader.resolve, ref)
            await asyncio.to_thread(self.loader.load_metadata, version)
        except RequestError as exc:
            return json_response(exc.status, exc.body())
        except RegistryError as exc:
            return error_response(404, str(exc), [(None, "version", str(exc))])
        replicas, failed = await switch_target(self.board, ref, version, RELOAD_TIMEOUT_S)
        if failed:
            return error_response(
                409,
                f"version {version} was not loaded; the previous version keeps serving",
                [(None, replica, str(message)) for replica, message in failed.items()],
            )
        self._meta = None  # the schema may have changed
        return json_response(
            200,
            {"status": "ok", "target": ref, "model_version": version, "replicas": len(replicas)},
        )

    @api.post(
        "/feedback",
        summary="Ground-truth labels for earlier predictions",
        openapi_extra=OPENAPI_EXTRA["feedback"],
    )
    async def feedback(self, request: Request) -> Response:
        if denied := check_bearer(self.token, request.headers.get("authorization")):
            return denied
        try:
            body = parse_json(await request.body(), self.settings.max_body_bytes)
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
