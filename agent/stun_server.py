"""The STUN Binding answerer of `xcheck responder`: UDP round trips and the reflexive address.

It must not be an amplifier: it answers only a valid Binding request, never with more bytes
than the request had (clients pad with PADDING, RFC 5780 §7.6), and at most RATE_PER_SECOND
answers a second to one source address. Everything else is dropped silently and counted.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import time
from collections.abc import Callable

from agent.rate_limit import TokenBuckets
from checks import stun

# Enough for latency sampling (20 per second) with room to spare; a spoofed flood toward a
# victim gets at most this many small answers a second.
RATE_PER_SECOND = 50.0
BURST = 50.0


class StunServer(asyncio.DatagramProtocol):
    def __init__(self, logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger or logging.getLogger("xcheck.responder.stun")
        self._buckets = TokenBuckets(RATE_PER_SECOND, BURST, clock)
        self._transport: asyncio.DatagramTransport | None = None
        self.counts = collections.Counter[str]()  # answered, malformed, not_binding, change_request, too_large, rate_limited

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        answer = self.answer(data, addr)
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)

    def answer(self, data: bytes, addr: tuple[str, int]) -> bytes | None:
        """The answer to one datagram, or None (and why, in `counts`)."""
        try:
            request = stun.parse_message(data)
        except stun.StunParseError:
            self.counts["malformed"] += 1
            return None
        if (request.method, request.message_class) != (stun.BINDING, stun.MessageClass.REQUEST) \
                or request.unknown_comprehension_required:
            self.counts["not_binding"] += 1
            return None
        if any(attr_type == stun.Attribute.CHANGE_REQUEST and any(value) for attr_type, value in request.attributes):
            # One address only: RFC 5780 wants a 420 here, which would be larger than the request.
            self.counts["change_request"] += 1
            return None
        if not self._buckets.allow(addr[0]):
            self.counts["rate_limited"] += 1
            return None
        mapped = stun.TransportAddress(ipaddress.ip_address(addr[0]), addr[1])
        value = stun.encode_address(mapped, xor_transaction_id=request.transaction_id)
        response = stun.encode_message(stun.BINDING, stun.MessageClass.SUCCESS_RESPONSE, request.transaction_id,
                                       [(stun.Attribute.XOR_MAPPED_ADDRESS, value)],
                                       fingerprint=request.fingerprint_present)
        if len(response) > len(data):
            self.counts["too_large"] += 1
            return None
        self.counts["answered"] += 1
        return response


async def serve_stun(host: str, port: int, logger: logging.Logger | None = None) -> tuple[asyncio.DatagramTransport, StunServer]:
    server = StunServer(logger)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: server, local_addr=(host, port))
    return transport, server
