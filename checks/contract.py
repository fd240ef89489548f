"""The one contract every check follows.

A check declares what it probes (its `Scope`: the host itself, each STUN server, each gateway,
the far end) and its probe takes one target: `probe(ctx) -> Outcome` for `ctx.target`. Network
results are data (status, a reason from a closed set, a frozen evidence object), never
exceptions. The runner, not the probe, fans out over the targets, owns each one's clock and
deadline, names the result and measures its duration, and turns a crash into an `error`
result; `CheckRun.of` sums a check's targets up, in one place for every check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import time
import types
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # checks.targets builds on Scope and Target from here
    from checks.targets import Endpoint, Resolver, Targets


class Status(enum.StrEnum):
    OK = "ok"
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"


class Reason(enum.StrEnum):
    """Why a check ended as it did. Closed: metrics and reports may enumerate it."""

    SUCCESS = "success"
    NO_TARGET = "no_target"  # the check needs a target that was not given
    DISABLED = "disabled"  # the user turned the check off (e.g. --no-throughput)
    DEPENDENCY_UNAVAILABLE = "dependency_unavailable"  # a check it builds on did not succeed
    NOT_SUPPORTED = "not_supported"  # the peer lacks what the check needs (e.g. RFC 5780)
    NO_RESPONSE = "no_response"  # silence until the deadline: a filter that drops, or a peer that ignores us
    INVALID_RESPONSE = "invalid_response"  # an answer came, but it breaks the protocol
    RESOLVE_FAILED = "resolve_failed"
    NETWORK_ERROR = "network_error"  # the local stack refused (no route, unreachable network)
    CONNECTION_FAILED = "connection_failed"  # a TCP connection was never set up (iperf3: not known why)
    CONNECTION_REFUSED = "connection_refused"  # TCP RST to our SYN: the host is there, nothing listens
    CONNECTION_LOST = "connection_lost"  # the peer went away mid-exchange
    PEER_BUSY = "peer_busy"  # the peer serves someone else (iperf3's ACCESS_DENIED)
    PEER_ERROR = "peer_error"  # the peer reported an error of its own
    PORT_UNREACHABLE = "port_unreachable"  # ICMP port unreachable: the host is there, nothing listens
    PROTOCOL_UNREACHABLE = "protocol_unreachable"  # ICMP protocol unreachable from the target: no ESP stack there
    PROHIBITED = "prohibited"  # ICMP administratively prohibited (or another unreachable): a filter said no
    NOT_PERMITTED = "not_permitted"  # this host lacks a privilege the check needs (e.g. CAP_NET_RAW)
    NO_INTERFACES = "no_interfaces"
    STALLED = "stalled"  # the peer stopped answering mid-exchange (a test's data, a handshake after the connect)
    PROXY_REFUSED = "proxy_refused"  # the HTTP proxy answered CONNECT with an error status
    TLS_FAILED = "tls_failed"  # a TLS alert or bytes that are not TLS: no handshake
    UNEXPECTED_STATUS = "unexpected_status"  # a well-formed HTTP answer, but not the one the check wants
    INVALID_TARGET = "invalid_target"  # a target as given cannot be used (a proxy URL xcheck cannot speak to)
    TIMEOUT = "timeout"  # the deadline came before anything was proven (or the runner cut the check off)
    EXCEPTION = "exception"  # the check crashed: a bug, reported rather than raised


class Scope(enum.StrEnum):
    """What a check probes: each of its targets is probed on its own, with its own deadline."""

    HOST = "host"  # the host itself: one target
    STUN_SERVER = "stun_server"  # each STUN server (--stun)
    GATEWAY = "gateway"  # each VPN gateway, or `xcheck responder` standing in for one (--gateway)
    FAR_END = "far_end"  # the iperf3 far end (--iperf)


# What a check of each scope says when the user gave none of its targets.
NO_TARGET_DETAIL = {
    Scope.STUN_SERVER: "no STUN server given",
    Scope.GATEWAY: "no gateway given (--gateway)",
    Scope.FAR_END: "no far end given (--iperf HOST)",
}


@dataclass(frozen=True)
class Target:
    """One thing a check probes, named as the user named it (the host itself is "host")."""

    scope: Scope
    name: str
    endpoint: Endpoint | None = None  # None for the host itself

    @property
    def host(self) -> str:
        assert self.endpoint is not None, "the host itself has no endpoint"
        return self.endpoint.host


@dataclass(frozen=True)
class Outcome:
    """What a probe returns for one target; the runner adds check, target and duration.

    `evidence` is the check's own frozen dataclass (or None when nothing was measured);
    `evidence_dict` turns any of them into the report's JSON.
    """

    status: Status
    reason: Reason
    detail: str = ""
    evidence: Any = None

    @classmethod
    def ok(cls, evidence: Any, detail: str = "") -> Outcome:
        return cls(Status.OK, Reason.SUCCESS, detail, evidence)

    @classmethod
    def fail(cls, reason: Reason, detail: str, evidence: Any = None) -> Outcome:
        return cls(Status.FAIL, reason, detail, evidence)

    @classmethod
    def skipped(cls, reason: Reason, detail: str, evidence: Any = None) -> Outcome:
        return cls(Status.SKIPPED, reason, detail, evidence)


def evidence_dict(evidence: Any) -> Any:
    """The one serialisation of typed evidence for the report: dataclasses become objects,
    enums their values, tuples lists; field order is kept, and a field may name its JSON key in
    its metadata ("class" is a Python keyword)."""
    if dataclasses.is_dataclass(evidence) and not isinstance(evidence, type):
        return {f.metadata.get("key", f.name): evidence_dict(getattr(evidence, f.name))
                for f in dataclasses.fields(evidence)}
    if isinstance(evidence, enum.Enum):
        return evidence.value
    if isinstance(evidence, Mapping):
        return {str(key): evidence_dict(value) for key, value in evidence.items()}
    if isinstance(evidence, (list, tuple)):
        return [evidence_dict(item) for item in evidence]
    return evidence


def evidence_from_dict(kind: Any, data: Any) -> Any:
    """`evidence_dict` undone: a recorded report's evidence back into the check's typed evidence
    (tests feed facts and verdicts from evidence real checks produced in the lab)."""
    if data is None:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return evidence_from_dict(options[0], data) if len(options) == 1 else data
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        by_key = {f.metadata.get("key", f.name): f for f in dataclasses.fields(kind)}
        return kind(**{by_key[key].name: evidence_from_dict(hints[by_key[key].name], value)
                       for key, value in data.items() if key in by_key})
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(data)
    if origin is tuple:
        return tuple(evidence_from_dict(args[0], item) for item in data)
    if origin in (Mapping, dict) and len(args) == 2:
        return {key: evidence_from_dict(args[1], value) for key, value in data.items()}
    return data


@dataclass(frozen=True)
class TargetResult:
    """One check's result for one target, as the runner recorded it."""

    check: str
    target: Target
    status: Status
    reason: Reason
    detail: str
    duration_seconds: float
    evidence: Any  # the check's frozen evidence dataclass, or None
    ended_at: float  # wall clock (time.time()): how old a stored result is

    @property
    def succeeded(self) -> bool:
        return self.status is Status.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.name,
            "scope": str(self.target.scope),
            "status": str(self.status),
            "reason": str(self.reason),
            "detail": self.detail,
            "duration_seconds": round(self.duration_seconds, 6),
            "evidence": evidence_dict(self.evidence),
        }


