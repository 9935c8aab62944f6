"""`sparc-ray models ...` against a real registry on disk."""

import json

import pytest

from sparc_ray.cli import main
from sparc_ray.registry.store import ModelRegistry


@pytest.fixture
def store(tmp_path, trained_loans_model):
    reg = ModelRegistry(tmp_path / "store")
    for passed in (True, True, False):
        gates = {"passed": passed, "failed": [] if passed else ["accuracy"]}
        reg.publish(
            "loans",
            trained_loans_model,
            {
                "gates": gates,
                "classes": ["a", "b"],
                "features": [{"name": "x", "kind": "numeric"}],
                "model_type": "random_forest",
                "metrics": {"holdout": {"accuracy": 0.9}},
            },
        )
    return reg


def test_list_show_promote_rollback(store, capsys):
    v1, v2, failed = store.versions("loans")
    args = ["--store", str(store.root_path), "--name", "loans"]
    assert main(["models", "promote", v1, *args]) == 0
    assert main(["models", "promote", v2, *args]) == 0
    assert main(["models", "promote", failed, *args]) == 2
    assert "failed its gates" in capsys.readouterr().err
    assert main(["models", "list", "--store", str(store.root_path)]) == 0
    listing = capsys.readouterr().out
    assert f" * {v2}" in listing and "gates=FAIL" in listing and "production: " + v2 in listing
    assert main(["models", "show", *args]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == v2
    assert main(["models", "rollback", *args]) == 0
    assert store.alias("loans") == v1
    assert main(["models", "show", "v-nope", *args]) == 2


def test_train_command_rejects_bad_input_before_starting_ray(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
