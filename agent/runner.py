"""Run checks: each over its targets, concurrently, each (check, target) with its own deadline.

The runner owns time: it gives every (check, target) its deadline, measures its duration and
cuts it off a little after the deadline if the probe does not honour it. A crash becomes an
`error` result with the exception as its reason, never a crash of the run. It bounds what a
check keeps: every string of a result's detail and evidence, where a peer's words end up, is cut
to `agent.text.MAX_TEXT_CHARS` here, so that no check can forget to.

Any subset of checks can run: a dependency outside the subset is taken from the store's latest
result (a daemon runs each family on its own schedule); `xcheck run` is every check once, into
an empty store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent.store import ResultStore
from agent.text import bounded, inert_log_record
from checks.contract import (NO_TARGET_DETAIL, Check, CheckContext, CheckRun, Outcome, Reason, Status, Target,
                             TargetResult)
from checks.targets import Resolver, Targets

# How long past its deadline a probe may run before it is cut off: enough to close sockets
# and build its result, small enough to keep `--timeout` meaningful.
GRACE_SECONDS = 0.25

_log = logging.getLogger("xcheck.runner")

# progress(check name, fraction done or None, one line of text): live news for a terminal.
Progress = Callable[[str, float | None, str], None]


def _bound_strings(value: Any) -> Any:
    """`value` with every string in it (keys too) cut to agent.text.MAX_TEXT_CHARS, marked where cut."""
    if isinstance(value, str):
        return bounded(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _bound_strings(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, Mapping):
        return {_bound_strings(key): _bound_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_bound_strings(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_bound_strings(item) for item in value)
    return value


def order_checks(checks: Iterable[Check]) -> list[Check]:
    """Checks in the given order, each after those of its dependencies that are among them;
    ValueError on a cycle, or on a dependency on a check that loads the path. A dependency not
    among them comes from the store."""
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
            if dependency in by_name:
                visit(by_name[dependency])
        visiting.discard(check.name)
        ordered.append(check)

    for check in by_name.values():
        visit(check)
    for check in ordered:
        # A check that loads the path starts after every other one: nothing may wait for it.
        loading = [name for name in check.depends_on if name in by_name and by_name[name].loads_path]
        if loading:
            raise ValueError(f"check {check.name!r} depends on {loading[0]!r}, which loads the path and so runs last")
    return ordered


@dataclasses.dataclass
class _Run:
    """What every (check, target) of one run shares."""

    targets: Targets
    timeout: float
    resolver: Resolver
    clock: Callable[[], float]
    progress: Progress


async def _probe_target(check: Check, target: Target, run: _Run, dependencies: Mapping[str, CheckRun],
                        session: Any) -> TargetResult:
    started = run.clock()
    timeout = run.timeout + check.budget_seconds(run.targets)
    logger = _log.getChild(check.name)
    logger.addFilter(inert_log_record)  # a check's log line quotes peers; once: a logger keeps one copy of a filter
    ctx = CheckContext(targets=run.targets, target=target, deadline=started + timeout, dependencies=dependencies,
                       resolver=run.resolver, logger=logger, clock=run.clock,
                       progress=lambda fraction, text: run.progress(check.name, fraction, text), session=session)
    try:
        async with asyncio.timeout(timeout + GRACE_SECONDS):
            outcome = await check.probe(ctx)
    except TimeoutError:
        outcome = Outcome.fail(Reason.TIMEOUT, f"did not finish within {timeout:g} s")
    except Exception as exc:  # a bug in a check is reported as its result, not raised
        _log.debug("check %s crashed on %s", check.name, target.name, exc_info=True)
        outcome = _crash(exc)
    return TargetResult(check.name, target, outcome.status, outcome.reason, bounded(outcome.detail),
                        run.clock() - started, _bound_strings(outcome.evidence), time.time())


def _crash(exc: BaseException) -> Outcome:
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # a TaskGroup's wrapper says nothing about the cause
    return Outcome(Status.ERROR, Reason.EXCEPTION, f"{type(exc).__name__}: {exc}")


async def _run_check(check: Check, run: _Run, dependencies: Mapping[str, CheckRun]) -> CheckRun:
    targets = run.targets.of_scope(check.scope)
    if not targets:
        return CheckRun.of(check, (), Outcome.skipped(Reason.NO_TARGET, NO_TARGET_DETAIL[check.scope]))
    started = run.clock()
    session = check.session(run.targets, run.clock)
    try:
        opened = await session.__aenter__()
    except Exception as exc:  # every target shares the session: none can be probed without it
        _log.debug("check %s: opening its session failed", check.name, exc_info=True)
        crash = _crash(exc)
        return CheckRun.of(check, [TargetResult(check.name, target, crash.status, crash.reason, bounded(crash.detail),
                                                run.clock() - started, None, time.time()) for target in targets])
    try:
        results = await asyncio.gather(*(_probe_target(check, target, run, dependencies, opened)
                                          for target in targets))
    finally:
        try:
            await session.__aexit__(None, None, None)
        except Exception:  # the results stand: closing what they used failed after them
            _log.warning("check %s: closing its session failed", check.name, exc_info=True)
    return CheckRun.of(check, results)


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
    *,
    store: ResultStore | None = None,
    dependency_max_age_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    progress: Progress = lambda check, fraction, text: None,
) -> list[CheckRun]:
    """Runs in dependency order, each also put in `store`. Every (check, target) gets `timeout`
    seconds (plus the check's planned work, `Check.budget_seconds`) from its own start. A stored
    dependency older than `dependency_max_age_seconds` counts as missing (a mapping learned an hour
    ago says little about the NAT now)."""
    store = store if store is not None else ResultStore()
    ordered = order_checks(checks)
    await asyncio.to_thread(_prepare, ordered, targets)
    run = _Run(targets, timeout, Resolver(), clock, progress)
    tasks: dict[str, asyncio.Task[CheckRun]] = {}
    loading = {check.name for check in ordered if check.loads_path}

    async def one(check: Check) -> CheckRun:
        waits = [tasks[name] for name in check.depends_on if name in tasks]
        if check.loads_path:
            waits += [task for name, task in tasks.items() if name not in loading]
        await asyncio.gather(*waits)
        dependencies = {name: store.latest(name) for name in check.depends_on if _fresh(store, name,
                                                                                       dependency_max_age_seconds)}
        result = await _run_check(check, run, dependencies)
        store.put(result)
        return result

    for check in ordered:
        tasks[check.name] = asyncio.create_task(one(check))
    return [await task for task in tasks.values()]


def _fresh(store: ResultStore, name: str, max_age_seconds: float | None) -> bool:
    if store.latest(name) is None:
        return False
    if max_age_seconds is None:
        return True
    age = store.age_seconds(name)
    return age is not None and age <= max_age_seconds
