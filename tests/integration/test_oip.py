"""Open Inference Protocol (V2) and explanations on the live app (`serve deploy` on a real
cluster), for the three model families trained by the real job on the mixed categorical +
missing-value dataset (loans): a client nobody here wrote (tritonclient) for health, metadata
and infer; raw V2 JSON (null = missing, as KServe clients send it); answers equal to /predict's
and to the signed pipeline's; explanations that add up, in the original features."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
import yaml

from sparc_ray.registry.signing import public_key_bytes
from sparc_ray.registry.store import ModelRegistry
from tests.integration.cluster import ADMIN_TOKEN, ROOT, running_cluster
from tests.integration.models import load_verified

pytestmark = pytest.mark.cluster
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NAME = "loans"
FAMILIES = {
    "logistic_regression": {"C": [1.0]},
    "random_forest": {"n_estimators": [100], "max_depth": [8]},
    "hist_gradient_boosting": {"max_iter": [50]},
}


def train_config(path: Path, family: str) -> Path:
    config = {
        "name": NAME,
        "data": {"path": str(ROOT / "tests/data/loans.csv"), "target": "decision"},
        "cv": {"n_folds": 3},
        "search": {"scheduler": "fifo", "space": {family: FAMILIES[family]}},
        "gates": {"accuracy": 0.3},
        "registry": {"store": "model_store"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    work = tmp_path_factory.mktemp("oip")
    with running_cluster(work) as cluster:
        for i, family in enumerate(FAMILIES):  # the first is production, the others not
            extra = () if i == 0 else ("--no-promote",)
            cluster.train("--config", str(train_config(work / f"{family}.yaml", family)), *extra)
        cfg = cluster.serve_config()
        doc = yaml.safe_load(cfg.read_text())
        doc["applications"][0]["args"]["model_name"] = NAME
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        cluster.deploy(cfg)
        reg = ModelRegistry(work / "model_store")
        versions = dict(zip(FAMILIES, reg.versions(NAME), strict=True))
        yield {
            "url": cluster.url,
            "reg": reg,
            "versions": versions,
            "key": public_key_bytes(str(cluster.public_key)),
        }


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df = pd.read_csv(ROOT / "tests/data/loans.csv").drop(columns="decision")
    missing = df[df.isna().any(axis=1)].head(4)
    return pd.concat([missing, df.dropna().head(6)])  # numbers and categories missing


def v2_inputs(df: pd.DataFrame) -> list[dict]:
    """One input per feature, as KServe's and MLServer's pandas codec send them (null =
    missing)."""
    out = []
    for name in df.columns:
        text = df[name].dtype == object or pd.api.types.is_string_dtype(df[name])
        data = [None if pd.isna(v) else v for v in df[name].tolist()]
        out.append(
            {
                "name": name,
                "shape": [len(df)],
                "datatype": "BYTES" if text else "FP64",
                "data": data,
            }
        )
    return out


def infer(url: str, df: pd.DataFrame, version: str | None = None, **body) -> httpx.Response:
    path = f"/v2/models/{NAME}" + (f"/versions/{version}" if version else "") + "/infer"
    payload = {"inputs": v2_inputs(df), "parameters": {"content_type": "pd"}, **body}
    return httpx.post(url + path, json=payload, headers=AUTH if version else {}, timeout=60)


def outputs(body: dict) -> dict:
    return {o["name"]: o for o in body["outputs"]}


def records(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in df.to_dict("records")]


def triton_inputs(df: pd.DataFrame) -> list:
    """tritonclient's InferInput per feature: FP64 numbers (NaN = missing), BYTES strings."""
    inputs = []
    for name in df.columns:
        if df[name].dtype.kind == "f":
            tensor = triton.InferInput(name, [len(df)], "FP64")
            tensor.set_data_from_numpy(df[name].to_numpy(np.float64), binary_data=False)
        else:
            tensor = triton.InferInput(name, [len(df)], "BYTES")
            tensor.set_data_from_numpy(df[name].to_numpy(object), binary_data=False)
        inputs.append(tensor)
    return inputs


