"""What a replica runs beside its requests, and how its failures show.

``BackgroundTasks`` starts a replica's loops and fails its ``check_health`` as soon as one of
them has ended, so Serve restarts the replica instead of leaving it half alive.
``Failures`` is the one way a replica records a failure it keeps off the request path (a
metric that could not be recorded, a preload that failed): logged, counted in
``ray_ml_internal_errors_total{where}``, and readable in ``/metrics``. ``Unawaited`` sends
calls whose answers no request waits for, with a bound on how many are in flight.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

logger = logging.getLogger("ray.serve")
LOG_EVERY_S = 10.0  # the same failure is logged at most this often (each one is counted)


class Failures:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.uncounted = 0  # failures the metric could not take (outside a replica, ...)
        self._logged: dict[str, float] = {}
        self._metric: Any = None

    def record(self, where: str, exc: BaseException) -> None:
        """Count and log a failure that must not fail a request."""
        self.counts[where] += 1
        now = time.monotonic()
        if now - self._logged.get(where, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[where] = now
            logger.warning("%s failed (%d so far): %r", where, self.counts[where], exc)
        try:
            if self._metric is None:
                from sparc_ray.serving.metrics import internal_errors

                self._metric = internal_errors()
            self._metric.inc(tags={"where": where})
        except Exception as metric_exc:  # outside a replica, or the metrics agent is gone
            self.uncounted += 1
            logger.debug("could not count %s: %r", where, metric_exc)


class BackgroundTasks:
    """Named loops of one replica; ``check`` raises once any of them has ended."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    def start(self, name: str, loop: Coroutine[Any, Any, Any]) -> None:
        self._tasks[name] = asyncio.get_running_loop().create_task(loop, name=name)

    def check(self) -> None:
        """For ``check_health``: a loop that returned, raised or was cancelled is fatal."""
        for name, task in self._tasks.items():
            if task.done():
                error = None if task.cancelled() else task.exception()
                raise RuntimeError(f"background task {name!r} ended: {error!r}")

    def cancel(self) -> None:
        for task in self._tasks.values():
            task.cancel()


class Unawaited:
    """Calls no response waits for (the Validator's monitoring records). At most ``limit`` are
    in flight: a call beyond that is not made, and is logged and counted under
    ``<where>_backlog`` (a stalled receiver never stalls the caller, nor fills its memory).
    A call that fails is counted under ``where``."""

    def __init__(self, failures: Failures, where: str, limit: int) -> None:
        self.failures, self.where, self.limit = failures, where, limit
        self.in_flight: set[asyncio.Future[None]] = set()

    def send(self, issue: Callable[[], Awaitable[Any]]) -> bool:
        """``issue()`` the call (e.g. a handle's ``.remote()``) if there is room, and return
        at once; False if it was dropped."""
        if len(self.in_flight) >= self.limit:
            backlog = OverflowError(f"{len(self.in_flight)} calls in flight; one dropped")
            self.failures.record(f"{self.where}_backlog", backlog)
            return False
        watch = asyncio.ensure_future(self._watch(issue()))
        self.in_flight.add(watch)
        watch.add_done_callback(self.in_flight.discard)
        return True

    async def _watch(self, call: Awaitable[Any]) -> None:
        try:
            await call
        except Exception as exc:
            self.failures.record(self.where, exc)


async def flush_logs_forever(failures: Failures, interval_s: float = 1.0) -> None:
    """Flush Serve's buffered log handlers every ``interval_s``.

    Serve's throughput-optimized mode (``serve.env``) buffers up to 1,000 request-path log
    records per replica and writes them only when the buffer is full or on an ERROR; at low
    traffic a log line could wait for hours. Every replica runs this loop, so its logs lag by a
    second at most, at the cost of one write per second."""
    serve_logger = logging.getLogger("ray.serve")
    while True:
        await asyncio.sleep(interval_s)
        for handler in serve_logger.handlers:
            if isinstance(handler, logging.handlers.MemoryHandler):
                try:
                    handler.flush()
                except Exception as exc:
                    failures.record("log_flush", exc)
