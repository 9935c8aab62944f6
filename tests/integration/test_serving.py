"""The Serve app from serve_config.yaml (`serve deploy`) on a real `ray start --head` cluster,
with models trained by the real training job on that cluster. Tests run in file order and
share the deployment."""

from __future__ import annotations

import concurrent.futures as cf
import glob
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import yaml

from sparc_ray.data.loading import load_dataset
from sparc_ray.registry import layout, releases
from sparc_ray.registry.layout import SIGNATURE_FILE
from sparc_ray.registry.signing import load_private_key, public_key_bytes, sha256_bytes
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.serving.api_docs import PREDICT_RESPONSE
from tests.integration.cluster import ADMIN_TOKEN, FEEDBACK_TOKEN, ROOT, running_cluster
from tests.integration.models import load_verified
from tests.waiting import wait_until

pytestmark = pytest.mark.cluster
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FEEDBACK_AUTH = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
METRIC_NAMES = [
    line.strip()
    for line in (ROOT / "tests/data/live_metric_names.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def job_config(path: Path, family: str, params: dict) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "name": "breast_cancer",
                "data": {"path": "builtin:breast_cancer"},
                "cv": {"n_folds": 3},
                "search": {"scheduler": "fifo", "space": {family: params}},
                "registry": {"store": "model_store"},
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    with running_cluster(work) as cluster:
        # Deployed before anything is trained: up, but answering 503 until a promotion.
        model_cfg = {
            "user_config": {"poll_interval_s": 1},
            "autoscaling_config": {
                "target_ongoing_requests": 1,
                "upscale_delay_s": 1,
                "downscale_delay_s": 20,  # a new replica takes several seconds to start here
                "metrics_interval_s": 0.5,
                "look_back_period_s": 2,
            },
        }
        cluster.deploy(cluster.serve_config(Model=model_cfg), healthy=(503,))
        health = httpx.get(f"{cluster.url}/health").json()
        assert not health["model_loaded"] and "no version is promoted" in json.dumps(health)
        r = predict(cluster.url, [{"mean radius": 1.0}])
        assert r.status_code == 503 and r.json()["error"] == "no model is loaded"

        lr = job_config(work / "lr.yaml", "logistic_regression", {"C": [0.1, 1.0]})
        rf = job_config(work / "rf.yaml", "random_forest", {"n_estimators": [40]})
        cluster.train("--config", str(lr))
        cluster.train("--config", str(rf), "--no-promote")
        cluster.train("--config", str(rf), "--no-promote")  # to be corrupted
        reg = ModelRegistry(work / "model_store")
        v1, v2, bad = reg.versions("breast_cancer")
        for name in ("model.onnx", "model.joblib"):  # what replicas load, and the fallback
            model_file = reg.root_path / "breast_cancer" / bad / name
            model_file.write_bytes(model_file.read_bytes()[:-10] + b"corrupted!")
        wait_until(  # the first promotion is picked up by polling
            lambda: httpx.get(f"{cluster.url}/health", timeout=30).status_code == 200,
            30,
            message=f"the app to load the first promoted version ({v1})",
        )
        yield {
            "cluster": cluster,
            "model_cfg": model_cfg,
            "url": cluster.url,
            "reg": reg,
            "public_key": public_key_bytes(str(cluster.public_key)),
            "v1": v1,
            "v2": v2,
            "bad": bad,
        }


@pytest.fixture(scope="module")
def rows():
    df, target = load_dataset("builtin:breast_cancer")
    return df.drop(columns=target), df[target]


def predict(url: str, instances: list[dict], **kw) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"instances": instances, **kw}, timeout=60)


def test_predictions_match_the_model_loaded_in_process(app, rows):
    X, _ = rows
    model, meta = load_verified(app["reg"], "breast_cancer", app["v1"], app["public_key"])
    for n in (1, 25):
        batch = X.sample(n, random_state=n)
        r = predict(app["url"], batch.to_dict("records"), include_probabilities=True)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == set(PREDICT_RESPONSE["required"])  # the seed's fields, documented
        assert body["model_version"] == app["v1"] and body["model_name"] == "breast_cancer"
        assert body["classes"] == meta.classes == model.classes
        assert body["predictions"] == model.predict(batch).tolist()
        np.testing.assert_allclose(body["probabilities"], model.predict_proba(batch), atol=1e-6)
    assert predict(app["url"], X.head(2).to_dict("records")).json()["probabilities"] is None


