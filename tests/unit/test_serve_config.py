"""serve_config.yaml: valid typed settings and a footprint that fits 2 CPUs."""

import yaml
from ray.serve.schema import ServeDeploySchema

from sparc_ray.serving.app import AppArgs
from sparc_ray.serving.settings import ServingSettings
from tests.conftest import ROOT

CONFIG = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
APP = CONFIG["applications"][0]
DEPLOYMENTS = {d["name"]: d for d in APP["deployments"]}


def test_valid_serve_schema_and_typed_args():
    ServeDeploySchema.model_validate(CONFIG)
    assert AppArgs(**APP["args"]).model_name == "breast_cancer"
    assert set(DEPLOYMENTS) == {"Validator", "Model", "Postprocessor", "Explainer"}


def test_every_user_config_is_valid_typed_settings():
    settings = ServingSettings.from_app(APP)
    assert settings.Validator.batch_max_rows >= settings.Validator.max_instances


def footprint(scale: str) -> float:
    total = 0.0
    for d in DEPLOYMENTS.values():
        auto = d.get("autoscaling_config", {})
        replicas = auto.get(f"{scale}_replicas", d.get("num_replicas", 1))
        total += replicas * d["ray_actor_options"]["num_cpus"]
    return total


def test_the_app_fits_on_two_cpus_beside_a_training_trial():
    assert footprint("min") <= 1.0  # a 1-CPU Tune trial still schedules on a 2-CPU node
    assert footprint("max") <= 1.5  # leaves room for the proxy and controller


def test_every_subpackage_is_packaged():
    """A non-editable install (the Docker image) ships only regular packages."""
    from setuptools import find_packages

    assert {"sparc_ray", "sparc_ray.serving"} <= set(find_packages(ROOT, include=["sparc_ray*"]))
