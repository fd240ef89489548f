"""Run checks concurrently, each with a deadline, each after the checks it depends on.

The runner owns time: it gives every check its deadline, measures its duration and cuts
it off a little after the deadline if the check does not honour it. A crash becomes an
`error` result with the exception as its reason, never a crash of the run. And it bounds what a
check keeps: every string of a result's detail and evidence, where a peer's words end up, is cut
to `agent.text.MAX_TEXT_CHARS` here, so that no check can forget to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent.text import bounded, inert_log_record
from checks.contract import Check, CheckContext, CheckResult, Outcome, Reason, Resolver, Status, Targets

# How long past its deadline a check may run before it is cut off: enough to close sockets
# and build its result, small enough to keep `--timeout` meaningful.
GRACE_SECONDS = 0.25

_log = logging.getLogger("xcheck.runner")

# progress(check name, fraction done or None, one line of text): live news for a terminal.
Progress = Callable[[str, float | None, str], None]


def _bound_strings(value: Any) -> Any:
    """`value` with every string in it (keys too) cut to agent.text.MAX_TEXT_CHARS, marked where cut."""
    if isinstance(value, str):
        return bounded(value)
    if isinstance(value, Mapping):
        return {_bound_strings(key): _bound_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_bound_strings(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_bound_strings(item) for item in value)
    return value


def order_checks(checks: Iterable[Check]) -> list[Check]:
    """Checks in registry order, each after its dependencies; ValueError on a missing one or a cycle."""
    by_name = {check.name: check for check in checks}
    ordered: list[Check] = []
    visiting: set[str] = set()

    def visit(check: Check) -> None:
        if check in ordered:
            return
        if check.name in visiting:
            raise ValueError(f"dependency cycle through check {check.name!r}")
        visiting.add(check.name)
        for dependency in check.depends_on:
            if dependency not in by_name:
                raise ValueError(f"check {check.name!r} depends on unknown check {dependency!r}")
            visit(by_name[dependency])
        visiting.discard(check.name)
        ordered.append(check)

    for check in by_name.values():
        visit(check)
    return ordered


async def _run_one(
    check: Check,
    targets: Targets,
    timeout: float,
    resolver: Resolver,
    dependencies: dict[str, asyncio.Task[CheckResult]],
    clock: Callable[[], float],
    progress: Progress,
) -> CheckResult:
    finished = {name: await dependencies[name] for name in check.depends_on}
    started = clock()
    timeout += check.budget_seconds(targets)
    logger = _log.getChild(check.name)
    logger.addFilter(inert_log_record)  # a check's log line quotes peers; once: a logger keeps one copy of a filter
    ctx = CheckContext(
        targets=targets,
        deadline=started + timeout,
        dependencies=finished,
        resolver=resolver,
        logger=logger,
        clock=clock,
        progress=lambda fraction, text: progress(check.name, fraction, text),
    )
    try:
        async with asyncio.timeout(timeout + GRACE_SECONDS):
            outcome = await check.probe(ctx)
    except TimeoutError:
        outcome = Outcome.fail(Reason.TIMEOUT, f"did not finish within {timeout:g} s")
    except Exception as exc:  # a bug in a check is reported as its result, not raised
        _log.debug("check %s crashed", check.name, exc_info=True)
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # a TaskGroup's wrapper says nothing about the cause
        outcome = Outcome(Status.ERROR, Reason.EXCEPTION, f"{type(exc).__name__}: {exc}")
    return CheckResult(check.name, outcome.status, outcome.reason, bounded(outcome.detail), clock() - started,
                       _bound_strings(outcome.evidence))


def _prepare(checks: list[Check], targets: Targets) -> None:
    for check in checks:
        try:
            check.prepare(targets)
        except Exception:  # the probe meets the same failure and reports it as its result
            _log.debug("preparing check %s failed", check.name, exc_info=True)


async def run_checks(
    checks: Iterable[Check],
    targets: Targets,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    progress: Progress = lambda check, fraction, text: None,
) -> list[CheckResult]:
    """Results in dependency order. Each check gets `timeout` seconds (plus its planned
    work, `Check.budget_seconds`) from its own start."""
    ordered = order_checks(checks)
    await asyncio.to_thread(_prepare, ordered, targets)
    resolver = Resolver()
    tasks: dict[str, asyncio.Task[CheckResult]] = {}
    for check in ordered:
        tasks[check.name] = asyncio.create_task(_run_one(check, targets, timeout, resolver, tasks, clock, progress))
    return [await task for task in tasks.values()]
