"""The one contract every check follows.

A check declares what it probes (its `Scope`: the host itself, each STUN server, each gateway,
the far end) and its probe takes one target: `probe(ctx) -> Outcome` for `ctx.target`. Network
results are data (status, a reason from a closed set, a frozen evidence object), never
exceptions. The runner, not the probe, fans out over the targets, owns each one's clock and
deadline, names the result and measures its duration, and turns a crash into an `error`
result; `CheckRun.of` sums a check's targets up, in one place for every check.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import ipaddress
import logging
import re
import socket
import threading
import time
import types
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from checks.protocols.ike_suites import IkeOffer


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
    NO_RESPONSE = "no_response"  # silence until the deadline: proves nothing is listening or allowed
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
    STALLED = "stalled"  # data stopped flowing in the middle of a test
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
        """Sum up: `skipped` when there was nothing to probe; ok when every target (or, for a check
        whose targets stand in for each other, one) succeeded; else the most telling failure."""
        results = tuple(results)
        duration = max((r.duration_seconds for r in results), default=0.0)
        if skipped is not None:
            return cls(check, results, skipped.status, skipped.reason, skipped.detail, duration)
        succeeded = [r for r in results if r.succeeded]
        others = [r for r in results if not r.succeeded]
        count = f"{len(succeeded)} of {len(results)} {check.scope.value.replace('_', ' ')}s"
        if len(results) == 1:
            only = results[0]
            return cls(check, results, only.status, only.reason, only.detail, duration)
        if not others or (succeeded and not check.every_target):
            return cls(check, results, Status.OK, Reason.SUCCESS, f"{count} succeeded", duration)
        if all(r.status is Status.SKIPPED for r in others) and not succeeded:
            first = others[0]
            return cls(check, results, Status.SKIPPED, first.reason, _details(others), duration)
        worst = min(others, key=lambda r: _TELLING.index(r.reason))
        status = Status.ERROR if worst.status is Status.ERROR else Status.FAIL
        return cls(check, results, status, worst.reason, _details(others), duration)

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


# RFC 1035 2.3.4: a name is at most 255 octets on the wire, so 253 characters as text.
MAX_HOST_NAME_LENGTH = 253
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123 2.1: letters, digits, hyphens
# The longest HOST[:PORT] there is: a full-length name and ':65535' (an IPv6 literal is shorter).
_MAX_ENDPOINT_LENGTH = MAX_HOST_NAME_LENGTH + len(":65535")


@dataclass(frozen=True)
class Endpoint:
    """A target as the user named it: a host name or IP literal and a port."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, default_port: int) -> Endpoint:
        """Parse HOST, HOST:PORT or [IPV6]:PORT; ValueError with a message on bad input."""
        text = text.strip()
        if len(text) > _MAX_ENDPOINT_LENGTH:  # say so without echoing it: it may be megabytes
            raise ValueError(f"{len(text)} characters is too long for HOST[:PORT] (a host name has at most "
                             f"{MAX_HOST_NAME_LENGTH})")
        host, port_text = text, None
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise ValueError(f"{text!r}: missing ']' after an IPv6 address")
            host, rest = text[1:close], text[close + 1 :]
            if rest and not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            if ":" not in host:
                raise ValueError(f"{text!r}: brackets are for an IPv6 address only")
            port_text = rest[1:] if rest else None
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        if not host:
            raise ValueError(f"{text!r}: empty host")
        try:
            host = cls.check_host(host)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if port_text is None:
            return cls(host, default_port)
        if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: port must be a number from 1 to 65535")
        return cls(host, int(port_text))

    @staticmethod
    def check_host(host: str) -> str:
        """`host` normalised if it is an IPv4 literal or an RFC 1123 host name; ValueError otherwise.

        The one place every target's host is judged (STUN servers, far end, gateways, proxy).
        Names are lower-cased, so one host is one string everywhere.
        """
        if len(host) > MAX_HOST_NAME_LENGTH:
            raise ValueError(f"a host name has at most {MAX_HOST_NAME_LENGTH} characters, this one {len(host)}")
        if ":" in host:
            try:
                address = ipaddress.IPv6Address(host)
            except ValueError:
                # One colon reaches here only where a port has no place (a gateway is a host).
                raise ValueError("a host without a port expected" if host.count(":") == 1
                                 else "not an IPv6 address") from None
            # Azure's VPN gateways, the seed's rules and every probe here are IPv4: an IPv6 target
            # could only ever fail to resolve, so it is refused with the reason now.
            raise ValueError(f"{address.compressed} is IPv6: xcheck measures IPv4 paths; give an IPv4 address "
                             "or a name with an A record")
        name = host.lower()
        labels = name.removesuffix(".").split(".")
        if not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise ValueError("not an IP address or a host name (labels of 1-63 letters, digits and hyphens, "
                             "not starting or ending with a hyphen, joined by dots)")
        # A name whose last label is a number, or that inet_aton reads as one ("127.1", "0x7f000001"),
        # is an address typed wrong: the system resolver would turn it into some other address.
        try:
            socket.inet_aton(name)
            numeric = True
        except OSError:
            numeric = labels[-1].isdigit()
        if numeric:
            try:
                return str(ipaddress.IPv4Address(host))
            except ValueError:
                raise ValueError("not an IPv4 address (four numbers 0-255, without leading zeros)") from None
        return name

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ThroughputPlan:
    """How to load the far end: one stage per entry of `streams`, each upload then download."""

    seconds: float = 10.0
    omit_seconds: float = 1.0  # TCP's slow start is not the path's rate
    streams: tuple[int, ...] = (4,)
    window_bytes: int | None = None

    def load_seconds(self) -> float:
        return len(self.streams) * 2 * (self.seconds + self.omit_seconds)