def test_invalid_input_is_a_4xx_naming_row_and_feature(app, rows):
    X, _ = rows
    url, good = app["url"], X.head(3).to_dict("records")
    feature = X.columns[0]
    cases = [
        (
            {"instances": [good[0], {k: v for k, v in good[1].items() if k != feature}]},
            422,
            1,
            feature,
        ),
        ({"instances": [{**good[0], "zip code": 1}]}, 422, 0, "zip code"),
        ({"instances": [good[0], good[1], {**good[2], feature: "big"}]}, 422, 2, feature),
        ({"instances": []}, 422, None, "instances"),
        ({"instances": good * 400}, 413, None, None),
        ({"rows": good}, 422, None, "rows"),
    ]
    for body, status, row, feat in cases:
        r = httpx.post(f"{url}/predict", json=body, timeout=30)
        assert r.status_code == status, (body.keys(), r.text)
        if feat is not None:
            assert {"row": row, "feature": feat} in [
                {k: d[k] for k in ("row", "feature")} for d in r.json()["details"]
            ], r.text
    nan_body = json.dumps({"instances": good[:1]}).replace(str(good[0][feature]), "NaN", 1)
    r = httpx.post(
        f"{url}/predict", content=nan_body, timeout=30, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["details"][0]["feature"] == feature
    assert httpx.post(f"{url}/predict", content=b"{not json", timeout=30).status_code == 400
    assert httpx.post(f"{url}/predict", content=b"x" * 2_100_000, timeout=30).status_code == 413


POISON = [  # values a model cannot score, sent as raw JSON (row 0, feature "mean radius")
    ("1e39", "out of range"),
    ("1" + "0" * 400, "too large for a float"),
    ('"\\ud800"', "expected a number"),
    ("Infinity", "non-finite"),
]


def poison_body(good: dict, value: str) -> bytes:
    row = json.dumps({**good, "mean radius": "@@"}).replace('"@@"', value)
    return f'{{"instances": [{row}]}}'.encode()


def test_hostile_values_get_a_422_naming_row_and_feature(app, rows):
    X, _ = rows
    good = X.head(1).to_dict("records")[0]
    for value, message in POISON:
        r = httpx.post(f"{app['url']}/predict", content=poison_body(good, value), timeout=30)
        assert r.status_code == 422, (value, r.text)
        assert (
            r.json()["details"][0]
            == {
                "row": 0,
                "feature": "mean radius",
                "message": r.json()["details"][0]["message"],
            }
            and message in r.json()["details"][0]["message"]
        ), r.text
    surrogate = json.dumps({"instances": [{**good, "\ud800": "x"}]}).encode()
    r = httpx.post(f"{app['url']}/predict", content=surrogate, timeout=30)
    assert r.status_code == 422 and r.json()["details"][0]["message"] == "unknown feature"


def test_hostile_transport_gets_a_4xx_json_error(app, rows):
    X, _ = rows
    url, good = f"{app['url']}/predict", json.dumps({"instances": X.head(1).to_dict("records")})
    cases = [
        (b"[" * 5000, {}, 400),  # nesting deeper than any parser's recursion limit
        (b'{"instances": ' + b"[" * 5000, {}, 400),
        (good.encode(), {"content-type": "text/plain"}, 415),
        (good.encode(), {"content-type": "application/x-www-form-urlencoded"}, 415),
        (good.encode(), {"content-type": "application/json; charset=utf-8"}, 200),
        (good.encode(), {"content-type": "application/vnd.api+json"}, 200),
    ]
    for body, headers, status in cases:
        r = httpx.post(url, content=body, headers=headers, timeout=30)
        assert r.status_code == status, (body[:30], headers, r.text)
        assert r.headers["content-type"] == "application/json" and r.json()
        if status != 200:
            assert r.json()["error"] and "details" in r.json()


def _validator_rss_mb(cluster) -> float:
    return sum(
        psutil.Process(pid).memory_info().rss / 2**20
        for pid in cluster.actor_pids(r"ServeReplica:sparc:Validator")
    )


def _read_response(sock: socket.socket) -> list[bytes]:
    """[head, body] of one HTTP response, however the server splits it into packets."""
    data = b""
    while b"\r\n\r\n" not in data and (part := sock.recv(65536)):
        data += part
    head, body = [*data.split(b"\r\n\r\n", 1), b""][:2]
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)) and (part := sock.recv(65536)):
        body += part
    return [head, body]


