"""`xcheck responder`: the far end a user runs on a VM in the virtual network before any gateway
exists (as Azure's connectivity toolkit puts a listener in Azure). One process answers:
STUN Binding on UDP (round trips, the reflexive address), the iperf3 protocol on TCP
(throughput; the stock `iperf3 -c` works against it too), TLS with SSTP's HTTPS handshake on
443, the gateway health probe on 8081, an IKE stub on UDP 500 and 4500 that answers
NO_PROPOSAL_CHOSEN, and an echo of xcheck's ESP probes (as root).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from agent.responder.esp_echo import serve_esp_echo
from agent.responder.ike_stub import serve_ike
from agent.responder.iperf3_server import DEFAULT_MAX_TEST_SECONDS, Iperf3Server
from agent.responder.stun_server import serve_stun
from agent.responder.tls_responder import serve_tls

_log = logging.getLogger("xcheck.responder")


async def serve(listen: str, stun_port: int, iperf_port: int, tls_ports: tuple[int, int] = (443, 8081),
                cert: Path | None = None, key: Path | None = None, alternate: str | None = None,
                stop: asyncio.Event | None = None, max_test_seconds: int = DEFAULT_MAX_TEST_SECONDS) -> None:
    """Serve until `stop` is set (the CLI sets it on SIGTERM / SIGINT)."""
    stop = stop or asyncio.Event()
    # RFC 5780 needs a second address; the alternate port is the next one, as coturn's.
    stun_alternate = (alternate, stun_port + 1) if alternate else None
    stun_transports, stun_server = await serve_stun(listen, stun_port, stun_alternate, _log.getChild("stun"))
    tls_servers = await serve_tls(listen, tls_ports, cert, key, _log.getChild("tls"))
    ike_transports = await serve_ike(listen, logger=_log.getChild("ike"))
    try:
        echo = await serve_esp_echo(listen, _log.getChild("esp"))
    except PermissionError:
        echo = None
        _log.warning("ESP echo off: it needs CAP_NET_RAW (run as root)")
    iperf = Iperf3Server(listen, iperf_port, logger=_log.getChild("iperf3"), max_duration_seconds=max_test_seconds)
    try:
        await iperf.start()
        _log.info("listening: STUN udp/%s:%d, iperf3 tcp/%s:%d, SSTP tcp/%s:%d, health probe tcp/%s:%d",
                  listen, stun_port, listen, iperf.port, listen, tls_ports[0], listen, tls_ports[1])
        await stop.wait()
    finally:
        await iperf.close()
        for server in tls_servers:
            server.close()
        for ike in ike_transports:
            _log.info("IKE datagrams on %s: %s", ike.get_extra_info("sockname"), dict(ike.get_protocol().counts))
            ike.close()
        if echo is not None:
            echo.close()
            _log.info("ESP packets: %s", dict(echo.counts))
        for transport in stun_transports:
            transport.close()
        _log.info("stopped; STUN datagrams: %s", dict(stun_server.counts))
