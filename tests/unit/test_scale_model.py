"""bench/scale_model.py's discrete-event model of the search (no Ray started): FIFO's analytic
makespan, ASHA's decisions against Ray Tune's own _Bracket, GridSearchCV by hand, the
profile builder on a small synthetic Tune experiment, and the CLI's modes."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.tune.schedulers.async_hyperband import _Bracket
from sklearn.model_selection import ParameterGrid

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import scale_model
from scale_profile import load_profile, profile_from_experiment, start_order
from scale_sim import (
    Asha,
    Candidate,
    Overheads,
    Search,
    SearchSim,
    gridsearch,
    gridsearch_order,
)

from sparc_ray.training.search_space import expand_candidates


def lr(i: int, durations: list[float], scores: list[float] | None = None) -> Candidate:
    """A candidate of equal fit cost to every other ``lr`` one."""
    return Candidate(
        f"lr C={i}", "logistic_regression", {"C": i}, durations, scores or [0.5] * len(durations)
    )


def run(cands, n, cpus, per_node=16, ov=None, **search):
    return SearchSim(cands, n, Search(**search), ov or Overheads(), cpus, per_node).run()


@pytest.mark.parametrize(
    ("n_cands", "k", "cpus", "d"),
    [(10, 5, 4, 2.0), (7, 3, 16, 1.5), (1, 5, 2, 1.0), (40, 5, 64, 0.7)],
)
def test_fifo_equal_durations_is_waves_of_n_cpus(n_cands, k, cpus, d):
    out = run([lr(i, [d] * k) for i in range(n_cands)], k, cpus, scheduler="fifo")
    assert out["makespan_s"] == pytest.approx(math.ceil(n_cands * k / cpus) * d)
    assert out["folds_reported"] == n_cands * k and out["trials_stopped"] == 0
    assert out["utilisation"] == pytest.approx(n_cands * k * d / (cpus * out["makespan_s"]))
    assert out["max_concurrent_trials"] == max(2, 2 * cpus)


def test_fifo_overheads_add_as_modelled():
    """Trials start trial_start_s late, each fold holds its CPU dispatch_s longer, the first
    fold in each slot of a node node_warmup_s longer (2 nodes of 16: 40 folds, 2 waves)."""
    ov = Overheads(dispatch_s=0.1, trial_start_s=0.5)
    out = run([lr(i, [2.0] * 5) for i in range(10)], 5, 4, ov=ov, scheduler="fifo")
    assert out["makespan_s"] == pytest.approx(0.5 + 13 * 2.1)
    out = run(
        [lr(i, [1.0] * 5) for i in range(8)],
        5,
        32,
        ov=Overheads(node_warmup_s=3.0),
        scheduler="fifo",
    )
    assert out["makespan_s"] == pytest.approx(3.0 + 2 * 1.0)


def test_costliest_candidates_start_first():
    rf = Candidate("rf", "random_forest", {"n_estimators": 300}, [9.0] * 5, [0.9] * 5)
    cands = [lr(0, [1.0] * 5), rf, lr(1, [1.0] * 5)]
    assert start_order(cands, seed=0, order=None)[0] is rf
    assert [c.label for c in start_order(cands, 0, ["lr C=1", "rf", "lr C=0"])] == [
        "lr C=1",
        "rf",
        "lr C=0",
    ]


def replay_through_ray(log, grace, rf, max_t):
    """The model's (trial, folds, mean) results through Ray's _Bracket as
    AsyncHyperBandScheduler.on_trial_result / on_trial_complete call it: its decisions."""
    bracket, out = _Bracket(grace, max_t, rf, 0), []
    for label, it, mean, _stop in log:
        decision = bracket.on_result(SimpleNamespace(trial_id=label), it, mean)
        out.append(it >= max_t or decision == "STOP")
    return out, bracket


def test_asha_hand_example_matches_rays_bracket():
    """1 CPU, one trial at a time, 3 folds of 1 s, grace 1, rf 2 (rungs at 1 and 2 folds):
    A is first at both rungs; B passes rung 1 (0.9 >= A's 0.8), stops at rung 2 (0.7 < 0.8);
    C stops at rung 1 (0.7 < the median 0.85 of A, B); D passes both and wins."""
    scores = {"A": [0.8] * 3, "B": [0.9, 0.5, 0.5], "C": [0.7, 0.9, 0.9], "D": [0.95, 0.95, 0.6]}
    cands = [lr(i, [1.0] * 3, s) for i, s in enumerate(scores.values())]
    out = run(
        cands, 3, 1, scheduler="asha", grace_period=1, reduction_factor=2, max_concurrent_trials=1
    )
    folds = {c.label: sum(1 for entry in out["asha_log"] if entry[0] == c.label) for c in cands}
    assert list(folds.values()) == [3, 2, 1, 3]
    assert out["makespan_s"] == pytest.approx(9.0) and out["trials_stopped"] == 2
    assert out["best"] == "lr C=3" and out["best_cv_mean"] == pytest.approx(2.5 / 3)
    decisions, _ = replay_through_ray(out["asha_log"], 1, 2, 3)
    assert decisions == [entry[3] for entry in out["asha_log"]]


@pytest.mark.parametrize(
    ("grace", "rf", "max_t"), [(1, 2, 5), (1, 3, 5), (2, 2, 10), (1, 2.5, 6), (1, 4, 3), (1, 5, 5)]
)
def test_asha_rule_matches_rays_bracket(grace, rf, max_t):
    """Random interleavings of trials' results, ties included: the same decisions and the
    same recorded rungs as Ray's _Bracket (few recorded results included)."""
    rng = random.Random(f"{grace}-{rf}-{max_t}")
    for _ in range(30):
        ours, log = Asha(grace, max_t, rf), []
        active = {f"t{i}": 0 for i in range(rng.randint(1, 12))}
        while active:
            trial = rng.choice(sorted(active))
            active[trial] += 1
            reward = rng.choice([0.5, 0.6, 0.7, 0.7, 0.8, 0.9])
            stop = ours.on_result(trial, active[trial], reward)
            log.append((trial, active[trial], reward, stop))
            if stop:
                del active[trial]
        decisions, bracket = replay_through_ray(log, grace, rf, max_t)
        assert decisions == [entry[3] for entry in log]
        assert ours.rungs == bracket._rungs


def test_asha_past_its_first_rung_runs_ahead_on_idle_cpus():
    """One trial, 4 CPUs, 5 folds of 1 s, milestones 1, 3, 5: after fold 1 it submits folds
    2-3 (its next rung) and, on the 2 idle CPUs, folds 4-5 at once: 2 s, not 3."""
    out = run([lr(0, [1.0] * 5)], 5, 4, scheduler="asha", grace_period=1, reduction_factor=3)
    assert out["makespan_s"] == pytest.approx(2.0) and out["folds_reported"] == 5


def test_idle_cpus_are_found_on_the_next_poll():
    """3 CPUs, 2 trials at once. A's first look (t=0, before B has submitted) finds 2 idle
    CPUs and runs folds 2-3 (4 s each) ahead, so B's fold 1 waits for A's fold 1 (1-3.2): the
    cost of running ahead on a small cluster. B stops at 3.2 (0.5 < A's 0.9); A's poll at 3.5
    runs fold 4 (4 s) on that CPU, to 7.5; fold 5 runs 4-5 on a CPU A's folds freed."""
    a = lr(0, [1.0, 4.0, 4.0, 4.0, 1.0], [0.9] * 5)
    b = lr(1, [2.2] * 5, [0.5] * 5)
    search = {"scheduler": "asha", "grace_period": 1, "reduction_factor": 3}
    out = run([a, b], 5, 3, max_concurrent_trials=2, **search)
    assert out["makespan_s"] == pytest.approx(7.5)
    assert out["trials_stopped"] == 1 and out["best"] == a.label


def test_a_rung_between_fold_counts_is_decided_at_the_next_one():
    """rf 2.5: marks at folds 1, 3, 5 (the rung at 2.5 is decided at fold 3, as Ray's ASHA
    does). 1 CPU, one trial at a time: A (first everywhere) runs 5 folds; B passes rung 1,
    submits folds 2-3 and is stopped at 3 folds (mean 0.38 < 0.9) at 8 s; nothing of B runs
    past its stop."""
    a = lr(0, [1.0] * 5, [0.9] * 5)
    b = lr(1, [1.0] * 5, [0.95, 0.1, 0.1, 0.1, 0.1])
    search = {"scheduler": "asha", "grace_period": 1, "reduction_factor": 2.5}
    out = run([a, b], 5, 1, max_concurrent_trials=1, **search)
    assert out["makespan_s"] == pytest.approx(8.0) and out["busy_cpu_s"] == pytest.approx(8.0)
    assert out["wasted_cpu_s"] == pytest.approx(0.0) and out["last_fold_end_s"] == 8.0
    assert out["folds_reported"] == 8 and out["trials_stopped"] == 1


@pytest.mark.parametrize(
    ("interrupt_s", "wasted", "last_fold"), [(None, 5.0, 6.0), (0.1, 1.3, 2.3)]
)
def test_a_stopped_trials_running_fold_finishes_or_is_interrupted(interrupt_s, wasted, last_fold):
    """3 CPUs, rf 2 (rungs at folds 1, 2). A runs its 3 folds at once (2 ahead on idle CPUs)
    and ends at 1 s. B's fold 1 waits for a CPU (1-2.2); B's poll at 1.0 finds 2 idle CPUs and
    runs folds 2 (1-2.2) and 3 (5 s) ahead; at 2.2 B passes rung 1 and is stopped at rung 2
    (0.525 < 0.9): fold 3 runs on to 6 s, or stops interrupt_s after the cancel. The search
    ends when its last trial does (2.2 s)."""
    a = lr(0, [1.0] * 3, [0.9] * 3)
    b = lr(1, [1.2, 1.2, 5.0], [0.95, 0.1, 0.1])
    search = {"scheduler": "asha", "grace_period": 1, "reduction_factor": 2}
    out = run([a, b], 3, 3, ov=Overheads(interrupt_s=interrupt_s), **search)
    assert out["makespan_s"] == pytest.approx(2.2) and out["trials_stopped"] == 1
    assert out["wasted_cpu_s"] == pytest.approx(wasted)
    assert out["last_fold_end_s"] == pytest.approx(last_fold)


def test_gridsearch_by_hand():
    """2 workers, order A0 A1 B0 B1 (3, 1, 2, 2 s): w1 A0 0-3; w2 A1 0-1, B0 1-3; B1 on the
    first free (3) to 5; plus 0.5 s of loky start. Best: B (0.8), first of the tied."""
    a = lr(0, [3.0, 1.0], [0.6, 0.6])
    b = lr(1, [2.0, 2.0], [0.8, 0.8])
    c = lr(2, [0.0, 0.0], [0.8, 0.8])
    out = gridsearch([a, b, c], 2, Overheads(gs_start_s=0.5))
    assert out["makespan_s"] == pytest.approx(5.5) and out["best"] == b.label
    assert out["utilisation"] == pytest.approx(8.0 / (2 * 5.5))


def test_gridsearch_order_is_parameter_grids():
    space = {
        "random_forest": {
            "n_estimators": [60, 100],
            "max_depth": [3, None],
            "min_samples_leaf": [20, 1],
        },
        "logistic_regression": {"C": [10.0, 0.1], "class_weight": [None, "balanced"]},
    }
    cands = [
        Candidate(c["label"], c["model_type"], c["params"], [1.0], [0.5])
        for c in expand_candidates(space, "grid", 1)
    ]
    expected = [
        (family, params) for family, grid in space.items() for params in ParameterGrid(grid)
    ]
    assert [(c.model_type, c.params) for c in gridsearch_order(cands)] == expected


def write_trial(exp: Path, index: int, label: str, reports: list[tuple[float, float, int]]) -> None:
    """result.json of one trial: (fold_score, time_this_iter_s, timestamp) per report."""
    trial_id = f"ab12c_{index:05d}"
    trial = exp / f"cv_trainable_{trial_id}_{index}_candidate=x"
    trial.mkdir(parents=True)
    cand = {"model_type": "logistic_regression", "params": {"C": index}, "label": label}
    total, lines = 0.0, []
    for folds, (score, gap, ts) in enumerate(reports, 1):
        total += gap
        row = {
            "cv_mean": score,
            "folds": folds,
            "fold_score": score,
            "timestamp": ts,
            "trial_id": trial_id,
        }
        lines.append(
            json.dumps(
                row
                | {"time_this_iter_s": gap, "time_total_s": total, "config": {"candidate": cand}}
            )
        )
    (trial / "result.json").write_text("\n".join(lines) + "\n")


def test_profile_from_a_tune_experiment(tmp_path):
    exp = tmp_path / "exp"
    write_trial(exp, 1, "lr C=1", [(0.7, 2.0, 1002)])  # stopped by ASHA after one fold
    write_trial(exp, 0, "lr C=0", [(0.9, 1.0, 1001), (0.8, 0.5, 1001), (0.7, 1.5, 1003)])
    prof = profile_from_experiment(exp)
    assert prof["n_folds"] == 3 and prof["order"] == ["lr C=0", "lr C=1"]
    c0, c1 = prof["folds"]["lr C=0"], prof["folds"]["lr C=1"]
    assert c0["durations"] == [1.0, 0.5, 1.5] and c0["scores"] == [0.9, 0.8, 0.7]
    assert c1["measured_folds"] == 1 and c1["durations"] == [2.0] * 3 and c1["scores"] == [0.7] * 3
    # Ray's task records: labelled ones in end order; an unlabelled one by its end time
    # (trial 1 started within [1000, 1001): its report at about 1002.5 s).
    tasks = [
        {
            "name": "_fold_task",
            "label": "lr C=0",
            "start_time_ms": 1000_000,
            "end_time_ms": 1003_000,
        },
        {
            "name": "_fold_task",
            "label": "lr C=0",
            "start_time_ms": 1000_000,
            "end_time_ms": 1001_200,
        },
        {
            "name": "_fold_task",
            "label": "lr C=0",
            "start_time_ms": 1000_000,
            "end_time_ms": 1001_000,
        },
        {"name": "_fold_task", "start_time_ms": 1001_000, "end_time_ms": 1002_400},
        {"name": "other", "start_time_ms": 0, "end_time_ms": 1002_500},
    ]
    prof = profile_from_experiment(exp, tasks)
    assert prof["folds"]["lr C=0"]["durations"] == [1.0, 1.2, 3.0]
    assert prof["folds"]["lr C=1"]["durations"] == [1.4] * 3
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(prof | {"search": {"scheduler": "fifo"}}))
    assert load_profile(path).search.scheduler == "fifo"


