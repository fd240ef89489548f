"""The IKE stub of `xcheck responder`: proves that IKE (UDP 500) and NAT-T (UDP 4500) reach it.

It answers a well-formed IKEv2 IKE_SA_INIT request with a NO_PROPOSAL_CHOSEN notify for the
initiator's SPI (and an IKEv1 Main Mode first message with an informational
NO-PROPOSAL-CHOSEN), as a gateway that accepts none of the offered suites would: xcheck's
IKE checks and `ike-scan` both count that as an IKE responder being there, and no state is
kept. On the NAT-T port only datagrams behind the non-ESP marker are IKE (RFC 3948), and
the answer carries the marker too.

It must not be an amplifier: the answer is 36 bytes (40 for IKEv1 or NAT-T) and a request
that passes the checks is always larger, which `answer` still asserts; one source (see
`rate_limit.source_key`) gets at most RATE_PER_SECOND answers a second over both ports; junk,
responses and anything from a source that cannot be a host get no answer. It answers IPv4
peers, also when a dual-stack socket (`--listen ::`) names them `::ffff:a.b.c.d`.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import time
from collections.abc import Callable

from agent.responder.rate_limit import TokenBuckets, source_address
from checks.protocols import ike

# Initiators retransmit every 0.5 s or slower; a few answers a second serve xcheck and ike-scan,
# and a spoofed flood toward a victim gets at most this many 36-byte datagrams a second.
RATE_PER_SECOND = 5.0
BURST = 10.0


def answer(data: bytes, source: tuple[str, int], natt: bool) -> bytes | None:
    """The answer to one datagram from `source` on the IKE (natt False) or NAT-T port; None for silence."""
    try:
        ip = source_address(source[0])
    except ValueError:
        return None
    if ip.version != 4 or ip.is_multicast or ip.is_unspecified or ip == _BROADCAST or source[1] == 0:
        return None
    try:
        reply = ike.no_proposal_chosen(ike.parse_ike_sa_init_request(data, natt=natt), natt=natt)
    except ike.IkeParseError:
        if natt:  # IKEv1 on 4500 comes only after NAT-T was agreed in Main Mode: never a first message
            return None
        try:
            reply = ike.ikev1_no_proposal_chosen(ike.parse_main_mode_request(data))
        except ike.IkeParseError:
            return None
    return reply if len(reply) <= len(data) else None


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class IkeStub(asyncio.DatagramProtocol):
    """One port's listener; `counts`: answered, not_ike, rate_limited."""

    def __init__(self, natt: bool, buckets: TokenBuckets, logger: logging.Logger) -> None:
        self._natt, self._buckets, self._log = natt, buckets, logger
        self._transport: asyncio.DatagramTransport | None = None
        self.counts = collections.Counter[str]()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.handle(data, addr)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        self._log.debug("IKE stub: %s", exc)  # an ICMP error for an earlier answer: nothing to do

    def handle(self, data: bytes, addr: tuple[str, int]) -> bytes | None:
        """The answer to send for one datagram, after the rate limit; None to stay silent."""
        reply = answer(data, addr, self._natt)
        if reply is None:
            self.counts["not_ike"] += 1
        elif not self._buckets.allow(addr[0]):
            self.counts["rate_limited"] += 1
            reply = None
        else:
            self.counts["answered"] += 1
        return reply


async def serve_ike(host: str, ports: tuple[int, int] = (ike.IKE_PORT, ike.NATT_PORT),
                    logger: logging.Logger | None = None,
                    clock: Callable[[], float] = time.monotonic) -> list[asyncio.DatagramTransport]:
    """Listen on `ports` (IKE, then NAT-T) until the transports are closed; their protocols are IkeStubs.

    One rate limit spans both ports, so a source gets no more by spreading over them.
    """
    log = logger or logging.getLogger("xcheck.responder.ike")
    buckets = TokenBuckets(RATE_PER_SECOND, BURST, clock)
    loop = asyncio.get_running_loop()
    transports: list[asyncio.DatagramTransport] = []
    try:
        for port, natt in zip(ports, (False, True), strict=True):
            transport, _ = await loop.create_datagram_endpoint(lambda natt=natt: IkeStub(natt, buckets, log),
                                                               local_addr=(host, port))
            transports.append(transport)
    except BaseException:
        for transport in transports:
            transport.close()
        raise
    return transports
