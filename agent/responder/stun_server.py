"""The STUN Binding answerer of `xcheck responder`: UDP round trips, the reflexive address, and
RFC 5780 NAT behaviour discovery when given a second address.

It must not be an amplifier: it answers only a valid Binding request, never with more bytes
than the request had, and at most RATE_PER_SECOND answers a second to one source (an IPv4
address or an IPv6 /64: `rate_limit.source_key`).
Everything else is dropped silently and counted. xcheck's requests are as large as the largest
answer (`stun.largest_binding_answer_bytes`); other clients pad theirs with PADDING
(`turnutils_natdiscovery -P`). RFC 5780 §6.1 has a padded request answered with PADDING as
long as the MTU; here the PADDING makes the answer as long as the request (at most
`stun.MAX_MESSAGE_BYTES`), and no longer: a fragmented request still gets a fragmented answer,
which is what PADDING tests.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from agent.responder.rate_limit import TokenBuckets, source_address
from checks.protocols import stun

# Enough for latency sampling (20 per second) with room to spare; a spoofed flood toward a
# victim gets at most this many small answers a second.
RATE_PER_SECOND = 50.0
BURST = 50.0
# turnutils_natdiscovery -P pads with 1500 bytes: the request is then a fragmented datagram.
MAX_REQUEST_BYTES = 2048

Address = tuple[str, int]


def _transport_address(address: Address) -> stun.TransportAddress:
    """As the peer has it: an IPv4 client of a dual-stack socket learns its IPv4 address, which
    is what it asked from and the smaller answer."""
    return stun.TransportAddress(source_address(address[0]), address[1])


class StunServer:
    """Decides the answer to each datagram. With `alternate` (RFC 5780), it listens on both
    addresses and both ports, honours CHANGE-REQUEST and names OTHER-ADDRESS and RESPONSE-ORIGIN."""

    def __init__(self, primary: Address = ("0.0.0.0", 3478), alternate: Address | None = None,
                 logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.primary, self.alternate = primary, alternate
        self._log = logger or logging.getLogger("xcheck.responder.stun")
        self._buckets = TokenBuckets(RATE_PER_SECOND, BURST, clock)
        self.counts = collections.Counter[str]()  # answered, malformed, not_binding, change_request, too_large, rate_limited

    def listening_addresses(self) -> list[Address]:
        if self.alternate is None:
            return [self.primary]
        (ip_a, port_a), (ip_b, port_b) = self.primary, self.alternate
        return [(ip_a, port_a), (ip_a, port_b), (ip_b, port_a), (ip_b, port_b)]

    def _other(self, local: Address) -> Address | None:
        """The address differing from `local` in both IP and port (RFC 5780 §7.4)."""
        if self.alternate is None:
            return None
        (ip_a, port_a), (ip_b, port_b) = self.primary, self.alternate
        return (ip_b if local[0] == ip_a else ip_a, port_b if local[1] == port_a else port_a)

    def reply(self, data: bytes, source: Address, local: Address | None = None) -> tuple[bytes, Address] | None:
        """(answer, the local address to send it from) for one datagram, or None (why: `counts`)."""
        local = local or self.primary
        try:
            request = stun.parse_message(data, MAX_REQUEST_BYTES)
        except stun.StunParseError:
            self.counts["malformed"] += 1
            return None
        if (request.method, request.message_class) != (stun.BINDING, stun.MessageClass.REQUEST) \
                or request.unknown_comprehension_required:
            self.counts["not_binding"] += 1
            return None
        flags = next((int.from_bytes(v[:4], "big") for t, v in request.attributes
                      if t == stun.Attribute.CHANGE_REQUEST), 0)
        mapped = _transport_address(source)
        other = self._other(local)
        if other is not None and _transport_address(other).ip.version != mapped.ip.version:
            # An alternate the client cannot reach (an IPv6 one for an IPv4 client of a dual-stack
            # socket) serves no discovery, and naming it would make the answer too large to send.
            other = None
        if flags and other is None:
            # One address only: RFC 5780 wants a 420 here, which would be larger than the request.
            self.counts["change_request"] += 1
            return None
        if not self._buckets.allow(source[0]):
            self.counts["rate_limited"] += 1
            return None
        origin = local
        if other is not None:
            origin = (other[0] if flags & stun.CHANGE_IP else local[0], other[1] if flags & stun.CHANGE_PORT else local[1])
        tid = request.transaction_id
        attributes = [(stun.Attribute.XOR_MAPPED_ADDRESS, stun.encode_address(mapped, xor_transaction_id=tid))]
        if other is not None:
            attributes += [(stun.Attribute.RESPONSE_ORIGIN, stun.encode_address(_transport_address(origin))),
                           (stun.Attribute.OTHER_ADDRESS, stun.encode_address(_transport_address(other)))]
        response = stun.encode_message(stun.BINDING, stun.MessageClass.SUCCESS_RESPONSE, tid, attributes,
                                       fingerprint=request.fingerprint_present)
        if any(t == stun.Attribute.PADDING for t, _ in request.attributes):
            # 4: PADDING's own type and length. The codec's bound still makes a datagram over a 1500-byte MTU.
            padding = min(len(data), stun.MAX_MESSAGE_BYTES) - len(response) - 4
            if padding >= 0:
                attributes.append((stun.Attribute.PADDING, bytes(padding)))
                response = stun.encode_message(stun.BINDING, stun.MessageClass.SUCCESS_RESPONSE, tid, attributes,
                                               fingerprint=request.fingerprint_present)
        if len(response) > len(data):
            self.counts["too_large"] += 1
            return None
        self.counts["answered"] += 1
        return response, origin


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, server: StunServer, local: Address, transports: dict[Address, asyncio.DatagramTransport]) -> None:
        self._server, self._local, self._transports = server, local, transports

    def datagram_received(self, data: bytes, addr: Address) -> None:
        answered = self._server.reply(data, addr, self._local)
        if answered is not None:
            answer, origin = answered
            self._transports[origin].sendto(answer, addr)


async def serve_stun(host: str, port: int, alternate: Address | None = None,
                     logger: logging.Logger | None = None) -> tuple[list[asyncio.DatagramTransport], StunServer]:
    """Listen on (host, port), or on both addresses and both ports with an RFC 5780 `alternate`."""
    loop = asyncio.get_running_loop()
    server = StunServer((host, port), alternate, logger)
    transports: dict[Address, asyncio.DatagramTransport] = {}
    try:
        for local in server.listening_addresses():
            transport, _ = await loop.create_datagram_endpoint(lambda local=local: _Socket(server, local, transports),
                                                               local_addr=local)
            transports[local] = transport
    except OSError:
        for transport in transports.values():
            transport.close()
        raise
    return list(transports.values()), server
