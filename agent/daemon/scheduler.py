"""The daemon's schedule: each family of checks on its own interval, into one result store, and
the latest assessment of that store after every cycle.

A family is the checks that probe one kind of target (the site's own address and NAT; the
gateways; the far end's latency) or that load the path (throughput). Families run concurrently,
each in its own task, so that one that hangs or fails stalls no other; a family never overlaps
itself. Concurrency is bounded: at most one cycle per family (four families), and within a cycle
the runner probes each check's targets at once (at most agent.config.MAX_GATEWAYS gateways or
MAX_STUN_SERVERS servers). The throughput stage takes the path for itself: it waits for running
quick cycles to end and holds new ones back until it is done, as `xcheck run` runs it last.

Start times get jitter: the first cycle of each family starts at a random moment within
`FIRST_CYCLE_SPREAD` of the daemon's start (the throughput stage's within `THROUGHPUT_FIRST_SPREAD`),
and every interval is drawn from +-`JITTER` of its
length, so the daemons of a fleet, restarted together by configuration management, do not probe
(nor load a shared uplink) in lockstep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from agent.assessment import Assessment, assessment_of
from agent.audit.run import AuditReport, audit
from agent.config import Settings
from agent.runner import run_checks
from agent.store import ResultStore
from agent.verdicts import RuleSet, load_ruleset
from checks.contract import Check, CheckRun, Outcome, Reason, Scope, Status, TargetResult
from checks.registry import CHECKS
from checks.targets import Targets

_log = logging.getLogger("xcheck.daemon")

JITTER = 0.1  # each interval is its length +-10%
FIRST_CYCLE_SPREAD = 10.0  # seconds: the first cycles start within this of the daemon's start
# The first throughput stage: a fleet restarted together must not load a shared far end (which serves
# one iperf3 test at a time) in the same seconds; a stage takes about 22 s at the defaults.
THROUGHPUT_FIRST_SPREAD = 120.0
# A cycle's checks honour their own deadlines (the runner cuts each target off); this margin on top
# only catches what the runner cannot cut, such as a session that never closes.
CYCLE_MARGIN_SECONDS = 10.0

_FAMILY_OF_SCOPE = {Scope.HOST: "site", Scope.STUN_SERVER: "site", Scope.GATEWAY: "gateway",
                    Scope.FAR_END: "far_end"}


@dataclass(frozen=True)
class Family:
    name: str
    checks: tuple[Check, ...]

    @property
    def loads_path(self) -> bool:
        return any(check.loads_path for check in self.checks)


def families(checks: Iterable[Check] = CHECKS.values()) -> tuple[Family, ...]:
    """The registry's checks by what they probe; the one that loads the path on its own."""
    grouped: dict[str, list[Check]] = {}
    for check in checks:
        name = "throughput" if check.loads_path else _FAMILY_OF_SCOPE[check.scope]
        grouped.setdefault(name, []).append(check)
    return tuple(Family(name, tuple(members)) for name, members in grouped.items())


class PathLock:
    """Shared by quick cycles, exclusive for the throughput stage; a waiting stage goes first."""

    def __init__(self) -> None:
        self._condition = asyncio.Condition()
        self._sharing = 0
        self._exclusive = False
        self._waiting = 0

    async def acquire_shared(self) -> None:
        async with self._condition:
            await self._condition.wait_for(lambda: not self._exclusive and not self._waiting)
            self._sharing += 1

    async def release_shared(self) -> None:
        async with self._condition:
            self._sharing -= 1
            self._condition.notify_all()

    async def acquire_exclusive(self) -> None:
        async with self._condition:
            self._waiting += 1
            try:
                await self._condition.wait_for(lambda: not self._exclusive and not self._sharing)
            finally:
                self._waiting -= 1
            self._exclusive = True

    async def release_exclusive(self) -> None:
        async with self._condition:
            self._exclusive = False
            self._condition.notify_all()


def daemon_targets(settings: Settings, ruleset: RuleSet) -> Targets:
    """What the daemon probes: the settings' targets, with a throughput plan only when a stage is scheduled."""
    targets = dataclasses.replace(settings.targets, ike_offer=ruleset.ike_offer)
    if settings.daemon.throughput_interval_seconds is None:
        targets = dataclasses.replace(targets, throughput=None)
    return targets


def cycle_timeout(family: Family, settings: Settings, targets: Targets) -> float:
    """The longest a cycle may take: its slowest check's deadline, and the margin."""
    return settings.timeout_seconds + max(check.budget_seconds(targets) for check in family.checks) \
        + CYCLE_MARGIN_SECONDS


