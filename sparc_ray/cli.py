"""``sparc-ray`` command line: train; inspect, sign, verify, promote, roll back and release
models (canary, shadow); generate signing keys; score files with Ray Data; bulk predict over
HTTP; erase captured traffic."""

from __future__ import annotations

import argparse
import json
import sys

from sparc_ray.registry import releases, signing
from sparc_ray.registry.artifacts import IntegrityError
from sparc_ray.registry.layout import ALIAS, DEFAULT_STORE
from sparc_ray.registry.store import ModelRegistry, RegistryError
from sparc_ray.training.job_args import add_score_arguments, add_train_arguments


def _models(args: argparse.Namespace) -> int:
    reg = ModelRegistry(args.store)
    public_key = signing.public_key_bytes(args.public_key) if args.public_key else None
    if args.action == "list":
        names = [args.name] if args.name else reg.names()
        for name in names:
            current = reg.alias(name)
            print(f"{name}  (production: {current or '-'})")
            for v in reg.versions(name):
                mark = "*" if v == current else " "
                try:
                    m = reg.metadata(name, v)
                except RegistryError as exc:  # one unreadable version does not hide the rest
                    print(f" {mark} {v}  unreadable: {exc}")
                    continue
                holdout = m.metrics.holdout if m.metrics else None
                accuracy = holdout.accuracy if holdout else None
                acc = float("nan") if accuracy is None else accuracy
                gates = "pass" if m.gates.passed else "FAIL"
                print(
                    f" {mark} {v}  {m.model_type or '?':<24} acc={acc:.4f} gates={gates}  "
                    f"{m.created_at or ''}"
                )
        return 0
    if not args.name:
        raise RegistryError("--name is required")
    if args.action == "show":
        version = reg.resolve(args.name, args.version or ALIAS)
        meta = reg.metadata(args.name, version).to_dict()
        if not args.full:
            meta.pop("reference", None)
        print(json.dumps(meta, indent=2))
    elif args.action == "promote":
        version = reg.resolve(args.name, _needs_version(args))
        releases.promote(reg, args.name, version, force=args.force, public_key=public_key)
        print(f"{args.name}: production -> {reg.alias(args.name)}")
        if not reg.metadata(args.name, version).gates.passed:
            print(
                f"[sparc-ray] warning: {version} failed its gates: the serving app keeps the "
                "last verified production; only a pin (Validator user_config model_version) "
                "serves it",
                file=sys.stderr,
            )
    elif args.action == "rollback":
        print(f"{args.name}: production -> {releases.rollback(reg, args.name)}")
    elif args.action in ("canary", "shadow"):
        r = releases.start_release(
            reg,
            args.name,
            reg.resolve(args.name, _needs_version(args)),
            args.action,
            weight=args.weight,
            policy=releases.load_policy(args.policy),
            force=args.force,
            public_key=public_key,
        )
        print(f"{args.name}: {r.mode} of {r.version} at {r.weight:g}% ({r.id})")
    elif args.action == "abort":
        running = releases.current_release(reg, args.name)
        if running is None:
            raise RegistryError(f"model {args.name!r} has no release in progress")
        releases.finish_release(reg, args.name, running.id, "aborted", "aborted from the CLI")
        print(f"{args.name}: {running.mode} of {running.version} aborted")
    elif args.action == "status":
        print(json.dumps(_status(reg, args.name), indent=2))
    elif args.action == "sign":
        key = signing.load_private_key(args.signing_key)
        if key is None:
            raise RegistryError(f"sign needs --signing-key or ${signing.KEY_FILE_ENV}")
        version = reg.resolve(args.name, _needs_version(args))
        if not args.digests:
            raise RegistryError("sign needs --digests FILE (the expected sha256 of every file)")
        with open(args.digests, "rb") as f:
            expected = signing.load_digests(f.read(), args.digests)
        signed = reg.sign(args.name, version, key, expected)
        print(json.dumps(signed, indent=2))
        print(f"{args.name}/{version}: signed these {len(signed)} files")
    elif args.action == "verify":
        if public_key is None:
            raise RegistryError("verify needs --public-key")
        version = reg.resolve(args.name, args.version or ALIAS)
        reg.verify(args.name, version, public_key)
        print(f"{args.name}/{version}: signature and sha256 OK ({signing.key_id(public_key)})")
    return 0


def _needs_version(args: argparse.Namespace) -> str:
    if not args.version:
        raise RegistryError(f"{args.action} needs a VERSION")
    return args.version


def _status(reg: ModelRegistry, name: str) -> dict:
    """The registry's release state: production, the release in progress, recent decisions."""
    release = releases.current_release(reg, name)
    return {
        "model": name,
        "production": reg.alias(name),
        "history": reg.history(name),
        "release": release.model_dump() if release else None,
        "recent_releases": releases.release_log(reg, name)[-10:],
    }


