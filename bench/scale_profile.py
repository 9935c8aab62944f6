"""The inputs of ``bench/scale_model.py``: profiles (measured fold durations and scores per
candidate, overheads, search settings), built from a real run's artifacts or from
``bench/tune_scale_sim.py``'s single-thread measurements, and the space repeated for big N.

Profile (JSON)::

    {"folds": {label: {"durations": [k seconds], "scores": [k], "model_type": ..., "params":
               {...}, "measured_folds": m (optional: the first m are measured, the rest filled
               in)}},                 # in expand_candidates' order (GridSearchCV's families)
     "n_folds": k,
     "order": [labels] (optional: the order a real run started its trials in; else
              order_candidates(seed) over "folds"),
     "measured_on": {"cpus": N} (optional: the cluster the durations come from),
     "search": {"scheduler", "grace_period", "reduction_factor", "max_concurrent_trials",
                "cpus_per_fold", "seed"}   (scale_sim.Search),
     "overheads": {...}                    (scale_sim.Overheads: what each one means)}
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, cast

import numpy as np
from scale_sim import Candidate, Overheads, Search

from sparc_ray.training.search_space import order_candidates


@dataclasses.dataclass
class Profile:
    cands: list[Candidate]  # expand_candidates' order
    n_folds: int
    search: Search
    ov: Overheads
    order: list[str] | None = None
    measured_cpus: int | None = None


def load_profile(path: str | Path) -> Profile:
    raw = json.loads(Path(path).read_text())
    n = int(raw["n_folds"])
    cands = []
    for label, f in raw["folds"].items():
        if len(f["durations"]) != n or len(f["scores"]) != n:
            raise ValueError(f"{path}: {label}: needs {n} durations and {n} scores")
        model_type = f.get("model_type") or label.split()[0]
        cands.append(Candidate(label, model_type, f.get("params") or {}, *_floats(f)))
    return Profile(
        cands,
        n,
        Search(**raw.get("search", {})),
        Overheads(**raw.get("overheads", {})),
        raw.get("order"),
        (raw.get("measured_on") or {}).get("cpus"),
    )


def json_arg(value: str) -> dict[str, Any]:
    """Inline JSON, or the path of a JSON file."""
    return json.loads(value if value.lstrip().startswith("{") else Path(value).read_text())


def _floats(f: dict[str, Any]) -> tuple[list[float], list[float]]:
    return [float(x) for x in f["durations"]], [float(x) for x in f["scores"]]


def start_order(cands: list[Candidate], seed: int, order: list[str] | None) -> list[Candidate]:
    """The order trials start in: ``order`` (labels, e.g. a real run's trial order) or
    ``order_candidates`` (costliest first, seeded shuffle) over ``cands``."""
    by_label = {c.label: c for c in cands}
    if len(by_label) != len(cands):
        raise ValueError("candidate labels must be unique")
    if order:
        return [by_label[label] for label in order]
    return [by_label[d["label"]] for d in order_candidates([c.as_dict() for c in cands], seed)]


def refit_estimate(cand: Candidate) -> float:
    """One thread on the whole split: a fold's mean duration x k / (k - 1) rows."""
    k = len(cand.durations)
    return float(np.mean(cand.durations)) * k / (k - 1)


def scale_space(
    cands: list[Candidate], copies: int, seed: int, jitter: float = 0.1
) -> list[Candidate]:
    """``copies`` x the space, as expand_candidates repeats a grid (per family, the grid
    again and again). Copy j > 0 (label ``... #j``) keeps the measured durations; its fold
    scores are drawn from the candidate's measured fold scores (with replacement, seeded)
    plus normal noise of ``jitter`` x their std (at least 1e-3): synthetic, not measured."""
    rng = np.random.default_rng(seed)
    families: dict[str, list[Candidate]] = {}
    for c in cands:
        families.setdefault(c.model_type, []).append(c)
    out: list[Candidate] = []
    for group in families.values():
        for j in range(copies):
            for c in group:
                if j == 0:
                    out.append(c)
                    continue
                sd = jitter * max(float(np.std(c.scores)), 1e-3)
                scores = [float(rng.choice(c.scores) + rng.normal(0, sd)) for _ in c.scores]
                out.append(dataclasses.replace(c, label=f"{c.label} #{j}", scores=scores, copy=j))
    return out


def _trial(path: Path) -> dict[str, Any] | None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "fold_score" in r]
    if not rows:
        return None
    restarts = [i for i, r in enumerate(rows) if r.get("folds") == 1]
    rows = rows[restarts[-1] :] if restarts else rows  # a restarted trial: its last run
    cand = rows[0].get("config", {}).get("candidate")
    if cand is None:
        cand = json.loads((path.parent / "params.json").read_text())["candidate"]
    # Reports' absolute times: ``timestamp`` is whole seconds, ``time_total_s`` is exact
    # from the trial's start: every report bounds that start to a 1 s interval.
    lo = max(r["timestamp"] - r["time_total_s"] for r in rows)
    hi = min(r["timestamp"] + 1 - r["time_total_s"] for r in rows)
    trial_id = str(rows[0].get("trial_id", path.parent.name))
    index = trial_id.rsplit("_", 1)[-1]
    return {
        "index": int(index) if index.isdigit() else 0,
        "cand": cand,
        "scores": [float(r["fold_score"]) for r in rows],
        "durations": [float(r["time_this_iter_s"]) for r in rows],
        "times": [(lo + hi) / 2 + r["time_total_s"] for r in rows],
    }


