"""The training job: load → validate → Tune search → refit best → gates → registry."""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from sparc_ray import __version__
from sparc_ray.data.loading import (
    DataError,
    data_version,
    fingerprint,
    is_numeric,
    load_dataset,
    normalize_features,
)
from sparc_ray.data.validation import DataValidator
from sparc_ray.inference.labels import labels_from_proba
from sparc_ray.monitoring.drift import build_reference
from sparc_ray.registry import signing, storage
from sparc_ray.registry.metadata import SCHEMA_VERSION
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training import experiment_seal, tracking
from sparc_ray.training.config import (
    CAPTURE_PREFIX,
    ConfigError,
    TrainConfig,
)
from sparc_ray.training.evaluation import apply_gates, metrics_from_proba
from sparc_ray.training.explain_check import check_explanations
from sparc_ray.training.job_args import add_train_arguments, load_config
from sparc_ray.training.onnx_export import export_onnx
from sparc_ray.training.report import build_report
from sparc_ray.training.result import TrainResult, release_new_version, summary_text
from sparc_ray.training.search_result import SearchIncomplete, SearchInterrupted, run_search

EXIT_OK, EXIT_BAD_INPUT, EXIT_GATES_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130
EXIT_INCOMPLETE = 4  # some configurations could not be evaluated; nothing published


@dataclass(frozen=True)
class Prepared:
    """The validated training data, read before Ray starts."""

    X: pd.DataFrame
    y: pd.Series
    target: str
    data_version: dict[str, str] | None  # DVC md5 or S3 object version, when there is one


def prepare_data(cfg: TrainConfig, public_key: bytes | None = None) -> Prepared:
    """Load and validate the dataset; raises DataError with every problem found. Captured
    rows take production's target and features (its metadata verified with ``public_key``)."""
    default_target: str | None
    if cfg.data.path.startswith(CAPTURE_PREFIX):
        from sparc_ray.data.captured import load_capture_dataset, parse_since

        try:
            since = parse_since(cfg.data.since)
        except ValueError as exc:
            raise DataError(str(exc)) from exc
        location = cfg.data.path[len(CAPTURE_PREFIX) :]
        df, default_target = load_capture_dataset(
            location, since, cfg.data.with_training_data, public_key=public_key
        )
    else:
        df, default_target = load_dataset(cfg.data.path)
    target = cfg.data.target or default_target
    if target is None:  # the config requires one for a file dataset
        raise DataError(f"{cfg.data.path}: which column is the label? pass --target")
    validator = DataValidator(target=target, n_folds=cfg.cv.n_folds, test_size=cfg.data.test_size)
    result = validator.validate_dataframe(df)
    if not result["is_valid"]:
        raise DataError("invalid training data:\n  - " + "\n  - ".join(result["errors"]))
    y = df[target]
    if not is_numeric(y):  # string / categorical labels as plain Python strings
        y = y.astype(str).astype(object)
    X = normalize_features(df.drop(columns=[target]))
    return Prepared(X, y, target, data_version(cfg.data.path))


def _library_versions() -> dict[str, str]:
    import ray
    import sklearn

    return {
        "python": platform.python_version(),
        "sparc_ray": __version__,
        "ray": ray.__version__,
        "scikit-learn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
    }


def _seal(location: str, key: signing.Ed25519PrivateKey | None) -> None:
    if key is None:
        print(f"[sparc-ray] experiment {location} not sealed (no signing key): not resumable")
        return
    try:
        experiment_seal.seal(location, key)
    except OSError as exc:  # e.g. Tune never created it: nothing to resume either
        print(f"[sparc-ray] experiment {location} not sealed ({exc}): not resumable")


