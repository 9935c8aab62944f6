"""What a training job produced: the published version's release (promoted, or a canary /
shadow started), the result, and the summary it prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sparc_ray.registry import releases
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training.config import TrainConfig


@dataclass(frozen=True)
class TrainResult:
    version: str
    promoted: bool
    release: str | None  # the canary / shadow release started, if any
    gates: dict[str, Any]
    best: dict[str, Any]
    holdout: dict[str, Any]
    experiment_path: str
    signed_by: str | None = None  # id of the key that signed the version
    # configurations never evaluated (published anyway: search.allow_incomplete)
    failed: list[dict[str, Any]] = field(default_factory=list)


def summary_text(cfg: TrainConfig, r: TrainResult) -> str:
    """What the job prints when it is done."""
    h = r.holdout
    auc = f"{h['roc_auc']:.4f}" if h["roc_auc"] is not None else "n/a"
    lines = [
        "",
        "=" * 72,
        f"best config   {r.best['label']}",
        f"CV {cfg.cv.scoring:<10} {r.best['cv_mean']:.4f} ± {r.best['cv_std']:.4f} "
        f"({cfg.cv.n_folds} folds)",
        f"holdout       accuracy {h['accuracy']:.4f}  precision {h['precision']:.4f}  "
        f"recall {h['recall']:.4f}  f1 {h['f1']:.4f}  roc_auc {auc}",
        "gates         "
        + "  ".join(
            f"{n} {g['value']:.3f}>={g['threshold']:.2f} {'PASS' if g['passed'] else 'FAIL'}"
            for n, g in r.gates["results"].items()
        ),
        f"version       {cfg.name}/{r.version} in {cfg.registry.store}",
        "signed        "
        + (f"yes (key {r.signed_by})" if r.signed_by else "NO (a public_key server refuses it)"),
        f"promoted      {'yes (production)' if r.promoted else 'no'}"
        + (f"; released as {r.release}" if r.release else ""),
        f"experiment    {r.experiment_path}",
        *(
            f"NOT EVALUATED {t['label']}: {t['error'][:200]}" for t in r.failed
        ),  # allowed by search.allow_incomplete; recorded in metadata.json["search"]["failed"]
        "=" * 72,
    ]
    return "\n".join(lines)


def release_new_version(
    reg: ModelRegistry,
    name: str,
    version: str,
    *,
    eligible: bool,
    mode: Literal["production", "canary", "shadow"],
    weight: float | None,
    policy: str | Path | None,
    by: str,
) -> tuple[bool, str | None]:
    """After publishing: nothing (not ``eligible``: gates failed or promotion not asked),
    promotion (``mode`` production, or the
    model's first version: nothing to compare against), or a canary / shadow release.
    Returns (promoted, the release started as text)."""
    if not eligible:
        return False, None
    if mode == "production" or reg.alias(name) is None:
        releases.promote(reg, name, version, by=by)  # ends a release in progress
        return True, None
    policy_model = releases.load_policy(policy)
    r = releases.start_release(reg, name, version, mode, weight=weight, policy=policy_model, by=by)
    return False, f"{r.mode} at {r.weight:g}% ({r.id})"
