"""`--resume` as a writer of the Tune storage would attack it: nothing of an experiment is
unpickled unless the job's own seal over every file of it checks out (issue 18, item 1)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparc_ray.registry import signing
from sparc_ray.training import experiment_seal
from sparc_ray.training.experiment_seal import SealError
from tests.conftest import DATA, ROOT

NAME = "loans"
REAL = f"{NAME}-20261201-100000"  # as the job names an experiment
PLANTED = f"{NAME}-99991231-235959"  # newer than any the job will make


class _Payload:
    """Unpickling this writes ``marker``: proof that code from the storage ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _experiment(root: Path, name: str, tuner_pkl: bytes) -> Path:
    """An experiment directory with the files Tuner.restore reads."""
    exp = root / name
    (exp / "trial_0").mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(tuner_pkl)
    (exp / "experiment_state-2026-12-01_10-00-00.json").write_text('{"trial_data": []}')
    (exp / "basic-variant-state-2026-12-01_10-00-00.json").write_text("{}")
    (exp / "trial_0" / "params.pkl").write_bytes(pickle.dumps({"candidate": "rf"}))
    (exp / "trial_0" / "result.json").write_text('{"cv_mean": 0.9}\n')
    return exp


@pytest.fixture
def key(tmp_path):
    private, _ = signing.generate_key_pair(tmp_path / "keys" / "train")
    return private


def _run_resume(tmp_path: Path, key_file: Path | None) -> subprocess.CompletedProcess:
    cfg = {
        "name": NAME,
        "data": {"path": str(DATA / "loans.csv"), "target": "decision", "test_size": 0.25},
        "cv": {"n_folds": 3},
        "search": {
            "space": {"logistic_regression": {"C": [1.0]}},
            "storage_path": str(tmp_path / "tune"),
        },
        "registry": {"store": str(tmp_path / "store")},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARC_SIGNING_KEY")}
    args = ["--config", str(tmp_path / "job.yaml"), "--resume"]
    if key_file is not None:
        args += ["--signing-key", str(key_file)]
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs/train.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_a_planted_experiment_is_never_unpickled_and_the_job_exits_2(tmp_path, key):
    marker = tmp_path / "marker"
    sealed = _experiment(tmp_path / "tune", REAL, pickle.dumps({"honest": True}))
    experiment_seal.seal(str(sealed), signing.load_private_key(str(key)))
    _experiment(tmp_path / "tune", PLANTED, pickle.dumps(_Payload(marker)))

    r = _run_resume(tmp_path, key)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert PLANTED in r.stderr and "not sealed" in r.stderr
    assert not marker.exists()
    assert not (tmp_path / "store").exists()

    r = _run_resume(tmp_path, None)  # no key: no seal can be checked, so no resume
    assert r.returncode == 2 and "--resume needs the signing key" in r.stderr
    assert not marker.exists()


def test_a_tampered_sealed_experiment_is_refused(tmp_path, key):
    marker = tmp_path / "marker"
    exp = _experiment(tmp_path / "tune", REAL, pickle.dumps({"honest": True}))
    experiment_seal.seal(str(exp), signing.load_private_key(str(key)))
    (exp / "tuner.pkl").write_bytes(pickle.dumps(_Payload(marker)))

    r = _run_resume(tmp_path, key)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "changed since it was sealed (tuner.pkl)" in r.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "attack",
    ["add_file", "remove_file", "trial_pickle", "reseal_other_key", "rename", "forge_mac"],
)
def test_every_change_to_a_sealed_experiment_is_refused(tmp_path, key, attack):
    private = signing.load_private_key(str(key))
    exp = _experiment(tmp_path / "tune", REAL, pickle.dumps({"honest": True}))
    experiment_seal.seal(str(exp), private)
    experiment_seal.verify(str(exp), private)  # intact: accepted
    seal_file = exp / experiment_seal.SEAL_FILE
    if attack == "add_file":
        (exp / "trial_0" / "error.pkl").write_bytes(pickle.dumps(ValueError("x")))
    elif attack == "remove_file":
        (exp / "basic-variant-state-2026-12-01_10-00-00.json").unlink()
    elif attack == "trial_pickle":
        (exp / "trial_0" / "params.pkl").write_bytes(pickle.dumps({"candidate": "evil"}))
    elif attack == "reseal_other_key":
        other, _ = signing.generate_key_pair(tmp_path / "keys" / "writer")
        experiment_seal.seal(str(exp), signing.load_private_key(str(other)))
    elif attack == "rename":  # a sealed experiment moved to a newer name
        exp = exp.rename(exp.parent / PLANTED)
    else:
        seal_file.write_text(seal_file.read_text().replace('"mac": "', '"mac": "0'))
    with pytest.raises(SealError):
        experiment_seal.verify(str(exp), private)


