"""One UDP request/answer exchange that says why no answer came.

A UDP probe that only waits cannot tell a closed port from a filter from a lost packet:
all three are silence. This one reads ICMP errors for its datagrams from the socket's
error queue (IP_RECVERR, Linux), so that "port unreachable" (the host is there, nothing
listens), "administratively prohibited" or another unreachable (a filter said no) and
plain silence (dropped: nothing proves anything is there) are told apart. Silence is
retransmitted within the deadline (RFC 8489's schedule: RTO 0.5 s, doubled after each
send), since one lost datagram must not read as "filtered". Senders rate-limit ICMP errors
(Linux: 6 at once to one host, then 1 a second), so a refusal can still arrive only for a
retransmission, or not at all: silence is reported as silence, never as "closed". And it is
silence only once a datagram went out and one RTO passed unanswered: a deadline that comes
sooner (a loaded host spent the time before the first send) is a timeout, which proves nothing.

The socket is connected to the target: the kernel then delivers only the target's
datagrams and ICMP errors about our flow, and `local_address` is known before the first
send (IKE hashes it into its request). No privilege is needed. What counts as the answer
is the caller's `judge`: it returns the decoded answer, None for a datagram that is not
meant for this request, or raises `InvalidAnswer`; an invalid answer does not end the
exchange (a valid one may follow) but is reported if nothing better comes.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from checks.contract import Reason
from checks.transport.icmp_errors import IcmpError, enable_error_queue, read_error_queue, send_once_more_on_error

# RFC 8489 §6.2.1 (and RFC 7296 §2.1's advice to back off): first retransmission after
# 0.5 s, then 1 s, 2 s, ... so that a lost datagram is resent early without flooding.
INITIAL_RTO_SECONDS = 0.5
BACKOFF = 2.0
_RECEIVE_BYTES = 65535  # whole datagrams; the judge bounds what it accepts

ICMP_DEST_UNREACH = 3
ICMP_FRAG_NEEDED = 4  # a code of DEST_UNREACH: the kernel's PMTU business, not a refusal
ICMP_PORT_UNREACH = 3
_UNREACHABLE_CODES = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable",
                      3: "port unreachable", 9: "network administratively prohibited",
                      10: "host administratively prohibited", 13: "communication administratively prohibited"}
ICMP_TIME_EXCEEDED = 11

Address = tuple[str, int]
T = TypeVar("T")


class UdpResult(enum.StrEnum):
    """How one exchange ended. Closed: evidence and metrics may enumerate it."""

    ANSWERED = "answered"
    NO_RESPONSE = "no_response"  # silence until the deadline, at least one RTO after the first send
    TIMEOUT = "timeout"  # the deadline came before a send, or less than one RTO after the first: nothing proven
    PORT_UNREACHABLE = "port_unreachable"  # ICMP port unreachable: the host is there, nothing listens
    PROHIBITED = "prohibited"  # ICMP administratively prohibited or another unreachable
    INVALID_RESPONSE = "invalid_response"  # only answers that break the protocol came back
    NETWORK_ERROR = "network_error"  # the local stack refused to send (no route, ...)
    RESOLVE_FAILED = "resolve_failed"  # never sent: the target's name did not resolve (for callers' evidence)


REASONS: dict[UdpResult, Reason] = {
    UdpResult.ANSWERED: Reason.SUCCESS,
    UdpResult.NO_RESPONSE: Reason.NO_RESPONSE,
    UdpResult.TIMEOUT: Reason.TIMEOUT,
    UdpResult.PORT_UNREACHABLE: Reason.PORT_UNREACHABLE,
    UdpResult.PROHIBITED: Reason.PROHIBITED,
    UdpResult.INVALID_RESPONSE: Reason.INVALID_RESPONSE,
    UdpResult.NETWORK_ERROR: Reason.NETWORK_ERROR,
    UdpResult.RESOLVE_FAILED: Reason.RESOLVE_FAILED,
}


class InvalidAnswer(ValueError):
    """Raised by a judge: the datagram answers our request but breaks the protocol (the message says how)."""


@dataclass(frozen=True)
class IcmpReport:
    """An ICMP error about our datagrams, as evidence."""

    icmp_type: int
    icmp_code: int
    offender: str | None  # who sent it: the target itself, or a router or firewall on the way
    description: str

    def to_dict(self) -> dict[str, object]:
        return {"type": self.icmp_type, "code": self.icmp_code, "from": self.offender,
                "description": self.description}


@dataclass(frozen=True)
class UdpExchange(Generic[T]):
    result: UdpResult
    target: Address
    attempts: int  # datagrams sent
    detail: str
    answer: T | None = None
    rtt_seconds: float | None = None  # only when answered on the first send (Karn: retransmissions blur it)
    icmp: IcmpReport | None = None


def classify_icmp(error: IcmpError) -> tuple[UdpResult, IcmpReport] | None:
    """What an error-queue entry says about the target; None when it is no refusal (local, PMTU)."""
    if not error.from_icmp:
        return None
    if error.icmp_type == ICMP_DEST_UNREACH:
        if error.icmp_code == ICMP_FRAG_NEEDED:
            return None
        description = _UNREACHABLE_CODES.get(error.icmp_code, f"destination unreachable, code {error.icmp_code}")
        result = UdpResult.PORT_UNREACHABLE if error.icmp_code == ICMP_PORT_UNREACH else UdpResult.PROHIBITED
    elif error.icmp_type == ICMP_TIME_EXCEEDED:
        description, result = "time exceeded (a routing loop or a too-short TTL)", UdpResult.PROHIBITED
    else:
        return None
    return result, IcmpReport(error.icmp_type, error.icmp_code, error.offender, description)


Judge = Callable[[bytes], T | None]


def unproven_silence(first_sent_at: float | None, ended_at: float, rto: float) -> str | None:
    """Why no answer until `ended_at` proves nothing, or None when it is silence: a datagram went
    out at `first_sent_at` and at least one RTO (RFC 8489's "no answer yet, resend") passed since."""
    if first_sent_at is None:
        return "the deadline passed before the first datagram was sent"
    waited = ended_at - first_sent_at
    if waited < rto:
        return (f"the deadline came {waited:.3f} s after the first datagram was sent, within one retransmission "
                f"timeout ({rto:g} s): too soon for silence to mean anything")
    return None


class UdpProbe:
    """A connected, non-blocking UDP socket toward one target, for one exchange at a time."""

    def __init__(self, sock: socket.socket, target: Address, clock: Callable[[], float]) -> None:
        self._sock, self.target, self._clock = sock, target, clock
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[bytes | IcmpError] | None = None
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    def open(cls, target: Address, clock: Callable[[], float] = time.monotonic) -> UdpProbe:
        """OSError when the local stack has no way toward `target` (connect() sends nothing)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            enable_error_queue(sock)
            sock.connect(target)
            return cls(sock, target, clock)
        except BaseException:
            sock.close()
            raise

    @property
    def local_address(self) -> Address:
        """The address and port our datagrams leave from (before any NAT)."""
        host, port = self._sock.getsockname()[:2]
        return host, port

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def __enter__(self) -> UdpProbe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _on_readable(self) -> None:
        # Errors first: reading the queue also clears the pending socket error, which would
        # otherwise fail the next recv() (and send()) once.
        for error in read_error_queue(self._sock):
            if self._events is not None:
                self._events.put_nowait(error)
        while True:
            try:
                data = self._sock.recv(_RECEIVE_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # a socket error raced the queue read; the queue holds its details
            if self._events is not None:
                self._events.put_nowait(data)

    async def exchange(self, request: bytes, judge: Judge[T], *, deadline: float,
                       rto: float = INITIAL_RTO_SECONDS, backoff: float = BACKOFF) -> UdpExchange[T]:
        """Send `request` until `judge` accepts an answer, an ICMP error refuses it, or `deadline` (on the clock).

        The same bytes are resent each time, as IKE and STUN retransmit.
        """
        if self._events is not None:
            raise RuntimeError("one exchange at a time on a UdpProbe")
        self._on_readable()  # drops what came before: answers and errors about earlier requests
        self._events = asyncio.Queue()
        first_rto, attempts, first_sent_at, sent_at, next_send = rto, 0, None, 0.0, self._clock()
        first_invalid: str | None = None
        try:
            while True:
                now = self._clock()
                if now >= deadline:
                    if self._events.empty():
                        break
                    event = self._events.get_nowait()  # arrived just as time ran out
                else:
                    if now >= next_send:
                        error = send_once_more_on_error(self._sock, request)
                        if error is None:
                            if attempts == 0:
                                first_sent_at = now
                            attempts, sent_at = attempts + 1, now
                        elif not isinstance(error, BlockingIOError):  # a full send buffer: the next send tries again
                            return UdpExchange(UdpResult.NETWORK_ERROR, self.target, attempts,
                                               f"send failed: {error.strerror or error}")
                        next_send = now + rto
                        rto *= backoff
                    try:
                        async with asyncio.timeout(min(next_send, deadline) - now):
                            event = await self._events.get()
                    except TimeoutError:
                        continue
                if isinstance(event, IcmpError):
                    refusal = classify_icmp(event)
                    if refusal is not None:
                        result, report = refusal
                        return UdpExchange(result, self.target, attempts, _icmp_detail(report), icmp=report)
                    continue
                try:
                    answer = judge(event)
                except InvalidAnswer as exc:
                    first_invalid = first_invalid or str(exc)
                    continue
                if answer is not None:
                    rtt = self._clock() - sent_at if attempts == 1 else None
                    return UdpExchange(UdpResult.ANSWERED, self.target, attempts, "", answer, rtt)
        finally:
            self._events = None
        if first_invalid is not None:
            return UdpExchange(UdpResult.INVALID_RESPONSE, self.target, attempts, first_invalid)
        unproven = unproven_silence(first_sent_at, self._clock(), first_rto)
        if unproven is not None:
            return UdpExchange(UdpResult.TIMEOUT, self.target, attempts, unproven)
        return UdpExchange(UdpResult.NO_RESPONSE, self.target, attempts,
                           f"no answer to {attempts} datagrams and no ICMP error")


def _icmp_detail(report: IcmpReport) -> str:
    return f"ICMP {report.description} from {report.offender or 'an unknown sender'}"
