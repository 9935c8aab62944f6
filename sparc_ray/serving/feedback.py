"""Ground-truth labels joined to what was predicted: the Postprocessor's feedback store.

Predicted labels are remembered per prediction id, bounded in rows (the oldest go first).
A label is matched to one predicted row once; its outcome (right or wrong) goes into the
answering version's rolling accuracy, and, for a shadowed row, into the candidate's.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Remembered:
    """One prediction: its labels (None once a row is labelled), the version that answered,
    and the shadow candidate's labels for the same rows, once scored."""

    labels: list[Any]
    version: str
    shadow_labels: list[Any] | None = None


@dataclass(frozen=True)
class Outcome:
    version: str
    correct: bool
    shadow_correct: bool | None  # the shadow candidate's, when it scored the row


@dataclass
class Matched:
    outcomes: list[Outcome] = field(default_factory=list)
    unknown: list[Any] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)


class FeedbackStore:
    def __init__(self, max_rows: int, accuracy_window: int, versions_tracked: int) -> None:
        self.max_rows, self.accuracy_window = max_rows, accuracy_window
        self.versions_tracked = versions_tracked
        self.recent: OrderedDict[str, Remembered] = OrderedDict()
        self.rows = 0  # rows held in ``recent``: the bound is in rows, not requests
        self.outcomes: dict[str, deque[bool]] = {}

    def resize(self, max_rows: int, accuracy_window: int, versions_tracked: int) -> None:
        self.max_rows, self.versions_tracked = max_rows, versions_tracked
        self.accuracy_window = accuracy_window
        self.outcomes = {v: deque(o, maxlen=accuracy_window) for v, o in self.outcomes.items()}

    def remember(self, prediction_id: str, labels: list[Any], version: str) -> None:
        self.recent[prediction_id] = Remembered(labels, version)
        self.rows += len(labels)
        while self.rows > self.max_rows and len(self.recent) > 1:
            self.rows -= len(self.recent.popitem(last=False)[1].labels)

    def add_shadow_labels(self, by_id: dict[str, list[Any]]) -> None:
        for prediction_id, labels in by_id.items():
            if (entry := self.recent.get(prediction_id)) is not None:
                entry.shadow_labels = labels

    def match(self, items: list[dict[str, Any]]) -> Matched:
        """Join ``{"prediction_id", "label", "row"?}`` items to remembered rows."""
        out = Matched()
        for i, item in enumerate(items):
            entry = self.recent.get(str(item.get("prediction_id")))
            row = item.get("row", 0)
            if entry is None:
                out.unknown.append(item.get("prediction_id"))
                continue
            if (
                type(row) is not int
                or not 0 <= row < len(entry.labels)
                or entry.labels[row] is None
            ):
                out.invalid.append(
                    {"index": i, "message": "row is out of range or already labelled"}
                )
                continue
            truth = str(item.get("label"))
            shadow = entry.shadow_labels
            out.outcomes.append(
                Outcome(
                    entry.version,
                    str(entry.labels[row]) == truth,
                    None if shadow is None else str(shadow[row]) == truth,
                )
            )
            entry.labels[row] = None  # one label per predicted row
            self._record(entry.version, out.outcomes[-1].correct)
        return out

    def _record(self, version: str, correct: bool) -> None:
        if version not in self.outcomes:
            while len(self.outcomes) >= self.versions_tracked:
                self.outcomes.pop(next(iter(self.outcomes)))
            self.outcomes[version] = deque(maxlen=self.accuracy_window)
        self.outcomes[version].append(correct)

    def accuracy(self, serving: str | None) -> dict[str, Any]:
        outcomes = self.outcomes.get(serving or "") or deque()
        return {
            "accuracy": float(np.mean(outcomes)) if outcomes else None,
            "labelled": len(outcomes),
            "accuracy_by_version": {
                v: {"accuracy": float(np.mean(o)), "labelled": len(o)}
                for v, o in self.outcomes.items()
                if o
            },
        }
