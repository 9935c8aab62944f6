"""Secrets across the manifests: the serving tokens come from one Secret each, the signing key
reaches only the training driver and the public key only the service and the scoring driver,
and each long-lived cluster has its own Ray token."""

from __future__ import annotations

from tests.manifests.helpers import (
    KEYS_DIR,
    PUBLIC_KEY_CONFIGMAP,
    RAY_DOCS,
    SCORE_JOB,
    SIGNING_KEY_SECRET,
    TRAIN_JOB,
    cluster_spec,
    doc_id,
    entrypoint,
    flag_values,
    mounts,
    only,
    pod_templates,
    ray_containers,
    secret,
    secret_names,
    serve_config,
)


def test_secrets_referenced_consistently():
    (args,) = [app["args"] for app in serve_config()["applications"]]
    assert args["admin_token_env"] == "SPARC_ADMIN_TOKEN"
    assert args["feedback_token_env"] == "SPARC_FEEDBACK_TOKEN"
    for _, doc in RAY_DOCS:
        auth = cluster_spec(doc)["authOptions"]
        if "secretName" in auth:
            assert "auth_token" in secret(auth["secretName"])["stringData"]
    refs = set()
    for role, c in ray_containers(only("RayService")):
        env = {e["name"]: e for e in c.get("env", [])}
        if role == "head":  # it runs no Validator replica: it never holds an API token
            assert not env.keys() & {"SPARC_ADMIN_TOKEN", "SPARC_FEEDBACK_TOKEN"}, env.keys()
            continue
        for var in ("SPARC_ADMIN_TOKEN", "SPARC_FEEDBACK_TOKEN"):
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secret(ref["name"])["stringData"], role
            refs.add((var, ref["name"]))
    assert len({name for _, name in refs}) == 2, refs  # one Secret per token


def test_signing_key_reaches_only_the_training_driver_and_the_public_key_the_service():
    (args,) = [app["args"] for app in serve_config()["applications"]]
    assert args["public_key"] == "keys/model_signing.pub"  # relative: /home/ray/keys/...
    flags = flag_values(entrypoint())
    assert flags["--signing-key"] == f"{KEYS_DIR}/model_signing.key"
    for src, doc in RAY_DOCS:
        for role, tpl in pod_templates(doc):
            volumes = {v["name"]: v for v in tpl["spec"].get("volumes", [])}
            for c in tpl["spec"]["containers"]:
                keys = mounts(c, volumes, KEYS_DIR)
                if doc_id(doc) == f"RayJob/{TRAIN_JOB}" and role == "head":
                    (key,) = keys
                    assert key["secret"]["secretName"] == SIGNING_KEY_SECRET
                    assert key["secret"]["defaultMode"] == 0o400 and key["mount"]["readOnly"]
                    assert "model_signing.key" in secret(SIGNING_KEY_SECRET)["stringData"]
                elif doc["kind"] == "RayService" or (
                    doc_id(doc) == f"RayJob/{SCORE_JOB}" and role == "head"
                ):  # the Serve replicas, the scoring driver: the public key, read-only
                    (key,) = keys
                    assert key["configMap"]["name"] == PUBLIC_KEY_CONFIGMAP
                    assert key["mount"]["readOnly"], (src, role)
                else:  # RayJob workers and submitters, the dev cluster: no key at all
                    assert not keys, (src, role)
                if doc_id(doc) != f"RayJob/{TRAIN_JOB}" or role != "head":
                    assert SIGNING_KEY_SECRET not in secret_names(tpl), (src, role)


def test_each_cluster_has_its_own_ray_token():
    # A named Secret per long-lived cluster (secret.example.yaml, created by hand). Without
    # secretName KubeRay generates one per RayCluster (the scoring job: a new token per run).
    auth = {doc_id(doc): cluster_spec(doc)["authOptions"] for _, doc in RAY_DOCS}
    names = [a["secretName"] for a in auth.values() if "secretName" in a]
    assert len(names) == len(set(names)) == 3, names
    for name in names:
        assert "auth_token" in secret(name)["stringData"], name
    assert "secretName" not in auth[f"RayJob/{SCORE_JOB}"]