def test_an_intact_experiment_is_the_one_resumed(tmp_path, key, capsys):
    private = signing.load_private_key(str(key))
    older = _experiment(tmp_path / "tune", f"{NAME}-20261101-100000", b"x")
    newer = _experiment(tmp_path / "tune", REAL, pickle.dumps({"honest": True}))
    _experiment(tmp_path / "tune", f"{NAME}-v2-99991231-235959", b"another model's")
    for exp in (older, newer):
        experiment_seal.seal(str(exp), private)
    assert experiment_seal.resumable(str(tmp_path / "tune"), NAME, private) == str(newer)
    assert "seal verified" in capsys.readouterr().out
    assert experiment_seal.resumable(str(tmp_path / "none"), NAME, private) is None


# -- trial actors stay off the training head, which can read the signing key (item 9) -------
@pytest.mark.parametrize("workers_offer", [True, False])
def test_trials_request_a_resource_only_workers_offer(monkeypatch, capsys, workers_offer):
    import pandas as pd
    import ray

    from sparc_ray.training import tuning
    from sparc_ray.training.config import TrainConfig
    from sparc_ray.training.placement import TRIAL_NODE_RESOURCE

    cluster = {"CPU": 8.0, "memory": 2.0**33}  # the head: num-cpus 0, never the resource
    if workers_offer:
        cluster[TRIAL_NODE_RESOURCE] = 200.0  # two workers started with --resources
    made: dict = {}
    monkeypatch.setattr(ray, "put", lambda value: value)
    monkeypatch.setattr(ray, "cluster_resources", lambda: cluster)
    monkeypatch.setattr(tuning.tune, "Tuner", lambda trainable, **kw: made.update(t=trainable))
    cfg = TrainConfig.model_validate(
        {
            "name": NAME,
            "data": {"path": "builtin:iris"},
            "search": {"space": {"logistic_regression": {"C": [1.0]}}},
        }
    )
    tuning.build_tuner(pd.DataFrame({"a": [1]}), pd.Series([1]), cfg.search, cfg.cv, "x")
    (bundle,) = made["t"]._resources.bundles
    out = capsys.readouterr().out
    if workers_offer:
        assert bundle.get(TRIAL_NODE_RESOURCE) == 1 and not bundle.get("CPU")
        assert "warning" not in out
    else:  # one-node dev cluster: as before, and the log says so
        assert TRIAL_NODE_RESOURCE not in bundle
        assert f"no node advertises the {TRIAL_NODE_RESOURCE!r} resource" in out


@pytest.mark.cluster
def test_a_real_experiment_is_sealed_and_resumed(tmp_path, key):
    """Real Tune files (run under `flock /tmp/sparc-ray.lock`): the job seals what Tune
    wrote, the seal verifies, `--resume` continues it and seals it again."""
    cfg = {
        "name": NAME,
        "data": {"path": str(DATA / "loans.csv"), "target": "decision", "test_size": 0.25},
        "cv": {"n_folds": 2},
        "search": {
            "scheduler": "fifo",
            "space": {"logistic_regression": {"C": [0.1, 1.0]}},
            "storage_path": str(tmp_path / "tune"),
        },
        "registry": {"store": str(tmp_path / "store")},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
    argv = [sys.executable, str(ROOT / "jobs/train.py"), "--config", str(tmp_path / "job.yaml")]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", signing.KEY_FILE_ENV: str(key)}
    first = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    (exp,) = (tmp_path / "tune").iterdir()
    assert {"tuner.pkl", experiment_seal.SEAL_FILE} <= {p.name for p in exp.iterdir()}
    private = signing.load_private_key(str(key))
    experiment_seal.verify(str(exp), private)

    again = subprocess.run(
        [*argv, "--resume"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"experiment {exp}: seal verified" in again.stdout
    experiment_seal.verify(str(exp), private)  # resealed over what the resume wrote
