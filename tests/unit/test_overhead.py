"""bench/overhead_stages.py (no Ray started): timed spans → nested stages that add up to the
run, pieces cut at milestones, and the milestones read from Ray's task and worker records."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import overhead_stages as st

UNSET = 2**64 - 1  # what the state API reports for a time it never recorded


def by_stage(rows):
    return {(r["depth"], r["stage"]): r for r in rows}


def test_stages_nest_and_add_up_to_the_run():
    spans = [
        ("Ray start", 2.0, 5.0),
        ("run", 5.0, 18.0),
        ("fit", 6.0, 14.0),
        ("refit", 14.0, 16.0),
        ("shutdown", 18.5, 19.0),
    ]
    rows = st.rows(st.nest(spans, 0.0, 20.0), rest={"run": "metadata"}, lead="imports")
    got = by_stage(rows)
    assert [r["stage"] for r in rows] == [
        "imports", "Ray start", "run", "fit", "refit", "(metadata)", "shutdown", "end", "(other)",
    ]  # fmt: skip
    assert got[(0, "imports")]["seconds"] == 2.0
    assert got[(1, "(metadata)")]["seconds"] == pytest.approx(3.0)  # 13 s of run, 10 in children
    assert got[(0, "end")]["seconds"] == 1.0
    assert got[(0, "(other)")]["seconds"] == pytest.approx(0.5)  # between run and shutdown
    top = [r for r in rows if r["depth"] == 0]
    assert sum(r["seconds"] for r in top) == pytest.approx(20.0)
    assert sum(r["share"] for r in top) == pytest.approx(1.0)
    assert sum(r["seconds"] for r in rows if r["depth"] == 1) == pytest.approx(13.0)


def test_excluded_time_leaves_every_stage_and_the_total():
    spans = [("run", 1.0, 9.0), ("fit", 2.0, 6.0)]
    excluded = [("state API", 7.0, 9.0)]  # inside run, after fit
    rows = by_stage(st.rows(st.nest(spans, 0.0, 10.0), excluded, {"run": "rest"}))
    assert rows[(0, "run")]["seconds"] == pytest.approx(6.0)
    assert rows[(1, "(rest)")]["seconds"] == pytest.approx(2.0)
    assert rows[(0, "run")]["share"] == pytest.approx(6.0 / 8.0)  # of 10 s less the 2 excluded


def test_same_named_siblings_merge_into_one_row():
    spans = [("run", 0.0, 10.0), ("count", 8.0, 8.5), ("count", 9.0, 9.25)]
    rows = by_stage(st.rows(st.nest(spans, 0.0, 10.0)))
    assert rows[(1, "count")]["seconds"] == pytest.approx(0.75)
    assert rows[(1, "count")]["calls"] == 2


def test_phases_cut_a_span_at_the_points_inside_it_in_time_order():
    points = [("last fold", 9.0), ("first actor", 3.0), ("before", 0.5), ("after", 12.0)]
    assert st.phases(1.0, 10.0, points, "wind-down") == [
        ("to first actor", 1.0, 3.0),
        ("to last fold", 3.0, 9.0),
        ("wind-down", 9.0, 10.0),
    ]
    assert st.phases(1.0, 2.0, [], "all") == [("all", 1.0, 2.0)]


def test_phases_become_children_of_the_span_they_cut():
    fit = ("fit", 1.0, 10.0)
    spans = [fit, *st.phases(1.0, 10.0, [("first fold", 4.0)], "rest of search")]
    rows = st.rows(st.nest(spans, 0.0, 10.0))
    assert [(r["depth"], r["stage"], r["seconds"]) for r in rows if r["depth"] == 1] == [
        (1, "to first fold", 3.0),
        (1, "rest of search", 6.0),
    ]


def task(name, kind, start, end, pid, created=None, func=None):
    return {
        "name": name,
        "func_or_class_name": func or name,
        "type": kind,
        "creation_time_ms": created or start,
        "start_time_ms": start,
        "end_time_ms": end,
        "worker_pid": pid,
    }


def test_train_milestones_from_task_and_worker_records():
    state = {
        "tasks": [
            task("ImplicitFunc.__init__", "ACTOR_CREATION_TASK", 7_000, 9_400, 11),
            task("ImplicitFunc.__init__", "ACTOR_CREATION_TASK", 7_100, 10_200, 12),
            task("_fold_task rf #0", "NORMAL_TASK", 10_100, 13_700, 21, func="_fold_task"),
            task("_fold_task rf #1", "NORMAL_TASK", 10_200, 13_800, 22, func="_fold_task"),
            task("_fold_task lr #0", "NORMAL_TASK", 13_700, 53_700, 21, func="_fold_task"),
            task("_refit_task", "NORMAL_TASK", 54_100, 56_700, 23),
            task("ImplicitFunc.train", "ACTOR_TASK", 9_400, 13_700, 11),
        ],
        "workers": [
            {"worker_type": "DRIVER", "pid": 1, "worker_launch_time_ms": UNSET,
             "start_time_ms": 5_600},
            {"worker_type": "WORKER", "pid": 10, "worker_launch_time_ms": 5_300,
             "start_time_ms": 5_600},  # prestarted, never used
            {"worker_type": "WORKER", "pid": 11, "worker_launch_time_ms": 6_400,
             "start_time_ms": 7_000},
            {"worker_type": "WORKER", "pid": 21, "worker_launch_time_ms": 9_400,
             "start_time_ms": 10_100},
        ],
    }  # fmt: skip
    ms = st.train_milestones(state)
    assert ms["points"] == {
        "first trial actor's process running": 7.0,
        "first trial actor ready": 9.4,
        "first fold task running": 10.1,
        "first fold finished": 13.7,
        "last fold finished": 53.7,
    }
    assert ms["refit"] == {"refit task running": 54.1, "refit task finished": 56.7}
    assert ms["workers"]["started"] == 3
    assert ms["workers"]["never_ran_a_task"] == 1
    assert ms["workers"]["first_ready"] == 5.6
    assert ms["workers"]["startup_s_summed"] == pytest.approx(0.3 + 0.6 + 0.7)
    assert ms["work"]["fold tasks run"] == 3
    assert ms["work"]["fold tasks, summed s"] == pytest.approx(3.6 + 3.6 + 40.0)
    assert ms["work"]["trial actor start-up (creation task), summed s"] == pytest.approx(5.5)


def test_unfinished_and_unset_times_are_left_out():
    state = {"tasks": [task("_fold_task a #0", "NORMAL_TASK", 1_000, 0, 5, func="_fold_task")]}
    ms = st.train_milestones(state)
    assert ms["points"]["first fold task running"] == 1.0
    assert ms["points"]["first fold finished"] is None
    assert ms["work"]["fold tasks, summed s"] == 0
    assert st.train_milestones({})["points"]["first trial actor ready"] is None


def test_score_milestones_and_the_scorers_own_timings():
    scorer = "MapWorker(MapBatches(BatchScorer))"
    state = {
        "tasks": [
            task("ReadRowSource", "NORMAL_TASK", 6_800, 13_300, 30, func="_map_task"),
            task(f"{scorer}.__init__", "ACTOR_CREATION_TASK", 5_800, 8_800, 31),
            task(f"{scorer}.__init__", "ACTOR_CREATION_TASK", 6_200, 8_900, 32),
            task(f"{scorer}.submit", "ACTOR_TASK", 9_600, 13_000, 32),
            task(f"{scorer}.get_location", "ACTOR_TASK", 8_800, 8_801, 31),
            task("Write", "NORMAL_TASK", 13_300, 13_500, 30, func="_map_task"),
            task("Write", "NORMAL_TASK", 19_000, 19_200, 30, func="_map_task"),
        ]
    }
    records = {
        "scorer-31": [{"init": [8.4, 8.8]}],
        "scorer-32": [
            {"init": [8.6, 8.9]},
            {"call": [10.0, 10.6], "check": 0.05, "score": 0.5},
            {"call": [10.6, 11.2], "check": 0.04, "score": 0.5},
        ],
    }
    calls = [r for rs in records.values() for r in rs if "call" in r]
    ms = st.score_milestones(state, calls)
    assert ms["points"] == {
        "read task running": 6.8,
        "first scoring actor's process running": 5.8,
        "first scoring actor ready": 8.8,
        "first block at a scoring actor": 9.6,
        "last batch scored": 11.2,
        "last write finished": 19.2,
    }
    assert ms["actor_startup_s_summed"] == pytest.approx(3.0 + 2.7)
    work = st.scorer_work(records)
    assert work["batches"] == 2
    assert work["check_s"] == pytest.approx(0.09)
    assert work["score_s"] == pytest.approx(1.0)
    assert work["rest_s"] == pytest.approx(1.2 - 1.09)
    assert work["init_s"] == pytest.approx(0.7)
    assert work["batches_by_actor"] == {"scorer-31": 0, "scorer-32": 2}
    assert work["busy_s_by_actor"]["scorer-31"] == 0


def test_table_indents_by_depth_and_prints_shares():
    rows = [
        {"stage": "run", "depth": 0, "seconds": 8.0, "share": 0.8, "calls": 1},
        {"stage": "count", "depth": 1, "seconds": 0.5, "share": 0.05, "calls": 2},
    ]
    lines = st.table(rows).splitlines()
    assert lines[1].startswith("run ") and lines[1].endswith("8.00   80.0%")
    assert lines[2].startswith("  count x2") and lines[2].endswith("0.50    5.0%")
