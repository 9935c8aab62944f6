"""Canary and shadow releases on a real `ray start --head` cluster: `serve deploy`, real HTTP,
the real training job and registry files, `sparc-ray models ...` for the release commands.
Tests run in file order and share the deployment."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from sparc_ray.data.loading import load_dataset
from sparc_ray.registry.releases import current_release, release_log
from sparc_ray.registry.store import ModelRegistry
from tests.integration.cluster import ADMIN_TOKEN, FEEDBACK_TOKEN, running_cluster
from tests.integration.test_serving import job_config

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FEEDBACK_AUTH = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
NAME = "breast_cancer"
HOLD = {"auto_promote": False, "auto_rollback": False}  # a release that only measures


@pytest.fixture(scope="module")
def rel(tmp_path_factory):
    work = tmp_path_factory.mktemp("releases")
    df, target = load_dataset("builtin:breast_cancer")
    shuffled = df.assign(**{target: df[target].sample(frac=1, random_state=0).to_numpy()})
    shuffled.to_csv(work / "shuffled.csv", index=False)
    (work / "hold.yaml").write_text(yaml.safe_dump(HOLD))
    with running_cluster(work) as cluster:
        cluster.train("--config", str(job_config(work / "lr.yaml", "logistic_regression", {})))
        rf = job_config(work / "rf.yaml", "random_forest", {"n_estimators": [40]})
        cluster.train("--config", str(rf), "--no-promote")
        bad = cluster.train(
            "--config",
            str(rf),
            "--data",
            str(work / "shuffled.csv"),
            "--target",
            target,
            "--name",
            NAME,
            "--no-promote",
            check=False,
        )
        assert bad.returncode in (0, 3), bad.stderr[-2000:]  # 3: its gates failed, as expected
        reg = ModelRegistry(work / "model_store")
        v1, good, shuffled_version = reg.versions(NAME)
        cluster.deploy(cluster.serve_config(Model={"user_config": {"poll_interval_s": 1}}))
        X = df.drop(columns=target)
        yield {
            "cluster": cluster,
            "url": cluster.url,
            "reg": reg,
            "work": work,
            "v1": v1,
            "good": good,
            "bad": shuffled_version,
            "rows": X.to_dict("records"),
            "truth": df[target].astype(str).tolist(),
        }


def cli(rel, *args: str) -> str:
    store = ["--store", str(rel["work"] / "model_store"), "--name", NAME]
    return rel["cluster"].run(sys.executable, "-m", "sparc_ray.cli", "models", *args, *store).stdout


def traffic(rel, n: int, keys: list[str] | None = None, workers: int = 8) -> list[dict]:
    """``n`` single-row requests from ``workers`` threads; each result keeps its row index."""

    def one(i: int) -> dict:
        row = i % len(rel["rows"])
        headers = {"x-route-key": keys[i % len(keys)]} if keys else {}
        r = httpx.post(
            f"{rel['url']}/predict",
            json={"instances": [rel["rows"][row]]},
            headers=headers,
            timeout=60,
        )
        body = r.json()
        return {"status": r.status_code, "row": row, "key": headers.get("x-route-key"), **body}

    with cf.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(n)))


def label(rel, answers: list[dict]) -> dict:
    items = [
        {"prediction_id": a["prediction_id"], "row": 0, "label": rel["truth"][a["row"]]}
        for a in answers
    ]
    r = httpx.post(f"{rel['url']}/feedback", json=items, headers=FEEDBACK_AUTH, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def wait_release(rel, release_id: str | None, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        health = httpx.get(f"{rel['url']}/health", timeout=30).json()
        if (health["release"] or {}).get("id") == release_id:
            return health
        time.sleep(0.5)
    raise AssertionError(f"release {release_id} not seen: {health}")


def test_canary_weight_is_kept_and_keys_are_sticky(rel):
    cli(rel, "canary", rel["good"], "--weight", "20", "--policy", str(rel["work"] / "hold.yaml"))
    release = current_release(rel["reg"], NAME)
    wait_release(rel, release.id)
    answers = traffic(rel, 2000)
    assert all(a["status"] == 200 for a in answers)
    share = Counter(a["model_version"] for a in answers)
    assert set(share) == {rel["v1"], rel["good"]}
    assert 0.17 <= share[rel["good"]] / 2000 <= 0.23, share
    keys = [f"customer-{i}" for i in range(60)]
    keyed = traffic(rel, 240, keys=keys)
    by_key = {k: {a["model_version"] for a in keyed if a["key"] == k} for k in keys}
    assert all(len(v) == 1 for v in by_key.values()), by_key
    assert {v for s in by_key.values() for v in s} == {rel["v1"], rel["good"]}


def _pids(rel, pattern: str) -> list[int]:
    return rel["cluster"].actor_pids(pattern)


def test_sigkill_of_every_model_replica_and_the_controller_loses_no_release_state(rel):
    before = current_release(rel["reg"], NAME)
    victims = _pids(rel, r"ServeController|ServeReplica:sparc:Model")
    assert len(victims) >= 2, victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 120
    while time.time() < deadline:
        alive = _pids(rel, r"ServeReplica:sparc:Model")
        recovered = alive and not set(alive) & set(victims) and _pids(rel, "ServeController")
        if recovered and httpx.get(f"{rel['url']}/health", timeout=30).status_code == 200:
            break
        time.sleep(1)
    health = wait_release(rel, before.id)
    assert health["release"]["weight"] == 20 and current_release(rel["reg"], NAME) == before
    answers = traffic(rel, 1000)
    assert all(a["status"] == 200 for a in answers)
    share = Counter(a["model_version"] for a in answers)[rel["good"]] / 1000
    assert 0.16 <= share <= 0.24, share
    cli(rel, "abort")
    wait_release(rel, None)


def test_a_bad_canary_is_rolled_back_within_500_labels_without_a_failed_request(rel):
    cli(rel, "canary", rel["bad"], "--weight", "20", "--force")  # the default policy
    release = current_release(rel["reg"], NAME)
    wait_release(rel, release.id)
    labelled, statuses = 0, Counter()
    while current_release(rel["reg"], NAME) is not None and labelled < 1000:
        answers = traffic(rel, 50)
        statuses.update(a["status"] for a in answers)
        label(rel, answers)
        labelled += len(answers)
        time.sleep(1.2)  # the policy runs every second
    assert current_release(rel["reg"], NAME) is None, "still in progress"
    assert labelled <= 500, labelled
    assert statuses == {200: labelled}, statuses
    decision = release_log(rel["reg"], NAME)[-1]
    assert decision["event"] == "rolled_back" and "accuracy" in decision["reason"], decision
    assert rel["reg"].alias(NAME) == rel["v1"]
    health = wait_release(rel, None)
    assert health["last_release_decision"]["event"] == "rolled_back"
    assert "rolled_back" in cli(rel, "status")


def test_shadow_answers_clients_with_production_and_records_agreement(rel):
    cli(rel, "shadow", rel["bad"], "--force", "--policy", str(rel["work"] / "hold.yaml"))
    release = current_release(rel["reg"], NAME)
    wait_release(rel, release.id)
    answers = traffic(rel, 600)
    assert {(a["status"], a["model_version"]) for a in answers} == {(200, rel["v1"])}
    label(rel, answers)
    deadline = time.time() + 30
    while time.time() < deadline:
        evidence = httpx.get(f"{rel['url']}/health").json()["release_evidence"]
        if evidence["shadow"]["rows"] >= 500:
            break
        time.sleep(1)
    shadow = evidence["shadow"]
    assert shadow["rows"] >= 500 and 0.2 < shadow["agreement"] < 0.95, evidence
    cand = evidence["versions"][rel["bad"]]
    prod = evidence["versions"][rel["v1"]]
    assert cand["labelled_rows"] > 100 and cand["accuracy"] < prod["accuracy"] - 0.1, evidence
    metrics = httpx.get(f"http://127.0.0.1:{rel['cluster'].metrics}/metrics", timeout=30).text
    for name in ("ray_ml_release_weight", "ray_ml_shadow_agreement"):
        assert re.search(rf'^{name}{{[^}}]*model_version="{rel["bad"]}"', metrics, re.M), name
    cli(rel, "abort")
    wait_release(rel, None)


def test_a_good_candidate_from_the_training_job_is_promoted_automatically(rel):
    rf = rel["work"] / "rf.yaml"
    rel["cluster"].train("--config", str(rf), "--release", "canary", "--release-weight", "30")
    release = current_release(rel["reg"], NAME)
    assert release.mode == "canary" and release.weight == 30 and release.started_by == "train"
    wait_release(rel, release.id)
    statuses = Counter()
    deadline = time.time() + 240
    while current_release(rel["reg"], NAME) is not None and time.time() < deadline:
        answers = traffic(rel, 200)
        statuses.update(a["status"] for a in answers)
        label(rel, answers)
        time.sleep(1.2)
    assert set(statuses) == {200}, statuses
    decision = release_log(rel["reg"], NAME)[-1]
    assert decision["event"] == "promoted", decision
    assert rel["reg"].alias(NAME) == release.version
    assert rel["reg"].history(NAME)[-2:] == [rel["v1"], release.version]
    health = wait_release(rel, None)
    assert health["production"] == release.version
    deadline = time.time() + 30
    while time.time() < deadline:
        metrics = httpx.get(f"http://127.0.0.1:{rel['cluster'].metrics}/metrics").text
        if 'decision="rolled_back"' in metrics and 'decision="promoted"' in metrics:
            break
        time.sleep(2)
    assert re.search(r'^ray_ml_release_decisions_total{[^}]*decision="promoted"', metrics, re.M)


def test_status_shows_the_history(rel):
    status = json.loads(cli(rel, "status"))
    events = [e["event"] for e in status["recent_releases"]]
    assert events[-2:] == ["started", "promoted"] and "rolled_back" in events
    assert status["release"] is None and Path(rel["work"] / "model_store").is_dir()
