"""Discrete-event core of ``bench/scale_model.py`` (read its docstring first): the Tune search
as ``sparc_ray.training.tuning`` schedules it, and GridSearchCV's joblib loop, on N CPUs.
Times are seconds from the start of ``Tuner.fit`` (resp. ``GridSearchCV.fit``)."""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparc_ray.training.search_space import fit_cost
from sparc_ray.training.tuning import SPARE_CPU_POLL_S, fold_milestones


@dataclass
class Candidate:
    label: str
    model_type: str
    params: dict[str, Any]
    durations: list[float]  # each fold's fit + score, seconds, on cpus_per_fold CPUs
    scores: list[float]  # each fold's score
    copy: int = 0  # 0: measured; j > 0: the j-th synthetic copy (scale_space)

    def as_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "params": self.params, "label": self.label}


@dataclass
class Overheads:  # fixed costs, seconds (0 or null when unknown: measure them on the cluster)
    dispatch_s: float = 0.0  # per fold task, holding its CPU: lease, fetching args, returning
    report_s: float = 0.0  # per fold report: fold done -> its trial acts (tune.report round trip)
    trial_start_s: float = 0.0  # per trial: a free trial slot -> its first fold submitted
    node_warmup_s: float = 0.0  # per node, its slots in parallel: the first fold in each slot
    # is this much longer (worker process start, imports, fetching the split)
    driver_s: float = 0.0  # once per job: Ray start, Tune setup and teardown
    refit_s: float | None = None  # the best config on the full split, one node's CPUs (null:
    # one thread, the best's mean fold x k/(k-1))
    interrupt_s: float | None = None  # a stopped trial's running fold frees its CPU this long
    # after ray.cancel (its KeyboardInterrupt); null: it runs to its end
    gs_start_s: float = 0.0  # GridSearchCV: its loky workers starting, once
    gs_refit_s: float | None = None  # GridSearchCV's refit (null: as refit_s's estimate)


@dataclass
class Search:  # the profile's "search"; as SearchConfig, plus order_candidates' seed
    scheduler: str = "asha"  # or "fifo"
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_concurrent_trials: int | None = None  # None: max(2, int(2 x CPUs / cpus_per_fold))
    cpus_per_fold: float = 1.0
    seed: int = 0

    @property
    def asha(self) -> Search:  # fold_milestones reads search.asha.grace_period (duck typing)
        return self


class Asha:
    """Ray Tune's ASHAScheduler (one bracket, stop_last_trials, mode max), one result per fold:
    rungs at grace * rf**k, k < int(log(max_t / grace) / log(rf) + 1); at the first rung a
    result reaches, the trial stops if its reward is below the (1 - 1/rf) percentile (numpy,
    linear) of those recorded there so far (none: no cutoff, the first trial at a rung goes
    on; one: that one is the cutoff); recorded either way. At max_t a trial is finished."""

    def __init__(self, grace_period: int, max_t: int, reduction_factor: float) -> None:
        count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)
        self.rf, self.max_t = reduction_factor, max_t
        self.rungs: list[tuple[float, dict[str, float]]] = [
            (grace_period * reduction_factor**k, {}) for k in reversed(range(count))
        ]

    def on_result(self, trial: str, iteration: int, reward: float) -> bool:
        stop = iteration >= self.max_t
        for milestone, recorded in self.rungs:
            if iteration < milestone or trial in recorded:
                continue
            values = list(recorded.values())
            if values and reward < np.nanpercentile(values, (1 - 1 / self.rf) * 100):
                stop = True
            recorded[trial] = reward
            break
        return stop


@dataclass(eq=False)
class _Trial:
    cand: Candidate
    scores: list[float] = field(default_factory=list)
    pending: int = 0  # submitted folds ray.wait has not returned yet
    done: deque[_Task] = field(default_factory=deque)  # finished, not yet reported
    running: set[_Task] = field(default_factory=set)
    busy: bool = False  # from a fold's return to the trial's next ray.wait
    alive: bool = True
    gen: int = 0  # which poll event is current


@dataclass(eq=False)
class _Task:
    trial: _Trial
    fold: int
    start: float = 0.0
    end: float = math.inf


