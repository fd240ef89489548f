"""`xcheck responder`'s TLS listeners cannot be starved by a few sources: per-source and global
caps on open connections, and handshake, request and idle time limits that free every slot.

Every client here is on loopback; a second source is another loopback address (127.0.0.2),
bound as the client's local address. Limits the test does not exercise are set far beyond
the test's own bounds, so that what closes a connection can only be the limit under test;
the bounds are generous and prove only that something happens, never how fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ssl

import pytest

from agent.responder.rate_limit import ConnectionSlots, source_key
from agent.runner import run_checks
from agent.responder.tls_responder import Limits, serve_tls
from checks.probes import gateway_health, sstp, tls_tcp443
from checks.contract import Status
from checks.targets import Targets
from checks.protocols.sstp import duplex_post

LONG_SECONDS = 300.0  # a limit that must not act during a test
SHORT_SECONDS = 0.3  # the limit under test
BOUND_SECONDS = 30.0  # what must happen, happens within this, however busy the machine
POLL_SECONDS = 0.05
HELD = Limits(handshake_seconds=LONG_SECONDS, request_seconds=LONG_SECONDS, idle_seconds=LONG_SECONDS,
              sstp_hold_seconds=LONG_SECONDS)
HEALTH_REQUEST = b"GET /healthprobe HTTP/1.1\r\nHost: x\r\n\r\n"
SOURCE, OTHER_SOURCE, THIRD_SOURCE = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


async def _tls(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection from `source`, handshake done: the responder has given it a slot."""
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=_client_context(), local_addr=(source, 0)), BOUND_SECONDS)


async def _refused(port: int, source: str) -> bool:
    """Whether the responder drops a new connection from `source` before the TLS handshake."""
    try:
        _, writer = await _tls(port, source)
    except TimeoutError:  # an OSError too, but silence is not a refusal
        raise AssertionError(f"no handshake and no refusal within {BOUND_SECONDS} s") from None
    except OSError:  # reset or closed before the handshake (ssl.SSLError is an OSError)
        return True
    writer.transport.abort()
    return False


async def _health(port: int, source: str) -> bytes:
    reader, writer = await _tls(port, source)
    try:
        writer.write(HEALTH_REQUEST)
        return await asyncio.wait_for(reader.read(4096), BOUND_SECONDS)
    finally:
        writer.transport.abort()


