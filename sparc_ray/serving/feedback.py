"""Ground-truth labels joined to what was predicted: the Postprocessor's feedback store.

Predicted labels are remembered per prediction id, bounded in rows (the oldest go first).
A label is checked before anything else happens to it: its prediction id must be remembered,
its ``row`` an ``int`` (not a bool) within that prediction's rows, and the label one of the
answering version's classes (compared as text). The first label of a row wins: a later one
is a conflict (counted, never matched nor captured). A matched label's outcome (right or
wrong) goes into the answering version's rolling accuracy, and, for a shadowed row, into the
candidate's; only matched labels are handed to the traffic capture (``Matched.accepted``).
"""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# A version's classes, or None when they are not known here (then any label is accepted).
ClassesOf = Callable[[str], Sequence[Any] | None]
_ISSUED = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def new_prediction_id() -> str:
    """A prediction id as the Validator issues it: a random UUID in canonical text."""
    return str(uuid.uuid4())


def could_be_issued(value: object) -> bool:
    """Whether ``value`` has the form of an issued prediction id. Only such an id can name a
    prediction whose record is still on its way, so only such ids are waited for."""
    return isinstance(value, str) and _ISSUED.fullmatch(value) is not None


@dataclass
class Remembered:
    """One prediction: its predicted labels, the version that answered, the shadow
    candidate's labels for the same rows (once scored), and the rows labelled so far."""

    labels: list[Any]
    version: str
    shadow_labels: list[Any] | None = None
    labelled: set[int] = field(default_factory=set)


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
    conflicts: int = 0  # later labels for rows labelled before (the first one stands)
    # The matched labels as the capture records them: prediction_id, row, label (text).
    accepted: list[dict[str, Any]] = field(default_factory=list)


class FeedbackStore:
    def __init__(self, max_rows: int, accuracy_window: int, versions_tracked: int) -> None:
        self.max_rows, self.accuracy_window = max_rows, accuracy_window
        self.versions_tracked = versions_tracked
        self.recent: OrderedDict[str, Remembered] = OrderedDict()
        self.rows = 0  # rows held in ``recent``: the bound is in rows, not requests
        self.outcomes: dict[str, deque[bool]] = {}
        self.conflicts = 0  # since the replica started

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

    def match(self, items: list[Any], classes_of: ClassesOf = lambda v: None) -> Matched:
        """Check and join ``{"prediction_id", "label", "row"?}`` items to remembered rows."""
        out = Matched()
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "label" not in item:
                out.invalid.append({"index": i, "message": "needs prediction_id and label"})
                continue
            pid = item.get("prediction_id")
            entry = self.recent.get(pid) if isinstance(pid, str) else None
            if entry is None:
                out.unknown.append(pid if isinstance(pid, str | int | float | None) else str(pid))
                continue
            row, truth = item.get("row", 0), str(item["label"])
            if type(row) is not int or not 0 <= row < len(entry.labels):
                message = f"row must be an integer from 0 to {len(entry.labels) - 1}"
                out.invalid.append({"index": i, "message": message})
                continue
            classes = classes_of(entry.version)
            if classes is not None and truth not in {str(c) for c in classes}:
                message = f"label is not one of the classes of {entry.version}"
                out.invalid.append({"index": i, "message": message})
                continue
            if row in entry.labelled:  # labelled before: the first label stands
                out.conflicts += 1
                continue
            shadow = entry.shadow_labels
            out.outcomes.append(
                Outcome(
                    entry.version,
                    str(entry.labels[row]) == truth,
                    None if shadow is None else str(shadow[row]) == truth,
                )
            )
            out.accepted.append({"prediction_id": pid, "row": row, "label": truth})
            entry.labelled.add(row)  # one label per predicted row
            self._record(entry.version, out.outcomes[-1].correct)
        self.conflicts += out.conflicts
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
