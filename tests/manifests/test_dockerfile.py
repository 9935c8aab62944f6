"""The Dockerfile: the Ray release the manifests pin (its base image tag) is the installed
one's, it runs as a non-root user in /home/ray, and installs the hash-locked
dependencies."""

from __future__ import annotations

from importlib.metadata import version as dist_version

from tests.manifests.helpers import (
    PY_TAG,
    RAY_VERSION,
    ROOT,
)


def test_pinned_ray_matches_installed_ray():
    # Same release line as the venv the tests and the Serve config were checked with.
    installed = dist_version("ray")
    assert installed.split(".")[:2] == RAY_VERSION.split(".")[:2], (installed, RAY_VERSION)


def test_dockerfile_matches_manifests():
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    assert froms == [f"rayproject/ray:{RAY_VERSION}-{PY_TAG}"]
    users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    workdirs = [ln.split()[1] for ln in lines if ln.upper().startswith("WORKDIR ")]
    assert workdirs[-1] == "/home/ray", "Ray's working dir must stay /home/ray (model_store)"
    # The locked versions with their sha256, then the package without resolving anything.
    assert any(
        "pip install --no-cache-dir --require-hashes -r requirements.lock" in ln for ln in lines
    )
    assert any("pip install --no-cache-dir --no-deps ." in ln for ln in lines)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignored)
