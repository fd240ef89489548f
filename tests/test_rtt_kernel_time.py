"""A round trip is the network's, not this host's: the kernel's arrival time ends it, however long
the event loop was busy (building IKE requests, loading CA certificates) before it read the answer.

Measured before this test existed: with `--gateway`, the STUN round trip to a lab server 1 ms away
read 50-80 ms, and RFC 5780's filtering tests waited three times that for silence.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from agent.responder.stun_server import StunServer
from checks.contract import Reason
from checks.transport.stun_client import Deadline, StunClient

# How long the loop is kept from reading: far longer than a loopback answer takes, even on a loaded
# machine (the server is a thread of its own, not waiting for this loop).
BUSY_SECONDS = 2.0
DEADLINE_SECONDS = 30.0  # only a bound on a hang


def test_a_busy_event_loop_does_not_lengthen_the_round_trip():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server_socket:
        server_socket.bind(("127.0.0.1", 0))
        server_socket.settimeout(DEADLINE_SECONDS)
        server, address = StunServer(), server_socket.getsockname()

        def answer_once() -> None:
            data, source = server_socket.recvfrom(2048)
            answered = server.reply(data, source)
            if answered:
                server_socket.sendto(answered[0], source)

        thread = threading.Thread(target=answer_once, daemon=True)
        thread.start()

        async def main():
            with StunClient.open() as client:
                loop = asyncio.get_running_loop()
                # Right after the request goes out, the loop is held: the answer waits in the socket.
                loop.call_soon(time.sleep, BUSY_SECONDS)
                started = time.monotonic()
                answer = await client.binding(address, deadline=Deadline(started + DEADLINE_SECONDS),
                                              rto=DEADLINE_SECONDS)
                return answer, time.monotonic() - started

        answer, elapsed = asyncio.run(main())
        thread.join(DEADLINE_SECONDS)
    assert answer.kind is Reason.SUCCESS and answer.attempts == 1
    assert elapsed >= BUSY_SECONDS  # the answer was read only after the loop was free again
    assert answer.rtt_seconds < BUSY_SECONDS  # but its round trip ended when the kernel had it
