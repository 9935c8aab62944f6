"""The RayService: serveConfigV2 equals serve_config.yaml (and both pass ServeDeploySchema), the
app reads the model store from the mounted volume, and Serve traffic never goes through the
head."""

from __future__ import annotations

import yaml

from tests.manifests.helpers import (
    MODEL_STORE_MOUNT,
    cluster_spec,
    only,
    serve_config,
)


def test_serve_config_v2_equals_serve_config_yaml():
    embedded = yaml.safe_load(only("RayService")["spec"]["serveConfigV2"])
    reference = serve_config()
    assert embedded["applications"] == reference["applications"], (
        "kuberay/rayservice.yaml serveConfigV2.applications differs from serve_config.yaml"
    )
    for key in set(embedded) - {"applications"}:
        assert key in reference and embedded[key] == reference[key], (
            f"serveConfigV2.{key} differs from serve_config.yaml"
        )


def test_serve_configs_pass_ray_serve_schema():
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config())
    ServeDeploySchema.model_validate(yaml.safe_load(only("RayService")["spec"]["serveConfigV2"]))


def test_serve_app_reads_model_store_from_the_mounted_volume():
    # Ray workers run in the image WORKDIR /home/ray (see Dockerfile), so a relative
    # model_store must be the mount point's name there.
    for app in yaml.safe_load(only("RayService")["spec"]["serveConfigV2"])["applications"]:
        store = app["args"]["model_store"]
        resolved = store if store.startswith("/") else f"/home/ray/{store}"
        assert "://" in store or resolved.rstrip("/") == MODEL_STORE_MOUNT, store


def test_serve_traffic_never_depends_on_the_head():
    service = only("RayService")
    cluster = cluster_spec(service)
    assert service["spec"]["excludeHeadPodFromServeSvc"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no replicas there
    assert yaml.safe_load(service["spec"]["serveConfigV2"])["proxy_location"] == "EveryNode"
