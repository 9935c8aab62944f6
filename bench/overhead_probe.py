"""The child side of bench/overhead.py: run one job, unchanged, in this process with timing
wrappers around its own functions, and write what they saw to a JSON file.

    python bench/overhead_probe.py train OUT.json --config cfg.yaml       # jobs/train.py
    python bench/overhead_probe.py score OUT.json --data rows.csv ...     # jobs/score.py

Each wrapper records ``(stage, start, end)`` in Unix seconds around the original call. Just
before ``ray.shutdown`` the probe reads Ray's state API (tasks with their start / end times,
workers, actors; after a 2 s wait for task events to arrive) and, for scoring, Ray Data's
stats summary. These reads, and writing them to ``OUT.state``, are ``excluded`` spans:
bench/overhead.py takes them out of the run's wall time. For scoring, the actors run a
subclass of ``BatchScorer`` that times ``check_batch`` and ``score_isolating`` inside each
call and appends one JSON line per call to ``OUT.scorer/``.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as jobs/*.py do

SPANS: list[tuple[str, float, float]] = []
EXCLUDED: list[tuple[str, float, float]] = []
STATE: dict[str, Any] = {}
FLUSH_S = 2.0


def timed(owner: Any, attr: str, stage: str) -> None:
    """Replace ``owner.attr`` by a wrapper that records a span named ``stage``."""
    original = getattr(owner, attr)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            SPANS.append((stage, start, time.time()))

    bound = inspect.ismethod(original)  # a classmethod read from its class
    setattr(owner, attr, staticmethod(wrapper) if bound else wrapper)


def _records(rows: list[Any]) -> list[dict[str, Any]]:
    return [r if isinstance(r, dict) else dict(r.__dict__) for r in rows]


def read_ray_state() -> None:
    """Tasks (with their events), workers and actors of this job, from Ray's state API."""
    from ray.util import state

    start = time.time()
    time.sleep(FLUSH_S)  # task events reach the GCS about once a second
    opts: dict[str, Any] = {"detail": True, "limit": 10_000, "raise_on_missing_output": False}
    try:
        STATE["tasks"] = _records(state.list_tasks(**opts))
        STATE["workers"] = _records(state.list_workers(**opts))
        STATE["actors"] = _records(state.list_actors(**opts))
    except Exception as exc:  # no dashboard: the stages without Ray's milestones
        STATE["error"] = f"{type(exc).__name__}: {exc}"
    EXCLUDED.append(("state API", start, time.time()))


def patch_shutdown() -> None:
    import ray

    original = ray.shutdown

    def shutdown(*args: Any, **kwargs: Any) -> None:
        if ray.is_initialized():
            read_ray_state()
        start = time.time()
        try:
            original(*args, **kwargs)
        finally:
            SPANS.append(("Ray shutdown", start, time.time()))

    ray.shutdown = shutdown


def probe_train() -> Any:
    import sparc_ray.training.job as job
    from sparc_ray.registry import signing
    from sparc_ray.registry.store import ModelRegistry
    from sparc_ray.training import onnx_export, tuning

    timed(job, "prepare_data", "read + validate data")
    timed(job, "run_training", "run_training")
    timed(tuning, "build_tuner", "Tune setup (ray.put, Tuner)")
    timed(job, "run_search", "Tune fit")
    timed(job, "_seal", "seal experiment")
    timed(tuning, "refit", "refit")
    timed(job, "build_report", "report PNGs")
    timed(job, "export_onnx", "ONNX export + parity")
    timed(onnx_export, "_to_onnx", "ONNX export")
    timed(job, "check_explanations", "explanation check")
    timed(ModelRegistry, "publish", "registry write")
    timed(signing, "sign", "signing")
    timed(job, "release_new_version", "promote")
    return job.main


class _Timer:
    """Seconds spent in a function, summed (in one scoring actor's process)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return wrapper


def timed_scorer(base: type, log_dir: str) -> type:
    """``base`` (BatchScorer) timing its constructor, its calls, and inside each call the
    shared input check and the model call; one JSON line per call in ``log_dir``."""
    from sparc_ray.batch import scorer as module

    class TimedBatchScorer(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            start = time.time()
            self._check, self._score = _Timer(), _Timer()
            module.check_batch = self._check.wrap(module.check_batch)
            module.score_isolating = self._score.wrap(module.score_isolating)
            super().__init__(*args, **kwargs)
            self._log = Path(log_dir) / f"scorer-{os.getpid()}.jsonl"
            self._write({"init": [start, time.time()]})

        def __call__(self, batch: Any) -> Any:
            start, check0, score0 = time.time(), self._check.seconds, self._score.seconds
            out = super().__call__(batch)
            check, score = self._check.seconds - check0, self._score.seconds - score0
            self._write({"call": [start, time.time()], "check": check, "score": score})
            return out

        def _write(self, record: dict[str, Any]) -> None:
            with open(self._log, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    return TimedBatchScorer


def probe_score(log_dir: str) -> Any:
    import ray.data

    import sparc_ray.batch.job as job

    timed(job.ScorePlan, "check", "plan checks (load + verify version, inspect input)")
    timed(job, "run", "run()")
    timed(job, "_count_rows", "count output rows")
    job.BatchScorer = timed_scorer(job.BatchScorer, log_dir)
    original = ray.data.Dataset.write_parquet

    def write_parquet(self: Any, *args: Any, **kwargs: Any) -> None:
        start = time.time()
        try:
            original(self, *args, **kwargs)
        finally:
            SPANS.append(("Ray Data execution", start, time.time()))
        start = time.time()
        try:
            STATE["data_stats"] = data_stats(self.get_stats_summary())
        finally:
            EXCLUDED.append(("Ray Data stats", start, time.time()))

    ray.data.Dataset.write_parquet = write_parquet  # type: ignore[method-assign]
    return job.main


def data_stats(summary: Any) -> list[dict[str, Any]]:
    """Per operator: name, task wall / CPU / UDF seconds summed, first start, last end."""

    def total(stat: Any) -> float | None:
        return None if stat is None else float(stat.sum)

    out = []
    while summary is not None:
        for op in summary.operators_stats:
            out.append(
                {
                    "operator": op.operator_name,
                    "wall_s": total(op.wall_time),
                    "cpu_s": total(op.cpu_time),
                    "udf_s": total(op.function_body_time),
                }
            )
        summary = summary.parents[0] if summary.parents else None
    return out


def main() -> int:
    kind, out, job_args = sys.argv[1], Path(sys.argv[2]).resolve(), sys.argv[3:]
    started = time.time()
    import ray

    log_dir = f"{out}.scorer"
    os.makedirs(log_dir, exist_ok=True)
    job_main = probe_train() if kind == "train" else probe_score(log_dir)
    timed(ray, "init", "Ray start")
    patch_shutdown()
    main_start = time.time()
    code = job_main(job_args)
    main_end = time.time()
    Path(f"{out}.state").write_text(json.dumps(STATE, default=str))
    EXCLUDED.append(("probe output", main_end, time.time()))
    record = {"probe_started": started, "main_start": main_start, "main_end": main_end}
    out.write_text(json.dumps(record | {"exit_code": code, "spans": SPANS, "excluded": EXCLUDED}))
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