async def _served_again(port: int, source: str) -> bytes:
    """The health answer to `source` once the responder has a slot for it again (it notices a
    client's close in its own time, so refusals meanwhile are retried)."""
    async with asyncio.timeout(BOUND_SECONDS):
        while await _refused(port, source):
            await asyncio.sleep(POLL_SECONDS)
        return await _health(port, source)


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Whether the responder closes the connection within the bound (what it sends is dropped)."""
    try:
        async with asyncio.timeout(BOUND_SECONDS):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except OSError:
        pass  # reset: closed too
    return True


def _with_responder(limits: Limits, scenario):
    """Run `scenario(sstp_port, health_port)` against a responder with `limits`, and stop it."""
    async def run():
        servers = await serve_tls("127.0.0.1", (0, 0), limits=limits)
        try:
            return await scenario(*(server.sockets[0].getsockname()[1] for server in servers))
        finally:
            for server in servers:
                server.close()
    return asyncio.run(run())


def test_a_source_at_its_share_is_refused_while_another_source_is_served():
    async def scenario(sstp_port, health_port):
        # Both listeners count against one share: alternate between them.
        held = [await _tls(sstp_port if i % 2 else health_port, SOURCE) for i in range(HELD.per_source)]
        refused = [await _refused(port, SOURCE) for port in (sstp_port, health_port)]
        other = await _health(health_port, OTHER_SOURCE)
        held.pop()[1].transport.abort()  # one of its own connections ends: its share has room again
        again = await _served_again(health_port, SOURCE)
        for _, writer in held:
            writer.transport.abort()
        return refused, other, again

    refused, other, again = _with_responder(HELD, scenario)
    assert refused == [True, True]
    assert other.startswith(b"HTTP/1.1 200 ")
    assert again.startswith(b"HTTP/1.1 200 ")


def test_the_global_cap_holds_across_sources():
    limits = dataclasses.replace(HELD, per_source=2, total=3, reserve=0)

    async def scenario(sstp_port, health_port):
        held = [await _tls(health_port, source) for source in (SOURCE, SOURCE, OTHER_SOURCE)]
        refused = await _refused(health_port, THIRD_SOURCE)  # within its share, but no slot is left
        held.pop()[1].transport.abort()
        again = await _served_again(health_port, THIRD_SOURCE)
        for _, writer in held:
            writer.transport.abort()
        return refused, again

    refused, again = _with_responder(limits, scenario)
    assert refused is True
    assert again.startswith(b"HTTP/1.1 200 ")


async def _no_handshake(sstp_port: int) -> asyncio.StreamReader:
    reader, _ = await asyncio.open_connection("127.0.0.1", sstp_port, local_addr=(SOURCE, 0))
    return reader


async def _no_request(sstp_port: int) -> asyncio.StreamReader:
    reader, _ = await _tls(sstp_port, SOURCE)
    return reader


def _trickle(writer: asyncio.StreamWriter) -> None:
    """One byte at a time, in the background, until the responder closes: never silent for long."""
    async def trickle():
        try:
            while not writer.is_closing():
                await asyncio.sleep(POLL_SECONDS)
                writer.write(b"a")
                await writer.drain()
        except OSError:
            pass  # the responder closed: what the test waits for
    _TRICKLES.add(task := asyncio.get_running_loop().create_task(trickle()))
    task.add_done_callback(_TRICKLES.discard)


_TRICKLES: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks


async def _trickled_request(sstp_port: int) -> asyncio.StreamReader:
    """A request head that never ends."""
    reader, writer = await _tls(sstp_port, SOURCE)
    writer.write(b"GET /healthprobe HTTP/1.1\r\nX: ")
    _trickle(writer)
    return reader


async def _after_sstp(sstp_port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _tls(sstp_port, SOURCE)
    writer.write(duplex_post("x", "{0}"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_SECONDS)
    assert head.startswith(b"HTTP/1.1 200\r\n")
    return reader, writer


async def _silent_after_sstp(sstp_port: int) -> asyncio.StreamReader:
    reader, _ = await _after_sstp(sstp_port)
    return reader


async def _chatty_after_sstp(sstp_port: int) -> asyncio.StreamReader:
    """After the 200, bytes often enough never to be idle: only the SSTP hold ends it."""
    reader, writer = await _after_sstp(sstp_port)
    _trickle(writer)
    return reader


@pytest.mark.parametrize(("limit", "client"), [
    ("handshake_seconds", _no_handshake),
    ("request_seconds", _no_request),
    ("request_seconds", _trickled_request),
    ("idle_seconds", _silent_after_sstp),
    ("sstp_hold_seconds", _chatty_after_sstp),
])
def test_a_connection_that_holds_its_slot_is_closed_by_its_time_limit_and_the_slot_is_freed(limit, client):
    limits = dataclasses.replace(HELD, per_source=1, **{limit: SHORT_SECONDS})

    async def scenario(sstp_port, health_port):
        reader = await client(sstp_port)
        closed = await _closed_by_server(reader)
        return closed, await _served_again(health_port, SOURCE)

    closed, again = _with_responder(limits, scenario)
    assert closed, f"{limit} did not close the connection within {BOUND_SECONDS} s"
    assert again.startswith(b"HTTP/1.1 200 ")  # the source's only slot came back


def test_xchecks_own_probes_run_at_once_within_one_sources_share():
    """tls_tcp443, sstp and gateway_health together, as a run does (each may connect twice)."""
    async def scenario(sstp_port, health_port):
        checks = [dataclasses.replace(module.CHECK, probe=functools.partial(module.probe, port=port))
                  for module, port in ((tls_tcp443, sstp_port), (sstp, sstp_port), (gateway_health, health_port))]
        return await run_checks(checks, Targets(gateways=("127.0.0.1",)), timeout=BOUND_SECONDS)

    results = _with_responder(Limits(), scenario)
    assert {result.name: result.status for result in results} == dict.fromkeys(
        ("tls_tcp443", "sstp", "gateway_health"), Status.OK)


def test_sources_are_counted_by_ipv4_address_and_ipv6_slash_64():
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"  # IPv4 on a dual-stack socket
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert source_key("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key("not an address") == "not an address"


def test_connection_slots_refuse_beyond_a_share_and_in_all_and_give_back():
    slots = ConnectionSlots(per_source=2, total=3)
    assert [slots.take("a"), slots.take("a")] == [None, None]
    assert slots.take("a") == "2 connections already open from this source"
    assert slots.take("b") is None
    assert slots.take("c") == "busy: 3 connections open"
    slots.give_back("a")
    assert slots.take("c") is None
    for source in ("a", "b", "c"):
        slots.give_back(source)
    assert [slots.take("d") for _ in range(3)] == [None, None, "2 connections already open from this source"]