def run_training(
    cfg: TrainConfig,
    prepared: Prepared | None = None,
    signing_key: signing.Ed25519PrivateKey | None = None,
    tracking_uri: str | None = None,
    resume_path: str | None = None,
) -> TrainResult:
    """Run the whole job against the connected Ray cluster; returns what was published
    (signed with ``signing_key`` when one is given; trials and the version logged to the
    MLflow store at ``tracking_uri`` when one is given). ``resume_path``: an experiment to
    continue, already verified (``experiment_seal.resumable``); the search is sealed with
    ``signing_key`` when it stops."""
    from sparc_ray.training import tuning

    prepared = prepared or prepare_data(cfg)
    X, y, target = prepared.X, prepared.y, prepared.target
    seed = cfg.data.seed
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=cfg.data.test_size, stratify=y, random_state=seed
    )
    X_train, y_train = X_train.reset_index(drop=True), y_train.reset_index(drop=True)
    n_folds = cfg.cv.n_folds

    experiment = f"{cfg.name}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    location = resume_path or storage.join(storage.absolute(cfg.search.storage_path), experiment)
    callbacks = [tracking.trial_callback(tracking_uri, cfg.name, n_folds)] if tracking_uri else []
    tuner = tuning.build_tuner(
        X_train, y_train, cfg.search, cfg.cv, experiment, resume_path, seed, callbacks=callbacks
    )
    try:
        search = run_search(tuner, n_folds)
    finally:  # finished or interrupted: sealed, so that only this key can resume it
        _seal(location, signing_key)
    if search.failed and not cfg.search.allow_incomplete:
        raise SearchIncomplete(search.experiment_path, search.failed)
    best = search.best

    model = tuning.refit(X_train, y_train, best, cfg.cv, cfg.search.fold_retries)
    proba = model.predict_proba(X_test)
    y_test_arr = np.asarray(y_test.tolist())
    holdout = metrics_from_proba(y_test_arr, proba, model.classes)
    gates = apply_gates(holdout, cfg.gates)
    predicted = labels_from_proba(proba, model.classes)

    # metadata.json (sparc_ray.registry.metadata.ModelMetadata); the registry adds the rest
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "model_type": best["model_type"],
        "params": best["params"],
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "target": target,
        "classes": model.classes,
        "features": [f.to_dict() for f in model.schema],
        "feature_importance": model.get_feature_importance(),
        "metrics": {
            "cv": {
                "mean": best["cv_mean"],
                "std": best["cv_std"],
                "n_folds": n_folds,
                "scoring": cfg.cv.scoring,
            },
            "holdout": holdout,
        },
        "gates": gates,
        "training_data": {
            "source": cfg.data.path,
            "data_version": prepared.data_version,
            "rows": len(X),
            "train_rows": len(X_train),
            "holdout_rows": len(X_test),
            "fingerprint": fingerprint(pd.concat([X, y.rename(target)], axis=1)),
        },
        "search": {
            "experiment_path": search.experiment_path,
            "trials": len(search.trials),
            "stopped_early": sum(t["stopped_early"] for t in search.trials),
            "failed": search.failed,  # configurations never evaluated (allow_incomplete)
            "scheduler": cfg.search.scheduler,
            "sampler": cfg.search.sampler,
        },
        "reference": build_reference(X_train, model.schema, predicted, model.classes),
        "library_versions": _library_versions(),
        "input_limits": model.input_limits(),
    }
    summary = {k: metadata[k] for k in ("model_type", "params", "metrics", "gates")}
    summary.update(holdout=holdout, trials=search.trials)
    files = build_report(
        summary,
        y_test_arr,
        proba,
        model.classes,
        model.get_feature_importance(),
        search.trials,
        n_folds,
    )
    # Compiled inference: ONNX export with a parity check on the holdout (sklearn fallback).
    onnx_bytes, metadata["onnx"] = export_onnx(model, X_test)
    if onnx_bytes is not None:
        files[metadata["onnx"]["file"]] = onnx_bytes
    metadata["explanations"] = check_explanations(model, X_test, X_train).to_metadata()
    registry = ModelRegistry(cfg.registry.store)
    version = registry.publish(cfg.name, model, metadata, files, signing_key=signing_key)
    promoted, release = release_new_version(
        registry,
        cfg.name,
        version,
        eligible=bool(gates["passed"]) and cfg.registry.promote,
        mode=cfg.registry.release,
        weight=cfg.registry.release_weight,
        policy=cfg.registry.release_policy,
        by="train",
    )
    if tracking_uri:
        published = registry.metadata(cfg.name, version).to_dict()
        tracking.log_version(tracking_uri, cfg.name, published, files)
    signer = signing.key_id(signing.raw_public(signing_key)) if signing_key else None
    experiment_path, failed = search.experiment_path, search.failed
    return TrainResult(
        version, promoted, release, gates, best, holdout, experiment_path, signer, failed
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobs/train.py", description="Tune, evaluate and publish a classifier."
    )
    add_train_arguments(parser)
    return run_job(parser.parse_args(argv))


def run_job(args: argparse.Namespace) -> int:
    """Validate first (no Ray, no writes on bad input), then train; returns the exit code."""
    try:
        cfg = load_config(args)
        signing_key = signing.load_private_key(getattr(args, "signing_key", None))
        public_key = signing.raw_public(signing_key) if signing_key else None
        # Fail fast, before starting Ray or writing anything.
        prepared = prepare_data(cfg, public_key)
        tracking_uri = cfg.mlflow and tracking.ensure_experiment(cfg.mlflow, cfg.name)
        # Verified before anything of it is unpickled (experiment_seal).
        resume = (
            experiment_seal.resumable(cfg.search.storage_path, cfg.name, signing_key)
            if cfg.resume
            else None
        )
    except (
        ConfigError,
        DataError,
        signing.SigningKeyError,
        tracking.TrackingError,
        experiment_seal.SealError,
    ) as exc:
        print(f"[sparc-ray] error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    import ray

    ray.init(ignore_reinit_error=True)
    try:
        result = run_training(cfg, prepared, signing_key, tracking_uri or None, resume)
    except SearchInterrupted as exc:
        print(
            f"[sparc-ray] search interrupted; nothing published. Continue it with the same "
            f"command plus --resume (experiment {exc}).",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except SearchIncomplete as exc:
        print(
            f"[sparc-ray] search incomplete; nothing published. {exc}. Evaluate them with the "
            f"same command plus --resume (experiment {exc.experiment_path}), or publish "
            "without them with --allow-incomplete.",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    finally:
        ray.shutdown()
    print(summary_text(cfg, result), flush=True)
    if not result.gates["passed"]:
        print(
            f"[sparc-ray] gates failed: {', '.join(result.gates['failed'])}; version "
            f"{result.version} stored, not promoted",
            file=sys.stderr,
        )
        return EXIT_GATES_FAILED
    return EXIT_OK