def test_a_64_mb_chunked_body_is_refused_while_it_streams(app):
    """No Content-Length: the cap applies while reading, so the Validator stops at
    max_body_bytes (2 MB) and answers 413; the client never gets to send 64 MB."""
    cluster, rss_before = app["cluster"], _validator_rss_mb(app["cluster"])
    chunk, sent, limit = b"[" + b"0," * 32_767 + b"0]", 0, 64 * 2**20
    with socket.create_connection(("127.0.0.1", cluster.serve_port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.settimeout(2)
        while sent < limit:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered before the body ended
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break  # the server stopped reading
            sent += len(chunk)
        sock.settimeout(10)
        head = _read_response(sock)
    status_line = head[0].split(b"\r\n")[0]
    assert b" 413 " in status_line, head[0][:200]
    assert b"request body is over the limit" in head[1] or b"error" in head[1]
    assert sent < limit / 2, sent
    assert _validator_rss_mb(cluster) - rss_before < 50
    assert httpx.get(f"{app['url']}/health", timeout=30).status_code == 200


def test_poisonous_requests_fail_only_themselves_under_load(app, rows):
    """c=8, one poisonous request per ten valid ones: every valid request succeeds."""
    X, _ = rows
    records = X.head(80).to_dict("records")
    results: list[tuple[bool, int]] = []

    def client(worker: int) -> None:
        with httpx.Client(timeout=60) as http:
            for i in range(55):
                if i % 11 == 10:
                    value = POISON[(worker + i) % len(POISON)][0]
                    r = http.post(f"{app['url']}/predict", content=poison_body(records[0], value))
                    results.append((False, r.status_code))
                else:
                    row = records[(worker * 7 + i) % len(records)]
                    r = http.post(f"{app['url']}/predict", json={"instances": [row]})
                    results.append((True, r.status_code))

    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
    valid = [status for ok, status in results if ok]
    poison = [status for ok, status in results if not ok]
    assert len(valid) == 400 and set(valid) == {200}, sorted(set(valid))
    assert len(poison) == 40 and set(poison) == {422}


def test_onnx_serves_and_a_version_without_it_falls_back_saying_why(app, rows):
    X, _ = rows
    info = httpx.get(f"{app['url']}/model", headers=AUTH).json()
    key_id = info["serving"].pop("signed_by")
    assert info["serving"] == {"engine": "onnx", "reason": None} and len(key_id) == 16
    assert info["onnx"]["status"] == "ok" and info["onnx"]["labels_equal"]
    # The same model with its ONNX export missing: served by the verified sklearn pipeline.
    reg = app["reg"]
    src = reg.root_path / "breast_cancer" / app["v1"]
    fallback = app["v1"] + "-noonnx"
    dst = reg.root_path / "breast_cancer" / fallback
    shutil.copytree(src, dst)
    (dst / "model.onnx").unlink()
    meta = json.loads((dst / "metadata.json").read_text())
    meta.update(version=fallback, onnx={"status": "fallback", "reason": "skipped for a test"})
    (dst / "metadata.json").write_text(json.dumps(meta))
    # An edited copy carries v1's signature: refused until the key holder signs it.
    r = httpx.post(
        f"{app['url']}/reload-model", json={"version": fallback}, headers=AUTH, timeout=90
    )
    assert r.status_code == 409 and f"the signature is for breast_cancer/{app['v1']}" in r.text
    # The key holder signs the files it wrote, by their digests (its own trusted record).
    written = {
        p.relative_to(dst).as_posix(): sha256_bytes(p.read_bytes())
        for p in dst.rglob("*")
        if p.is_file() and p.name != SIGNATURE_FILE
    }
    reg.sign("breast_cancer", fallback, load_private_key(str(app["cluster"].signing_key)), written)
    r = httpx.post(
        f"{app['url']}/reload-model", json={"version": fallback}, headers=AUTH, timeout=90
    )
    assert r.status_code == 200, r.text
    info = httpx.get(f"{app['url']}/model", headers=AUTH).json()
    assert info["serving"] == {
        "engine": "sklearn",
        "reason": "skipped for a test",
        "signed_by": key_id,
    }
    sample = X.sample(5, random_state=5)
    body = predict(app["url"], sample.to_dict("records"), include_probabilities=True).json()
    model, _ = load_verified(reg, "breast_cancer", app["v1"], app["public_key"])
    assert body["model_version"] == fallback
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(sample), atol=1e-6)
    r = httpx.post(
        f"{app['url']}/reload-model", json={"version": app["v1"]}, headers=AUTH, timeout=90
    )
    assert r.status_code == 200 and r.json()["model_version"] == app["v1"]


def test_health_model_metrics_and_docs(app):
    url = app["url"]
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "healthy" and health["model_loaded"]
    assert health["model_version"] == app["v1"] and health["uptime_seconds"] > 0
    public = httpx.get(f"{url}/model").json()  # what a caller needs, nothing more
    assert public["version"] == app["v1"] and public["classes"] == ["benign", "malignant"]
    assert len(public["features"]) == 30 and set(public["features"][0]) == {
        "name",
        "kind",
        "categories",
    }
    text = json.dumps(public) + json.dumps(httpx.get(f"{url}/metrics").json())
    for secret in (str(app["reg"].root_path), "library_versions", "training_data", "cpu_percent"):
        assert secret not in text, secret
    model = httpx.get(f"{url}/model", headers=AUTH).json()
    assert model["version"] == app["v1"] and model["gates"]["passed"]
    assert len(model["features"]) == 30 and "reference" not in model
    assert "reference" in httpx.get(f"{url}/model?full=true", headers=AUTH).json()
    summary = httpx.get(f"{url}/metrics", headers=AUTH).json()
    pm = summary["prediction_metrics"]
    assert pm["total_requests"] >= 10 and pm["failed_requests"] >= 8
    assert pm["latency_ms"]["p99"] >= pm["latency_ms"]["p50"] > 0
    assert {"cpu_percent", "memory_percent"} <= set(summary["system_metrics"])
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/predict", "/health", "/model", "/metrics", "/reload-model", "/feedback"} <= set(
        spec["paths"]
    )
    assert "example" in json.dumps(spec["paths"]["/predict"]["post"]["requestBody"])

    # Training values (mid-range numbers in the example row) only in the admin's document.
    def example(doc: dict) -> dict:
        return doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]

    anonymous = example(spec)["example"]["instances"][0]
    assert set(anonymous.values()) <= {0.0, None}, anonymous
    full = example(httpx.get(f"{url}/openapi.json", headers=AUTH).json())
    assert set(full["example"]["instances"][0].values()) - {0.0, None}
    assert httpx.get(f"{url}/docs").status_code == 200


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium: `bash .ci/install-apt.sh chromium chromium`"
)
def test_docs_render_without_the_internet(app, tmp_path):
    """Headless Chromium whose only way out is a proxy that does not exist (loopback goes
    direct): Swagger UI must come from the app itself and render every operation."""
    page = httpx.get(f"{app['url']}/docs").text
    assert "cdn.jsdelivr.net" not in page and "/static-offline-docs/" in page
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path}",
            "--proxy-server=http://127.0.0.1:9",
            "--virtual-time-budget=20000",
            "--dump-dom",
            f"{app['url']}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert {"/predict", "/health", "/model", "/reload-model", "/feedback"} <= paths, dom[-3000:]


