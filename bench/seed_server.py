"""Seed-style baseline server (the origin document's FastAPI model server, reduced to
/predict): one uvicorn process, a DataFrame per request, DataValidator on it, then
``predict`` and ``predict_proba`` as two separate passes.

    python bench/seed_server.py --model-path <store>/<name>/<version> --port 8100
"""

import argparse
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from sparc_ray.data.validation import DataValidator
from sparc_ray.training.estimator import SPARCClassificationModel


class PredictionRequest(BaseModel):
    instances: list[dict[str, Any]]
    include_probabilities: bool = False


def create_app(model_path: str, n_jobs: int | None = None) -> FastAPI:
    model = SPARCClassificationModel({}).load_model(model_path)
    if n_jobs:  # default: the artifact's own setting, as the seed server would run it
        model.set_n_jobs(n_jobs)
    validator = DataValidator(features=model.schema)
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: PredictionRequest) -> dict[str, Any]:  # as in the seed
        start = time.time()
        df = pd.DataFrame(request.instances)
        result = validator.validate_dataframe(df)
        if not result["is_valid"]:
            raise HTTPException(status_code=400, detail=f"Invalid input data: {result['errors']}")
        predictions = model.predict(df).tolist()
        probabilities = model.predict_proba(df).tolist() if request.include_probabilities else None
        return {
            "predictions": predictions,
            "probabilities": probabilities,
            "model_version": "seed",
            "prediction_id": str(uuid.uuid4()),
            "timestamp": datetime.now(UTC).isoformat(),
            "processing_time_ms": (time.time() - start) * 1000,
        }

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--n-jobs", type=int, help="inference threads (default: as trained)")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.model_path, args.n_jobs),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )
