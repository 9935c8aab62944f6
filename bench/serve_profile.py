"""Where a served request's CPU goes: each stage's CPU microseconds per request under load.

    python bench/serve_profile.py [--rows 1] [--connections 32] [--duration 15] [--flame]
                                  [--model-replicas N]

Deploys serve_config.yaml on a fresh local cluster with the serving benchmark's model
(bench/served_model.py, trained on first use), drives /predict with wrk, and reads the CPU time
(user + system) of every process of each stage before and after: HAProxy (ingress), the
Validator, Model, Postprocessor and Explainer replicas, Serve's controller and proxies, Ray's
own daemons (raylet, GCS, dashboard, agents), and wrk itself; "other" is the rest of the
machine's busy time. ``--flame`` then profiles each replica with py-spy during a second and a
third run of the same load: SVG flame graphs and collapsed stacks under
bench/results/serve_profile/, and per stage the share of busy samples in sparc_ray's own code,
its busiest functions and the busiest frames overall. Figures also go to
bench/results/serve_profile/profile-<rows>x<connections>.json.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from baselines import ours_body, wrk  # noqa: E402
from serve_bench import deployed_app  # noqa: E402
from served_model import NAME, WORK, dataset, train  # noqa: E402

from sparc_ray.serving.fastpath import haproxy_pids  # noqa: E402

OUT = ROOT / "bench/results/serve_profile"
REPLICAS = ("Validator", "Model", "Postprocessor", "Explainer")
REPLICA_STAGES = [f"{name} replicas" for name in REPLICAS]
RAY_DAEMONS = ("raylet", "gcs_server", "dashboard", "runtime_env_agent", "log_monitor", "monitor")


def stage_pids(cluster) -> dict[str, set[int]]:
    """The processes of each stage (Serve actors from the state API, HAProxy by its config
    directory, Ray's daemons by their command line)."""
    stages = {"HAProxy (ingress)": haproxy_pids(cluster.haproxy_dir)}
    for name in REPLICAS:
        stages[f"{name} replicas"] = set(cluster.actor_pids(rf":{name}$"))
    stages["Serve controller + proxies"] = set(cluster.actor_pids("ServeController|ProxyActor"))
    daemons = set()
    for proc in cluster.processes():  # this cluster's, not a developer's own
        with contextlib.suppress(psutil.Error):
            argv = " ".join(proc.cmdline())
            if any(f"/{d}" in argv or argv.startswith(d) for d in RAY_DAEMONS):
                daemons.add(proc.pid)
    stages["Ray daemons"] = daemons - set().union(*stages.values())
    return stages


def cpu_seconds(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:  # ended during the run: its time is lost, not guessed
            continue
    return total


def thread_seconds(pids: set[int]) -> collections.Counter[str]:
    """CPU seconds of the processes' threads, summed by thread name (``comm``): Python's
    own thread versus gRPC's and Ray's native threads, which py-spy does not sample."""
    out: collections.Counter[str] = collections.Counter()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[name] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def busy_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(url: str, body: Path, conns: int, duration: int, stages: dict[str, set[int]]) -> dict:
    """One wrk run: requests/s, latency, and each stage's CPU microseconds per request."""
    before = {s: cpu_seconds(p) for s, p in stages.items()}
    threads = {s: thread_seconds(stages[s]) for s in REPLICA_STAGES}
    busy, kids = busy_seconds(), children_cpu()
    r = wrk(url, body, conns, duration)
    used = {s: cpu_seconds(p) - before[s] for s, p in stages.items()}
    requests = r["rps"] * duration
    r["threads"] = {
        s: {
            name: (t - threads[s][name]) / requests * 1e6
            for name, t in thread_seconds(stages[s]).most_common()
            if t - threads[s][name] > 0.01 * used[s]
        }
        for s in REPLICA_STAGES
    }
    used["wrk (load generator)"] = children_cpu() - kids
    used["other"] = busy_seconds() - busy - sum(used.values())
    total = sum(used.values())
    r["stages"] = {
        s: {"cpu_s": c, "us_per_request": c / requests * 1e6, "share": c / total}
        for s, c in used.items()
    }
    r["cpu_cores_busy"] = total / duration
    return r


def py_spy(pids: dict[str, set[int]], duration: int, fmt: str, load: Callable[[], dict]) -> None:
    """py-spy every replica process for ``duration`` s (``fmt``: flamegraph or raw) while
    ``load`` runs."""
    spy = str(Path(sys.executable).parent / "py-spy")
    procs = []
    for stage, stage_pids_ in pids.items():
        for pid in stage_pids_:
            ext = "svg" if fmt == "flamegraph" else "txt"
            out = OUT / f"{stage.split()[0].lower()}-{pid}.{ext}"
            cmd = [spy, "record", "--pid", str(pid), "--duration", str(duration)]
            cmd += ["--rate", "200", "--format", fmt, "--output", str(out), "--nonblocking"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    time.sleep(1)  # py-spy attached before the load starts
    load()
    for p in procs:
        _, err = p.communicate(timeout=duration + 60)
        if p.returncode != 0:
            print(f"py-spy failed: {err.decode(errors='replace')[-500:]}")


IDLE = ("Thread.run ", "Worker.main_loop ")  # a thread waiting in C: not work


def busy_stacks(stage: str) -> list[tuple[list[str], int]]:
    """The stage's collapsed stacks (py-spy raw), without the samples of idle threads."""
    stacks = []
    for path in OUT.glob(f"{stage.split()[0].lower()}-*.txt"):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [f for f in stack.split(";") if " (" in f]  # thread / process frames out
            if frames and not frames[-1].startswith(IDLE):
                stacks.append((frames, int(count)))
    return stacks


def summarize(stage: str, limit: int = 10) -> None:
    """Print the share of busy samples in sparc_ray's code, its busiest functions
    (inclusive) and the busiest frames of all (self)."""
    stacks = busy_stacks(stage)
    total = sum(n for _, n in stacks)
    if not total:
        return
    ours: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    in_ours = 0
    for frames, n in stacks:
        own[frames[-1]] += n
        mine = {f for f in frames if "sparc_ray/" in f}
        in_ours += n if mine else 0
        for frame in {f.rsplit(":", 1)[0] for f in mine}:  # per function, not per line
            ours[frame] += n
    print(f"\n{stage}: {in_ours / total:.0%} of busy samples under sparc_ray code")
    for f, n in ours.most_common(limit):
        print(f"  {n / total:6.1%} incl  {f[:100]})")
    for f, n in own.most_common(limit):
        print(f"  {n / total:6.1%} self  {f[:100]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=15, help="seconds per run")
    parser.add_argument("--flame", action="store_true", help="py-spy every replica")
    parser.add_argument("--model-replicas", type=int, help="fixed Model replicas (no autoscaling)")
    args = parser.parse_args()
    df = dataset()
    reg = train(df)
    OUT.mkdir(parents=True, exist_ok=True)
    body = WORK / "bodies" / f"profile-{args.rows}.json"
    body.parent.mkdir(parents=True, exist_ok=True)
    body.write_text(json.dumps(ours_body(df.head(args.rows))))
    overrides = {}
    if args.model_replicas:  # a fixed count instead of serve_config.yaml's autoscaling
        overrides["Model"] = {"num_replicas": args.model_replicas, "autoscaling_config": None}
    with deployed_app(reg, NAME, **overrides) as cluster:
        url = f"{cluster.url}/predict"
        wrk(url, body, args.connections, 8)  # warm-up
        stages = stage_pids(cluster)
        r = measure(url, body, args.connections, args.duration, stages)
        print(
            f"{args.rows} row(s) a request, c={args.connections}: {r['rps']:,.0f} req/s, "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
            f"{r['cpu_cores_busy']:.2f} cores busy, non-2xx {r['non2xx']}"
        )
        print(f"{'stage':<30}{'procs':>6}{'CPU us/request':>16}{'share':>8}")
        for s, v in r["stages"].items():
            n = len(stages.get(s, ())) or "-"
            print(f"{s:<30}{n:>6}{v['us_per_request']:>16.0f}{v['share']:>8.1%}")
        for s, names in r["threads"].items():
            split = ", ".join(f"{n} {us:.0f}" for n, us in names.items())
            print(f"  {s} by thread (CPU us/request): {split}")
        if args.flame:
            replicas = {s: p for s, p in stages.items() if s.split()[0] in REPLICAS and p}
            for old in OUT.glob("*-*.svg"):
                old.unlink()
            for old in OUT.glob("*-*.txt"):
                old.unlink()

            def load() -> dict:
                return wrk(url, body, args.connections, args.duration)

            py_spy(replicas, args.duration, "flamegraph", load)
            py_spy(replicas, args.duration, "raw", load)
            for stage in replicas:
                summarize(stage)
    out = OUT / f"profile-{args.rows}x{args.connections}.json"
    out.write_text(json.dumps({"rows": args.rows, "connections": args.connections, **r}, indent=2))
    print(f"\nfigures: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