def _capture(args: argparse.Namespace) -> int:
    """``capture purge``: erase captured rows and labels (before a date, or by prediction id)."""
    import datetime as dt

    from sparc_ray.monitoring.capture_files import purge
    from sparc_ray.registry.layout import capture_root

    if args.before is None and not args.prediction_id:
        raise ValueError("capture purge needs --before DATE or --prediction-id ID")
    before = dt.date.fromisoformat(args.before) if args.before else None
    location = args.uri or capture_root(args.store, args.name)
    try:
        done = purge(location, before, args.prediction_id or ())
    except OSError as exc:  # the sink (a disk, an object store) refused
        raise ValueError(f"capture purge of {location} failed: {exc}") from exc
    print(
        f"{location}: {done.partitions} date partitions deleted, {done.rows} rows and labels "
        f"erased ({done.files_rewritten} files rewritten, {done.files_deleted} deleted)"
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from sparc_ray.client import score_csv

    n = score_csv(
        args.url,
        args.input,
        args.output,
        chunk_size=args.chunk_size,
        include_probabilities=args.probabilities,
    )
    print(f"scored {n} rows" + (f" -> {args.output}" if args.output else ""), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparc-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="tune, evaluate and publish a model (local Ray)")
    add_train_arguments(train)

    models = sub.add_parser("models", help="inspect the registry; promote, roll back, release")
    models.add_argument(
        "action",
        choices=[
            *("list", "show", "promote", "rollback", "canary", "shadow", "status", "abort"),
            *("sign", "verify"),
        ],
    )
    models.add_argument("version", nargs="?", help="version id, 'production' or 'latest'")
    models.add_argument("--store", default=DEFAULT_STORE)
    models.add_argument("--name", help="model name (list: all models when omitted)")
    models.add_argument(
        "--force", action="store_true", help="promote / release despite failed gates"
    )
    models.add_argument(
        "--weight",
        type=float,
        help="canary: percent of requests for the candidate (default 10); "
        "shadow: percent of requests copied to it (default 100)",
    )
    models.add_argument("--policy", help="release policy YAML (default: the built-in policy)")
    models.add_argument("--full", action="store_true", help="show: include drift references")
    models.add_argument(
        "--public-key",
        help="verify / promote / canary / shadow: require a valid signature by this key (PEM)",
    )
    models.add_argument(
        "--signing-key", help=f"sign: private key PEM (default ${signing.KEY_FILE_ENV})"
    )
    models.add_argument(
        "--digests",
        metavar="FILE",
        help="sign: JSON {path: sha256} of every file of the version, from a record you trust "
        "(training log, MLflow run)",
    )

    keys = sub.add_parser("keys", help="Ed25519 key pair that signs published versions")
    keys.add_argument("action", choices=["generate"])
    keys.add_argument(
        "--out", default="keys/model_signing", help="writes OUT.key (mode 0600) and OUT.pub"
    )

    score = sub.add_parser(
        "score", help="score a CSV/Parquet file or directory with Ray Data (local Ray)"
    )
    add_score_arguments(score)

    report = sub.add_parser("report", help="reports on what the service captured")
    report.add_argument("kind", choices=["drift"])
    report.add_argument("--store", default=DEFAULT_STORE)
    report.add_argument("--name", required=True, help="model name")
    report.add_argument("--version", help="version whose captures to report (default production)")
    report.add_argument("--since", help="captured since: 24h, 7d, 30m or an ISO date/time")
    report.add_argument("--out", default="drift_report.html", help="HTML file to write")
    report.add_argument(
        "--public-key", help="verify the version's metadata with this Ed25519 key (PEM)"
    )

    capture = sub.add_parser("capture", help="erase captured rows and labels (purge)")
    capture.add_argument("action", choices=["purge"])
    capture.add_argument("--store", default=DEFAULT_STORE)
    capture.add_argument("--name", help="model name (the capture is <store>/<name>/_capture)")
    capture.add_argument("--uri", help="the capture location instead (the app's capture_uri)")
    capture.add_argument("--before", help="erase every day before this date (YYYY-MM-DD, UTC)")
    capture.add_argument(
        "--prediction-id",
        action="append",
        metavar="ID",
        help="erase the rows and labels of this prediction (repeatable)",
    )

    predict = sub.add_parser("predict", help="score a CSV file over HTTP in chunks")
    predict.add_argument(
        "--url", required=True, help="service base URL, e.g. http://127.0.0.1:8000"
    )
    predict.add_argument("--input", required=True, help="CSV with the model's feature columns")
    predict.add_argument("--output", help="CSV to write (default: stdout)")
    predict.add_argument("--chunk-size", type=int, default=500)
    predict.add_argument("--probabilities", action="store_true", help="add one column per class")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        from sparc_ray.training.job import run_job

        return run_job(args)
    if args.command == "score":
        from sparc_ray.batch.job import run_job as run_scoring

        return run_scoring(args)
    try:
        if args.command == "keys":
            private, public = signing.generate_key_pair(args.out)
            print(f"private key {private} (mode 0600; give it to training only)")
            print(f"public key  {public} (serve_config.yaml: public_key)")
            return 0
        if args.command == "report":
            from sparc_ray.monitoring.drift_report import write_report

            key = signing.public_key_bytes(args.public_key) if args.public_key else None
            r = write_report(args.store, args.name, args.out, args.since, args.version, key)
            top = r["features"][0] if r["features"] else None
            print(
                f"{args.out}: {r['rows']:,} captured rows of {args.name}/{r['version']}; "
                + (f"most drifted: {top.name} (PSI {top.psi:.3f})" if top else "no features")
            )
            return 0
        if args.command == "capture":
            if not (args.uri or args.name):
                raise ValueError("capture purge needs --name (or --uri)")
            return _capture(args)
        return _models(args) if args.command == "models" else _predict(args)
    except (RegistryError, IntegrityError, signing.SigningKeyError, ValueError) as exc:
        print(f"sparc-ray: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
