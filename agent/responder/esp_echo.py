"""The ESP echo of `xcheck responder`: proves that ESP (IP protocol 50) passes both ways.

It answers only xcheck's own probes (checks/protocols/esp.py: SPI, magic, kind "request", exact
length), never anything else: real IPsec traffic to this host, echoes (two responders must
not play ping-pong) and junk are dropped and counted. It must not be an amplifier: an echo
is the request's ESP packet with one byte changed, so it is never larger than what came in
(which also carried an IP header), and one source gets at most RATE_PER_SECOND echoes a
second. It needs a raw socket, and so CAP_NET_RAW. It is IPv4 only, as the check is.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ipaddress
import logging
import socket
import time
from collections.abc import Callable

from agent.responder.rate_limit import TokenBuckets
from checks.protocols.esp import EspParseError, EspProbe, Kind, esp_of_ipv4, open_esp_socket

# The check resends a probe every 0.25 s until it is echoed: a few a second is plenty, and a
# spoofed flood toward a victim gets at most this many small packets a second.
RATE_PER_SECOND = 10.0
BURST = 10.0
_NOT_A_HOST = ipaddress.IPv4Address("255.255.255.255")
# Listening on every address: for a responder told `--listen ::` too, which means IPv4 as well.
_EVERY_ADDRESS = ("", "0.0.0.0", "::")


def answer(packet: bytes, source: str) -> bytes | None:
    """The echo (an ESP packet, no IP header) for one IPv4 datagram read from the raw socket, or None."""
    try:
        request = EspProbe.parse(esp_of_ipv4(packet))
        ip = ipaddress.IPv4Address(source)
    except (EspParseError, ValueError):
        return None
    if request.kind is not Kind.REQUEST or ip.is_multicast or ip.is_unspecified or ip == _NOT_A_HOST:
        return None
    return dataclasses.replace(request, kind=Kind.ECHO).encode()


class EspEcho:
    """A running echo; `close()` stops it. `counts`: echoed, not_probe, rate_limited, send_failed."""

    def __init__(self, logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger or logging.getLogger("xcheck.responder.esp")
        self._buckets = TokenBuckets(RATE_PER_SECOND, BURST, clock)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counts = collections.Counter[str]()

    def attach(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        """Serve datagrams of this (non-blocking, raw ESP) socket on this loop."""
        self._sock, self._loop = sock, loop
        loop.add_reader(sock.fileno(), self._readable)

    def handle(self, packet: bytes, source: str) -> bytes | None:
        """The echo to send for one datagram, after the rate limit; None to stay silent."""
        echo = answer(packet, source)
        if echo is None:
            self.counts["not_probe"] += 1
        elif not self._buckets.allow(source):
            self.counts["rate_limited"] += 1
            echo = None
        return echo

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                packet, (source, _) = self._sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._log.debug("ESP receive: %s", exc)
                continue
            echo = self.handle(packet, source)
            if echo is None:
                continue
            try:
                self._sock.sendto(echo, (source, 0))
                self.counts["echoed"] += 1
            except OSError as exc:  # a full send buffer or no route back: an echo is not worth waiting for
                self.counts["send_failed"] += 1
                self._log.debug("ESP echo to %s: %s", source, exc)

    def close(self) -> None:
        if self._sock is None or self._loop is None:
            return
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None


async def serve_esp_echo(host: str, logger: logging.Logger | None = None) -> EspEcho:
    """Echo xcheck's ESP probes arriving for `host` (one of _EVERY_ADDRESS: any address) until close().

    Raises PermissionError without CAP_NET_RAW: the responder decides whether that is fatal.
    """
    sock = open_esp_socket()
    try:
        sock.setblocking(False)
        if host not in _EVERY_ADDRESS:
            sock.bind((host, 0))  # only ESP to this address, and echoes from it
        echo = EspEcho(logger)
        echo.attach(sock, asyncio.get_running_loop())
    except BaseException:
        sock.close()
        raise
    return echo
