"""The latest result of every check, with its age: what a subset run takes its dependencies from,
and what a long-running agent reports between runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from checks.contract import CheckRun


class ResultStore:
    """Thread-safe: the runner writes from the event loop, readers (an HTTP scrape) from anywhere."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._runs: dict[str, CheckRun] = {}
        self._lock = threading.Lock()
        self._wall_clock = wall_clock

    def put(self, run: CheckRun) -> None:
        with self._lock:
            self._runs[run.name] = run

    def latest(self, check: str) -> CheckRun | None:
        with self._lock:
            return self._runs.get(check)

    def runs(self) -> list[CheckRun]:
        with self._lock:
            return list(self._runs.values())

    def age_seconds(self, check: str) -> float | None:
        """Seconds since the latest run of `check` ended; None if it never ran (or probed no target)."""
        run = self.latest(check)
        ended = run.ended_at if run else None
        return None if ended is None else max(0.0, self._wall_clock() - ended)
