"""Kustomize: the base kustomization and the pinned overlay list the same files (every deployed
Ray resource and Redis), the overlay pins every image by digest, and both build with
`kubectl kustomize` (skipped without kubectl)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.manifests.helpers import (
    CRD_SCHEMAS,
    DOCS,
    KUBERAY,
    MONITORING,
    NAMESPACE,
    RAY_DOCS,
    ROOT,
    pod_containers,
    pod_templates,
)


@pytest.mark.parametrize("kdir", [KUBERAY, MONITORING], ids=["kuberay", "monitoring"])
def test_kustomization_lists_existing_files(kdir):
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    for res in k.get("resources", []):
        assert (kdir / res).is_file(), f"{kdir.name}/kustomization.yaml: missing {res}"
    for gen in k.get("configMapGenerator", []):
        for f in gen.get("files", []):
            assert (kdir / f.split("=")[-1]).is_file(), f
    if shutil.which("kubectl"):
        proc = subprocess.run(
            ["kubectl", "kustomize", str(kdir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr


OVERLAY = KUBERAY / "overlays" / "pinned"
# The overlay lies inside its base's directory, so it lists the base's files (kustomize
# refuses `../..`: "cycle detected"), which lie outside its default load root.
OVERLAY_BUILD = ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone"]


def _base_resources() -> list[str]:
    return yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())["resources"]


def test_the_base_bundle_holds_every_deployed_ray_resource():
    # Everything but the interactive dev cluster: the RayService and both RayJobs.
    listed = {(KUBERAY / r).resolve() for r in _base_resources()}
    for src, doc in RAY_DOCS:
        if doc["kind"] != "RayCluster":
            assert (ROOT / src).resolve() in listed, f"{src} is not in kuberay/kustomization.yaml"


def test_the_base_bundle_deploys_redis_with_the_rayservice():
    base = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())["resources"]
    assert "rayservice.yaml" in base and "redis.yaml" in base


def test_the_pinned_overlay_lists_exactly_the_base_resources():
    k = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    overlay = [(OVERLAY / r).resolve() for r in k["resources"]]
    assert overlay == [(KUBERAY / r).resolve() for r in _base_resources()], (
        "overlays/pinned/kustomization.yaml `resources` differ from the base's list"
    )
    base = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    assert k.get("namespace") == base.get("namespace") == NAMESPACE


def test_the_pinned_overlay_replaces_every_image_by_a_digest():
    k = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    images = {image["name"]: image for image in k["images"]}
    assert len(images) == len(k["images"]), "an image is listed twice"
    for image in images.values():
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", image["digest"]) and "newTag" not in image
    listed = {(OVERLAY / r).resolve() for r in k["resources"]}
    for src, doc in DOCS:
        if (ROOT / src).resolve() not in listed:
            continue
        # What the overlay deploys: every container image is matched by a digest entry.
        if doc["kind"] in CRD_SCHEMAS:
            containers = [
                (role, c) for role, tpl in pod_templates(doc) for c in pod_containers(tpl)
            ]
        elif doc["kind"] == "Deployment":
            containers = [("pod", c) for c in pod_containers(doc["spec"]["template"])]
        else:
            continue
        for role, c in containers:
            assert c["image"].split("@")[0].split(":")[0] in images, (src, role, c["image"])


def _images(node) -> list[str]:
    """Every `image:` value under a built manifest."""
    if isinstance(node, dict):
        own = [node["image"]] if isinstance(node.get("image"), str) else []
        return own + [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def test_the_pinned_overlay_builds_with_kustomize():
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed: the overlay is not built")
    proc = subprocess.run(
        [*OVERLAY_BUILD, str(OVERLAY)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    built = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in built)
    base = subprocess.run(
        ["kubectl", "kustomize", str(KUBERAY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert base.returncode == 0, base.stderr
    assert kinds == sorted(
        (d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(base.stdout) if d
    )
    images = [i for d in built for i in _images(d.get("spec", {}))]
    assert images and all(re.search(r"@sha256:[0-9a-f]{64}$", i) for i in images), images
