"""UDP request/answer exchanges that say why no answer came: the one retransmission engine of
every UDP probe (IKE here, STUN in stun_client.py).

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

`UdpSocket` runs the exchanges; a subclass says which open exchange each datagram and ICMP
error belongs to. `UdpProbe` is connected to one target, for one exchange at a time: the kernel
then delivers only the target's datagrams and ICMP errors about our flow, and `local_address`
is known before the first send (IKE hashes it into its request). `StunClient` keeps one
unconnected socket for many transactions (one NAT mapping, answers from any address seen):
there the kernel names, with each ICMP error, the destination of the datagram it refused.
No privilege is needed. What counts as the answer is the caller's `judge`: it returns the
decoded answer, None for a datagram that is not meant for this request, or raises
`InvalidAnswer`; an invalid answer does not end the exchange (a valid one may follow) but is
reported if nothing better comes.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from checks.contract import Reason
from checks.transport.icmp_errors import (IcmpError, IcmpReport, classify_icmp, enable_error_queue, read_error_queue,
                                          send_once_more_on_error)

# RFC 8489 §6.2.1 (and RFC 7296 §2.1's advice to back off): first retransmission after
# 0.5 s, then 1 s, 2 s, ... so that a lost datagram is resent early without flooding.
INITIAL_RTO_SECONDS = 0.5
BACKOFF = 2.0
_RECEIVE_BYTES = 65535  # whole datagrams; the judge bounds what it accepts
# Linux's receive timestamps (include/uapi/asm-generic/socket.h; Python 3.11 does not name them):
# the kernel's time of arrival, so that a round trip measures the network, not how long this
# process's event loop was busy (building IKE requests, loading CA certificates) before it read.
SO_TIMESTAMPNS = SCM_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")

Address = tuple[str, int]
T = TypeVar("T")
S = TypeVar("S", bound="UdpSocket")


class InvalidAnswer(ValueError):
    """Raised by a judge: the datagram answers our request but breaks the protocol (the message says how).

    `answer` is what the judge made of it, kept as the exchange's answer if nothing better comes.
    """

    def __init__(self, detail: str, answer: object = None) -> None:
        super().__init__(detail)
        self.answer = answer


@dataclass(frozen=True)
class UdpExchange(Generic[T]):
    result: Reason
    target: Address
    attempts: int  # datagrams sent
    detail: str
    answer: T | None = None  # the accepted answer; for INVALID_RESPONSE, the first invalid one's `InvalidAnswer.answer`
    rtt_seconds: float | None = None  # of that answer, only when it came before a second send (Karn)
    icmp: IcmpReport | None = None


class Datagram(NamedTuple):
    payload: bytes
    source: Address
    received_at: float | None = None  # the kernel's arrival time (time.time()'s clock), when it gave one


Event = Datagram | IcmpError
Judge = Callable[[bytes], T | None]


class Deadline:
    """A point on the clock that may be brought forward while exchanges wait for it."""

    def __init__(self, at: float) -> None:
        self.at = at

    def bring_forward(self, at: float) -> None:
        self.at = min(self.at, at)


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


class UdpSocket:
    """A non-blocking IPv4 UDP socket that reads its ICMP errors, and the engine that runs exchanges on it.

    A subclass routes what arrives (`_deliver`) to the event queue of the exchange it belongs to.
    """

    def __init__(self, sock: socket.socket, clock: Callable[[], float]) -> None:
        enable_error_queue(sock)  # without it an unconnected socket hears of no ICMP error at all
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock, self._clock = sock, clock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    def _open(cls: type[S], prepare: Callable[[socket.socket], None], make: Callable[[socket.socket], S]) -> S:
        """`make` over a new socket once `prepare` (bind or connect) succeeded; the socket is closed if not."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            prepare(sock)
            return make(sock)
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _deliver(self, event: Event) -> None:
        raise NotImplementedError

    def _on_readable(self) -> None:
        # Errors first: reading the queue also clears the pending socket error, which would
        # otherwise fail the next recvfrom() (and send) once.
        for error in read_error_queue(self._sock):
            self._deliver(error)
        while True:
            try:
                payload, ancillary, _, source = self._sock.recvmsg(_RECEIVE_BYTES, socket.CMSG_SPACE(_TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # a socket error raced the queue read; the queue holds its details
            self._deliver(Datagram(payload, source[:2], _arrival(ancillary)))

    async def _exchange(self, request: bytes, target: Address, events: asyncio.Queue[Event],
                        judge: Callable[[Datagram], T | None], *, deadline: Deadline, rto: float,
                        backoff: float) -> UdpExchange[T]:
        """Send `request` to `target` until `judge` accepts an answer from `events`, an ICMP error
        among them refuses it, or `deadline` (on the clock; brought forward, it is seen at the
        next wake-up). The same bytes are resent each time, as IKE and STUN retransmit."""
        first_rto, attempts, first_sent_at, sent_at, next_send = rto, 0, None, 0.0, self._clock()
        sent_wall = 0.0  # when the last datagram went out, on the clock of the kernel's arrival times
        first_invalid: tuple[InvalidAnswer, float | None] | None = None
        while True:
            now = self._clock()
            if now >= deadline.at:
                if events.empty():
                    break
                event = events.get_nowait()  # arrived just as time ran out
            else:
                if now >= next_send:
                    sent_wall = time.time()
                    error = send_once_more_on_error(self._sock, request, target)
                    if error is None:
                        if attempts == 0:
                            first_sent_at = now
                        attempts, sent_at = attempts + 1, now
                    elif not isinstance(error, BlockingIOError):  # a full send buffer: the next send tries again
                        return UdpExchange(Reason.NETWORK_ERROR, target, attempts,
                                           f"send failed: {error.strerror or error}")
                    next_send = now + rto
                    rto *= backoff
                try:
                    async with asyncio.timeout(min(next_send, deadline.at) - now):
                        event = await events.get()
                except TimeoutError:
                    continue
            if isinstance(event, IcmpError):
                refusal = classify_icmp(event)
                if refusal is not None:
                    result, report = refusal
                    return UdpExchange(result, target, attempts, report.detail, icmp=report)
                continue
            rtt = _round_trip(event, sent_wall, self._clock() - sent_at) if attempts == 1 else None
            try:
                answer = judge(event)
            except InvalidAnswer as exc:
                first_invalid = first_invalid or (exc, rtt)
                continue
            if answer is not None:
                return UdpExchange(Reason.SUCCESS, target, attempts, "", answer, rtt)
        if first_invalid is not None:
            invalid, rtt = first_invalid
            return UdpExchange(Reason.INVALID_RESPONSE, target, attempts, str(invalid), invalid.answer, rtt)
        unproven = unproven_silence(first_sent_at, self._clock(), first_rto)
        if unproven is not None:
            return UdpExchange(Reason.TIMEOUT, target, attempts, unproven)
        return UdpExchange(Reason.NO_RESPONSE, target, attempts,
                           f"no answer to {attempts} datagrams and no ICMP error")


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return seconds + nanoseconds / 1e9
    return None


def _round_trip(answer: Datagram, sent_wall: float, as_read: float) -> float:
    """From the send to the kernel's arrival time; as read by the loop when the kernel gave none
    (or the wall clock stepped in between, which a negative or longer figure shows)."""
    if answer.received_at is None:
        return as_read
    kernel = answer.received_at - sent_wall
    return kernel if 0 <= kernel <= as_read else as_read


class UdpProbe(UdpSocket):
    """A connected UDP socket toward one target, for one exchange at a time."""

    def __init__(self, sock: socket.socket, target: Address, clock: Callable[[], float]) -> None:
        self.target = target
        self._events: asyncio.Queue[Event] | None = None
        super().__init__(sock, clock)

    @classmethod
    def open(cls, target: Address, clock: Callable[[], float] = time.monotonic) -> UdpProbe:
        """OSError when the local stack has no way toward `target` (connect() sends nothing)."""
        return cls._open(lambda sock: sock.connect(target), lambda sock: cls(sock, target, clock))

    @property
    def local_address(self) -> Address:
        """The address and port our datagrams leave from (before any NAT)."""
        host, port = self._sock.getsockname()[:2]
        return host, port

    def _deliver(self, event: Event) -> None:
        if self._events is not None:  # else it is about an earlier request, or none
            self._events.put_nowait(event)

    async def exchange(self, request: bytes, judge: Judge[T], *, deadline: float,
                       rto: float = INITIAL_RTO_SECONDS, backoff: float = BACKOFF) -> UdpExchange[T]:
        """Send `request` until `judge` accepts an answer, an ICMP error refuses it, or `deadline` (on the clock)."""
        if self._events is not None:
            raise RuntimeError("one exchange at a time on a UdpProbe")
        self._on_readable()  # drops what came before: answers and errors about earlier requests
        self._events = asyncio.Queue()
        try:
            return await self._exchange(request, self.target, self._events, lambda datagram: judge(datagram.payload),
                                        deadline=Deadline(deadline), rto=rto, backoff=backoff)
        finally:
            self._events = None
