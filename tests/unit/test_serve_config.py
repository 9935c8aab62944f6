"""serve_config.yaml: consistent batching limits and a footprint that fits 2 CPUs."""

import yaml
from ray.serve.schema import ServeDeploySchema

from sparc_ray.serving.app import AppArgs
from tests.conftest import ROOT

CONFIG = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
APP = CONFIG["applications"][0]
DEPLOYMENTS = {d["name"]: d for d in APP["deployments"]}


def test_valid_serve_schema_and_typed_args():
    ServeDeploySchema.model_validate(CONFIG)
    assert AppArgs(**APP["args"]).model_name == "breast_cancer"
    assert set(DEPLOYMENTS) == {"Validator", "Model", "Postprocessor"}


def test_batches_always_fit_the_largest_request():
    v, m = DEPLOYMENTS["Validator"]["user_config"], DEPLOYMENTS["Model"]["user_config"]
    assert m["max_batch_rows"] >= v["batch_max_rows"] >= v["max_instances"]


def test_every_replica_at_max_scale_fits_on_two_cpus():
    total = 0.0
    for d in DEPLOYMENTS.values():
        replicas = d.get("autoscaling_config", {}).get("max_replicas", d.get("num_replicas", 1))
        total += replicas * d["ray_actor_options"]["num_cpus"]
    assert total <= 1.5  # leaves room for the proxy, controller and a training job


def test_every_subpackage_is_packaged():
    """A non-editable install (the Docker image) ships only regular packages."""
    from setuptools import find_packages

    assert {"sparc_ray", "sparc_ray.serving"} <= set(find_packages(ROOT, include=["sparc_ray*"]))