class Scheduler:
    """Runs the families of `settings` until cancelled; `on_assessment` gets a new assessment after
    every cycle, once every quick family has run."""

    def __init__(self, settings: Settings, on_assessment: Callable[[Assessment], None], *,
                 store: ResultStore | None = None, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._ruleset = load_ruleset(settings.ruleset)
        self._targets = daemon_targets(settings, self._ruleset)
        self._on_assessment = on_assessment
        self._rng = rng or random.Random()
        self.store = store if store is not None else ResultStore()
        self._path = PathLock()
        self._ran: set[str] = set()  # the families that finished a cycle
        self._audit: AuditReport | None = None

    @property
    def targets(self) -> Targets:
        return self._targets

    @property
    def ruleset(self) -> RuleSet:
        return self._ruleset

    def interval(self, family: Family) -> float | None:
        """Seconds between the starts of `family`'s cycles; None: it never runs."""
        daemon = self.settings.daemon
        return daemon.throughput_interval_seconds if family.loads_path else daemon.interval_seconds

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for family in families():
                if self.interval(family) is not None:
                    group.create_task(self._loop(family), name=f"family {family.name}")

    async def _loop(self, family: Family) -> None:
        interval = self.interval(family)
        assert interval is not None
        spread = THROUGHPUT_FIRST_SPREAD if family.loads_path else FIRST_CYCLE_SPREAD
        await asyncio.sleep(self._rng.uniform(0, min(spread, interval)))
        while True:
            started = time.monotonic()
            await self.cycle(family)
            # The interval runs from start to start; a cycle longer than it is followed at once.
            wait = interval * self._rng.uniform(1 - JITTER, 1 + JITTER) - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, wait))

    async def cycle(self, family: Family) -> None:
        """One run of `family`'s checks into the store, then a new assessment. Never raises but
        on cancellation: a failure of the cycle itself is logged and its checks' results say so."""
        if family.loads_path:
            await self._path.acquire_exclusive()
        else:
            await self._path.acquire_shared()
        started = time.monotonic()
        timeout = cycle_timeout(family, self.settings, self._targets)
        try:
            async with asyncio.timeout(timeout):
                await run_checks(family.checks, self._targets, self.settings.timeout_seconds, store=self.store)
        except TimeoutError:
            _log.error("cycle did not finish in time", extra={"fields": {"family": family.name, "timeout_seconds": timeout}})
            self._put_failed(family, Outcome(Status.ERROR, Reason.TIMEOUT,
                                             f"the daemon's cycle did not finish within {timeout:g} s"), started)
        except Exception as exc:  # run_checks turns a check's crash into its result: this is the runner's own
            _log.exception("cycle failed", extra={"fields": {"family": family.name}})
            self._put_failed(family, Outcome(Status.ERROR, Reason.EXCEPTION, f"{type(exc).__name__}: {exc}"), started)
        finally:
            if family.loads_path:
                await self._path.release_exclusive()
            else:
                await self._path.release_shared()
        if family.name == "site":
            await self._audit_site()
        # A failed TLS handshake under asyncio leaves a cycle holding a 256 KiB buffer and the native
        # TLS object until a late collection (CPython gh-109534, fixed in 3.13); the TLS probes fail one
        # every cycle against a self-signed gateway. Measured: +8.5 MB in 10 minutes without this.
        gc.collect()
        duration = time.monotonic() - started
        _log.debug("cycle done", extra={"fields": {"family": family.name, "duration_seconds": round(duration, 3)}})
        self._ran.add(family.name)
        if self.complete:
            try:
                self._on_assessment(self.assessment())
            except Exception:  # a bug in judging or rendering: the checks go on, the last snapshot stays
                _log.exception("publishing the assessment failed", extra={"fields": {"family": family.name}})

    @property
    def complete(self) -> bool:
        """Every quick family has run once: before that, verdicts would judge some facts as unknown that
        are only not measured yet (a gateway's reachability before its first cycle). The throughput
        stage is not waited for: it may be minutes away, and its facts only add to the verdicts."""
        return all(family.name in self._ran for family in families()
                   if not family.loads_path and self.interval(family) is not None)

    def _put_failed(self, family: Family, outcome: Outcome, started: float) -> None:
        for check in family.checks:
            results = [TargetResult(check.name, target, outcome.status, outcome.reason, outcome.detail,
                                    time.monotonic() - started, None, time.time())
                       for target in self._targets.of_scope(check.scope)]
            if results:  # a check without targets was summed up as skipped at once, and stays so
                self.store.put(CheckRun.of(check, results))

    async def _audit_site(self) -> None:
        """The site's own configuration, read again with each cycle of the site's checks (a firewall
        edited since shows at the next one), judged with the latest facts."""
        try:
            self._audit = await asyncio.to_thread(audit, self.settings, self._ruleset, self.assessment().facts)
        except Exception:  # the readers turn bad input into a status: this is a bug of ours, and the checks go on
            _log.exception("audit failed")

    def assessment(self) -> Assessment:
        """The store's latest results, judged now (from the oldest result's start to now), with the
        latest audit."""
        runs = self.store.runs()
        starts = [r.ended_at - r.duration_seconds for run in runs for r in run.results]
        now = time.time()
        started_at = datetime.fromtimestamp(min(starts, default=now), timezone.utc)
        made = assessment_of(runs, self._ruleset, self.settings.requirements.to_dict(), self._targets,
                             started_at, datetime.fromtimestamp(now, timezone.utc))
        return dataclasses.replace(made, audit=self._audit)