# A check over several targets fails with the most telling of their reasons: an answer that
# breaks the protocol or a refusal says more than silence, silence more than local trouble.
_TELLING = (Reason.EXCEPTION, Reason.INVALID_RESPONSE, Reason.TLS_FAILED, Reason.UNEXPECTED_STATUS, Reason.PEER_ERROR,
            Reason.PEER_BUSY, Reason.PROXY_REFUSED, Reason.PROHIBITED, Reason.PROTOCOL_UNREACHABLE,
            Reason.PORT_UNREACHABLE, Reason.CONNECTION_REFUSED, Reason.CONNECTION_FAILED, Reason.CONNECTION_LOST,
            Reason.STALLED, Reason.NO_RESPONSE, Reason.NOT_PERMITTED, Reason.NO_INTERFACES, Reason.NETWORK_ERROR,
            Reason.RESOLVE_FAILED, Reason.INVALID_TARGET, Reason.TIMEOUT, Reason.NOT_SUPPORTED,
            Reason.DEPENDENCY_UNAVAILABLE, Reason.DISABLED, Reason.NO_TARGET)
assert set(_TELLING) == set(Reason) - {Reason.SUCCESS}, "every failing reason has its rank"


def telling_rank(reason: Reason) -> int:
    """Lower says more (`_TELLING`); success says the least of all."""
    return _TELLING.index(reason) if reason in _TELLING else len(_TELLING)


