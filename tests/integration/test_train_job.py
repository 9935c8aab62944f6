"""The real training job (`python jobs/train.py`) end to end, each run with its own local Ray."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sparc_ray.registry import signing
from sparc_ray.registry.store import ModelRegistry
from tests.conftest import DATA, ROOT
from tests.integration.models import load_verified
from tests.waiting import wait_until

TINY_SPACE = {
    "random_forest": {"n_estimators": [20, 40], "max_depth": [None, 6]},
    "logistic_regression": {"C": [0.1, 1.0]},
    "hist_gradient_boosting": {"max_iter": [30]},
}


def write_config(tmp_path: Path, **overrides) -> Path:
    cfg = {
        "name": "loans",
        "data": {"path": str(DATA / "loans.csv"), "target": "decision", "test_size": 0.25},
        "cv": {"n_folds": 3, "scoring": "accuracy"},
        "search": {
            "sampler": "grid",
            "scheduler": "asha",
            "space": TINY_SPACE,
            "storage_path": str(tmp_path / "ray_results"),
        },
        "registry": {"store": str(tmp_path / "store")},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_job(
    *args: str, cwd: Path, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs/train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})},
    )


def test_bad_data_exits_nonzero_and_writes_nothing(tmp_path):
    bad = pd.read_csv(DATA / "loans.csv")
    bad.loc[3, "decision"] = None
    bad["income"] = bad["income"].astype(float)
    bad.loc[5, "income"] = np.inf
    bad.to_csv(tmp_path / "bad.csv", index=False)
    cfg = write_config(tmp_path)
    r = run_job("--config", str(cfg), "--data", str(tmp_path / "bad.csv"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "target column 'decision' has 1 missing values" in r.stderr
    assert "column 'income' has 1 infinite values" in r.stderr
    r = run_job("--config", str(cfg), "--data", str(tmp_path / "absent.csv"), cwd=tmp_path)
    assert r.returncode == 2 and "data file not found" in r.stderr
    assert not (tmp_path / "store").exists() and not (tmp_path / "ray_results").exists()


@pytest.mark.cluster
def test_train_job_publishes_signs_promotes_and_tracks(tmp_path, loans):
    """Also: every trial and the published version in MLflow, and the DVC version of the
    data file in the metadata."""
    private, public = signing.generate_key_pair(tmp_path / "keys/k")
    pem = {signing.KEY_PEM_ENV: private.read_text()}  # the key as a Secret-backed env var
    shutil.copy(DATA / "loans.csv", tmp_path / "loans.csv")
    (tmp_path / "loans.csv.dvc").write_text(  # as `dvc add loans.csv` writes it
        "outs:\n- md5: 3f1b6c2a9e0d4f5a8b7c6d5e4f3a2b1c\n  size: 21000\n  hash: md5\n"
        "  path: loans.csv\n"
    )
    args = ["--data", str(tmp_path / "loans.csv"), "--mlflow", str(tmp_path / "mlruns")]
    r = run_job("--config", str(write_config(tmp_path)), *args, cwd=tmp_path, env=pem)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "promoted      yes (production)" in r.stdout
    key_id = signing.key_id(signing.public_key_bytes(str(public)))
    assert f"signed        yes (key {key_id})" in r.stdout
    assert "Trial name" in r.stdout  # Tune's progress table

    reg = ModelRegistry(tmp_path / "store")
    (version,) = reg.versions("loans")
    assert reg.alias("loans") == version
    meta = reg.metadata("loans", version).to_dict()  # the file's JSON object
    vdir = reg.root_path / "loans" / version
    assert hashlib.sha256((vdir / "model.joblib").read_bytes()).hexdigest() == meta["sha256"]
    assert reg.verify("loans", version, signing.public_key_bytes(str(public))).to_dict() == meta
    assert json.loads((vdir / "metadata.json").read_text()) == meta
    for key in (
        "schema_version",
        "name",
        "version",
        "model_type",
        "params",
        "created_at",
        "features",
        "target",
        "classes",
        "metrics",
        "gates",
        "sha256",
        "training_data",
        "library_versions",
        "reference",
    ):
        assert key in meta, key
    assert meta["classes"] == ["approved", "rejected", "review"]
    assert {f["name"]: f["kind"] for f in meta["features"]}["employment"] == "categorical"
    assert meta["metrics"]["cv"]["n_folds"] == 3 and 0.7 < meta["metrics"]["cv"]["mean"] <= 1
    assert meta["gates"]["passed"] and meta["training_data"]["rows"] == 600
    assert meta["search"]["trials"] == 7
    assert set(meta["reference"]["features"]) == set(loans.columns) - {"decision"}
    assert abs(sum(meta["reference"]["predictions"]["probs"]) - 1) < 1e-9
    report = json.loads((vdir / "report/metrics.json").read_text())
    assert report["holdout"] == meta["metrics"]["holdout"] and len(report["trials"]) == 7
    for png in ("confusion_matrix", "roc_pr_curves", "cv_scores", "feature_importance"):
        assert (vdir / f"report/{png}.png").read_bytes()[:4] == b"\x89PNG"

    model, _ = load_verified(reg, "loans", version, signing.public_key_bytes(str(public)))
    X = loans.drop(columns="decision")
    accuracy = float(np.mean(model.predict(X) == loans["decision"].to_numpy()))
    assert accuracy > 0.8

    dvc = meta["training_data"]["data_version"]
    assert dvc == {
        "kind": "dvc",
        "md5": "3f1b6c2a9e0d4f5a8b7c6d5e4f3a2b1c",
        "file": "loans.csv.dvc",
    }
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["loans"], output_format="pandas")
    trials = runs[runs["tags.sparc.run"] == "trial"]
    assert len(trials) == 7  # one run per trial, read back with MLflow's own client
    assert set(trials["tags.stopped_early"]) <= {"true", "false"}
    folds = trials["tags.folds_run"].astype(int)
    assert folds.max() == 3 and ((folds < 3) == (trials["tags.stopped_early"] == "true")).all()
    client = mlflow.MlflowClient()
    full = trials[folds == 3].iloc[0]
    history = client.get_metric_history(full["run_id"], "fold_score")
    assert len(history) == 3  # each fold's score, step by step
    (published,) = runs[runs["tags.sparc.run"] == "published"].itertuples()
    run = client.get_run(published.run_id)
    assert run.data.tags["sparc.registry.version"] == version
    assert run.data.tags["sparc.model.sha256"] == meta["sha256"]
    assert run.data.tags["sparc.data.version"]
    holdout = meta["metrics"]["holdout"]["accuracy"]
    assert run.data.metrics["holdout_accuracy"] == pytest.approx(holdout)
    artifacts = {a.path for a in client.list_artifacts(published.run_id, "report")}
    assert "report/confusion_matrix.png" in artifacts


@pytest.mark.cluster
def test_failed_gates_store_but_do_not_promote(tmp_path):
    cfg = write_config(
        tmp_path,
        gates={"accuracy": 0.999},
        search={"space": {"logistic_regression": {"C": [0.01]}}},
    )
    r = run_job("--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "gates failed: accuracy" in r.stderr
    reg = ModelRegistry(tmp_path / "store")
    (version,) = reg.versions("loans")
    assert reg.alias("loans") is None
    assert reg.metadata("loans", version).gates.failed == ["accuracy"]


def _results(exp: Path) -> dict[str, int]:
    """Reported results per trial directory (one line per fold)."""
    return {
        p.parent.name: len(p.read_text().splitlines())
        for p in exp.glob("*/result.json")
        if p.read_text().strip()
    }


@pytest.mark.cluster
def test_interrupted_search_resumes_without_rerunning_finished_trials(tmp_path):
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(4000, 12)), columns=[f"x{i}" for i in range(12)])
    X["y"] = np.where(X["x0"] + 0.5 * X["x1"] + rng.normal(0, 0.5, 4000) > 0, "a", "b")
    X.to_csv(tmp_path / "big.csv", index=False)
    cfg = write_config(
        tmp_path,
        name="big",
        data={"path": str(tmp_path / "big.csv"), "target": "y"},
        search={
            "scheduler": "fifo",
            "space": {"random_forest": {"n_estimators": list(range(300, 310))}},
        },
    )
    # The job seals its experiment with the signing key and resumes only a sealed one.
    private, _ = signing.generate_key_pair(tmp_path / "keys/k")
    key = {signing.KEY_FILE_ENV: str(private)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs/train.py"), "--config", str(cfg)],
        cwd=tmp_path,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **key},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def two_trials_finished() -> Path | None:
        for exp in (tmp_path / "ray_results").glob("big-*"):
            if sum(n == 3 for n in _results(exp).values()) >= 2:
                return exp
        return None

    try:
        exp = wait_until(
            two_trials_finished, 240, interval=0.2, message="two trials to finish their 3 folds"
        )
    finally:  # interrupted as a user would, also when the wait failed
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert "search interrupted; nothing published" in out
    assert not (tmp_path / "store").exists()
    before = _results(exp)
    finished = {t for t, n in before.items() if n == 3}
    assert 2 <= len(finished) < 10

    r = run_job("--config", str(cfg), "--resume", cwd=tmp_path, env=key)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert str(exp) in r.stdout
    after = _results(exp)
    assert len(after) == 10 and all(n == 3 for n in after.values())
    for trial in finished:  # no new results: finished trials were not run again
        assert after[trial] == 3
    assert len(ModelRegistry(tmp_path / "store").versions("big")) == 1
