"""Canary and shadow releases on a real `ray start --head` cluster: `serve deploy`, real HTTP,
the real training job and registry files, `sparc-ray models ...` for the release commands.
Tests run in file order and share the deployment; each ends the release it started (an
autouse fixture aborts what a failed test left in progress)."""

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
from tests.integration.cluster import ADMIN_TOKEN, FEEDBACK_TOKEN, end_release, running_cluster
from tests.integration.test_serving import job_config
from tests.waiting import wait_until

pytestmark = pytest.mark.cluster
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
        # A version that passes its (lowered) offline gates and is signed, yet labels at
        # random: what only live evidence can catch. (Serving never routes a version whose
        # signed gates failed.)
        no_gates = yaml.safe_load(rf.read_text())
        no_gates["gates"] = {"accuracy": 0.0, "precision": 0.0, "recall": 0.0}
        (work / "rf_no_gates.yaml").write_text(yaml.safe_dump(no_gates))
        bad = cluster.train(
            "--config",
            str(work / "rf_no_gates.yaml"),
            "--data",
            str(work / "shuffled.csv"),
            "--target",
            target,
            "--name",
            NAME,
            "--no-promote",
            check=False,
        )
        assert bad.returncode == 0, bad.stderr[-2000:]
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


@pytest.fixture(autouse=True)
def no_release_left_behind(rel):
    """The release a test started ends with the test, passed or failed."""
    yield
    end_release(rel["cluster"], rel["work"] / "model_store", NAME)


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
    """GET /health once it reports ``release_id`` as the release in progress (None: none)."""

    def health() -> dict:
        return httpx.get(f"{rel['url']}/health", timeout=30).json()

    def reported() -> dict | None:
        body = health()
        return body if (body["release"] or {}).get("id") == release_id else None

    return wait_until(
        reported,
        timeout,
        message=lambda: f"/health to report release {release_id}; now: {health()['release']}",
    )


def metric_lines(rel, *patterns: str, timeout: float = 60) -> str:
    """Ray's metrics endpoint once a line matches each regex in ``patterns`` (a metric is
    exported a few seconds after the app records it)."""
    url = f"http://127.0.0.1:{rel['cluster'].metrics}/metrics"
    seen = {"text": ""}

    def exported() -> str | None:
        seen["text"] = httpx.get(url, timeout=30).text
        return seen["text"] if all(re.search(p, seen["text"], re.M) for p in patterns) else None

    def missing() -> str:
        absent = [p for p in patterns if not re.search(p, seen["text"], re.M)]
        return f"{url} to export lines matching {absent}"

    return wait_until(exported, timeout, interval=1, message=missing)


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
    cli(rel, "abort")


def _pids(rel, pattern: str) -> list[int]:
    return rel["cluster"].actor_pids(pattern)


def test_sigkill_of_every_model_replica_and_the_controller_loses_no_release_state(rel):
    cli(rel, "canary", rel["good"], "--weight", "20", "--policy", str(rel["work"] / "hold.yaml"))
    before = current_release(rel["reg"], NAME)
    wait_release(rel, before.id)
    victims = _pids(rel, r"ServeController|ServeReplica:sparc:Model")
    assert len(victims) >= 2, victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)

    def recovered() -> bool:
        alive = _pids(rel, r"ServeReplica:sparc:Model")
        if not alive or set(alive) & set(victims) or not _pids(rel, "ServeController"):
            return False
        return httpx.get(f"{rel['url']}/health", timeout=30).status_code == 200

    wait_until(
        recovered,
        120,
        interval=1,
        message="new Model replicas and a new ServeController, and /health answering 200",
        ignore=(httpx.HTTPError,),
    )
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

    def health_evidence() -> dict:
        return httpx.get(f"{rel['url']}/health", timeout=30).json()["release_evidence"]

    evidence = wait_until(
        lambda: (e := health_evidence())["shadow"]["rows"] >= 500 and e,
        30,
        interval=1,
        message=lambda: f"the shadow evidence to cover 500 rows; now: {health_evidence()}",
    )
    shadow = evidence["shadow"]
    assert shadow["rows"] >= 500 and 0.2 < shadow["agreement"] < 0.95, evidence
    cand = evidence["versions"][rel["bad"]]
    prod = evidence["versions"][rel["v1"]]
    assert cand["labelled_rows"] > 100 and cand["accuracy"] < prod["accuracy"] - 0.1, evidence
    metric_lines(
        rel,
        *(
            rf'^{name}{{[^}}]*model_version="{rel["bad"]}"'
            for name in ("ray_ml_release_weight", "ray_ml_shadow_agreement")
        ),
    )
    cli(rel, "abort")
    wait_release(rel, None)


def test_a_good_candidate_from_the_training_job_is_promoted_automatically(rel):
    rf = rel["work"] / "rf.yaml"
    rel["cluster"].train("--config", str(rf), "--release", "canary", "--release-weight", "30")
    release = current_release(rel["reg"], NAME)
    assert release.mode == "canary" and release.weight == 30 and release.started_by == "train"
    wait_release(rel, release.id)
    statuses = Counter()

    def labelled_traffic_until_decided() -> bool:
        answers = traffic(rel, 200)
        statuses.update(a["status"] for a in answers)
        label(rel, answers)
        return current_release(rel["reg"], NAME) is None

    wait_until(
        labelled_traffic_until_decided,
        240,
        interval=1.2,  # the policy runs every second
        message=lambda: f"the release policy to decide on {release.id}; answers: {statuses}",
    )
    assert set(statuses) == {200}, statuses
    decision = release_log(rel["reg"], NAME)[-1]
    assert decision["event"] == "promoted", decision
    assert rel["reg"].alias(NAME) == release.version
    assert rel["reg"].history(NAME)[-2:] == [rel["v1"], release.version]
    health = wait_release(rel, None)
    assert health["production"] == release.version
    metric_lines(rel, r'^ray_ml_release_decisions_total{[^}]*decision="promoted"')


def test_status_shows_the_history(rel):
    status = json.loads(cli(rel, "status"))
    events = [e["event"] for e in status["recent_releases"]]
    assert events[-2:] == ["started", "promoted"] and "rolled_back" in events
    assert status["release"] is None and Path(rel["work"] / "model_store").is_dir()