def test_cli_build_predict_validate(tmp_path, capsys):
    exp = tmp_path / "exp"
    for i in range(6):
        write_trial(exp, i, f"lr C={i}", [(0.5 + i / 100, 1.0 + i, 1000 + f) for f in range(5)])
    profile = tmp_path / "profile.json"
    overheads = '{"driver_s": 5.0, "refit_s": 2.0}'
    assert (
        scale_model.main(
            ["build", "--experiment", str(exp), "--out", str(profile), "--overheads", overheads]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        scale_model.main(
            [
                "predict",
                "--profile",
                str(profile),
                "--cpus",
                "2,16,64",
                "--scale-space",
                "4",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert [r["space_copies"] for r in out["rows"]] == [1, 1, 4]
    assert out["rows"][2]["extrapolated"] and not out["rows"][1]["extrapolated"]
    r2 = out["rows"][0]
    assert r2["fifo"]["job_s"] == pytest.approx(5.0 + r2["fifo"]["makespan_s"] + 2.0)
    assert r2["fifo"]["efficiency_from_2"] == pytest.approx(1.0)
    assert set(out["targets_at_16"]) and r2["fifo"]["best"] == "lr C=5"
    scale_model.main(["predict", "--profile", str(profile), "--cpus", "2,16"])
    assert "targets at N=16" in capsys.readouterr().out
    model = r2["asha"]["job_s"]
    runs = tmp_path / "runs.json"
    runs.write_text(
        json.dumps(
            [
                {
                    "workers": 1,
                    "cpus_per_node": 2,
                    "wall_s": model * 1.05,
                    "profile": "profile.json",
                },
                {
                    "workers": 1,
                    "cpus_per_node": 2,
                    "wall_s": model * 1.5,
                    "profile": "profile.json",
                },
            ]
        )
    )
    assert scale_model.main(["validate", "--runs", str(runs), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["flagged"] for r in rows] == [False, True]
    assert rows[0]["error"] == pytest.approx(1 / 1.05 - 1)
