"""The jobs' command-line arguments (``jobs/train.py``, ``jobs/score.py`` and the same
``sparc-ray train`` / ``sparc-ray score``): light, so the CLI starts without scikit-learn or
Ray."""

from __future__ import annotations

import argparse

from sparc_ray.registry.layout import DEFAULT_STORE
from sparc_ray.training.config import DEFAULT_CONFIG

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
    parser.add_argument("--actors", type=int, help="scoring actors (default: one per CPU)")
    parser.add_argument(
        "--batch-rows", type=int, default=SCORE_BATCH_ROWS, help="rows per model call"
    )
