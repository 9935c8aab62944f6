"""The jobs' command-line arguments (``jobs/train.py``, ``jobs/score.py`` and the same
``sparc-ray train`` / ``sparc-ray score``) and ``load_config``, the YAML with the flags applied
over it: light, so the CLI starts without scikit-learn or Ray."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import yaml
from pydantic import ValidationError

from sparc_ray.registry.layout import DEFAULT_STORE
from sparc_ray.training.config import (
    CAPTURE_PREFIX,
    DEFAULT_CONFIG,
    SECTIONS,
    ConfigError,
    TrainConfig,
    describe_errors,
)

SCORE_BATCH_ROWS = 65_536  # rows per model call in batch scoring


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="search-space YAML")
    parser.add_argument(
        "--data",
        help="CSV/Parquet path or URI, builtin:NAME, or capture:STORE/NAME (the labelled rows "
        "the service captured)",
    )
    parser.add_argument("--since", help="capture: data: rows captured since (24h, 7d, ISO date)")
    parser.add_argument(
        "--with-training-data",
        action="store_true",
        help="capture: data: add the production version's training data",
    )
    parser.add_argument("--target", help="label column")
    parser.add_argument("--name", help="registry model name")
    parser.add_argument("--store", help="registry root: directory or URI")
    parser.add_argument("--storage-path", help="Tune experiment storage: directory or URI")
    parser.add_argument("--num-samples", type=int, help="grid repeats / random configs per family")
    parser.add_argument("--scheduler", choices=["asha", "fifo"])
    parser.add_argument("--n-folds", type=int, help="CV folds per trial")
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        default=None,
        help="publish even if some configurations could not be evaluated (they are named in "
        "the summary and metadata.json); without it such a search exits 4, publishing nothing",
    )
    parser.add_argument("--resume", action="store_true", help="continue the latest experiment")
    parser.add_argument(
        "--mlflow",
        nargs="?",
        const="mlruns",
        metavar="TRACKING_URI",
        help="log trials and the published version to MLflow (default store: ./mlruns; needs "
        "pip install 'sparc-ray[mlflow]')",
    )
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


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="CSV/Parquet file, directory or URI")
    parser.add_argument("--name", required=True, help="registry model name")
    parser.add_argument("--version", help="version id or alias (default: production)")
    parser.add_argument("--store", default=DEFAULT_STORE, help="registry root: directory or URI")
    parser.add_argument("--out", required=True, help="new directory or URI for the results")
    parser.add_argument(
        "--public-key", help="require the version to be signed by this Ed25519 key (PEM)"
    )
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="development only: score without --public-key (ONNX versions, checked by sha256)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="add per-row feature contributions (base_value, contribution_<feature>): a "
        "signed version whose publish-time explanation check passed",
    )
    parser.add_argument("--actors", type=int, help="scoring actors (default: one per CPU)")
    parser.add_argument(
        "--batch-rows", type=int, default=SCORE_BATCH_ROWS, help="rows per model call"
    )


def load_config(args: argparse.Namespace) -> TrainConfig:
    """The YAML at ``args.config``, flags applied over it, validated (``ConfigError``)."""
    path = Path(args.config)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of sections, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    for section in SECTIONS:  # a section left empty (null) is an omitted one
        if raw.get(section) is None:
            raw.pop(section, None)
        elif not isinstance(raw[section], dict):
            raise ConfigError(f"{path}: `{section}` must be a mapping, got {raw[section]!r}")
        if section != "gates":  # omitted gates: the defaults, filled in by TrainConfig
            raw.setdefault(section, {})
    overrides = {
        ("data", "path"): args.data,
        ("data", "target"): args.target,
        ("data", "since"): getattr(args, "since", None),
        ("data", "with_training_data"): getattr(args, "with_training_data", None) or None,
        ("registry", "store"): args.store,
        ("search", "storage_path"): args.storage_path,
        ("search", "num_samples"): args.num_samples,
        ("search", "scheduler"): args.scheduler,
        ("cv", "n_folds"): args.n_folds,
        ("search", "allow_incomplete"): getattr(args, "allow_incomplete", None),
        ("registry", "release"): getattr(args, "release", None),
        ("registry", "release_weight"): getattr(args, "release_weight", None),
        ("registry", "release_policy"): getattr(args, "release_policy", None),
    }
    for (section, key), value in overrides.items():
        if value is not None:
            raw[section][key] = value
    problems = ["unknown key `resume` (pass --resume)"] if "resume" in raw else []
    if str(raw["data"].get("path", "")).startswith(CAPTURE_PREFIX):
        # Captured rows are labelled for production's target: a config's target is a
        # different dataset's, and asking for another one is a mistake.
        raw["data"].pop("target", None)
        if args.target:
            problems.append("--target does not apply to capture: data (production's is used)")
    if args.data and not args.name and not args.data.startswith("builtin:"):
        raw["name"] = Path(args.data.split("?")[0]).stem  # a new dataset, a new model name
    if args.name:
        raw["name"] = args.name
    if args.no_promote:
        raw["registry"]["promote"] = False
    if getattr(args, "mlflow", None):
        raw["mlflow"] = args.mlflow
    try:
        cfg = TrainConfig.model_validate({**raw, "resume": bool(args.resume)})
    except ValidationError as exc:
        problems += describe_errors(exc)
    if problems:
        raise ConfigError("\n".join(f"{path}: {p}" for p in problems))
    return cfg