def test_tritonclient_health_metadata_and_infer(app, rows):
    client = triton.InferenceServerClient(app["url"].removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(NAME)
    assert client.get_server_metadata()["name"] == "sparc-ray"
    production = app["versions"]["logistic_regression"]
    meta = client.get_model_metadata(NAME)
    assert meta["versions"] == [production] and meta["platform"] == "onnxruntime_onnx"
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("income", "FP64", [-1]), ("age", "FP64", [-1]), ("debt", "FP64", [-1]),
        ("employment", "BYTES", [-1]), ("region", "BYTES", [-1]),
    ]  # fmt: skip
    # tritonclient cannot send a missing string (None becomes "None"): numbers only missing.
    df = rows[rows["employment"].notna()]
    inputs = triton_inputs(df)
    wanted = [
        triton.InferRequestedOutput(n, binary_data=False) for n in ("predict", "predict_proba")
    ]
    result = client.infer(NAME, inputs, outputs=wanted)
    body = httpx.post(
        f"{app['url']}/predict",
        json={"instances": records(df), "include_probabilities": True},
        timeout=60,
    ).json()
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("predict")]
    assert labels == body["predictions"]
    np.testing.assert_array_equal(result.as_numpy("predict_proba"), body["probabilities"])
    assert result.get_response()["model_version"] == production
    ages = inputs[1]
    assert ages.name() == "age"
    ages.set_data_from_numpy(np.array([30.0, math.inf] + [40.0] * (len(df) - 2)), binary_data=False)
    with pytest.raises(triton.InferenceServerException, match="input 'age' row 1"):
        client.infer(NAME, inputs)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_v2_answers_equal_the_signed_pipeline_and_predict(app, rows, family):
    version = app["versions"][family]
    model, _ = load_verified(app["reg"], NAME, version, app["key"])
    r = infer(app["url"], rows, version)
    assert r.status_code == 200, r.text
    got = outputs(r.json())
    assert r.json()["model_version"] == version
    assert got["predict"]["datatype"] == "BYTES" and got["predict"]["shape"] == [len(rows)]
    assert got["predict"]["data"] == model.predict(rows).tolist()
    proba = np.array(got["predict_proba"]["data"]).reshape(got["predict_proba"]["shape"])
    np.testing.assert_allclose(proba, model.predict_proba(rows), atol=1e-5)
    # the same answers through tritonclient, naming the version (the admin token)
    client = triton.InferenceServerClient(app["url"].removeprefix("http://"))
    df = rows[rows["employment"].notna()]
    result = client.infer(NAME, triton_inputs(df), model_version=version, headers=AUTH)
    assert result.as_numpy("predict").tolist() == model.predict(df).tolist()
    np.testing.assert_allclose(result.as_numpy("predict_proba"), model.predict_proba(df), atol=1e-5)
    if family == "logistic_regression":  # production: the same answer as /predict
        body = {"instances": records(rows), "include_probabilities": True}
        predicted = httpx.post(f"{app['url']}/predict", json=body, timeout=60).json()
        unversioned = outputs(infer(app["url"], rows).json())
        assert unversioned["predict"]["data"] == predicted["predictions"]
        flat = [p for row in predicted["probabilities"] for p in row]
        assert unversioned["predict_proba"]["data"] == flat


def test_v2_errors_are_400_naming_input_and_row(app, rows):
    url = app["url"]
    bad = v2_inputs(rows.head(3))
    bad[1]["data"][2] = "forty"  # age
    r = httpx.post(f"{url}/v2/models/{NAME}/infer", json={"inputs": bad}, timeout=60)
    assert r.status_code == 400 and "input 'age' row 2" in r.json()["error"], r.text
    r = httpx.post(f"{url}/v2/models/{NAME}/infer", json={"inputs": bad[:4]}, timeout=60)
    assert r.status_code == 400 and "region" in r.json()["error"], r.text
    assert httpx.get(f"{url}/v2/models/other", timeout=60).status_code == 404
    other = app["versions"]["random_forest"]  # not serving: the admin token names it
    r = httpx.post(f"{url}/v2/models/{NAME}/versions/{other}/infer", json={"inputs": bad})
    assert r.status_code == 401, r.text
    r = httpx.get(f"{url}/v2/models/{NAME}/versions/{other}", headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()["versions"] == [other]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_explanations_add_up_in_the_original_features(app, rows, family):
    version = app["versions"][family]
    model, meta = load_verified(app["reg"], NAME, version, app["key"])
    assert meta.explanations is not None and meta.explanations.ok, meta.explanations
    r = infer(app["url"], rows, version, parameters={"content_type": "pd", "explain": True})
    assert r.status_code == 200, r.text
    explained = [json.loads(e) for e in outputs(r.json())["explanations"]["data"]]
    proba = model.predict_proba(rows)
    space = "probability" if family == "random_forest" else "log_odds"
    for i, (e, (_, row)) in enumerate(zip(explained, rows.iterrows(), strict=True)):
        assert e["space"] == space
        assert set(e["contributions"]) == set(rows.columns)  # one-hot summed back
        assert sorted(e["imputed"]) == sorted(rows.columns[row.isna().to_numpy()])
        total = e["base_value"] + sum(e["contributions"].values())
        assert total == pytest.approx(e["output"], abs=1e-6)
        k = list(model.classes).index(e["class"])
        assert e["class"] == model.predict(rows.iloc[[i]])[0]  # multiclass: the predicted class
        if space == "probability":
            assert e["output"] == pytest.approx(proba[i, k], abs=1e-6)
        else:  # log-odds: the class's softmax logit
            assert math.isfinite(e["output"])
    if family == "logistic_regression":  # /predict answers the same for production
        body = {"instances": records(rows), "explain": True}
        predicted = httpx.post(f"{app['url']}/predict", json=body, timeout=60).json()
        assert predicted["explanations"] == explained
        many = pd.concat([rows] * 11).head(101)  # over max_explain_instances (100)
        body = {"instances": records(many), "explain": True}
        r = httpx.post(f"{app['url']}/predict", json=body, timeout=60)
        assert r.status_code == 413 and r.json()["details"][0]["feature"] == "explain", r.text
        r = infer(app["url"], many, parameters={"content_type": "pd", "explain": True})
        assert r.status_code == 413 and "limit is 100" in r.json()["error"], r.text
        assert infer(app["url"], many).status_code == 200  # without explain: served
