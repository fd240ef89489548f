"""STUN Binding transactions over UDP (RFC 8489 §6.2.1), many on one socket.

One unconnected socket serves every transaction of a test, so that all of them share one
NAT mapping and answers from any address are seen (and checked against the address they
should come from). Answers are routed to their transaction by transaction ID.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from checks.protocols import stun
from checks.transport.addressing import AddressClass, classify
from checks.contract import Reason
from checks.transport.udp_probe import unproven_silence

# RFC 8489 §6.2.1: initial RTO of 500 ms, doubled on each retransmission.
INITIAL_RTO_SECONDS = 0.5
# A cached RTO (3x a measured RTT, RFC 6298 on one sample) is floored so that a sub-millisecond
# lab RTT does not turn retransmission into a flood.
RTO_FLOOR_SECONDS = 0.1
_RECEIVE_BYTES = 65535  # read whole datagrams; the parser rejects anything over its bound
# `xcheck responder` never answers with more bytes than it received (no amplification): every
# request is as large as its largest answer, so that it is answered (the socket is IPv4).
REQUEST_BYTES = stun.largest_binding_answer_bytes(4)
# No host is reached at, or seen from, these: a server that names one is lying or broken. 240/4
# (RESERVED) holds the limited broadcast address 255.255.255.255.
_NOT_A_HOST = frozenset({AddressClass.UNSPECIFIED, AddressClass.MULTICAST, AddressClass.RESERVED})

Address = tuple[str, int]


class AnswerKind(enum.StrEnum):
    ANSWERED = "answered"
    ERROR_RESPONSE = "error_response"  # a valid STUN error response (e.g. 420)
    INVALID_RESPONSE = "invalid_response"  # only answers that break the protocol came back
    NO_RESPONSE = "no_response"  # silence until the deadline, at least one RTO after the first send
    TIMEOUT = "timeout"  # the deadline came before a send, or less than one RTO after the first: nothing proven
    NETWORK_ERROR = "network_error"  # the local stack refused to send
    RESOLVE_FAILED = "resolve_failed"  # never sent: the server's name did not resolve


# What each way a transaction can end means for a check's result.
REASONS = {
    AnswerKind.NO_RESPONSE: Reason.NO_RESPONSE,
    AnswerKind.TIMEOUT: Reason.TIMEOUT,
    AnswerKind.NETWORK_ERROR: Reason.NETWORK_ERROR,
    AnswerKind.INVALID_RESPONSE: Reason.INVALID_RESPONSE,
    AnswerKind.ERROR_RESPONSE: Reason.INVALID_RESPONSE,
    AnswerKind.RESOLVE_FAILED: Reason.RESOLVE_FAILED,
}


@dataclass(frozen=True)
class BindingAnswer:
    kind: AnswerKind
    server: Address
    attempts: int
    detail: str = ""
    message: stun.StunMessage | None = None
    source: Address | None = None
    rtt_seconds: float | None = None  # only from a transaction answered on its first send (Karn)

    @property
    def mapped(self) -> stun.TransportAddress | None:
        if self.message is None:
            return None
        return self.message.xor_mapped_address or self.message.mapped_address


class Deadline:
    """A point on the clock that may be brought forward while transactions wait for it."""

    def __init__(self, at: float) -> None:
        self.at = at

    def bring_forward(self, at: float) -> None:
        self.at = min(self.at, at)


def unusable_address(address: stun.TransportAddress) -> str | None:
    """Why no host can be at `address`, or None."""
    if address.port == 0:
        return "port 0"
    address_class = classify(address.ip)
    if address_class in _NOT_A_HOST:
        return f"{address_class} address"
    return None


def mapped_address_problem(mapped: stun.TransportAddress, server_ip: str) -> str | None:
    """Why `mapped` cannot be where a server at `server_ip` saw this host, or None."""
    problem = unusable_address(mapped)
    if problem is None and classify(mapped.ip) is AddressClass.LOOPBACK \
            and classify(server_ip) is not AddressClass.LOOPBACK:
        # Loopback never leaves this host, and a server on it at another address sees that address.
        problem = f"loopback address, though the server {server_ip} is not on loopback"
    return problem


def cached_rto(rtt_seconds: float | None) -> float:
    """Starting RTO for later transactions to a server whose RTT was measured (RFC 8489 §6.2.1)."""
    if rtt_seconds is None:
        return INITIAL_RTO_SECONDS
    return max(RTO_FLOOR_SECONDS, 3 * rtt_seconds)


class StunClient:
    def __init__(self, sock: socket.socket, clock: Callable[[], float]) -> None:
        self._sock = sock
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._pending: dict[bytes, asyncio.Queue[tuple[bytes, Address]]] = {}
        self.unsolicited = 0  # datagrams matching no open transaction (late duplicates, junk)
        self._unsolicited_from: dict[Address, int] = {}
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    def open(cls, clock: Callable[[], float] = time.monotonic) -> StunClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(("0.0.0.0", 0))
            return cls(sock, clock)
        except BaseException:
            sock.close()
            raise

    @property
    def local_port(self) -> int:
        return self._sock.getsockname()[1]

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def __enter__(self) -> StunClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _on_readable(self) -> None:
        while True:
            try:
                data, source = self._sock.recvfrom(_RECEIVE_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # An asynchronous error (e.g. a queued ICMP report); the transaction sees silence.
                return
            # Route by the transaction ID's place alone, so that a malformed answer to our
            # request is judged (and reported) by its transaction instead of passing for silence.
            queue = self._pending.get(bytes(data[8:20])) if len(data) >= stun.HEADER_LENGTH else None
            if queue is None:
                self.unsolicited += 1
                self._unsolicited_from[source] = self._unsolicited_from.get(source, 0) + 1
                continue
            queue.put_nowait((data, source))

    async def binding(
        self,
        server: Address,
        *,
        deadline: Deadline,
        rto: float = INITIAL_RTO_SECONDS,
        backoff: float = 2.0,
        change_ip: bool = False,
        change_port: bool = False,
        expect_from: Address | None = None,
    ) -> BindingAnswer:
        """One Binding transaction, retransmitted until a valid answer or the deadline.

        RFC 8489 §6.2.1: the RTO doubles (`backoff`) after each send. An answer that breaks
        the protocol is remembered but does not end the transaction (§6.3: discard, keep
        waiting); it is reported only if no valid answer follows. A deadline brought forward
        is seen at the next wake-up. Silence is NO_RESPONSE only after a request went out and
        one RTO passed (checks.transport.udp_probe.unproven_silence); sooner, TIMEOUT.
        """
        transaction_id = stun.new_transaction_id()
        request = stun.encode_binding_request(transaction_id, change_ip=change_ip, change_port=change_port,
                                              min_bytes=REQUEST_BYTES)
        expected_source = expect_from or server
        answers: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self._pending[transaction_id] = answers
        first_rto, attempts, first_sent_at, sent_at, next_send = rto, 0, None, 0.0, self._clock()
        first_invalid: BindingAnswer | None = None
        try:
            while True:
                now = self._clock()
                if now >= deadline.at:
                    if answers.empty():
                        break
                    data, source = answers.get_nowait()  # arrived just as time ran out
                else:
                    if now >= next_send:
                        try:
                            self._sock.sendto(request, server)
                            if attempts == 0:
                                first_sent_at = now
                            attempts, sent_at = attempts + 1, now
                        except BlockingIOError:
                            pass  # a full send buffer: nothing went out, the next send tries again
                        except OSError as exc:
                            return BindingAnswer(AnswerKind.NETWORK_ERROR, server, attempts,
                                                 f"send failed: {exc.strerror or exc}")
                        next_send = now + rto
                        rto *= backoff
                    try:
                        async with asyncio.timeout(min(next_send, deadline.at) - now):
                            data, source = await answers.get()
                    except TimeoutError:
                        continue
                rtt = self._clock() - sent_at if attempts == 1 else None
                answer = _validate_response(data, source, server, expected_source, transaction_id, attempts, rtt)
                if answer.kind is not AnswerKind.INVALID_RESPONSE:
                    return answer
                first_invalid = first_invalid or answer
        finally:
            del self._pending[transaction_id]
        if first_invalid is not None:
            return first_invalid
        stray = self._unsolicited_from.get(expected_source, 0)
        if stray and attempts:
            detail = f"no valid answer to {attempts} requests; {stray} datagrams from there matched no request"
            return BindingAnswer(AnswerKind.INVALID_RESPONSE, server, attempts, detail)
        unproven = unproven_silence(first_sent_at, self._clock(), first_rto)
        if unproven is not None:
            return BindingAnswer(AnswerKind.TIMEOUT, server, attempts, unproven)
        return BindingAnswer(AnswerKind.NO_RESPONSE, server, attempts, f"no answer to {attempts} requests")


def _validate_response(
    data: bytes,
    source: Address,
    server: Address,
    expected_source: Address,
    transaction_id: bytes,
    attempts: int,
    rtt: float | None,
) -> BindingAnswer:
    """Strict validation of an answer that carries our transaction ID (RFC 8489 §6.3)."""

    def invalid(detail: str, message: stun.StunMessage | None = None) -> BindingAnswer:
        return BindingAnswer(AnswerKind.INVALID_RESPONSE, server, attempts, detail, message, source, rtt)

    try:
        message = stun.parse_message(data)
    except stun.StunParseError as exc:
        return invalid(f"malformed STUN message: {exc}")
    if message.transaction_id != transaction_id:
        return invalid("transaction ID does not match")
    if message.method != stun.BINDING:
        return invalid(f"method {message.method:#05x} is not Binding", message)
    if message.message_class not in (stun.MessageClass.SUCCESS_RESPONSE, stun.MessageClass.ERROR_RESPONSE):
        return invalid(f"a {message.message_class.name.lower()} is not a response", message)
    if (source[0], source[1]) != expected_source:
        where = f"{source[0]}:{source[1]}"
        return invalid(f"answer came from {where}, expected {expected_source[0]}:{expected_source[1]}", message)
    if message.unknown_comprehension_required:
        types = ", ".join(f"{t:#06x}" for t in message.unknown_comprehension_required)
        return invalid(f"unknown comprehension-required attributes {types}", message)
    if message.message_class is stun.MessageClass.ERROR_RESPONSE:
        code, phrase = message.error_code or (0, "no ERROR-CODE attribute")
        return BindingAnswer(AnswerKind.ERROR_RESPONSE, server, attempts, f"error {code} {phrase}".strip(), message, source, rtt)
    mapped = message.xor_mapped_address or message.mapped_address
    if mapped is None:
        return invalid("success response without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS", message)
    if mapped.ip.version != 4:
        return invalid(f"mapped address {mapped} is not IPv4 though the request was", message)
    problem = mapped_address_problem(mapped, server[0])
    if problem:
        field = "XOR-MAPPED-ADDRESS" if message.xor_mapped_address else "MAPPED-ADDRESS"
        return invalid(f"{field} {mapped} cannot be this host's address: {problem}", message)
    return BindingAnswer(AnswerKind.ANSWERED, server, attempts, "", message, source, rtt)
