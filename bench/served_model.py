"""The benchmark's model and what it costs in-process: the data, the signing keys, the random
forest trained by the real training job, and per-call costs without a server (scikit-learn,
ONNX Runtime through ``RegistryLoader``, TreeSHAP). Shared by the serving, release and
capture benchmarks.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.datasets import make_classification

from sparc_ray.registry import layout, signing
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training.estimator import SPARCClassificationModel

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench/results/serve"
NAME = "bench_rf"


def _classification() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=20000, n_features=20, n_informative=10, random_state=0)


def dataset() -> pd.DataFrame:
    X, _ = _classification()
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(20)])


def signing_keys() -> tuple[Path, Path]:
    """The benchmark's own Ed25519 pair: training signs, the Serve app verifies."""
    private, public = WORK / "keys/model_signing.key", WORK / "keys/model_signing.pub"
    if not private.exists():
        signing.generate_key_pair(WORK / "keys/model_signing")
    return private, public


def train(df: pd.DataFrame) -> ModelRegistry:
    """The registry holding ``NAME``, trained by ``jobs/train.py`` on ``df`` at first use."""
    reg = ModelRegistry(WORK / layout.DEFAULT_STORE)
    private, _ = signing_keys()
    if not reg.versions(NAME):
        _, y = _classification()
        WORK.mkdir(parents=True, exist_ok=True)
        df.assign(label=np.where(y == 1, "yes", "no")).to_csv(WORK / "data.csv", index=False)
        (WORK / "job.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": NAME,
                    "data": {"path": str(WORK / "data.csv"), "target": "label"},
                    "cv": {"n_folds": 2},
                    "search": {
                        "scheduler": "fifo",
                        "storage_path": str(WORK / layout.DEFAULT_TUNE_STORAGE),
                        "space": {"random_forest": {"n_estimators": [100]}},
                    },
                    "registry": {"store": str(WORK / layout.DEFAULT_STORE)},
                }
            )
        )
        job = [sys.executable, str(ROOT / "jobs/train.py"), "--config", str(WORK / "job.yaml")]
        subprocess.run([*job, "--signing-key", str(private)], check=True, capture_output=True)
    key = signing.load_private_key(str(private))
    for version in reg.versions(NAME):  # versions trained before signing existed
        if reg.read_optional(NAME, version, layout.SIGNATURE_FILE) is None:
            reg.sign(NAME, version, key)
    return reg


def per_call_ms(fn: Callable[[], object], seconds: float = 2.0) -> float:
    """Median wall time of one call, over ``seconds`` of calls (after one warm-up)."""
    fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def raw_rows_per_s(model: SPARCClassificationModel, df: pd.DataFrame) -> float:
    batch = df.head(1000)
    return 1000 / per_call_ms(lambda: model.predict_proba(batch), 5.0) * 1000


def load_onnx(reg: ModelRegistry, name: str, version: str):
    """The version's ONNX scorer as the Serve app loads it (``RegistryLoader``: signature,
    then digests), or the reason there is none."""
    from sparc_ray.inference.loader import RegistryLoader

    public_key = signing.public_key_bytes(str(signing_keys()[1]))
    loaded = RegistryLoader(str(reg.root_path), name, public_key).load(version)
    if loaded.engine != "onnx":
        return None, f"served by {loaded.engine}: {loaded.engine_reason}"
    return loaded.scorer, ""


def model_cost(reg: ModelRegistry, name: str, version: str, model, df: pd.DataFrame) -> dict:
    """Milliseconds per model call from feature columns to probabilities, 1 and 1000 rows."""
    cost: dict = {"sklearn_ms": {}, "onnx_ms": None}
    cols = {n: {c: df[c].to_numpy()[:n] for c in model.feature_names} for n in (1, 1000)}
    for n, c in cols.items():
        cost["sklearn_ms"][n] = per_call_ms(lambda c=c: model.predict_proba(pd.DataFrame(c)))
    try:
        onnx, why = load_onnx(reg, name, version)
        if onnx is not None:
            diff = np.abs(onnx.predict_proba(cols[1000]) - model.predict_proba(df.head(1000)))
            cost["onnx_max_abs_diff"] = float(diff.max())
            cost["onnx_ms"] = {
                n: per_call_ms(lambda c=c: onnx.predict_proba(c)) for n, c in cols.items()
            }
    except Exception as exc:  # the version does not load: the figures say why
        onnx, why = None, f"{type(exc).__name__}: {exc}"
    for n in (1, 1000):
        line = f"model cost per call, {n:>4} row(s): sklearn {cost['sklearn_ms'][n]:8.3f} ms"
        if cost["onnx_ms"]:
            o = cost["onnx_ms"][n]
            line += f"  ONNX {o:8.3f} ms  (sklearn / ONNX x{cost['sklearn_ms'][n] / o:.1f})"
        print(line)
    if onnx is None:
        print(f"ONNX: not available ({why})")
        cost["onnx_unavailable"] = why
    return cost


def explain_cost(reg: ModelRegistry, name: str, version: str, model, df: pd.DataFrame) -> dict:
    """In-process TreeSHAP: ms for one row, rows/s on 100 rows, and the trees' size."""
    from sparc_ray.inference.explain import load_explainer

    explainer = load_explainer(reg, name, version, signing.public_key_bytes(str(signing_keys()[1])))
    one = per_call_ms(lambda: explainer.explain(df.head(1)))
    hundred = per_call_ms(lambda: explainer.explain(df.head(100)), seconds=4.0)
    trees = model.pipeline.named_steps["classifier"].estimators_
    out = {
        "one_row_ms": one,
        "rows_per_s_100": 100 / (hundred / 1000),
        "mean_leaves": float(np.mean([t.get_n_leaves() for t in trees])),
        "mean_depth": float(np.mean([t.get_depth() for t in trees])),
    }
    print(
        f"explain in-process (TreeSHAP, {out['mean_leaves']:.0f} leaves, depth "
        f"{out['mean_depth']:.0f}): 1 row {one:.1f} ms, {out['rows_per_s_100']:.0f} rows/s"
    )
    return out