def test_reload_needs_the_bearer_token(app):
    url = f"{app['url']}/reload-model"
    assert httpx.post(url, timeout=30).status_code == 401
    assert httpx.post(url, headers={"Authorization": "Bearer nope"}, timeout=30).status_code == 401
    r = httpx.post(url, json={"version": "v-does-not-exist"}, headers=AUTH, timeout=30)
    assert r.status_code == 404


def _load(url: str, rows: list[dict], stop: threading.Event, out: list, workers: int = 4):
    def worker(i: int) -> None:
        while not stop.is_set():
            r = predict(url, rows[i % len(rows) : i % len(rows) + 1])
            out.append(
                (
                    time.monotonic(),
                    r.status_code,
                    r.json().get("model_version") if r.status_code == 200 else r.text,
                )
            )

    with cf.ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))


def test_reload_under_concurrent_requests_has_zero_failures(app, rows):
    X, _ = rows
    stop, out = threading.Event(), []
    loader = threading.Thread(
        target=_load, args=(app["url"], X.head(50).to_dict("records"), stop, out)
    )
    loader.start()
    try:
        wait_until(lambda: len(out) >= 20, 60, message="20 answers before the reload")
        r = httpx.post(
            f"{app['url']}/reload-model", json={"version": app["v2"]}, headers=AUTH, timeout=90
        )
        switched = time.monotonic()
        wait_until(
            lambda: sum(t > switched + 0.5 for t, _, _ in out) >= 20,
            60,
            message="20 answers from 0.5 s after the reload on",
        )
    finally:
        stop.set()
        loader.join()
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == app["v2"]
    assert len(out) > 20 and all(status == 200 for _, status, _ in out), out[:5]
    versions = [v for _, _, v in out]
    assert versions[0] == app["v1"]
    assert {v for t, _, v in out if t > switched + 0.5} == {app["v2"]}


