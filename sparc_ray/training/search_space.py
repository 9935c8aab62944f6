"""Search spaces: the YAML ``search.space`` expanded into concrete candidate configurations
(a grid, or random draws with Tune's samplers), and the order trials start in."""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
from ray import tune

_DISTRIBUTIONS = {
    "uniform": tune.uniform,
    "loguniform": tune.loguniform,
    "randint": lambda lo, hi: tune.randint(lo, hi + 1),  # inclusive upper bound, like a grid
}


def candidate_label(model_type: str, params: dict[str, Any]) -> str:
    """A configuration as people read it, e.g. ``random_forest n_estimators=200 max_depth=8``
    (floats to 4 significant digits): Tune's progress table, the report, the summary."""
    shown = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    return " ".join([model_type, *shown])


def fit_cost(candidate: dict[str, Any]) -> float:
    """Rough relative fit cost (seconds per fold on 16k x 20 rows, one core) for ordering."""
    p = candidate["params"]
    if candidate["model_type"] == "random_forest":
        depth = p.get("max_depth")
        return 0.2 * p.get("n_estimators", 100) * (1.0 if depth is None else min(1.0, depth / 12))
    if candidate["model_type"] == "hist_gradient_boosting":
        return 0.02 * p.get("max_iter", 100)
    return 0.2


def expand_candidates(
    space: dict[str, dict[str, Any]], sampler: str, num_samples: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Concrete ``{"model_type", "params", "label"}`` configs from a YAML search space.

    grid: the cartesian product of list-valued parameters per family (repeated ``num_samples``
    times); random: ``num_samples`` draws per family with Tune's samplers (lists = choices).
    """
    out = []
    rng = np.random.default_rng(seed)
    for family, params in space.items():
        params = params or {}
        if sampler == "grid":
            bad = [k for k, v in params.items() if isinstance(v, dict)]
            if bad:
                raise ValueError(f"{family}: distributions {bad} need `sampler: random`")
            axes = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
            combos = [
                dict(zip(axes, vals, strict=True)) for vals in itertools.product(*axes.values())
            ]
            combos = combos * num_samples
        else:
            domains = {k: _domain(family, k, v) for k, v in params.items()}
            combos = [
                {
                    k: (d.sample(random_state=rng) if hasattr(d, "sample") else d)
                    for k, d in domains.items()
                }
                for _ in range(num_samples)
            ]
        for combo in combos:
            combo = {k: v.item() if isinstance(v, np.generic) else v for k, v in combo.items()}
            out.append(
                {"model_type": family, "params": combo, "label": candidate_label(family, combo)}
            )
    return out


def _domain(family: str, key: str, value: Any) -> Any:
    if isinstance(value, list):
        return tune.choice(value)
    if isinstance(value, dict):
        ((kind, bounds),) = value.items()
        if kind not in _DISTRIBUTIONS:
            raise ValueError(f"{family}.{key}: unknown distribution {kind!r}")
        return _DISTRIBUTIONS[kind](*bounds)
    return value


def order_candidates(candidates: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """The costliest first, for the shortest makespan (a seeded shuffle first, so that equal
    costs, e.g. a family's grid, start in mixed order)."""
    shuffled = list(candidates)
    # B311: a seeded search order, not a secret
    random.Random(seed).shuffle(shuffled)  # nosec B311
    return sorted(shuffled, key=fit_cost, reverse=True)
