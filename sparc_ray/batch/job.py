"""Batch scoring with Ray Data: rows from a file, directory or URI → Parquet predictions.

    ray job submit --working-dir . -- python jobs/score.py --data rows.csv --name loans \\
        --store model_store --out scores/

Rows stream from ``RowSource`` into ``BatchScorer`` actors, each holding the version loaded and
verified exactly as a Serve replica loads it (``RegistryLoader``), and on to Parquet. A row the
model cannot score (the HTTP API's rules, ``sparc_ray.inference.input_rules``) goes to the rejects
with
its row id, feature and reason; the job goes on. ``OUT`` ends up holding ``predictions/``
(row id, prediction, one probability per class, model version), ``rejects/`` and
``summary.json``; on a local disk it appears only when complete.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import sys
import time
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sparc_ray.batch.scorer import BatchScorer
from sparc_ray.batch.source import ROW_ID, SOURCE, InputError, RowSource
from sparc_ray.inference.explain import ExplanationError, checked_entry
from sparc_ray.inference.input_rules import checks_from_metadata
from sparc_ray.inference.loader import LoadedModel, RegistryLoader
from sparc_ray.registry import signing, storage
from sparc_ray.registry.artifacts import IntegrityError
from sparc_ray.registry.layout import ALIAS
from sparc_ray.registry.store import ModelRegistry, RegistryError
from sparc_ray.training.job_args import SCORE_BATCH_ROWS, add_score_arguments

EXIT_OK, EXIT_BAD_INPUT = 0, 2

# CPUs asked for by the read (parsing) and write tasks, at most; the scoring actors share
# the rest of the CPUs free when the job starts.
# Smaller shares left the reader starved by Ray Data's budgets on a 2-CPU node (half the rows/s).
READ_CPUS, WRITE_CPUS = 0.5, 0.5
OBJECT_STORE_BUDGET = 512 * 2**20  # bytes of blocks in flight
# Blocks the reader emits: small enough that every scoring actor gets work while a file is
# still being read (at Ray Data's default of 128 MiB a 1M-row file made 3 blocks, and one of
# two actors scored them all while the other waited; bench/overhead.py).
BLOCK_BYTES = 16 * 2**20


@dataclass
class ScorePlan:
    """A scoring run checked before Ray starts: the version loads and verifies, every input
    file has the model's features, and ``out`` is new."""

    data: str
    name: str
    store: str
    out: str
    version: str
    public_key: bytes | None
    model: LoadedModel
    source: RowSource
    explain: bool = False

    @classmethod
    def check(
        cls,
        data: str,
        name: str,
        store: str,
        out: str,
        version: str | None = None,
        public_key: bytes | None = None,
        explain: bool = False,
    ) -> ScorePlan:
        if explain and public_key is None:
            raise InputError("--explain needs a signed version: pass --public-key")
        version = ModelRegistry(store).resolve(name, version or ALIAS)
        model = RegistryLoader(store, name, public_key).load(version)
        if explain:
            try:
                checked_entry(model.metadata)
            except ExplanationError as exc:
                raise InputError(str(exc)) from None
        source = RowSource(data, checks_from_metadata(model.metadata))
        fs, path = storage.open_fs(out)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise InputError(f"{out} exists: choose a new --out (results are never overwritten)")
        return cls(data, name, store, out, version, public_key, model, source, explain)


