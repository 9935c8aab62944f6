"""Training-job configuration: a tune/*.yaml file with command-line overrides."""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Seed thresholds: a model below any of them is stored but never promoted.
DEFAULT_GATES = {"accuracy": 0.70, "precision": 0.65, "recall": 0.65}
# The estimator families of sparc_ray.models.MODEL_FAMILIES (named here so that reading a
# config does not import scikit-learn).
MODEL_FAMILY_NAMES = ("random_forest", "logistic_regression", "hist_gradient_boosting")

DEFAULT_CONFIG = "tune/default.yaml"


class ConfigError(ValueError):
    """The YAML or a flag is invalid; the message names the key."""


@dataclass
class TrainConfig:
    """Everything one training run needs: the YAML's sections after flags and defaults."""

    name: str
    data: dict[str, Any]
    cv: dict[str, Any]
    search: dict[str, Any]
    gates: dict[str, float]
    registry: dict[str, Any]
    resume: bool = False


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="search-space YAML")
    parser.add_argument("--data", help="CSV/Parquet path or URI, or builtin:NAME")
    parser.add_argument("--target", help="label column")
    parser.add_argument("--name", help="registry model name")
    parser.add_argument("--store", help="registry root: directory or URI")
    parser.add_argument("--storage-path", help="Tune experiment storage: directory or URI")
    parser.add_argument("--num-samples", type=int, help="grid repeats / random configs per family")
    parser.add_argument("--scheduler", choices=["asha", "fifo"])
    parser.add_argument("--n-folds", type=int, help="CV folds per trial")
    parser.add_argument("--resume", action="store_true", help="continue the latest experiment")
    parser.add_argument(
        "--no-promote", action="store_true", help="store the model without promoting it"
    )
    parser.add_argument(
        "--release",
        choices=["production", "canary", "shadow"],
        help="when the gates pass: promote (default), or hand the version to a canary / "
        "shadow release decided by the release policy",
    )
    parser.add_argument("--release-weight", type=float, help="canary / shadow traffic percent")
    parser.add_argument("--release-policy", help="release policy YAML")
    parser.add_argument(
        "--signing-key",
        help="Ed25519 private key PEM that signs the published version (default: the file in "
        "$SPARC_SIGNING_KEY_FILE, or the PEM text in $SPARC_SIGNING_KEY; none: unsigned)",
    )


def load_config(args: argparse.Namespace) -> TrainConfig:
    path = Path(args.config)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    raw = copy.deepcopy(raw)
    raw.setdefault("data", {})
    raw.setdefault("cv", {})
    raw.setdefault("search", {})
    raw.setdefault("registry", {})
    raw.setdefault("gates", dict(DEFAULT_GATES))
    overrides = {
        ("data", "path"): args.data,
        ("data", "target"): args.target,
        ("registry", "store"): args.store,
        ("search", "storage_path"): args.storage_path,
        ("search", "num_samples"): args.num_samples,
        ("search", "scheduler"): args.scheduler,
        ("cv", "n_folds"): args.n_folds,
        ("registry", "release"): getattr(args, "release", None),
        ("registry", "release_weight"): getattr(args, "release_weight", None),
        ("registry", "release_policy"): getattr(args, "release_policy", None),
    }
    for (section, key), value in overrides.items():
        if value is not None:
            raw[section][key] = value
    if args.data and not args.name and not args.data.startswith("builtin:"):
        raw["name"] = Path(args.data.split("?")[0]).stem  # a new dataset, a new model name
    if args.name:
        raw["name"] = args.name
    if args.no_promote:
        raw["registry"]["promote"] = False
    _apply_defaults(raw)
    _check(raw, path)
    sections = ("name", "data", "cv", "search", "gates", "registry")
    return TrainConfig(**{k: raw[k] for k in sections}, resume=bool(args.resume))


def _apply_defaults(raw: dict[str, Any]) -> None:
    raw["data"].setdefault("test_size", 0.2)
    raw["data"].setdefault("seed", 42)
    raw["cv"].setdefault("n_folds", 5)
    raw["cv"].setdefault("scoring", "accuracy")
    s = raw["search"]
    for key, value in {
        "sampler": "grid",
        "num_samples": 1,
        "scheduler": "asha",
        "cpus_per_fold": 1,
        "max_concurrent_trials": None,
        "storage_path": "ray_results",
    }.items():
        s.setdefault(key, value)
    s.setdefault("asha", {})
    s["asha"].setdefault("grace_period", 1)
    s["asha"].setdefault("reduction_factor", 2)
    raw["registry"].setdefault("store", "model_store")
    raw["registry"].setdefault("promote", True)
    raw["registry"].setdefault("release", "production")


def _check(raw: dict[str, Any], path: Path) -> None:
    def fail(msg: str) -> None:
        raise ConfigError(f"{path}: {msg}")

    unknown = sorted(set(raw) - {"name", "data", "cv", "search", "gates", "registry"})
    if unknown:
        fail(f"unknown top-level keys {unknown}")
    if not raw.get("name"):
        fail("`name` (registry model name) is required")
    if not raw["data"].get("path"):
        fail("`data.path` is required (or pass --data)")
    if not raw["data"].get("target") and not str(raw["data"]["path"]).startswith("builtin:"):
        fail("`data.target` is required for a file dataset (or pass --target)")
    if not 0 < float(raw["data"]["test_size"]) < 1:
        fail("`data.test_size` must be between 0 and 1")
    if int(raw["cv"]["n_folds"]) < 2:
        fail("`cv.n_folds` must be at least 2")
    s = raw["search"]
    if s["sampler"] not in {"grid", "random"}:
        fail("`search.sampler` must be grid or random")
    if s["scheduler"] not in {"asha", "fifo"}:
        fail("`search.scheduler` must be asha or fifo")
    if int(s["num_samples"]) < 1:
        fail("`search.num_samples` must be at least 1")
    if "cpus_per_trial" in s:  # trials hold no CPU since folds became Ray tasks
        fail("`search.cpus_per_trial` is now `search.cpus_per_fold` (CPUs per fold task)")
    cpus = s["cpus_per_fold"]
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus <= 0:
        fail("`search.cpus_per_fold` must be a positive number of CPUs")
    space = s.get("space")
    if not isinstance(space, dict) or not space:
        fail("`search.space` must map model families to parameters")
    for family, params in space.items():
        if family not in MODEL_FAMILY_NAMES:
            fail(f"`search.space.{family}`: unknown model family; use {list(MODEL_FAMILY_NAMES)}")
        if not isinstance(params or {}, dict):
            fail(f"`search.space.{family}` must be a mapping of parameters")
    if raw["registry"]["release"] not in {"production", "canary", "shadow"}:
        fail("`registry.release` must be production, canary or shadow")
    weight = raw["registry"].get("release_weight")
    if weight is not None and not (isinstance(weight, int | float) and 0 < weight <= 100):
        fail("`registry.release_weight` must be a percent in (0, 100]")
    for gate, value in raw["gates"].items():
        if not isinstance(value, int | float):
            fail(f"`gates.{gate}` must be a number")