def test_corrupt_artifact_is_refused_and_the_old_version_keeps_serving(app, rows):
    X, _ = rows
    r = httpx.post(
        f"{app['url']}/reload-model", json={"version": app["bad"]}, headers=AUTH, timeout=90
    )
    assert r.status_code == 409, r.text
    assert "changed after the version was signed" in json.dumps(r.json()["details"])
    r = predict(app["url"], X.head(2).to_dict("records"))
    assert r.status_code == 200 and r.json()["model_version"] == app["v2"]
    health = httpx.get(f"{app['url']}/health").json()
    assert health["model_version"] == app["v2"] and health["production"] == app["v2"]
    assert app["reg"].alias("breast_cancer") == app["v2"]


def test_swapped_model_with_matching_metadata_is_refused_and_the_old_version_serves(app, rows):
    """Write access to the store without the signing key: v1's (valid, signed) model files
    copied into another version, its metadata.json rewritten to match them, and the
    production alias pointed at it. Every sha256 matches; the signature does not."""
    X, _ = rows
    reg, url, target = app["reg"], app["url"], app["bad"]
    root = reg.root_path / "breast_cancer"
    v1_meta = reg.metadata("breast_cancer", app["v1"]).to_dict()
    for name in ("model.onnx", "model.joblib"):
        shutil.copyfile(root / app["v1"] / name, root / target / name)
    meta = reg.metadata("breast_cancer", target).to_dict()
    meta.update(sha256=v1_meta["sha256"], onnx=v1_meta["onnx"])
    (root / target / "metadata.json").write_text(json.dumps(meta))
    reg.verify("breast_cancer", target)  # what the sha256 alone would have let through
    refused = "metadata.json was changed after the version was signed"
    r = httpx.post(f"{url}/reload-model", json={"version": target}, headers=AUTH, timeout=90)
    assert r.status_code == 409 and refused in r.text, r.text
    alias = root / layout.RECORDS_DIR / layout.ALIAS
    alias.write_text(f"{target}\n")  # the alias, written by hand
    try:
        _wait_health(url, production=target)
        with cf.ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda i: predict(url, X.iloc[i : i + 2].to_dict("records")), range(80))
            )
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["model_version"] for a in answers} == {app["v2"]}
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "healthy" and health["model_version"] == app["v2"]
        assert refused in json.dumps(health["errors"]), health["errors"]
        r = httpx.get(f"{url}/model", timeout=60)  # what serves: the verified version
        assert r.status_code == 200 and r.json()["version"] == app["v2"], r.text
        r = httpx.get(f"{url}/model?version={target}", timeout=60)  # another one: admin only
        assert r.status_code == 401, r.text
        r = httpx.get(f"{url}/model?version={target}", headers=AUTH, timeout=60)
        assert r.status_code == 503 and refused in r.text, r.text
    finally:
        alias.write_text(f"{app['v2']}\n")
    _wait_health(url, production=app["v2"], model_version=app["v2"])


