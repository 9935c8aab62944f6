"""Validator deployment: the FastAPI ingress.

It checks each request against the served model's feature schema, micro-batches concurrent
requests (``@serve.batch``) so that one Model call and one Postprocessor call serve many HTTP
requests, and answers with the seed's response fields.
"""

import asyncio
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
from sparc_ray.registry import ALIAS, RegistryError
from sparc_ray.serving import metrics
from sparc_ray.serving.api_docs import DOCS, OPENAPI_EXTRA
from sparc_ray.serving.loader import ModelLoader, served_version, switch_target, version_board
from sparc_ray.serving.model import NoModelError, SchemaMismatchError
from sparc_ray.serving.requests import FeatureCheck, RequestError, parse_json, parse_predict
from sparc_ray.serving.responses import check_bearer, error_response, json_response, now_iso

logger = logging.getLogger("ray.serve")
api = FastAPI(title="sparc-ray model API", version=__version__, description=DOCS)
RELOAD_TIMEOUT_S = 60.0


@serve.deployment(name="Validator", ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Validator:
    def __init__(
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
        self.max_instances, self.max_body_bytes = 1000, 2_000_000
        self.summary = metrics.LatencySummary()
        self.errors = metrics.prediction_errors()
        self.latency = metrics.prediction_duration()
        self._meta: dict[str, Any] | None = None
        self._checks: list[FeatureCheck] = []
        ctx = serve.get_replica_context()
        self.board = version_board(ctx.app_name)

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.max_instances = int(config.get("max_instances", self.max_instances))
        self.max_body_bytes = int(config.get("max_body_bytes", self.max_body_bytes))
        # A batch must hold the largest request: at least max_instances rows.
        rows = max(int(config.get("batch_max_rows", 1000)), self.max_instances)
        self._score.set_max_batch_size(rows)
        self._score.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.002)))

    async def _schema(self, refresh: bool = False) -> list[FeatureCheck]:
        if self._meta is None or refresh:
            self._meta = await self.model.metadata.remote()
            self._checks = [
                FeatureCheck(f["name"], f["kind"] == "numeric") for f in self._meta["features"]
            ]
        return self._checks

    # -- /predict -------------------------------------------------------------------------
    @serve.batch(
        max_batch_size=1000,  # rows (batch_size_fn), not requests
        batch_wait_timeout_s=0.002,
        max_concurrent_batches=4,  # keep the Model busy while earlier batches finish
        batch_size_fn=lambda jobs: sum(j.n_rows for _, j in jobs),
    )
    async def _score(self, jobs: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        """One Model call and one Postprocessor call for a batch of validated requests."""
        names = jobs[0][1].columns.keys()
        columns = (
            jobs[0][1].columns
            if len(jobs) == 1
            else {n: np.concatenate([j.columns[n] for _, j in jobs]) for n in names}
        )
        proba, version = await self.model.predict.remote(columns)
        items = [
            {
                "prediction_id": pid,
                "n_rows": j.n_rows,
                "include_probabilities": j.include_probabilities,
            }
            for pid, j in jobs
        ]
        return await self.post.process.remote(items, columns, version, proba)

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
            declared = int(request.headers.get("content-length") or 0)
            if declared > self.max_body_bytes:
                raise RequestError(
                    413, f"request body is {declared} bytes; the limit is {self.max_body_bytes}"
                )
            body = parse_json(await request.body(), self.max_body_bytes)
            try:
                data = parse_predict(body, await self._schema(), self.max_instances)
                result = await self._score((prediction_id, data))
            except SchemaMismatchError:  # the model switched version; re-check and retry once
                data = parse_predict(body, await self._schema(refresh=True), self.max_instances)
                result = await self._score((prediction_id, data))
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
            body = parse_json(await request.body(), self.max_body_bytes)
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
