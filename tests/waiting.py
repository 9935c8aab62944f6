"""Waiting for a state in tests: poll with a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.5,
    message: str | Callable[[], str] = "",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value, and
    return that value. After ``timeout`` seconds, raise an AssertionError naming what was
    awaited (``message``: a string, or a callable that describes the state at that moment)
    and the last value ``predicate`` returned. Exceptions of the types in ``ignore`` (e.g.
    ``httpx.HTTPError`` while a server comes up) count as "not yet"; any other propagates."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last: object = predicate()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            what = (message() if callable(message) else message) or repr(predicate)
            seen = repr(last)
            if len(seen) > 2000:
                seen = seen[:2000] + "..."
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last value seen: {seen}"
            )
        time.sleep(min(interval, remaining))