def test_reload_rejects_ambiguous_bodies(app):
    url = f"{app['url']}/reload-model"
    for body in ({"version": {}}, {"version": False}, {"version": ""}, {"version": 0}, []):
        r = httpx.post(url, json=body, headers=AUTH, timeout=30)
        assert r.status_code == 422 and r.json()["error"], (body, r.text)
    r = httpx.post(url, json={"version": app["v2"], "forced": True}, headers=AUTH, timeout=30)
    assert r.status_code == 422 and r.json()["details"][0]["feature"] == "forced"
    r = httpx.post(url, headers=AUTH, timeout=30)  # no body: re-read the registry, report
    assert r.status_code == 200 and r.json()["production"] == app["v2"]


def _wait_health(url: str, **expected) -> dict:
    """GET /health once every ``expected`` key has its value."""

    def health() -> dict:
        return httpx.get(f"{url}/health", timeout=30).json()

    def matches() -> dict | None:
        body = health()
        return body if all(body.get(k) == v for k, v in expected.items()) else None

    return wait_until(
        matches,
        60,
        message=lambda: (
            f"/health to report {expected}; now: " + str({k: health().get(k) for k in expected})
        ),
    )


def test_promotion_is_picked_up_by_polling_the_alias(app):
    releases.promote(app["reg"], "breast_cancer", app["v1"])  # as the CLI does, from outside
    health = _wait_health(app["url"], model_version=app["v1"])
    assert health["model_version"] == health["production"] == app["v1"]


@pytest.fixture
def unpinned_after(app):
    """A pin the test left (a failure between pin and unpin) is removed after it: the
    config without the pin is deployed again, so later tests see production served."""
    yield
    if httpx.get(f"{app['url']}/health", timeout=30).json().get("pinned") is not None:
        app["cluster"].deploy(app["cluster"].serve_config(Model=app["model_cfg"]))
        _wait_health(app["url"], pinned=None)


def test_user_config_pin_and_unpin(app, unpinned_after):
    """`serve deploy` with only user_config changed: replicas reconfigure, not restart; a
    config without the pin serves production again."""
    cluster = app["cluster"]
    pin = {"user_config": {"model_version": app["v2"]}}
    cluster.deploy(cluster.serve_config(Model=app["model_cfg"], Validator=pin))
    health = _wait_health(app["url"], model_version=app["v2"], pinned=app["v2"])
    assert health["model_version"] == app["v2"] and health["production"] == app["v1"]
    cluster.deploy(cluster.serve_config(Model=app["model_cfg"]))
    health = _wait_health(app["url"], model_version=app["v1"], pinned=None)
    assert health["model_version"] == app["v1"] and health["pinned"] is None


def test_feedback_gives_rolling_accuracy(app, rows):
    X, y = rows
    url = app["url"]
    sample = X.sample(40, random_state=7)
    body = predict(url, sample.to_dict("records")).json()
    truth = y.loc[sample.index].tolist()
    items = [
        {"prediction_id": body["prediction_id"], "row": i, "label": t} for i, t in enumerate(truth)
    ]
    assert httpx.post(f"{url}/feedback", json=items, timeout=30).status_code == 401
    # The release-control token does not open /feedback (nor the other way round).
    assert httpx.post(f"{url}/feedback", json=items, headers=AUTH).status_code == 401
    assert httpx.post(f"{url}/reload-model", headers=FEEDBACK_AUTH).status_code == 401
    r = httpx.post(
        f"{url}/feedback",
        json=[*items, {"prediction_id": "nope", "label": "x"}],
        headers=FEEDBACK_AUTH,
        timeout=30,
    ).json()
    expected = float(np.mean(np.array(body["predictions"]) == np.array(truth)))
    assert r["matched"] == 40 and r["unknown"] == ["nope"]
    assert r["accuracy"] == pytest.approx(expected)
    again = httpx.post(f"{url}/feedback", json=items[:1], headers=FEEDBACK_AUTH).json()
    assert again["matched"] == 0 and again["conflicts"] == 1  # the first label stands


