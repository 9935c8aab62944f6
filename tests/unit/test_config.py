"""YAML + flag resolution for the training job: typed sections, every bad key named."""

import argparse

import pytest
import yaml

from sparc_ray.training.config import (
    DEFAULT_GATES,
    ConfigError,
    CVConfig,
    DataConfig,
    SearchConfig,
    TrainConfig,
)
from sparc_ray.training.job_args import add_train_arguments, load_config
from tests.conftest import ROOT

IRIS = "name: m\ndata: {path: builtin:iris}\n"
SPACE = "search: {space: {random_forest: {}}}\n"


def parse(*argv):
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return load_config(p.parse_args(["--config", str(ROOT / "tune/default.yaml"), *argv]))


def load(tmp_path, text, *argv):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return load_config(p.parse_args(["--config", str(path), *argv]))


def error(tmp_path, text, *argv) -> str:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text, *argv)
    return str(exc.value)


def test_default_yaml_resolves():
    cfg = parse()
    assert cfg.name == "breast_cancer" and cfg.data.path == "builtin:breast_cancer"
    assert cfg.search.scheduler == "asha" and cfg.cv.n_folds == 5
    assert cfg.search.asha.reduction_factor == 2 and cfg.search.cpus_per_fold == 1
    assert cfg.gates == {"accuracy": 0.70, "precision": 0.65, "recall": 0.65}
    assert set(cfg.search.space) == {
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
    assert cfg.data.model_dump() == {
        "path": "x/loans.csv",
        "target": "decision",
        "test_size": 0.2,
        "seed": 42,
        "since": None,
        "with_training_data": False,
    }
    assert cfg.registry.model_dump() == {
        "store": "s3://b/m",
        "promote": False,
        "release": "production",
        "release_weight": None,
        "release_policy": None,
    }
    assert cfg.search.num_samples == 3 and cfg.search.scheduler == "fifo" and cfg.resume
    assert parse("--data", "x.csv", "--target", "t", "--name", "custom").name == "custom"
    assert parse("--data", "builtin:iris").name == "breast_cancer"  # a builtin keeps the name
    canary = parse(
        "--data", "x.csv", "--target", "t", "--release", "canary", "--release-weight", "20"
    )
    assert canary.registry.release == "canary" and canary.registry.release_weight == 20


def test_a_flag_replaces_a_bad_yaml_value_and_a_bad_flag_is_named(tmp_path):
    text = f"{IRIS}cv: {{n_folds: 1}}\n{SPACE}"
    assert load(tmp_path, text, "--n-folds", "3").cv.n_folds == 3
    assert "`cv.n_folds` must be an integer, at least 2, got 1" in error(tmp_path, text)
    assert "`cv.n_folds`" in error(tmp_path, IRIS + SPACE, "--n-folds", "1")


def test_every_example_yaml_is_valid_and_keeps_its_values():
    paths = sorted((ROOT / "tune").glob("*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        p = argparse.ArgumentParser()
        add_train_arguments(p)
        dumped = load_config(p.parse_args(["--config", str(path)])).model_dump()
        for section, values in yaml.safe_load(path.read_text()).items():
            if isinstance(values, dict):
                assert {k: dumped[section][k] for k in values} == values, (path, section)
            else:
                assert dumped[section] == values, (path, section)


def test_defaults_are_the_old_ones(tmp_path):
    cfg = load(tmp_path, IRIS + SPACE)
    # What the dict-based loader's _apply_defaults filled in.
    assert cfg.data.model_dump() == {
        "path": "builtin:iris",
        "target": None,
        "test_size": 0.2,
        "seed": 42,
        "since": None,
        "with_training_data": False,
    }
    assert cfg.cv.model_dump() == {"n_folds": 5, "scoring": "accuracy"}
    assert cfg.search.model_dump() == {
        "sampler": "grid",
        "num_samples": 1,
        "scheduler": "asha",
        "asha": {"grace_period": 1, "reduction_factor": 2},
        "cpus_per_fold": 1,
        "max_concurrent_trials": None,
        "max_failures": 3,  # (new: trials and folds survive a lost node)
        "fold_retries": 3,
        "allow_incomplete": False,
        "storage_path": "ray_results",
        "space": {"random_forest": {}},
    }
    assert cfg.registry.model_dump() == {
        "store": "model_store",
        "promote": True,
        "release": "production",
        "release_weight": None,
        "release_policy": None,
    }
    assert cfg.gates == DEFAULT_GATES and not cfg.resume
    # The same defaults for configs built in code (benchmarks, tests).
    assert CVConfig() == cfg.cv and SearchConfig(space={"random_forest": {}}) == cfg.search
    assert TrainConfig(name="m", data=DataConfig(path="builtin:iris"), search=cfg.search) == cfg


def test_gates_omitted_null_or_empty(tmp_path):
    assert load(tmp_path, IRIS + SPACE + "gates:\n").gates == DEFAULT_GATES
    assert load(tmp_path, IRIS + SPACE + "gates: {}\n").gates == {}
    assert load(tmp_path, IRIS + SPACE + "gates: {f1: 0.5, roc_auc: 1}\n").gates == {
        "f1": 0.5,
        "roc_auc": 1.0,
    }


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        (f"{IRIS}{SPACE}serch: {{}}", "serch"),
        (f"name: m\ndata: {{path: builtin:iris, targte: y}}\n{SPACE}", "data.targte"),
        (f"{IRIS}cv: {{nfolds: 3}}\n{SPACE}", "cv.nfolds"),
        (f"{IRIS}search: {{schedular: fifo, space: {{random_forest: {{}}}}}}", "search.schedular"),
        (
            f"{IRIS}search: {{asha: {{grace_periode: 2}}, space: {{random_forest: {{}}}}}}",
            "search.asha.grace_periode",
        ),
        (f"{IRIS}{SPACE}registry: {{promot: false}}", "registry.promot"),
        (f"{IRIS}{SPACE}resume: true", "resume"),
    ],
)
def test_unknown_key_is_named_with_its_dotted_path(tmp_path, yaml_text, key):
    message = error(tmp_path, yaml_text)
    assert message.startswith(f"{tmp_path / 'c.yaml'}: unknown key `{key}`"), message


def test_a_typo_gets_a_suggestion_and_an_unknown_gate_is_named(tmp_path):
    message = error(tmp_path, f"{IRIS}search: {{schedular: fifo, space: {{random_forest: {{}}}}}}")
    assert message.endswith("(did you mean `search.scheduler`?)")
    assert "`gates.acuracy`: unknown metric" in error(
        tmp_path, f"{IRIS}{SPACE}gates: {{acuracy: 1}}"
    )


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: m\ndata: {path: a.csv}\n" + SPACE, "`data.target` is required for a file dataset"),
        ("data: {path: builtin:iris}\n" + SPACE, "`name` is required (or pass --name)"),
        ("name: m\n" + SPACE, "`data.path` is required (or pass --data)"),
        (f"{IRIS}search: {{space: {{xgb: {{}}}}}}", "`search.space.xgb`: unknown model family"),
        (f"{IRIS}search: {{space: {{random_forest: 3}}}}", "`search.space.random_forest` must be"),
        (IRIS, "`search.space` is required"),
        (f"{IRIS}search: {{space: {{}}}}", "`search.space` must map model families"),
        (f"{IRIS}search: {{sampler: bayes, {SPACE[9:-2]}}}", "`search.sampler` must be grid or"),
        (f"{IRIS}search: {{scheduler: hb, {SPACE[9:-2]}}}", "`search.scheduler` must be asha or"),
        (f"{IRIS}search: {{num_samples: 0, {SPACE[9:-2]}}}", "`search.num_samples` must be an"),
        (f"{IRIS}search: {{num_samples: 1.5, {SPACE[9:-2]}}}", "`search.num_samples` must be an"),
        (f"{IRIS}search: {{asha: {{reduction_factor: 1}}, {SPACE[9:-2]}}}", "greater than 1"),
        (f"{IRIS}cv: {{n_folds: 1}}\n{SPACE}", "`cv.n_folds` must be an integer, at least 2"),
        (f"{IRIS}cv: {{n_folds: five}}\n{SPACE}", "`cv.n_folds` must be an integer"),
        ("name: m\ndata: {path: builtin:iris, test_size: 1}\n" + SPACE, "`data.test_size` must"),
        ("name: m\ndata: {path: builtin:iris, test_size: '0.2'}\n" + SPACE, "got '0.2'"),
        (f"{IRIS}{SPACE}registry: {{release: blue}}", "`registry.release` must be production,"),
        (f"{IRIS}{SPACE}registry: {{release_weight: 0}}", "a percent in (0, 100]"),
        (f"{IRIS}{SPACE}registry: {{promote: 'no'}}", "`registry.promote` must be true or false"),
        (f"{IRIS}{SPACE}gates: {{precision: high}}", "`gates.precision` must be a number"),
        (f"{IRIS}{SPACE}gates: {{accuracy: 70}}", "`gates.accuracy` must be in [0, 1]"),
        (f"{IRIS}{SPACE}gates: [accuracy]", "`gates` must be a mapping"),
        (f"{IRIS}data: builtin:iris\n{SPACE}", "`data` must be a mapping"),
        ("- a list", "must be a mapping of sections"),
        ("name: [unclosed", "invalid YAML"),
    ],
)
def test_bad_value_names_the_key_and_the_rule(tmp_path, yaml_text, message):
    got = error(tmp_path, yaml_text)
    assert message in got and got.startswith(f"{tmp_path / 'c.yaml'}: "), got


