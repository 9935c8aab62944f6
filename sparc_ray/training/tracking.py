"""Experiment tracking in MLflow (``jobs/train.py --mlflow [URI]``; the optional extra
``pip install 'sparc-ray[mlflow]'``).

Every Tune trial is a run (Ray Tune's ``MLflowLoggerCallback``): its parameters, the running
CV mean and each fold's score as steps, and tags saying how many folds ran and whether the
scheduler stopped it early. The published version is one more run: holdout and CV metrics,
gates, the report's PNGs as artifacts, and the registry version, model sha256 and training
data fingerprint as tags. ``URI`` is any MLflow tracking URI; without one, or with a plain
directory, runs go to a SQLite store in ``mlruns/`` with the artifacts beside it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from sparc_ray.registry.layout import REPORT_DIR

DEFAULT_LOCATION = "mlruns"


class TrackingError(RuntimeError):
    """MLflow is missing or its store cannot be used: say how to fix it."""


def resolve(location: str) -> tuple[str, str | None]:
    """(tracking URI, artifact root or None): a URI is used as given; a directory holds a
    SQLite store (``mlflow.db``) and the artifacts (MLflow 3's file store is retired)."""
    if "://" in location or location.startswith("databricks"):
        return location, None
    root = Path(location).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root}/mlflow.db", str(root / "artifacts")


def ensure_experiment(location: str, name: str) -> str:
    """Check MLflow and the store now (before any search runs) and return the tracking URI,
    with the experiment ``name`` created if it is new."""
    try:
        import mlflow
    except ImportError:
        raise TrackingError("--mlflow needs MLflow: pip install 'sparc-ray[mlflow]'") from None
    uri, artifacts = resolve(location)
    try:
        client = mlflow.MlflowClient(uri)
        if client.get_experiment_by_name(name) is None:
            client.create_experiment(name, artifact_location=artifacts and f"{artifacts}/{name}")
    except Exception as exc:
        raise TrackingError(f"MLflow tracking store {uri} cannot be used: {exc}") from exc
    return uri


def trial_callback(uri: str, experiment: str, n_folds: int):
    """A Tune callback logging each trial as a run, tagged with the folds it ran."""
    import mlflow
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TrialRuns(MLflowLoggerCallback):
        def log_trial_end(self, trial, failed: bool = False) -> None:
            folds = int((trial.last_result or {}).get("folds", 0))
            run_id = self._trial_runs[trial]
            client = mlflow.MlflowClient(uri)
            client.set_tag(run_id, "folds_run", str(folds))
            client.set_tag(run_id, "stopped_early", str(folds < n_folds and not failed).lower())
            super().log_trial_end(trial, failed)

    return TrialRuns(tracking_uri=uri, experiment_name=experiment, tags={"sparc.run": "trial"})


def log_version(
    uri: str, experiment: str, metadata: dict[str, Any], files: dict[str, bytes]
) -> str:
    """One run for the published version; returns its id."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:  # ensure_experiment made it before training
        raise TrackingError(f"MLflow experiment {experiment!r} is gone from {uri}")
    holdout = metadata["metrics"]["holdout"]
    gates = metadata["gates"]
    data = metadata.get("training_data") or {}
    tags = {
        "sparc.run": "published",
        "sparc.registry.name": metadata["name"],
        "sparc.registry.version": metadata["version"],
        "sparc.model.sha256": metadata["sha256"],
        "sparc.gates.passed": str(bool(gates["passed"])).lower(),
        "sparc.onnx": (metadata.get("onnx") or {}).get("status", "none"),
        "sparc.data.source": str(data.get("source")),
        "sparc.data.fingerprint": str(data.get("fingerprint")),
    }
    if version := data.get("data_version"):  # e.g. dvc:<md5> or s3:<object version id>
        tags["sparc.data.version"] = (
            f"{version['kind']}:{version.get('md5') or version.get('version_id')}"
        )
    run = client.create_run(exp.experiment_id, run_name=metadata["version"], tags=tags)
    rid = run.info.run_id
    client.log_param(rid, "model_type", metadata["model_type"])
    for key, value in (metadata.get("params") or {}).items():
        client.log_param(rid, key, value)
    cv = metadata["metrics"]["cv"]
    for key, value in {"cv_mean": cv["mean"], "cv_std": cv["std"], **holdout}.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            client.log_metric(rid, key if key.startswith("cv_") else f"holdout_{key}", value)
    for gate, result in gates.get("results", {}).items():
        client.log_metric(rid, f"gate_{gate}_passed", float(result["passed"]))
    with tempfile.TemporaryDirectory() as tmp:
        for rel, content in files.items():
            if rel.startswith(f"{REPORT_DIR}/"):
                path = Path(tmp, rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
        if os.path.isdir(Path(tmp, REPORT_DIR)):
            client.log_artifacts(rid, str(Path(tmp, REPORT_DIR)), REPORT_DIR)
    client.set_terminated(rid)
    return rid