def test_feedback_memory_is_bounded_by_rows(app, rows):
    """serve_config.yaml's feedback_rows (100,000) bounds what the Postprocessor remembers:
    100,000 more rows beyond it leave the row count at the bound and its memory flat."""
    X, _ = rows
    url, cluster = app["url"], app["cluster"]
    big = {"instances": X.sample(1000, replace=True, random_state=2).to_dict("records")}
    (post,) = cluster.actor_pids(r"ServeReplica:sparc:Postprocessor")

    def send(n: int) -> None:
        with cf.ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda _: predict(url, **big).status_code, range(n)))
        assert set(codes) == {200}

    send(110)  # past the bound
    monitoring = httpx.get(f"{url}/metrics", timeout=30).json()["monitoring"]
    assert 99_000 <= monitoring["remembered_rows"] <= 100_000, monitoring
    rss = psutil.Process(post).memory_info().rss / 2**20
    send(100)
    monitoring = httpx.get(f"{url}/metrics", timeout=30).json()["monitoring"]
    assert 99_000 <= monitoring["remembered_rows"] <= 100_000, monitoring
    assert psutil.Process(post).memory_info().rss / 2**20 - rss < 10


def test_a_frozen_postprocessor_stalls_no_prediction(app, rows):
    """Responses never wait for monitoring: with the Postprocessor's process stopped (SIGSTOP),
    every request is still answered; the records beyond each Validator's records_in_flight
    (64) are dropped and counted. Once it runs again, monitoring and /feedback work."""
    X, y = rows
    url, cluster = app["url"], app["cluster"]
    (post,) = cluster.actor_pids(r"ServeReplica:sparc:Postprocessor")
    one = X.head(1).to_dict("records")
    os.kill(post, signal.SIGSTOP)
    try:
        with httpx.Client(timeout=10) as client:  # a hang fails here, as a timeout
            codes = [
                client.post(f"{url}/predict", json={"instances": one}).status_code
                for _ in range(300)  # enough for both Validators to pass 64 records in flight
            ]
    finally:
        os.kill(post, signal.SIGCONT)
    assert set(codes) == {200}

    def backlog_counted() -> dict:
        errors = httpx.get(f"{url}/metrics", timeout=30).json()["internal_errors"]
        return errors if errors.get("postprocessor_backlog", 0) > 0 else {}

    wait_until(backlog_counted, 30, message="a Validator counting dropped records")
    body = predict(url, one).json()
    label = {"prediction_id": body["prediction_id"], "row": 0, "label": y.iloc[0]}
    r = httpx.post(f"{url}/feedback", json=label, headers=FEEDBACK_AUTH, timeout=30).json()
    assert r["matched"] == 1, r


def test_model_replicas_scale_out_under_load_and_back_in(app, rows):
    """Six clients of 1000-row requests keep about one request at a time in the Model: the
    Validators' parsing is the larger share of each request, and the controller logged 0.87
    and 1.33 ongoing requests on average in two runs. At the module's target of 1 the first
    never scales out, so this test lowers the target to 0.5 (a lightweight config update):
    a sustained load must scale out, and none must scale back in."""
    X, _ = rows
    cluster, url = app["cluster"], app["url"]
    big = X.sample(1000, replace=True, random_state=1).to_dict("records")
    stop = threading.Event()

    def heavy() -> None:
        while not stop.is_set():
            predict(url, big)

    def scaling() -> str:
        events = "\n".join(cluster.scaling_events()[-10:])
        return f"serve status:\n{cluster.serve_status()}\ncontroller's decisions:\n{events}"

    autoscaling = {**app["model_cfg"]["autoscaling_config"], "target_ongoing_requests": 0.5}
    cluster.deploy(
        cluster.serve_config(Model={**app["model_cfg"], "autoscaling_config": autoscaling})
    )
    try:
        with cf.ThreadPoolExecutor(6) as pool:
            for _ in range(6):
                pool.submit(heavy)
            try:
                wait_until(
                    lambda: cluster.running_replicas("Model") >= 2,
                    60,
                    interval=1,
                    message=lambda: f"a second running Model replica under load; {scaling()}",
                )
            finally:
                stop.set()
        wait_until(
            lambda: cluster.running_replicas("Model") == 1,
            90,
            interval=2,
            message=lambda: f"Model replicas to scale back in to 1 without load; {scaling()}",
        )
    finally:
        cluster.deploy(cluster.serve_config(Model=app["model_cfg"]))


