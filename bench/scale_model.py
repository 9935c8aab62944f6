"""Scaling model of the Tune search: a discrete-event replay of how sparc_ray.training.tuning
schedules measured fold durations on N CPUs, against GridSearchCV(n_jobs=N) on one machine.

    python bench/scale_model.py build --durations bench/results/fold_durations_broad_20000.json \\
        --space broad --reduction-factor 3 --out bench/results/profile_broad.json  # measured
        # first if missing: every fold fitted once, one thread, no Ray (a few minutes)
    python bench/scale_model.py build --experiment ray_results/EXP [--tasks tasks.json] \\
        --scheduler asha --reduction-factor 3 --overheads overheads.json --out profile.json
    python bench/scale_model.py predict --profile profile.json [--scale-space 8] [--json]
    python bench/scale_model.py validate --runs runs.json [--json]

Inputs: the profile (bench/scale_profile.py's docstring), its overheads (scale_sim.Overheads);
validate's runs.json: [{"workers": w, "cpus_per_node": c, "wall_s": s, "profile": path
(relative to runs.json), "scope": "job" (driver + search + refit, default) or "search"}].

Modelled (bench/scale_sim.py): trials start in order_candidates' order (costliest first) or a
real run's, at most max_concurrent_trials at once (default max(2, int(2 N / cpus_per_fold)));
a trial holds no CPU; its fold tasks queue FIFO, in submission order, for the fold slots of
all nodes. FIFO: all folds submitted at once. ASHA: folds up to the next fold_milestones
mark, then more on idle CPUs (ray.available_resources, polled every
SPARE_CPU_POLL_S); Ray's ASHA rule on each report's running mean (completion order); a
stopped trial's queued folds are cancelled. Best: highest full-CV mean among trials that ran
every fold (ties: std, fit_cost, label). GridSearchCV: (candidate, fold) fits in
ParameterGrid order, each taken by the first free worker; best: highest mean, first on ties.

Not modelled: Ray's real scheduler (per-node queues, spillback, locality, lagging resource
reports), Tune's driver loop as a serial bottleneck beyond report_s, joblib's auto-batching
of short fits, failures and retries, cores shared by threads (fold durations are as
measured, whatever N), memory and object transfers beyond node_warmup_s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from scale_profile import (
    Profile,
    json_arg,
    load_profile,
    profile_from_durations,
    profile_from_experiment,
    refit_estimate,
    scale_space,
    start_order,
)
from scale_sim import Candidate, SearchSim, gridsearch, gridsearch_order

FLAG = 0.15  # validate: a model error beyond this is flagged
SCHEDULERS = ("fifo", "asha")


def run_job(
    prof: Profile,
    cpus: int,
    per_node: int,
    scheduler: str | None = None,
    cands: list[Candidate] | None = None,
) -> dict[str, Any]:
    """The search on ``cpus`` CPUs (``per_node`` per node) and the whole job around it;
    ``cands``: another space (its start order from order_candidates)."""
    search = prof.search
    if scheduler is not None:
        search = dataclasses.replace(search, scheduler=scheduler)
    space, order = (prof.cands, prof.order) if cands is None else (cands, None)
    sim = SearchSim(
        start_order(space, search.seed, order), prof.n_folds, search, prof.ov, cpus, per_node
    )
    out = sim.run()
    best = next(c for c in space if c.label == out["best"])
    refit = prof.ov.refit_s if prof.ov.refit_s is not None else refit_estimate(best)
    out["job_s"] = prof.ov.driver_s + out["makespan_s"] + refit
    return out


def run_gridsearch(
    prof: Profile, cpus: int, cands: list[Candidate] | None = None
) -> dict[str, Any]:
    """GridSearchCV(n_jobs=cpus) on one machine; job = workers + fits + its refit."""
    space = prof.cands if cands is None else cands
    out = gridsearch(gridsearch_order(space), cpus, prof.ov)
    best = next(c for c in space if c.label == out["best"])
    refit = prof.ov.gs_refit_s
    out["job_s"] = out["makespan_s"] + (refit if refit is not None else refit_estimate(best))
    return out


def predict(
    prof: Profile, ns: list[int], per_node: int, copies: int = 1, above: int = 16, seed: int = 0
) -> dict[str, Any]:
    """Per N: FIFO and ASHA makespans, GridSearchCV's, ratios, efficiency from N = 2 on the
    same space; rows with N > ``above`` run the space x ``copies`` (scale_space)."""
    spaces = {1: prof.cands, copies: scale_space(prof.cands, copies, seed)}
    t2: dict[int, dict[str, Any]] = {}
    rows = []
    for cpus in sorted(ns):
        k = copies if cpus > above else 1
        space = spaces[k] if k > 1 else None
        row: dict[str, Any] = {"cpus": cpus, "nodes": -(-cpus // per_node), "space_copies": k}
        row["extrapolated"] = k > 1 or cpus > (prof.measured_cpus or cpus)
        for s in SCHEDULERS:
            row[s] = run_job(prof, cpus, per_node, s, space)
            row[s].pop("asha_log")
        gs = row["grid_search"] = run_gridsearch(prof, cpus, space)
        if k not in t2:
            t2[k] = (
                row if cpus == 2 else {s: run_job(prof, 2, per_node, s, space) for s in SCHEDULERS}
            )
        for s in SCHEDULERS:
            r = row[s]
            r["vs_grid_search"] = r["makespan_s"] / gs["makespan_s"]
            r["job_vs_grid_search"] = r["job_s"] / gs["job_s"]
            r["efficiency_from_2"] = t2[k][s]["makespan_s"] * 2 / (r["makespan_s"] * cpus)
            r["same_best"] = r["best"] == gs["best"]
        rows.append(row)
    targets = None
    r16 = next((r for r in rows if r["cpus"] == 16), None)
    if r16 is not None:
        f, a = r16["fifo"], r16["asha"]
        targets = {
            "FIFO <= 1.0x GridSearchCV, same best": f["vs_grid_search"] <= 1.0 and f["same_best"],
            "ASHA <= 0.6x GridSearchCV, same best": a["vs_grid_search"] <= 0.6 and a["same_best"],
            "efficiency 2 -> 16 >= 75%": min(f["efficiency_from_2"], a["efficiency_from_2"])
            >= 0.75,
        }
    return {
        "candidates": len(prof.cands),
        "n_folds": prof.n_folds,
        "search": dataclasses.asdict(prof.search),
        "overheads": dataclasses.asdict(prof.ov),
        "measured_cpus": prof.measured_cpus,
        "cpus_per_node": per_node,
        "scale_space": copies,
        "scale_above": above,
        "rows": rows,
        "targets_at_16": targets,
    }


def print_predict(out: dict[str, Any]) -> None:
    s = out["search"]
    print(
        f"measured (the profile): fold durations and scores of {out['candidates']} configurations"
        f" x {out['n_folds']} folds; overheads as given: "
        + ", ".join(f"{k}={v}" for k, v in out["overheads"].items())
    )
    print(
        f"modelled: every time below (tuning.py's schedule replayed, no run); "
        f"{out['cpus_per_node']} CPUs per node; ASHA grace {s['grace_period']}, "
        f"rf {s['reduction_factor']:g}; "
        f"max_concurrent_trials {s['max_concurrent_trials'] or 'default'}"
    )
    if out["scale_space"] > 1:
        print(
            f"extrapolated (*): rows with N > {out['scale_above']} run the space x"
            f"{out['scale_space']} (copies: measured durations, synthetic scores resampled from "
            "the measured folds); their efficiency is against N=2 on that same space"
        )
    if out["measured_cpus"]:
        print(f"extrapolated (*): rows with N > {out['measured_cpus']} CPUs (the measured run's)")
    print("\nsearch makespans (GSCV: GridSearchCV(n_jobs=N) on one N-CPU machine)")
    print(
        f"{'N':>9}{'nodes':>9}{'FIFO s':>9}{'ASHA s':>9}{'GSCV s':>9}{'FIFO/GS':>9}{'ASHA/GS':>9}"
        f"{'eff FIFO':>9}{'eff ASHA':>9}  util F/A/GS   ASHA stopped  ASHA best"
    )
    for r in out["rows"]:
        f, a, g = r["fifo"], r["asha"], r["grid_search"]
        n = f"{r['cpus']}{'*' if r['extrapolated'] else ''}"
        print(
            f"{n:>9}{r['nodes']:>9}{f['makespan_s']:>9.1f}{a['makespan_s']:>9.1f}"
            f"{g['makespan_s']:>9.1f}{f['vs_grid_search']:>9.2f}{a['vs_grid_search']:>9.2f}"
            f"{f['efficiency_from_2']:>9.0%}{a['efficiency_from_2']:>9.0%}  "
            f"{f['utilisation']:.0%}/{a['utilisation']:.0%}/{g['utilisation']:.0%}"
            f"{a['trials_stopped']:>10} trials  "
            + ("= GridSearchCV's" if a["same_best"] else f"OTHER: {a['best']}")
        )
    print("\nwhole jobs: driver + search + refit (GridSearchCV: workers + search + refit)")
    for r in out["rows"]:
        f, a, g = r["fifo"], r["asha"], r["grid_search"]
        print(
            f"{r['cpus']:>8}{'*' if r['extrapolated'] else ' '} FIFO {f['job_s']:8.1f} s "
            f"({f['job_vs_grid_search']:.2f}x)  ASHA {a['job_s']:8.1f} s "
            f"({a['job_vs_grid_search']:.2f}x)  GridSearchCV {g['job_s']:8.1f} s"
        )
    if out["targets_at_16"]:
        print("\ntargets at N=16 (search makespans, modelled):")
        for name, ok in out["targets_at_16"].items():
            print(f"  {name}: {'holds' if ok else 'MISSED'}")


def validate(runs_path: str | Path) -> dict[str, Any]:
    """Model vs measured wall time of real runs; errors beyond FLAG are flagged."""
    rows = []
    for run in json.loads(Path(runs_path).read_text()):
        prof = load_profile(Path(runs_path).parent / run["profile"])
        cpus = run["workers"] * run["cpus_per_node"]
        res = run_job(prof, cpus, run["cpus_per_node"])
        scope = run.get("scope", "job")
        model = res["job_s"] if scope == "job" else res["makespan_s"]
        err = (model - run["wall_s"]) / run["wall_s"]
        rows.append(
            {**run, "scope": scope, "cpus": cpus, "scheduler": prof.search.scheduler}
            | {"model_s": model, "error": err, "flagged": abs(err) > FLAG}
        )
    return {"rows": rows, "flagged": sum(r["flagged"] for r in rows)}


def print_validate(out: dict[str, Any]) -> None:
    head = f"{'sched':>6}{'workers':>8}{'N':>4}{'scope':>7}{'measured':>10}{'model':>8}{'error':>8}"
    print(f"{'profile':<30}{head}")
    for r in out["rows"]:
        print(
            f"{Path(r['profile']).name[:30]:<30}{r['scheduler']:>6}{r['workers']:>8}{r['cpus']:>4}"
            f"{r['scope']:>7}{r['wall_s']:>9.1f}s{r['model_s']:>7.1f}s{r['error']:>+8.1%}"
            + ("  FLAG: beyond 15%" if r["flagged"] else "")
        )
    print(f"{out['flagged']} of {len(out['rows'])} runs beyond {FLAG:.0%}")


def build(args: argparse.Namespace) -> dict[str, Any]:
    if args.experiment:
        tasks = json.loads(Path(args.tasks).read_text()) if args.tasks else None
        prof = profile_from_experiment(args.experiment, tasks, args.n_folds)
    else:
        prof = profile_from_durations(args.durations, args.space, args.rows)
    keys = ("scheduler", "grace_period", "reduction_factor", "max_concurrent_trials")
    prof["search"] = {k: getattr(args, k) for k in (*keys, "cpus_per_fold", "seed")}
    prof["overheads"] = json_arg(args.overheads) if args.overheads else {}
    return prof | ({"measured_on": {"cpus": args.measured_cpus}} if args.measured_cpus else {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("build", help="a profile from a real run or from measured folds")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--experiment", help="a Tune experiment directory (*/result.json)")
    src.add_argument("--durations", help="tune_scale_sim.py's fold_durations_*.json")
    b.add_argument("--tasks", help="Ray task records (JSON list) of the --experiment run")
    b.add_argument("--space", default="broad", help="tune_bench's space of --durations")
    b.add_argument("--rows", type=int, default=20000, help="--durations missing: measure them")
    b.add_argument("--n-folds", type=int, help="default: the most folds a trial reported")
    b.add_argument("--scheduler", choices=SCHEDULERS, default="asha")
    b.add_argument("--grace-period", type=int, default=1)
    b.add_argument("--reduction-factor", type=float, default=2.0)
    b.add_argument("--max-concurrent-trials", type=int)
    b.add_argument("--cpus-per-fold", type=float, default=1.0)
    b.add_argument("--seed", type=int, default=0, help="order_candidates' seed")
    b.add_argument("--measured-cpus", type=int, help="CPUs of the cluster that was measured")
    b.add_argument("--overheads", help="JSON (inline or a file): scale_sim.Overheads fields")
    b.add_argument("--out", required=True)
    p = sub.add_parser("predict", help="N = 2 ... 256: Tune FIFO / ASHA vs GridSearchCV")
    p.add_argument("--profile", required=True)
    p.add_argument("--cpus", default="2,16,64,256", help="comma-separated Ns")
    p.add_argument("--cpus-per-node", type=int, default=16)
    p.add_argument("--scale-space", type=int, default=1, help="copies of the space for big N")
    p.add_argument("--scale-above", type=int, default=16, help="N above which it is copied")
    p.add_argument("--seed", type=int, default=0, help="the copies' synthetic scores")
    p.add_argument("--overheads", help="JSON (inline or a file) over the profile's overheads")
    v = sub.add_parser("validate", help="model vs measured wall times of real runs")
    v.add_argument("--runs", required=True, help="JSON list of runs (see the docstring)")
    for sp in (p, v):
        sp.add_argument("--json", action="store_true", help="JSON instead of tables")
    args = parser.parse_args(argv)
    if args.mode == "build":
        Path(args.out).write_text(json.dumps(build(args), indent=1))
        print(f"wrote {args.out}")
        return 0
    if args.mode == "predict":
        prof = load_profile(args.profile)
        if args.overheads:
            prof.ov = dataclasses.replace(prof.ov, **json_arg(args.overheads))
        cpus = [int(n) for n in args.cpus.split(",")]
        out = predict(prof, cpus, args.cpus_per_node, args.scale_space, args.scale_above, args.seed)
        out["profile"] = args.profile
        show = print_predict
    else:
        out, show = validate(args.runs), print_validate
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        print()
    else:
        show(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