class SearchSim:
    """One search: trials start in ``cands``' order, at most max_concurrent_trials at once;
    fold tasks queue FIFO (submission order) for fold slots of all nodes."""

    def __init__(
        self,
        cands: list[Candidate],
        n: int,
        search: Search,
        ov: Overheads,
        cpus: int,
        per_node: int,
    ) -> None:
        self.n, self.search, self.ov, self.cpus = n, search, ov, cpus
        self.per = per = search.cpus_per_fold
        nodes = [min(per_node, cpus - i) for i in range(0, cpus, per_node)]
        self.cold, self.warm = sum(int(c / per + 1e-9) for c in nodes), 0  # free fold slots
        if not self.cold:
            raise ValueError(f"no node of {per_node} CPUs fits a fold of {per} CPUs")
        self.spare = cpus - self.cold * per  # CPUs no fold fits in (fractions of nodes)
        self.milestones = fold_milestones(n, search)  # type: ignore[arg-type]
        asha = search.scheduler == "asha"
        self.asha = Asha(search.grace_period, n, search.reduction_factor) if asha else None
        self.limit = search.max_concurrent_trials or max(2, int(2 * cpus / self.per))
        self.waiting = deque(cands)
        self.queue: deque[_Task] = deque()
        self.events: list[tuple[float, int, str, Any, int]] = []
        self.seq = 0
        self.trials: list[_Trial] = []
        self.log: list[tuple[str, int, float, bool]] = []  # ASHA: (label, folds, mean, stop)
        self.busy_s = self.wasted_s = self.end = self.last_fold = 0.0

    def _push(self, t: float, kind: str, obj: Any, gen: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, obj, gen))

    def run(self) -> dict[str, Any]:
        for _ in range(min(self.limit, len(self.waiting))):
            self._push(self.ov.trial_start_s, "start", self.waiting.popleft())
        while self.events:
            t, _, kind, obj, gen = heapq.heappop(self.events)
            getattr(self, "_" + kind)(t, obj, gen)
        return self._summary()

    def _start(self, t: float, cand: Candidate, _gen: int) -> None:
        trial = _Trial(cand)
        self.trials.append(trial)
        self._step(t, trial, wait=True)

    def _step(self, t: float, tr: _Trial, wait: bool) -> None:
        """One pass of cv_trainable's loop: submit up to the next milestone, run ahead on
        idle CPUs, then ray.wait (polling every 0.5 s while folds are left to run ahead)."""
        done = len(tr.scores)
        needed = next(m for m in self.milestones if m > done)
        self._submit(t, tr, needed - done - tr.pending)
        ahead = done + tr.pending < self.n
        if ahead:  # ray.available_resources()["CPU"] // cpus_per_fold
            self._submit(t, tr, int(((self.warm + self.cold) * self.per + self.spare) // self.per))
        tr.gen += 1
        if ahead and wait:
            self._push(t + SPARE_CPU_POLL_S, "poll", tr, tr.gen)

    def _submit(self, t: float, tr: _Trial, count: int) -> None:
        for _ in range(max(0, min(count, self.n - len(tr.scores) - tr.pending))):
            self.queue.append(_Task(tr, len(tr.scores) + tr.pending))
            tr.pending += 1
        self._dispatch(t)

    def _dispatch(self, t: float) -> None:
        while self.queue and self.warm + self.cold:
            task = self.queue.popleft()
            if not task.trial.alive:  # cancelled while queued
                continue
            cold = not self.warm  # the slot's first fold: worker start, imports, the split
            self.cold, self.warm = self.cold - cold, self.warm - (not cold)
            warmup = self.ov.node_warmup_s if cold else 0.0
            task.start = t
            task.end = t + self.ov.dispatch_s + warmup + task.trial.cand.durations[task.fold]
            task.trial.running.add(task)
            self._push(task.end, "end", task)

    def _end(self, t: float, task: _Task, _gen: int) -> None:
        if t != task.end:  # interrupted earlier
            return
        self.warm += 1
        self.busy_s += (t - task.start) * self.per
        self.last_fold = max(self.last_fold, t)
        tr = task.trial
        tr.running.discard(task)
        if tr.alive:
            tr.done.append(task)
            if not tr.busy:
                tr.busy = True
                self._push(t + self.ov.report_s, "report", tr)
        else:
            self.wasted_s += (t - task.start) * self.per
        self._dispatch(t)

    def _report(self, t: float, tr: _Trial, _gen: int) -> None:
        task = tr.done.popleft()
        tr.pending -= 1
        tr.scores.append(tr.cand.scores[task.fold])
        mean = float(np.mean(tr.scores))
        stop = len(tr.scores) >= self.n
        if self.asha is not None:
            stop = self.asha.on_result(tr.cand.label, len(tr.scores), mean)
            self.log.append((tr.cand.label, len(tr.scores), mean, stop))
        if stop:
            self._finish(t, tr)
            return
        self._step(t, tr, wait=not tr.done)
        if tr.done:  # ray.wait returns the next finished fold at once
            self._push(t + self.ov.report_s, "report", tr)
        else:
            tr.busy = False

    def _poll(self, t: float, tr: _Trial, gen: int) -> None:
        if tr.alive and not tr.busy and gen == tr.gen:
            self._step(t, tr, wait=True)

    def _finish(self, t: float, tr: _Trial) -> None:
        """Finished or stopped: queued folds are cancelled (skipped at dispatch); running ones
        run to their end, or stop interrupt_s after ray.cancel's KeyboardInterrupt."""
        tr.alive, self.end = False, max(self.end, t)
        self.wasted_s += sum((d.end - d.start) * self.per for d in tr.done)
        if self.ov.interrupt_s is not None:
            for task in tr.running:
                task.end = min(task.end, t + self.ov.interrupt_s)
                self._push(task.end, "end", task)
        if self.waiting:
            self._push(t + self.ov.trial_start_s, "start", self.waiting.popleft())

    def _summary(self) -> dict[str, Any]:
        complete = [tr for tr in self.trials if len(tr.scores) == self.n]
        stats = {id(tr): (float(np.mean(tr.scores)), float(np.std(tr.scores))) for tr in complete}
        best = min(complete, key=lambda tr: (-stats[id(tr)][0], stats[id(tr)][1], *_tie(tr.cand)))
        return {
            "makespan_s": self.end,
            "last_fold_end_s": self.last_fold,
            "utilisation": self.busy_s / (self.cpus * self.end) if self.end else 0.0,
            "busy_cpu_s": self.busy_s,
            "wasted_cpu_s": self.wasted_s,
            "folds_reported": sum(len(tr.scores) for tr in self.trials),
            "trials_stopped": len(self.trials) - len(complete),
            "max_concurrent_trials": self.limit,
            "best": best.cand.label,
            "best_cv_mean": stats[id(best)][0],
            "asha_log": self.log,
        }


def _tie(c: Candidate) -> tuple[float, str]:
    return fit_cost(c.as_dict()), c.label


def gridsearch_order(cands: list[Candidate]) -> list[Candidate]:
    """GridSearchCV's candidate order for one grid per family (search_data.grids): families in
    order, each family's ParameterGrid (keys sorted, values as listed, the last key fastest);
    a synthetic copy j > 0 of the space is the list of grids again, after copy j - 1."""
    families: dict[tuple[int, str], list[Candidate]] = {}
    for c in cands:
        families.setdefault((c.copy, c.model_type), []).append(c)
    out: list[Candidate] = []
    for key in sorted(families, key=lambda k: k[0]):  # stable: families keep their order
        group = families[key]
        names = sorted({k for c in group for k in c.params})
        values: dict[str, list[Any]] = {k: [] for k in names}
        for c in group:
            for k in names:
                if c.params.get(k) not in values[k]:
                    values[k].append(c.params.get(k))
        out += sorted(group, key=lambda c: [values[k].index(c.params.get(k)) for k in names])
    return out


def gridsearch(cands: list[Candidate], cpus: int, ov: Overheads) -> dict[str, Any]:
    """GridSearchCV(n_jobs=cpus): every (candidate, fold) fit in ``cands`` x folds order, each
    on the worker free first; best = highest mean, ties to the first (rank_test_score)."""
    workers = [ov.gs_start_s] * cpus
    for c in cands:
        for seconds in c.durations:
            heapq.heappush(workers, heapq.heappop(workers) + seconds)
    means = [float(np.mean(c.scores)) for c in cands]
    best, makespan = int(np.argmax(means)), max(workers)
    work = sum(sum(c.durations) for c in cands)
    return {
        "makespan_s": makespan,
        "utilisation": work / (cpus * makespan),
        "best": cands[best].label,
        "best_cv_mean": means[best],
    }