def test_ray_metrics_endpoint_exports_the_ml_metrics(app, rows):
    X, _ = rows
    for _ in range(3):  # enough rows for drift scores
        assert predict(app["url"], X.sample(300, random_state=3).to_dict("records")).is_success
    dashboard = (ROOT / "kuberay/monitoring/grafana-dashboard.json").read_text()
    # Exported only during a release, on capture drops, or with capture on (off in
    # serve_config.yaml; tests/integration/test_capture_loop.py turns it on):
    occasional = ("release", "shadow", "dropped", "captured")
    steady = [n for n in METRIC_NAMES if not any(word in n for word in occasional)]
    expected = steady + sorted(set(re.findall(r"ray_serve_[a-z_]+[a-z]", dashboard)))
    url = f"http://127.0.0.1:{app['cluster'].metrics}/metrics"
    scraped = {"text": "", "found": {}}

    def all_exported() -> bool:
        text = httpx.get(url, timeout=30).text
        found = {
            m.group(1): m.group(2) for m in re.finditer(r"^(ray_[a-z_]+)\{([^}]*)\}", text, re.M)
        }
        scraped.update(text=text, found=found)
        return all(n in found for n in expected)

    def missing() -> str:
        found = scraped["found"]
        absent = [n for n in expected if n not in found]
        return f"{url} to export {absent}; seen: {sorted(n for n in found if 'ml' in n)}"

    wait_until(all_exported, 90, interval=3, message=missing)
    text, found = scraped["text"], scraped["found"]
    for name in steady:
        assert 'model_name="breast_cancer"' in found[name], (name, found[name])
        assert "model_version=" in found[name], (name, found[name])
    assert 'feature_name="mean radius"' in text and 'reason="invalid_input"' in text
    assert re.search(r'ray_ml_prediction_errors_total\{[^}]*kind="client"', text)


def test_json_logs_carry_the_prediction_id(app, rows):
    X, _ = rows
    pid = predict(app["url"], X.head(1).to_dict("records")).json()["prediction_id"]

    def logged() -> list[dict]:
        session = app["cluster"].temp_dir / "session_latest"
        logs = glob.glob(f"{session}/logs/serve/replica_sparc_Validator_*.log")
        # the replica may be writing a record as we read: parse whole lines only
        lines = [
            json.loads(line)
            for path in logs
            for line in Path(path).read_text().split("\n")[:-1]
            if line.startswith("{")
        ]
        return [rec for rec in lines if rec.get("prediction_id") == pid]

    # request-path logs are buffered and flushed every second
    mine = wait_until(logged, 30, message=f"a Validator log record with prediction_id {pid}")
    assert "predicted 1 rows" in mine[0]["message"]


def test_client_and_bulk_csv_scoring_in_chunks(app, rows, tmp_path):
    import sys

    from sparc_ray.client import PredictionError, SparcClient

    X, _ = rows
    current = httpx.get(f"{app['url']}/health").json()["model_version"]
    model, _ = load_verified(app["reg"], "breast_cancer", current, app["public_key"])
    with SparcClient(app["url"], token=ADMIN_TOKEN) as client:
        assert client.predict(X.head(3))["predictions"] == model.predict(X.head(3)).tolist()
        with pytest.raises(PredictionError) as info:
            client.predict([{"nope": 1}])
        assert info.value.status == 422
        assert client.reload()["production"] == current  # re-read, nothing moved
        with pytest.raises(PredictionError) as info:
            client.reload(app["bad"], force=True)  # force skips gates, never the sha256
        assert info.value.status == 409
    X.head(250).to_csv(tmp_path / "rows.csv", index=False)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparc_ray.cli",
            "predict",
            "--url",
            app["url"],
            "--input",
            str(tmp_path / "rows.csv"),
            "--output",
            str(tmp_path / "out.csv"),
            "--chunk-size",
            "100",
            "--probabilities",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "scored 250 rows" in r.stderr, r.stderr
    import pandas as pd

    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 250 and out["prediction"].tolist() == model.predict(X.head(250)).tolist()
    np.testing.assert_allclose(
        out["proba_malignant"], model.predict_proba(X.head(250))[:, 1], atol=1e-6
    )