def profile_from_experiment(
    exp: str | Path, tasks: list[dict[str, Any]] | None = None, n_folds: int | None = None
) -> dict[str, Any]:
    """A profile (no search settings or overheads: add them) from a real run's Tune
    experiment directory: per trial (``*/result.json``, one line per fold report) its fold
    scores in completion order and, as durations, the gaps between reports
    (``time_this_iter_s``): exact only if its folds ran back to back with no wait; too short
    when they overlapped, too long when they queued behind other trials' folds.

    ``tasks``: Ray's task records (``ray list tasks --detail --format json --limit 100000``
    or ``ray.util.state.list_tasks(detail=True)``, taken before the cluster goes), whose
    ``end_time_ms - start_time_ms`` replace the gaps: for records of ``_fold_task`` with a
    ``label``, in end order; without one, the finished fold task that ended closest to each
    report (within 1 s; reports timed from ``timestamp`` and ``time_total_s``: approximate).
    Folds a trial never ran (stopped by ASHA) get its mean duration and mean score;
    ``measured_folds`` says how many are real. ``order``: the trials' index order, the order
    Tune started them in; "folds" follow it (so do GridSearchCV's families: reorder "folds"
    as the space lists them for its exact order)."""
    trials = [t for p in sorted(Path(exp).glob("*/result.json")) if (t := _trial(p)) is not None]
    if not trials:
        raise ValueError(f"{exp}: no trial with fold reports (*/result.json)")
    trials.sort(key=lambda t: (t["index"], t["times"][0]))
    n = n_folds or max(len(t["scores"]) for t in trials)
    folds = [
        r
        for r in tasks or []
        if "_fold_task" in str(r.get("name") or r.get("func_or_class_name") or "_fold_task")
        and r.get("end_time_ms")
        and r.get("state", "FINISHED") == "FINISHED"
    ]
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in folds:
        by_label.setdefault(str(r.get("label")), []).append(r)
    unlabelled = by_label.pop("None", [])
    reports = [(time, t, i) for t in trials for i, time in enumerate(t["times"])]
    for time, t, i in sorted(reports, key=lambda x: x[0]):  # nearest fold task, used once
        if t["cand"]["label"] in by_label:
            continue
        gaps = [abs(r["end_time_ms"] / 1000 - time) for r in unlabelled]
        if gaps and min(gaps) <= 1.0:
            r = unlabelled.pop(int(np.argmin(gaps)))
            t["durations"][i] = (r["end_time_ms"] - r["start_time_ms"]) / 1000
    out: dict[str, Any] = {}
    for t in trials:
        label, m = t["cand"]["label"], len(t["scores"])
        records = sorted(by_label.get(label, []), key=lambda r: r["end_time_ms"])[:m]
        if len(records) == m:
            t["durations"] = [(r["end_time_ms"] - r["start_time_ms"]) / 1000 for r in records]
        fill = n - m
        out[label] = {
            "durations": t["durations"] + [float(np.mean(t["durations"]))] * fill,
            "scores": t["scores"] + [float(np.mean(t["scores"]))] * fill,
            "model_type": t["cand"]["model_type"],
            "params": t["cand"]["params"],
            "measured_folds": m,
        }
    return {"folds": out, "n_folds": n, "order": list(out), "source": str(exp)}


def profile_from_durations(path: str | Path, space: str, rows: int = 20000) -> dict[str, Any]:
    """A profile from ``bench/tune_scale_sim.py``'s measurements (``{label: {"seconds",
    "scores"}}``) of tune_bench's ``space``; if ``path`` does not exist, measured first by
    ``tune_scale_sim.measure`` (each fold fitted once on ``rows`` rows, one thread, no Ray)."""
    from search_data import N_FOLDS, SPACES

    from sparc_ray.training.search_space import expand_candidates

    if not Path(path).exists():
        from tune_scale_sim import measure

        measure(space, rows, Path(path))
    measured = json.loads(Path(path).read_text())
    folds = {}
    for c in expand_candidates(cast(dict[str, dict[str, Any]], SPACES[space]), "grid", 1):
        m = measured[c["label"]]
        folds[c["label"]] = {
            "durations": m["seconds"],
            "scores": m["scores"],
            "model_type": c["model_type"],
            "params": c["params"],
        }
    return {"folds": folds, "n_folds": N_FOLDS, "source": str(path)}