def test_every_problem_is_one_line_naming_the_file(tmp_path):
    text = (
        "name: m\ndata: {path: builtin:iris, test_size: 2}\ncv: {nfolds: 3}\n"
        "search: {sampler: bayes, space: {random_forest: {}}}\n"
    )
    lines = error(tmp_path, text).splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [str(tmp_path / "c.yaml")] * 3
    assert ["`data.test_size`" in lines[0], "`cv.nfolds`" in lines[1]] == [True, True]
    assert "`search.sampler`" in lines[2]


def test_cpus_per_fold_is_checked_and_the_old_key_named(tmp_path):
    for value, message in (
        ("cpus_per_trial: 1", "`search.cpus_per_trial` is now `search.cpus_per_fold`"),
        ("cpus_per_fold: 0", "`search.cpus_per_fold` must be a positive number of CPUs"),
        ("cpus_per_fold: true", "positive number of CPUs, got True"),
    ):
        text = f"{IRIS}search: {{space: {{logistic_regression: {{}}}}, {value}}}\n"
        assert message in error(tmp_path, text)
    assert (
        load(tmp_path, f"{IRIS}search: {{{SPACE[9:-2]}, cpus_per_fold: 0.5}}").search.cpus_per_fold
        == 0.5
    )


def test_capture_data_needs_no_target_and_takes_since(tmp_path):
    cfg = load(tmp_path, SPACE, "--data", "capture:model_store/loans", "--since", "7d")
    assert cfg.name == "loans" and cfg.data.target is None and cfg.data.since == "7d"
    with pytest.raises(ConfigError, match="apply to capture: data only"):
        load(tmp_path, IRIS + SPACE, "--with-training-data")


def test_capture_data_takes_productions_target_not_the_configs():
    """tune/default.yaml names `target: target`; captured rows carry production's own target
    (e.g. `diagnosis`), so the config's is dropped and an explicit --target is an error."""
    cfg = parse("--data", "capture:model_store/loans", "--name", "loans")
    assert cfg.data.target is None
    with pytest.raises(ConfigError, match="--target does not apply to capture: data"):
        parse("--data", "capture:model_store/loans", "--name", "loans", "--target", "y")
