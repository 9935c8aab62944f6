"""Typed serving settings: one place for defaults, unknown keys and broken rules refused."""

import pytest
from pydantic import ValidationError

from sparc_ray.serving.settings import PostprocessorSettings, ServingSettings, ValidatorSettings


def test_defaults_and_unknown_keys():
    assert ValidatorSettings().batch_max_rows >= ValidatorSettings().max_instances
    with pytest.raises(ValidationError, match="batch_wait_timeout"):
        ValidatorSettings.model_validate({"batch_wait_timeout": 0.01})  # a typo is an error


def test_rules_inside_a_deployment():
    with pytest.raises(ValidationError, match="must be >= max_instances"):
        ValidatorSettings(max_instances=2000, batch_max_rows=1000)
    with pytest.raises(ValidationError, match="drift_min_rows"):
        PostprocessorSettings(drift_window_rows=100, drift_min_rows=500)


def test_a_serve_config_application_is_checked_deployment_by_deployment():
    app = {
        "deployments": [
            {"name": "Validator", "user_config": {"max_instances": 10, "batch_max_rows": 10}},
            {"name": "Model", "user_config": {"poll_interval_s": 0}},
        ]
    }
    with pytest.raises(ValidationError, match=r"Model\.poll_interval_s"):
        ServingSettings.from_app(app)


def test_a_pin_is_one_version_id():
    assert ValidatorSettings(model_version="v20261127-1").model_version == "v20261127-1"
    for bad in ("production", "latest", "../x", ""):
        with pytest.raises(ValidationError, match="model_version"):
            ValidatorSettings(model_version=bad)


def test_reload_body_is_strict():
    from sparc_ray.serving.admin import ReloadRequest
    from sparc_ray.serving.requests import RequestError

    assert ReloadRequest.parse(b"", 10_000) == ReloadRequest()
    assert ReloadRequest.parse(b'{"version": "production"}', 10_000) == ReloadRequest()
    assert ReloadRequest.parse(b'{"version": "v1", "force": true}', 10_000) == ReloadRequest(
        "v1", True
    )
    for raw, field in (
        (b'{"version": {}}', "version"),
        (b'{"version": false}', "version"),
        (b'{"version": " "}', "version"),
        (b'{"version": "v1", "force": "yes"}', "force"),
        (b'{"versions": "v1"}', "versions"),
    ):
        with pytest.raises(RequestError) as info:
            ReloadRequest.parse(raw, 10_000)
        assert info.value.status == 422 and info.value.details[0]["feature"] == field
    with pytest.raises(RequestError):
        ReloadRequest.parse(b"[1]", 10_000)
