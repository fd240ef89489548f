"""`xcheck responder`: the far end a user runs on a VM in the virtual network before any gateway
exists (as Azure's connectivity toolkit puts a listener in Azure). One process answers:
STUN Binding on UDP (round trips, the reflexive address) and the iperf3 protocol on TCP
(throughput; the stock `iperf3 -c` works against it too).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from agent.iperf3_server import Iperf3Server
from agent.stun_server import serve_stun

_log = logging.getLogger("xcheck.responder")


async def serve(listen: str, stun_port: int, iperf_port: int, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set, or SIGTERM / SIGINT arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    transport, stun_server = await serve_stun(listen, stun_port, _log.getChild("stun"))
    iperf = Iperf3Server(listen, iperf_port, logger=_log.getChild("iperf3"))
    try:
        await iperf.start()
        _log.info("listening: STUN udp/%s:%d, iperf3 tcp/%s:%d", listen, stun_port, listen, iperf.port)
        await stop.wait()
    finally:
        await iperf.close()
        transport.close()
        _log.info("stopped; STUN datagrams: %s", dict(stun_server.counts))
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
