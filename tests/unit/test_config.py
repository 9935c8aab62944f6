"""YAML + flag resolution for the training job."""

import argparse

import pytest

from sparc_ray.config import ConfigError, add_train_arguments, load_config
from tests.conftest import ROOT

IRIS = "name: m\ndata: {path: builtin:iris}\n"


def parse(*argv):
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return load_config(p.parse_args(["--config", str(ROOT / "tune/default.yaml"), *argv]))


def test_default_yaml_resolves():
    cfg = parse()
    assert cfg.name == "breast_cancer" and cfg.data["path"] == "builtin:breast_cancer"
    assert cfg.search["scheduler"] == "asha" and cfg.cv["n_folds"] == 5
    assert cfg.gates == {"accuracy": 0.70, "precision": 0.65, "recall": 0.65}
    assert set(cfg.search["space"]) == {
        "random_forest",
        "logistic_regression",
        "hist_gradient_boosting",
    }


def test_flags_override_yaml():
    cfg = parse(
        "--data",
        "x/loans.csv",
        "--target",
        "decision",
        "--store",
        "s3://b/m",
        "--num-samples",
        "3",
        "--scheduler",
        "fifo",
        "--no-promote",
        "--resume",
    )
    assert cfg.name == "loans"  # a new dataset gets its own model name
    assert cfg.data == {"path": "x/loans.csv", "target": "decision", "test_size": 0.2, "seed": 42}
    assert cfg.registry == {"store": "s3://b/m", "promote": False, "release": "production"}
    assert cfg.search["num_samples"] == 3 and cfg.search["scheduler"] == "fifo" and cfg.resume
    assert parse("--data", "x.csv", "--target", "t", "--name", "custom").name == "custom"
    canary = parse(
        "--data", "x.csv", "--target", "t", "--release", "canary", "--release-weight", "20"
    )
    assert canary.registry["release"] == "canary" and canary.registry["release_weight"] == 20


def test_every_example_yaml_is_valid():
    for path in (ROOT / "tune").glob("*.yaml"):
        p = argparse.ArgumentParser()
        add_train_arguments(p)
        assert load_config(p.parse_args(["--config", str(path)])).name


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: m\ndata: {path: a.csv}\nsearch: {space: {random_forest: {}}}", "data.target"),
        ("name: m\ndata: {path: builtin:iris}\nsearch: {space: {xgb: {}}}", "unknown model"),
        (
            f"{IRIS}search: {{sampler: bayes, space: {{random_forest: {{}}}}}}",
            "search.sampler",
        ),
        (
            f"{IRIS}cv: {{n_folds: 1}}\nsearch: {{space: {{random_forest: {{}}}}}}",
            "cv.n_folds",
        ),
        ("name: m\ndata: {path: builtin:iris}", "search.space"),
        ("name: [unclosed", "invalid YAML"),
        (f"{IRIS}serch: {{}}", "unknown top-level keys"),
    ],
)
def test_bad_config_names_the_key(tmp_path, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    with pytest.raises(ConfigError, match=message):
        load_config(p.parse_args(["--config", str(path)]))


def test_cpus_per_fold_is_checked_and_the_old_key_named(tmp_path):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    for search, message in (
        ({"cpus_per_trial": 1}, "now `search.cpus_per_fold`"),
        ({"cpus_per_fold": 0}, "positive number of CPUs"),
    ):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            f"name: m\ndata: {{path: 'builtin:iris'}}\n"
            f"search: {{space: {{logistic_regression: {{}}}}, {next(iter(search))}: "
            f"{next(iter(search.values()))}}}\n"
        )
        with pytest.raises(ConfigError, match=message):
            load_config(parser.parse_args(["--config", str(cfg)]))
