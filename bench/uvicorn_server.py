"""Baseline a competent user would write instead of our Serve app: FastAPI under
``uvicorn --workers 2``, the same signature-verified registry artifact, one ``predict_proba``
pass per request (labels by argmax), one model thread per call. The engine is the version's
scikit-learn pipeline (one DataFrame per request), or with ``SPARC_BENCH_ENGINE=onnx`` its
signed ``model.onnx`` under onnxruntime (one array per feature; all-numeric models): the
one-box limit for serving that artifact, with no graph, batching or routing around it.

    SPARC_BENCH_STORE=<store> SPARC_BENCH_MODEL=<name> SPARC_BENCH_PUBLIC_KEY=<pem> \\
    [SPARC_BENCH_VERSION=production] [SPARC_BENCH_ENGINE=sklearn|onnx] \\
    uvicorn --factory uvicorn_server:create_app --app-dir bench --workers 2 --port 8200

Accepts our request body ``{"instances": [{feature: value}], "include_probabilities": bool}``
and answers with our response fields.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
from baselines import signed_pipeline
from fastapi import FastAPI, Response
from pydantic import BaseModel
from threadpoolctl import threadpool_limits

from sparc_ray.inference.loader import RegistryLoader
from sparc_ray.registry.layout import ALIAS
from sparc_ray.registry.signing import public_key_bytes
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training.estimator import SPARCClassificationModel


class PredictionRequest(BaseModel):
    instances: list[dict[str, float | None]]
    include_probabilities: bool = False


def create_app() -> FastAPI:
    threadpool_limits(1)  # one core per worker process: no BLAS / OpenMP thread pools
    registry = ModelRegistry(os.environ["SPARC_BENCH_STORE"])
    name = os.environ["SPARC_BENCH_MODEL"]
    version = registry.resolve(name, os.environ.get("SPARC_BENCH_VERSION", ALIAS))
    public_key = public_key_bytes(os.environ["SPARC_BENCH_PUBLIC_KEY"])
    model, _ = signed_pipeline(registry, name, version, public_key)
    model.set_n_jobs(1)
    features = model.feature_names
    loader = RegistryLoader(str(registry.root_path), name, public_key)
    score = _engine(os.environ.get("SPARC_BENCH_ENGINE", "sklearn"), loader, version, model)
    wanted = set(features)
    classes = np.asarray(model.classes, dtype=object)
    app = FastAPI()

    def json_response(body: dict, status: int = 200) -> Response:
        return Response(
            orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
            status_code=status,
            media_type="application/json",
        )

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model_name": name, "model_version": version}

    # A plain `def`, as FastAPI recommends for blocking work: it runs in the thread pool, so
    # the event loop keeps accepting and parsing while a prediction runs. (An `async def`
    # blocks the loop: connections wait unaccepted, p99 and req/s got worse under load.)
    @app.post("/predict")
    def predict(request: PredictionRequest) -> Response:
        start = time.perf_counter()
        if not request.instances or any(not wanted <= row.keys() for row in request.instances):
            missing = {f for row in request.instances for f in features if f not in row}
            return json_response({"error": "missing features", "details": sorted(missing)}, 422)
        proba = score(request.instances)
        return json_response(
            {
                "predictions": classes[proba.argmax(axis=1)].tolist(),
                "probabilities": proba if request.include_probabilities else None,
                "classes": model.classes,
                "model_name": name,
                "model_version": version,
                "prediction_id": str(uuid.uuid4()),
                "timestamp": datetime.now(UTC).isoformat(),
                "processing_time_ms": (time.perf_counter() - start) * 1000,
            }
        )

    return app


def _engine(
    engine: str, loader: RegistryLoader, version: str, model: SPARCClassificationModel
) -> Callable[[list[dict[str, float | None]]], np.ndarray]:
    """rows -> probabilities with the chosen engine: the pipeline, or the version's ONNX
    scorer as the Serve app loads it (``RegistryLoader``: signature, then digests)."""
    features = model.feature_names
    if engine == "sklearn":
        return lambda rows: model.predict_proba(pd.DataFrame.from_records(rows, columns=features))
    loaded = loader.load(version) if engine == "onnx" else None
    if loaded is None or loaded.engine != "onnx":
        raise SystemExit(f"engine {engine!r}: choose sklearn or onnx (with a parity-checked ONNX)")
    if any(s.kind != "numeric" for s in model.schema):
        raise SystemExit("the ONNX baseline takes all-numeric models")
    scorer = loaded.scorer

    def score(rows: list[dict[str, float | None]]) -> np.ndarray:
        return scorer.predict_proba(
            {f: np.array([r[f] for r in rows], dtype=float) for f in features}
        )

    return score
