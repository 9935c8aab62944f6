"""The store writer against a served app (issue 18, items 2 and 7): the release records are
not signed, so rewriting them must never serve a refused or gate-failed version, nor take
the service down. A real `ray start --head` cluster and `serve deploy` of serve_config.yaml;
versions published and signed in this process (the training job's signing path)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from collections import Counter

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sparc_ray.data.loading import load_dataset
from sparc_ray.registry import layout, releases, signing
from sparc_ray.registry.store import ModelRegistry
from tests.integration.cluster import ADMIN_TOKEN, running_cluster

pytestmark = pytest.mark.cluster
NAME = "breast_cancer"  # serve_config.yaml's model_name


def _publish(reg: ModelRegistry, model, key: Ed25519PrivateKey, passed: bool) -> str:
    gates = {"passed": passed, "failed": [] if passed else ["accuracy"]}
    meta = {
        "classes": model.classes,
        "features": [f.to_dict() for f in model.schema],
        "gates": gates,
    }
    return reg.publish(NAME, model, meta, signing_key=key)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from sparc_ray.training.estimator import SPARCClassificationModel

    work = tmp_path_factory.mktemp("trust")
    with running_cluster(work) as cluster:
        df, target = load_dataset("builtin:breast_cancer")
        X = df.drop(columns=target)
        model = SPARCClassificationModel(
            {"model_type": "logistic_regression", "cross_validation": {"n_folds": 2}}
        )
        model.fit(X, df[target])
        reg = ModelRegistry(work / "model_store")
        key = signing.load_private_key(str(cluster.signing_key))
        assert key is not None
        v1 = _publish(reg, model, key, passed=True)
        other_key = _publish(reg, model, Ed25519PrivateKey.generate(), passed=True)
        failed = _publish(reg, model, key, passed=False)
        releases.promote(reg, NAME, v1, public_key=signing.raw_public(key))
        cluster.deploy(
            cluster.serve_config(
                Model={"user_config": {"poll_interval_s": 1}},
                Validator={"user_config": {"poll_interval_s": 1}},
            )
        )
        yield {
            "url": cluster.url,
            "dir": reg.root_path / NAME / layout.RECORDS_DIR,  # the release records
            "rows": X.head(3).to_dict("records"),
            "v1": v1,
            "other_key": other_key,
            "failed": failed,
        }


def wait_until(predicate, timeout: float, message: str, ignore=()) -> None:
    """Poll ``predicate`` every half second until it is true; fail naming ``message``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except ignore:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def _write(app, rel: str, text: str) -> None:
    (app["dir"] / rel).write_text(text)


def _seen_by_app(app, version: str) -> None:
    """Wait until /health mentions ``version`` (the app has read the rewritten record)."""
    wait_until(
        lambda: version in httpx.get(f"{app['url']}/health", timeout=10).text,
        30,
        message=f"/health to mention {version}",
        ignore=(httpx.HTTPError,),
    )


def _load(app, seconds: float = 4.0, concurrency: int = 8) -> Counter:
    """POST /predict from ``concurrency`` clients for ``seconds``: (status, version) counts."""
    deadline = time.monotonic() + seconds

    def client() -> Counter:
        seen: Counter = Counter()
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < deadline:
                r = http.post(f"{app['url']}/predict", json={"instances": app["rows"]})
                version = r.json().get("model_version") if r.status_code == 200 else r.text
                seen[(r.status_code, version)] += 1
        return seen

    with cf.ThreadPoolExecutor(concurrency) as pool:
        return sum(
            (f.result() for f in [pool.submit(client) for _ in range(concurrency)]), Counter()
        )


def test_a_refused_production_leaves_the_verified_one_serving_before_any_request(app):
    _write(app, layout.ALIAS, f"{app['other_key']}\n")  # signed, but by another key
    _seen_by_app(app, app["other_key"])
    outcome = _load(app)
    assert set(outcome) == {(200, app["v1"])}, outcome
    health = httpx.get(f"{app['url']}/health", timeout=10)
    body = health.json()
    assert health.status_code == 200 and body["model_version"] == app["v1"]
    assert (body["production"], body["verified_production"]) == (app["other_key"], app["v1"])
    assert "signed by key" in body["errors"]["refused"][app["other_key"]]


def test_a_gate_failed_production_is_not_served_through_the_alias(app):
    _write(app, layout.ALIAS, f"{app['failed']}\n")  # signed by the right key
    _seen_by_app(app, app["failed"])
    outcome = _load(app)
    assert set(outcome) == {(200, app["v1"])}, outcome
    body = httpx.get(f"{app['url']}/health", timeout=10).json()
    assert "failed its gates" in body["errors"]["refused"][app["failed"]]
    assert body["pinned"] is None


def test_a_forged_candidate_gets_no_traffic(app):
    _write(app, layout.ALIAS, f"{app['v1']}\n")
    forged = {
        "id": "r-forged",
        "version": app["failed"],
        "mode": "canary",
        "weight": 100,
        "baseline": app["v1"],
        "started_at": "2026-01-01T00:00:00+00:00",
    }
    _write(app, layout.CANDIDATE_FILE, json.dumps(forged))
    _seen_by_app(app, app["failed"])
    outcome = _load(app)
    assert set(outcome) == {(200, app["v1"])}, outcome
    body = httpx.get(f"{app['url']}/health", timeout=10).json()
    assert body["release"] is None and app["failed"] in body["errors"]["refused"]
    # Unknown keys, and a record too big to read: refused, production serves.
    _write(app, layout.CANDIDATE_FILE, json.dumps({**forged, "version": app["v1"], "x": 1}))
    wait_until(
        lambda: "candidate.json" in json.dumps(httpx.get(f"{app['url']}/health").json()),
        30,
        message="/health to report the refused candidate.json",
    )
    with (app["dir"] / layout.CANDIDATE_FILE).open("wb") as fh:
        fh.truncate(64 * 2**20)  # 64 MiB of zeros
    time.sleep(2)
    outcome = _load(app, seconds=2)
    assert set(outcome) == {(200, app["v1"])}, outcome
    (app["dir"] / layout.CANDIDATE_FILE).unlink()


def test_anonymous_model_lookups_cannot_make_replicas_load_other_versions(app):
    _write(app, layout.ALIAS, f"{app['v1']}\n")
    url = f"{app['url']}/model"
    assert httpx.get(url, params={"version": app["v1"]}, timeout=30).status_code == 200
    for version in (app["failed"], app["other_key"], "v-unknown"):
        r = httpx.get(url, params={"version": version}, timeout=30)
        assert r.status_code == 401 and r.json()["error"], r.text
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    r = httpx.get(url, params={"version": app["failed"]}, headers=admin, timeout=60)
    assert r.status_code == 200 and r.json()["version"] == app["failed"]