def _count_rows(fs: pafs.FileSystem, directory: str, keys: tuple[str, ...] = ()) -> int:
    """Rows in the Parquet files under ``directory`` (distinct values of ``keys`` if given)."""
    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    paths = [i.path for i in infos if i.path.endswith(".parquet")]
    if not keys:
        return sum(pq.ParquetFile(fs.open_input_file(p)).metadata.num_rows for p in paths)
    seen: set[tuple] = set()
    for p in paths:
        table = pq.read_table(p, filesystem=fs, columns=list(keys))
        seen |= set(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
    return len(seen)


def _room(cpus: float) -> float:
    """A node's CPUs as a candidate for the smallest node: nodes without any do not count."""
    return cpus if cpus > 0 else float("inf")


def run(plan: ScorePlan, actors: int | None = None, batch_rows: int = SCORE_BATCH_ROWS) -> dict:
    """Score with Ray Data (Ray initialised); returns the summary, also in OUT/summary.json."""
    import ray

    fs, final = storage.open_fs(plan.out)
    # A local OUT appears complete or not at all; on an object store summary.json comes last.
    local = storage.is_local(fs)
    root = f"{final.rstrip('/')}.staging-{uuid.uuid4().hex[:8]}" if local else final
    predictions, rejects = posixpath.join(root, "predictions"), posixpath.join(root, "rejects")
    rejects_location = rejects if local else storage.join(plan.out, "rejects")
    # The CPUs free now (a Serve app may hold some); the whole cluster's if hardly any are.
    free = ray.available_resources().get("CPU", 0.0)
    cpus = free if free >= 0.5 else ray.cluster_resources().get("CPU", 1.0)
    # Shares sized by the smallest node, so that every node keeps room for a read and a write
    # task beside its actors (a budget pooled over several small nodes leaves no node with
    # room for the reader: the job waits forever).
    node = min(
        [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]] + [cpus], key=_room
    )
    actors = actors or max(1, int(cpus))
    read_cpus, write_cpus = min(READ_CPUS, node / 4), min(WRITE_CPUS, node / 4)
    per_node = (node - read_cpus - write_cpus) / max(1, int(node))
    actor_cpus = max(0.05, min(per_node, (cpus - read_cpus - write_cpus) / actors))
    # Blocks waiting between the reader and the scorers stay within this much object store
    # (Ray Data would otherwise let a fast reader run up to a share of the whole store).
    context = ray.data.DataContext.get_current()
    context.target_max_block_size = BLOCK_BYTES
    options = context.execution_options
    options.resource_limits = options.resource_limits.copy(object_store_memory=OBJECT_STORE_BUDGET)
    started = time.perf_counter()
    try:
        for d in (predictions, rejects):
            fs.create_dir(d, recursive=True)
        args = (
            plan.store,
            plan.name,
            plan.version,
            plan.public_key,
            rejects_location,
            plan.explain,
        )
        (
            ray.data.read_datasource(
                plan.source, num_cpus=read_cpus, override_num_blocks=len(plan.source.files)
            )
            .map_batches(
                BatchScorer,
                fn_constructor_args=args,
                batch_size=batch_rows,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=actor_cpus,
            )
            .write_parquet(predictions, filesystem=fs, ray_remote_args={"num_cpus": write_cpus})
        )
        seconds = time.perf_counter() - started
        scored = _count_rows(fs, predictions)
        rejected = _count_rows(
            fs, rejects, (SOURCE, ROW_ID) if plan.source.multi_file else (ROW_ID,)
        )
        summary = {
            "model": plan.name,
            "version": plan.version,
            "engine": plan.model.engine,
            "signed_by": plan.model.signed_by,
            "input": plan.data,
            "ignored_columns": plan.source.extra_columns,
            "rows": scored + rejected,
            "scored": scored,
            "rejected": rejected,
            "seconds": round(seconds, 3),
            "rows_per_second": round((scored + rejected) / seconds, 1),
            "actors": actors,
            "output": plan.out,
        }
        if plan.explain and plan.model.metadata.explanations is not None:
            summary["explanation_space"] = plan.model.metadata.explanations.space
        with fs.open_output_stream(posixpath.join(root, "summary.json")) as fh:
            fh.write(json.dumps(summary, indent=2).encode())
        if local:
            fs.move(root, final)
    except BaseException:
        if local and fs.get_file_info(root).type != pafs.FileType.NotFound:
            fs.delete_dir(root)
        raise
    return summary


def run_job(args: argparse.Namespace) -> int:
    """Check (no Ray, nothing written on bad input), then score; returns the exit code."""
    try:
        if not args.public_key and not args.allow_unsigned:
            raise signing.SigningKeyError(
                "--public-key is required: the Ed25519 public key the version is signed with"
            )
        public_key = signing.public_key_bytes(args.public_key) if args.public_key else None
        plan = ScorePlan.check(
            args.data, args.name, args.store, args.out, args.version, public_key, args.explain
        )
    except (InputError, RegistryError, IntegrityError, signing.SigningKeyError) as exc:
        print(f"[sparc-ray] error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    import ray

    ray.init(ignore_reinit_error=True)
    try:
        summary = run(plan, args.actors, args.batch_rows)
    finally:
        ray.shutdown()
    print(
        f"[sparc-ray] scored {summary['scored']:,} of {summary['rows']:,} rows with "
        f"{plan.name}/{plan.version} ({plan.model.engine}); {summary['rejected']:,} rejected "
        f"(OUT/rejects); {summary['rows_per_second']:,.0f} rows/s -> {plan.out}"
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobs/score.py", description="Score a dataset with a registry version (Ray Data)."
    )
    add_score_arguments(parser)
    return run_job(parser.parse_args(argv))