@dataclass(frozen=True)
class CheckRun:
    """A check's results over its targets, and the one place they are summed up."""

    check: Check
    results: tuple[TargetResult, ...]
    status: Status
    reason: Reason
    detail: str
    duration_seconds: float

    @property
    def name(self) -> str:
        return self.check.name

    @property
    def succeeded(self) -> bool:
        return self.status is Status.OK

    @property
    def ended_at(self) -> float | None:
        return max((r.ended_at for r in self.results), default=None)

    def result_for(self, target: Target) -> TargetResult | None:
        return next((r for r in self.results if r.target == target), None)

    @classmethod
    def of(cls, check: Check, results: Sequence[TargetResult], skipped: Outcome | None = None) -> CheckRun:
        """Sum up: `skipped` when there was nothing to probe; ok when every probed target (or, for a
        check whose targets stand in for each other, one) succeeded; else the most telling failure."""
        results = tuple(results)
        duration = max((r.duration_seconds for r in results), default=0.0)
        if skipped is not None:
            return cls(check, results, skipped.status, skipped.reason, skipped.detail, duration)
        if not results:
            raise ValueError(f"check {check.name}: no result and no outcome that says why")
        if len(results) == 1:
            only = results[0]
            return cls(check, results, only.status, only.reason, only.detail, duration)
        # A skipped target was not probed (nothing to build on there, no privilege): it counts
        # neither for nor against the check, unless no target was probed at all.
        succeeded = [r for r in results if r.succeeded]
        failed = [r for r in results if r.status in (Status.FAIL, Status.ERROR)]
        if not succeeded and not failed:
            return cls(check, results, Status.SKIPPED, results[0].reason, _details(results), duration)
        if not failed or not check.every_target:
            count = f"{len(succeeded)} of {len(results)} {check.scope.value.replace('_', ' ')}s"
            if succeeded:
                return cls(check, results, Status.OK, Reason.SUCCESS, f"{count} succeeded", duration)
        worst = min(failed, key=lambda r: telling_rank(r.reason))
        status = Status.ERROR if worst.status is Status.ERROR else Status.FAIL
        return cls(check, results, status, worst.reason, _details(failed), duration)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": str(self.check.scope),
            "status": str(self.status),
            "reason": str(self.reason),
            "detail": self.detail,
            "duration_seconds": round(self.duration_seconds, 6),
            "results": [result.to_dict() for result in self.results],
        }


def _details(results: Sequence[TargetResult]) -> str:
    return "; ".join(f"{r.target.name}: {r.detail}" for r in results)


@dataclass
class CheckContext:
    """What a probe of one target gets: all the targets (for settings such as the proxy), its own
    target, its deadline, the latest results of the checks it builds on, and a per-check session."""

    targets: Targets
    target: Target
    deadline: float  # on `clock`; a probe must return by then
    dependencies: Mapping[str, CheckRun]
    resolver: Resolver
    logger: logging.Logger
    clock: Callable[[], float] = time.monotonic
    # Live news of long work for a terminal (fraction done or None, one line); never for reports.
    progress: Callable[[float | None, str], None] = lambda fraction, text: None
    session: Any = None  # what Check.session opened for all of this check's targets

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def dependency(self, check: str) -> TargetResult | None:
        """The latest result of `check` for this same target, if there is one."""
        run = self.dependencies.get(check)
        return run.result_for(self.target) if run else None


Probe = Callable[[CheckContext], Awaitable[Outcome]]
# Opens what every target of one run of a check shares (one socket, so one NAT mapping), and closes it.
Session = Callable[["Targets", Callable[[], float]], AbstractAsyncContextManager[Any]]


@contextlib.asynccontextmanager
async def _no_session(targets: Targets, clock: Callable[[], float]) -> AsyncIterator[None]:
    yield None


@dataclass(frozen=True)
class Check:
    name: str
    summary: str  # one line, shown in the README's table of checks
    scope: Scope
    probe: Probe  # probes ctx.target, one target per call
    evidence: type  # the frozen dataclass its Outcome carries
    depends_on: tuple[str, ...] = ()
    # True: the check succeeds only when every target does (each gateway matters); False: one is
    # enough (STUN servers stand in for each other).
    every_target: bool = True
    # It loads the path: the runner starts it once every other check of the run has finished, so
    # that the load skews no other measurement.
    loads_path: bool = False
    # Seconds of planned work beyond the run's timeout (a throughput test's duration).
    budget_seconds: Callable[[Targets], float] = lambda targets: 0.0
    # Host work done before any check's clock starts (importing scapy takes 0.35 s idle and 2 s on a
    # loaded host): a deadline must measure the network, not this host.
    prepare: Callable[[Targets], None] = lambda targets: None
    session: Session = _no_session
