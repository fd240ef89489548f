"""STUN Binding transactions over UDP (RFC 8489 §6.2.1), many on one socket.

One unconnected socket serves every transaction of a test, so that all of them share one
NAT mapping and answers from any address are seen (and checked against the address they
should come from). Answers are routed to their transaction by transaction ID, ICMP errors to
every transaction sent where the refused datagram went. The transactions run on the UDP
probes' one engine (checks.transport.udp_probe): its retransmission schedule, its reading of
ICMP errors (a closed port is `port_unreachable` at once, not silence) and its rule that
silence needs one RTO after a send.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from checks.contract import Reason
from checks.protocols import stun
from checks.transport.addressing import AddressClass, classify
from checks.transport.icmp_errors import IcmpError, IcmpReport
from checks.transport.udp_probe import (BACKOFF, INITIAL_RTO_SECONDS, Address, Datagram, Deadline, Event,
                                        InvalidAnswer, UdpSocket)

# A cached RTO (3x a measured RTT, RFC 6298 on one sample) is floored so that a sub-millisecond
# lab RTT does not turn retransmission into a flood.
RTO_FLOOR_SECONDS = 0.1
# `xcheck responder` never answers with more bytes than it received (no amplification): every
# request is as large as its largest answer, so that it is answered (the socket is IPv4).
REQUEST_BYTES = stun.largest_binding_answer_bytes(4)
# No host is reached at, or seen from, these: a server that names one is lying or broken. 240/4
# (RESERVED) holds the limited broadcast address 255.255.255.255.
_NOT_A_HOST = frozenset({AddressClass.UNSPECIFIED, AddressClass.MULTICAST, AddressClass.RESERVED})


@dataclass(frozen=True)
class BindingAnswer:
    kind: Reason
    server: Address
    attempts: int
    detail: str = ""
    message: stun.StunMessage | None = None
    source: Address | None = None
    rtt_seconds: float | None = None  # only from a transaction answered on its first send (Karn)
    icmp: IcmpReport | None = None  # the ICMP error that refused the requests (PORT_UNREACHABLE, PROHIBITED)

    @property
    def mapped(self) -> stun.TransportAddress | None:
        if self.message is None:
            return None
        return self.message.xor_mapped_address or self.message.mapped_address


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


class StunClient(UdpSocket):
    def __init__(self, sock: socket.socket, clock: Callable[[], float]) -> None:
        # Each open transaction: where its requests go, and what arrives for it.
        self._pending: dict[bytes, tuple[Address, asyncio.Queue[Event]]] = {}
        self.unsolicited = 0  # datagrams matching no open transaction (late duplicates, junk)
        self._unsolicited_from: dict[Address, int] = {}
        super().__init__(sock, clock)

    @classmethod
    def open(cls, clock: Callable[[], float] = time.monotonic) -> StunClient:
        return cls._open(lambda sock: sock.bind(("0.0.0.0", 0)), lambda sock: cls(sock, clock))

    @property
    def local_port(self) -> int:
        return self._sock.getsockname()[1]

    def _deliver(self, event: Event) -> None:
        if isinstance(event, IcmpError):
            # The error names where the refused datagram went; which transaction sent it, its quote
            # may not say (RFC 792 quotes only 8 bytes), and a refusal there is true for each of them.
            for server, events in self._pending.values():
                if server == event.destination:
                    events.put_nowait(event)
            return
        # Route by the transaction ID's place alone, so that a malformed answer to our
        # request is judged (and reported) by its transaction instead of passing for silence.
        payload, source = event.payload, event.source
        pending = self._pending.get(bytes(payload[8:20])) if len(payload) >= stun.HEADER_LENGTH else None
        if pending is None:
            self.unsolicited += 1
            self._unsolicited_from[source] = self._unsolicited_from.get(source, 0) + 1
            return
        pending[1].put_nowait(event)

    async def binding(
        self,
        server: Address,
        *,
        deadline: Deadline,
        rto: float = INITIAL_RTO_SECONDS,
        backoff: float = BACKOFF,
        change_ip: bool = False,
        change_port: bool = False,
        expect_from: Address | None = None,
    ) -> BindingAnswer:
        """One Binding transaction, retransmitted until a valid answer, an ICMP error or the deadline.

        RFC 8489 §6.2.1: the RTO doubles (`backoff`) after each send. An answer that breaks
        the protocol is remembered but does not end the transaction (§6.3: discard, keep
        waiting); it is reported only if no valid answer follows. A deadline brought forward
        is seen at the next wake-up. Silence is NO_RESPONSE only after a request went out and
        one RTO passed; sooner, TIMEOUT (the engine's rule, checks.transport.udp_probe).
        """
        transaction_id = stun.new_transaction_id()
        request = stun.encode_binding_request(transaction_id, change_ip=change_ip, change_port=change_port,
                                              min_bytes=REQUEST_BYTES)
        expected_source = expect_from or server

        def judge(datagram: Datagram) -> BindingAnswer:
            answer = _validate_response(datagram.payload, datagram.source, server, expected_source, transaction_id)
            if answer.kind is Reason.INVALID_RESPONSE:
                raise InvalidAnswer(answer.detail, answer)
            return answer

        events: asyncio.Queue[Event] = asyncio.Queue()
        self._pending[transaction_id] = (server, events)
        try:
            exchange = await self._exchange(request, server, events, judge, deadline=deadline, rto=rto, backoff=backoff)
        finally:
            del self._pending[transaction_id]
        if exchange.answer is not None:  # answered, or only invalid answers came
            return dataclasses.replace(exchange.answer, attempts=exchange.attempts, rtt_seconds=exchange.rtt_seconds)
        stray = self._unsolicited_from.get(expected_source, 0)
        if stray and exchange.attempts and exchange.result in (Reason.NO_RESPONSE, Reason.TIMEOUT):
            detail = f"no valid answer to {exchange.attempts} requests; {stray} datagrams from there matched no request"
            return BindingAnswer(Reason.INVALID_RESPONSE, server, exchange.attempts, detail)
        return BindingAnswer(Reason(exchange.result), server, exchange.attempts, exchange.detail,
                             icmp=exchange.icmp)


def _validate_response(
    data: bytes,
    source: Address,
    server: Address,
    expected_source: Address,
    transaction_id: bytes,
) -> BindingAnswer:
    """Strict validation of an answer that carries our transaction ID (RFC 8489 §6.3); the
    engine fills in attempts and RTT."""

    def invalid(detail: str, message: stun.StunMessage | None = None) -> BindingAnswer:
        return BindingAnswer(Reason.INVALID_RESPONSE, server, 0, detail, message, source)

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
        return BindingAnswer(Reason.PEER_ERROR, server, 0, f"error {code} {phrase}".strip(), message, source)
    mapped = message.xor_mapped_address or message.mapped_address
    if mapped is None:
        return invalid("success response without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS", message)
    if mapped.ip.version != 4:
        return invalid(f"mapped address {mapped} is not IPv4 though the request was", message)
    problem = mapped_address_problem(mapped, server[0])
    if problem:
        field = "XOR-MAPPED-ADDRESS" if message.xor_mapped_address else "MAPPED-ADDRESS"
        return invalid(f"{field} {mapped} cannot be this host's address: {problem}", message)
    return BindingAnswer(Reason.SUCCESS, server, 0, "", message, source)