@dataclass(frozen=True)
class Targets:
    """Everything the user asked xcheck to probe. Later probes add their own fields."""

    stun: tuple[Endpoint, ...] = ()
    iperf: Endpoint | None = None  # an iperf3 server (or `xcheck responder`) at the far end
    throughput: ThroughputPlan | None = ThroughputPlan()  # None: --no-throughput
    # VPN gateways (an IP or a name each) or `xcheck responder`: IKE, NAT-T, ESP, TLS/SSTP, health probe, MTU.
    gateways: tuple[str, ...] = ()
    gateway_fingerprint: str | None = None  # SHA-256 of the gateway's certificate, hex, if the user knows it
    proxy: str | None = None  # http://HOST:PORT for CONNECT to port 443 (from --proxy or HTTPS_PROXY)
    ike_offer: IkeOffer | None = None  # the suites the IKE probes propose: the rule set's [ike] table

    def all(self) -> tuple[Endpoint, ...]:
        gateways = tuple(Endpoint(host, 500) for host in self.gateways)
        return self.stun + ((self.iperf,) if self.iperf else ()) + gateways

    def of_scope(self, scope: Scope) -> tuple[Target, ...]:
        """The targets a check of `scope` probes, in the order the user gave them."""
        if scope is Scope.HOST:
            return (Target(Scope.HOST, "host"),)
        if scope is Scope.STUN_SERVER:
            return tuple(Target(scope, str(endpoint), endpoint) for endpoint in self.stun)
        if scope is Scope.GATEWAY:
            return tuple(Target(scope, host, Endpoint(host, 500)) for host in self.gateways)
        return (Target(scope, str(self.iperf), self.iperf),) if self.iperf else ()


class Resolver:
    """IPv4 name resolution, cached for one run so that every check sees the same answer.

    xcheck measures IPv4 paths (Azure VPN gateways and the seed's rules are IPv4), so an
    IPv6-only target is a resolve failure with that said. Look-ups run in daemon threads:
    a resolver that hangs must neither hold a check past its deadline nor keep the
    process from exiting.
    """

    def __init__(self) -> None:
        self._cache: dict[str, asyncio.Future[str]] = {}

    async def resolve(self, host: str, timeout: float) -> str:
        """The first IPv4 address of host; OSError with a readable message when there is none."""
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            pass
        if host not in self._cache:
            self._cache[host] = _lookup_in_thread(host)
        try:
            return await asyncio.wait_for(asyncio.shield(self._cache[host]), timeout)
        except TimeoutError:
            raise OSError(f"looking up {host!r} took longer than {timeout:.3g} s") from None


def _lookup_in_thread(host: str) -> asyncio.Future[str]:
    loop = asyncio.get_running_loop()
    result: asyncio.Future[str] = loop.create_future()

    def settle(value: str | None, error: OSError | None) -> None:
        if result.done():
            return
        if error is None:
            result.set_result(value)
            return
        result.set_exception(error)
        result.exception()  # marked as seen: a look-up that no check waits for any more must not log

    def look_up() -> None:
        try:
            infos = socket.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_DGRAM)
            outcome: tuple[str | None, OSError | None] = (infos[0][4][0], None)
        except (OSError, UnicodeError, ValueError) as exc:  # UnicodeError: a label IDNA refuses
            outcome = (None, OSError(f"cannot resolve {host!r} to an IPv4 address: {exc}"))
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the run ended while we were looking up

    threading.Thread(target=look_up, name=f"resolve {host}", daemon=True).start()
    return result


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
Session = Callable[[Targets, Callable[[], float]], AbstractAsyncContextManager[Any]]


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
