"""Every file and directory name of the model store, in one place::

    <store>/                          DEFAULT_STORE unless given (a directory or any URI)
      <name>/
        <version>/                    staged as .staging-<version> on local stores
          model.joblib                MODEL_FILE: the fitted pipeline
          model.onnx                  ONNX_FILE: the compiled export, when it converts
          report/...                  REPORT_DIR: metrics.json and charts
          signature.json              SIGNATURE_FILE: Ed25519 over every file (when signed)
          metadata.json               METADATA_FILE: written last; a version without it is
                                      not a version
        _records/                     RECORDS_DIR: what the Serve app may write; versions are
                                      read-only to it (a mount of this directory alone)
          production                  ALIAS: the promoted version (one line)
          production.history          HISTORY_FILE: the promotions so far (rollback)
          candidate.json              CANDIDATE_FILE: the release in progress
          releases.json               RELEASE_LOG: every release and how it ended
        _capture/                     CAPTURE_DIR: traffic capture (sparc_ray.monitoring.capture)
          predictions/ labels/        CAPTURE_PREDICTIONS, CAPTURE_LABELS

Tune's experiments live apart from the store, under DEFAULT_TUNE_STORAGE unless given.
"""

from __future__ import annotations

import datetime as dt
import uuid

DEFAULT_STORE = "model_store"
DEFAULT_TUNE_STORAGE = "ray_results"

# -- a version's files ------------------------------------------------------------------------
MODEL_FILE = "model.joblib"
ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
SIGNATURE_FILE = "signature.json"
REPORT_DIR = "report"
STAGING_PREFIX = ".staging-"

# -- a model's records, in a directory of their own beside its versions -------------------------
RECORDS_DIR = "_records"  # before it existed they sat beside the versions: still read there
ALIAS = "production"
HISTORY_FILE = f"{ALIAS}.history"
CANDIDATE_FILE = "candidate.json"
RELEASE_LOG = "releases.json"

# -- traffic capture --------------------------------------------------------------------------
CAPTURE_DIR = "_capture"
CAPTURE_PREDICTIONS = "predictions"
CAPTURE_LABELS = "labels"
CAPTURE_DATE_KEY = "capture_date"  # hive partitions: capture_date=YYYY-MM-DD/
CAPTURE_VERSION_KEY = "model_version"  # predictions only: model_version=<id>/


def capture_root(store: str, name: str) -> str:
    """Where a model's captures go unless ``capture_uri`` says otherwise."""
    from sparc_ray.registry import storage  # storage needs pyarrow; the names above do not

    return storage.join(store, name, CAPTURE_DIR)


def new_version(now: dt.datetime | None = None) -> str:
    """Sortable, unique version id: UTC time to the microsecond plus a random suffix."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("v%Y%m%d-%H%M%S-%f-") + uuid.uuid4().hex[:6]


def report_file(name: str) -> str:
    """A version-relative path under ``report/`` (e.g. ``report/metrics.json``)."""
    return f"{REPORT_DIR}/{name}"
