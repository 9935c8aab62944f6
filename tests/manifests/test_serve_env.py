"""serve.env is the one source of Ray Serve's fast-path environment.

The Makefile includes it; the Dockerfile (ENV) and every Ray container of the KubeRay
manifests (head and worker groups of the RayCluster, the RayJobs' rayClusterSpec and the
RayService's rayClusterConfig) repeat its values, and this test keeps them equal.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from sparc_ray.serving.fastpath import read_env
from tests.manifests.helpers import RAY_DOCS, ROOT, cluster_spec

SERVE_ENV = ROOT / "serve.env"
MANIFESTS = ("raycluster.yaml", "rayjob-train.yaml", "rayjob-score.yaml", "rayservice.yaml")
# Serve's fast path: HAProxy ingress and throughput-optimized replicas.
FAST_PATH_KEYS = {"RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED"}
# Variables under this prefix in the Dockerfile / manifests must all come from serve.env.
PREFIX = "RAY_SERVE_"


def _serve_env() -> dict[str, str]:
    return read_env(SERVE_ENV)


def _dockerfile_env() -> dict[str, str]:
    """Variables set by the Dockerfile's ENV instructions (continuations joined)."""
    instructions, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        instructions.append(current + stripped)
        current = ""
    if current:
        instructions.append(current)
    env: dict[str, str] = {}
    for ins in instructions:
        keyword, _, rest = ins.partition(" ")
        if keyword.upper() != "ENV":
            continue
        words = shlex.split(rest)
        if "=" in words[0]:  # ENV KEY=VALUE [KEY=VALUE ...]
            for word in words:
                key, sep, value = word.partition("=")
                assert sep, f"Dockerfile: malformed ENV {ins!r}"
                env[key] = value
        else:  # legacy ENV KEY VALUE
            env[words[0]] = rest.split(None, 1)[1].strip() if len(words) > 1 else ""
    return env


def _load(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((ROOT / "kuberay" / name).read_text()) if d]
    assert len(docs) == 1, f"kuberay/{name}: expected one document"
    return docs[0]


def _ray_containers() -> list[tuple[str, dict]]:
    """(id, container) of every container of every Ray pod template (head and workers)."""
    out = []
    for name in MANIFESTS:
        cluster = cluster_spec(_load(name))
        groups = [("head", cluster["headGroupSpec"])]
        groups += [(f"worker/{g['groupName']}", g) for g in cluster["workerGroupSpecs"]]
        for role, group in groups:
            for c in group["template"]["spec"]["containers"]:
                out.append((f"{name}:{role}:{c['name']}", c))
    return out


CONTAINERS = _ray_containers()


def test_serve_env_holds_the_fast_path():
    env = _serve_env()
    assert set(env) >= FAST_PATH_KEYS, f"serve.env lacks {sorted(FAST_PATH_KEYS - set(env))}"
    for key, value in env.items():
        assert key.startswith(PREFIX), f"serve.env: {key} is not a Ray Serve variable"
        assert value, f"serve.env: {key} has no value"


def test_dockerfile_env_equals_serve_env():
    expected = _serve_env()
    env = _dockerfile_env()
    for key, value in expected.items():
        assert env.get(key) == value, f"Dockerfile: ENV {key}={env.get(key)!r}, serve.env {value!r}"
    extra = {k for k in env if k.startswith(PREFIX)} - set(expected)
    assert not extra, f"Dockerfile sets {sorted(extra)}, which serve.env does not have"


def test_serve_env_checks_cover_every_ray_manifest():
    files = {Path(src).name for src, _ in RAY_DOCS}
    missing = files - set(MANIFESTS)
    assert not missing, f"add {sorted(missing)} to MANIFESTS"


def test_every_ray_pod_template_found():
    roles = {cid.rsplit(":", 1)[0] for cid, _ in CONTAINERS}
    for name in MANIFESTS:
        assert f"{name}:head" in roles, name
        assert any(r.startswith(f"{name}:worker/") for r in roles), name


@pytest.mark.parametrize(("cid", "container"), CONTAINERS, ids=[c for c, _ in CONTAINERS])
def test_ray_container_env_equals_serve_env(cid, container):
    expected = _serve_env()
    entries = container.get("env", [])
    names = [e["name"] for e in entries]
    env = {e["name"]: e for e in entries}
    for key, value in expected.items():
        assert names.count(key) == 1, f"{cid}: env {key} appears {names.count(key)} times"
        assert "valueFrom" not in env[key], f"{cid}: env {key} must be a literal value"
        assert env[key].get("value") == value, (
            f"{cid}: env {key}={env[key].get('value')!r}, serve.env {value!r}"
        )
    extra = {n for n in names if n.startswith(PREFIX)} - set(expected)
    assert not extra, f"{cid} sets {sorted(extra)}, which serve.env does not have"


def test_makefile_includes_serve_env():
    lines = [ln.strip() for ln in (ROOT / "Makefile").read_text().splitlines()]
    assert "include serve.env" in lines


def test_readme_mentions_serve_env():
    assert "serve.env" in (ROOT / "README.md").read_text()
