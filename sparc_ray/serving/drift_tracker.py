"""Drift of what is served, per version: one PSI window (``monitoring.drift.DriftMonitor``)
for each version that answers, bounded in number, published as gauges by role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sparc_ray.inference.columns import Columns
from sparc_ray.monitoring.drift import DriftMonitor
from sparc_ray.registry.metadata import DriftReference


class DriftTracker:
    def __init__(self, window_rows: int, min_rows: int, versions_tracked: int) -> None:
        self.window_rows, self.min_rows = window_rows, min_rows
        self.versions_tracked = versions_tracked
        self.monitors: dict[str, DriftMonitor] = {}

    def observe(
        self,
        version: str,
        reference: DriftReference | None,
        columns: Columns,
        predicted: np.ndarray,
    ) -> None:
        """Add scored rows (``predicted``: class positions) to ``version``'s window."""
        if reference is None:
            return
        if version not in self.monitors:  # each version has its own window
            while len(self.monitors) >= self.versions_tracked:
                self.monitors.pop(next(iter(self.monitors)))
            self.monitors[version] = DriftMonitor(reference, self.window_rows, self.min_rows)
        self.monitors[version].update(columns, predicted)

    def scores(self) -> dict[str, dict[str, Any]]:
        """Per version with enough rows: ``{"features": {name: psi}, "predictions": psi}``."""
        return {v: s for v, m in self.monitors.items() if (s := m.scores()) is not None}

    def publish(
        self,
        tags_for: Callable[[str], dict[str, str] | None],
        feature_gauge: Any,
        model_gauge: Any,
    ) -> dict[str, dict[str, Any]]:
        """Set the gauges of each version ``tags_for`` names (None: not published); returns
        the scores."""
        scores = self.scores()
        for version, score in scores.items():
            if (tags := tags_for(version)) is None:
                continue
            for feature, value in score["features"].items():
                feature_gauge.set(value, tags={**tags, "feature_name": feature})
            model_gauge.set(score["predictions"], tags=tags)
        return scores
