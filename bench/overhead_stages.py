"""Stage arithmetic of bench/overhead.py (no Ray): timed spans → a nested table of stages
that adds up to the run's wall time, and the milestones read from Ray's task records.

A span is ``(name, start, end)`` in Unix seconds. Spans nest by containment (a function
called inside another); the time of a span not covered by its children is its ``rest`` row.
``excluded`` spans (the benchmark's own reads of Ray's state) are taken out of every stage
they overlap and out of the total.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Span = tuple[str, float, float]
EPS = 1e-6


@dataclass
class Node:
    name: str
    start: float
    end: float
    children: list[Node] = field(default_factory=list)


def overlap(a: float, b: float, spans: Iterable[Span]) -> float:
    """Seconds of ``[a, b]`` covered by ``spans`` (assumed disjoint)."""
    return sum(max(0.0, min(b, e) - max(a, s)) for _, s, e in spans)


def net(a: float, b: float, excluded: Sequence[Span]) -> float:
    return max(0.0, (b - a) - overlap(a, b, excluded))


def nest(spans: Iterable[Span], start: float, end: float) -> Node:
    """The spans as a tree under a root ``[start, end]``, each under the innermost span that
    contains it."""
    root = Node("total", start, end)
    stack = [root]
    for name, s, e in sorted(spans, key=lambda x: (x[1], -x[2])):
        while len(stack) > 1 and not (s >= stack[-1].start - EPS and e <= stack[-1].end + EPS):
            stack.pop()
        node = Node(name, s, e)
        stack[-1].children.append(node)
        stack.append(node)
    return root


def phases(start: float, end: float, points: Iterable[tuple[str, float]], last: str) -> list[Span]:
    """``[start, end]`` cut at the ``points`` inside it (in time order): one span per piece,
    named ``"to <point>"`` after the point that ends it, the last one ``last``."""
    inside = sorted((t, label) for label, t in points if start < t < end)
    out, prev = [], start
    for t, label in inside:
        out.append((f"to {label}", prev, t))
        prev = t
    out.append((last, prev, end))
    return out


def rows(
    root: Node,
    excluded: Sequence[Span] = (),
    rest: dict[str, str] | None = None,
    lead: str = "start",
    trail: str = "end",
) -> list[dict[str, Any]]:
    """One row per stage, depth first: ``{"stage", "depth", "seconds", "share", "calls"}``.
    Under each span with children, a ``rest`` row (label from ``rest`` by the span's name)
    holds its time outside them; under the root, the time before the first span (``lead``)
    and after the last (``trail``). Siblings with the same name are merged (calls summed).
    Shares are of the root's seconds net of ``excluded``; every level adds up to its parent."""
    rest = rest or {}
    total = net(root.start, root.end, excluded) or 1.0
    out: list[dict[str, Any]] = []

    def row(stage: str, depth: int, seconds: float) -> dict[str, Any]:
        return {
            "stage": stage,
            "depth": depth,
            "seconds": seconds,
            "share": seconds / total,
            "calls": 1,
        }

    def walk(node: Node, depth: int) -> None:
        merged: dict[str, dict[str, Any]] = {}
        covered = 0.0
        for child in node.children:
            seconds = net(child.start, child.end, excluded)
            covered += seconds
            if child.name in merged:
                merged[child.name]["seconds"] += seconds
                merged[child.name]["share"] = merged[child.name]["seconds"] / total
                merged[child.name]["calls"] += 1
                continue
            merged[child.name] = row(child.name, depth, seconds)
            out.append(merged[child.name])
            walk(child, depth + 1)
        if not node.children:
            return
        own = net(node.start, node.end, excluded) - covered
        if node is root:
            first, last = node.children[0], max(node.children, key=lambda c: c.end)
            head = net(node.start, first.start, excluded)
            tail = net(last.end, node.end, excluded)
            out.insert(0, row(lead, depth, head))
            out.append(row(trail, depth, tail))
            own -= head + tail
        if own > 5e-4:
            out.append(row(f"({rest.get(node.name, 'other')})", depth, own))

    walk(root, 0)
    return out


# -- Ray's records ----------------------------------------------------------------------------
def _s(ms: Any) -> float | None:
    """Unix seconds from a state-API millisecond field (0, -1 and 2**64 - 1 mean unset)."""
    return ms / 1000 if isinstance(ms, int | float) and 0 < ms < 1e15 else None


def _times(tasks: Iterable[dict[str, Any]], key: str) -> list[float]:
    return [t for r in tasks if (t := _s(r.get(key))) is not None]


def _named(tasks: Iterable[dict[str, Any]], part: str, kind: str | None = None) -> list[dict]:
    return [
        r
        for r in tasks
        if part in str(r.get("name") or r.get("func_or_class_name"))
        and (kind is None or r.get("type") == kind)
    ]


def first(values: list[float]) -> float | None:
    return min(values) if values else None


def workers(state: dict[str, Any]) -> dict[str, Any]:
    """Worker processes (not the driver): how many started, how many never ran a task, the
    first one ready, and their start-up (launch → ready) summed."""
    procs = [w for w in state.get("workers", []) if w.get("worker_type") == "WORKER"]
    used = {r.get("worker_pid") for r in state.get("tasks", [])}
    startup = [
        b - a
        for w in procs
        if (a := _s(w.get("worker_launch_time_ms"))) and (b := _s(w.get("start_time_ms")))
    ]
    return {
        "started": len(procs),
        "never_ran_a_task": sum(w.get("pid") not in used for w in procs),
        "first_ready": first(_times(procs, "start_time_ms")),
        "startup_s_summed": sum(startup),
    }


def task_seconds(tasks: Iterable[dict[str, Any]]) -> float:
    """Execution seconds (start → end) summed over finished tasks."""
    return sum(
        e - s
        for r in tasks
        if (s := _s(r.get("start_time_ms"))) and (e := _s(r.get("end_time_ms")))
    )


def train_milestones(state: dict[str, Any], fold_name: str = "_fold_task") -> dict[str, Any]:
    """Points in the search and the refit, from Ray's task records, plus summed work."""
    tasks = state.get("tasks", [])
    actors = _named(tasks, "__init__", "ACTOR_CREATION_TASK")
    folds = _named(tasks, fold_name, "NORMAL_TASK")
    refit = _named(tasks, "_refit_task", "NORMAL_TASK")
    return {
        "points": {
            "first trial actor's process running": first(_times(actors, "start_time_ms")),
            "first trial actor ready": first(_times(actors, "end_time_ms")),
            "first fold task running": first(_times(folds, "start_time_ms")),
            "first fold finished": first(_times(folds, "end_time_ms")),
            "last fold finished": max(_times(folds, "end_time_ms"), default=None),
        },
        "refit": {
            "refit task running": first(_times(refit, "start_time_ms")),
            "refit task finished": first(_times(refit, "end_time_ms")),
        },
        "workers": workers(state),
        "work": {
            "trial actors started": len(actors),
            "trial actor start-up (creation task), summed s": task_seconds(actors),
            "fold tasks run": len(folds),
            "fold tasks, summed s": task_seconds(folds),
        },
    }


def score_milestones(state: dict[str, Any], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Points in the Ray Data execution, from Ray's task records and the scorer's calls."""
    tasks = state.get("tasks", [])
    scorers = _named(tasks, "MapBatches", "ACTOR_CREATION_TASK")
    submits = [r for r in _named(tasks, "MapBatches", "ACTOR_TASK") if "submit" in r["name"]]
    return {
        "points": {
            "read task running": first(
                _times(_named(tasks, "Read", "NORMAL_TASK"), "start_time_ms")
            ),
            "first scoring actor's process running": first(_times(scorers, "start_time_ms")),
            "first scoring actor ready": first(_times(scorers, "end_time_ms")),
            "first block at a scoring actor": first(_times(submits, "start_time_ms")),
            "last batch scored": max((c["call"][1] for c in calls), default=None),
            "last write finished": max(
                _times(_named(tasks, "Write", "NORMAL_TASK"), "end_time_ms"), default=None
            ),
        },
        "workers": workers(state),
        "actor_startup_s_summed": task_seconds(scorers),
    }


def scorer_work(records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The scoring actors' own timings (one list of JSON records per actor process)."""
    calls = [r for rs in records.values() for r in rs if "call" in r]
    busy = {
        pid: sum(r["call"][1] - r["call"][0] for r in rs if "call" in r)
        for pid, rs in records.items()
    }
    batches = {pid: sum("call" in r for r in rs) for pid, rs in records.items()}
    inits = [r["init"][1] - r["init"][0] for rs in records.values() for r in rs if "init" in r]
    called = sum(c["call"][1] - c["call"][0] for c in calls)
    check, score = sum(c["check"] for c in calls), sum(c["score"] for c in calls)
    return {
        "batches": len(calls),
        "calls_s": called,
        "check_s": check,
        "score_s": score,
        "rest_s": called - check - score,
        "init_s": sum(inits),
        "busy_s_by_actor": busy,
        "batches_by_actor": batches,
    }


def table(rows_: Sequence[dict[str, Any]], width: int = 62) -> str:
    """Rows as text: stage (indented by depth), seconds, share of the run."""
    lines = [f"{'stage':<{width}}{'seconds':>9}{'share':>8}"]
    for r in rows_:
        name = "  " * r["depth"] + r["stage"]
        calls = f" x{r['calls']}" if r.get("calls", 1) > 1 else ""
        lines.append(f"{(name + calls)[:width]:<{width}}{r['seconds']:>9.2f}{r['share']:>8.1%}")
    return "\n".join(lines)
