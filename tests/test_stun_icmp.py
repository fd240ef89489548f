"""STUN on the UDP probes' ICMP-aware engine: a closed port, or a filter that says no, is told from
silence, for each transaction on StunClient's one unconnected socket.

On loopback a port nobody listens on is refused by the kernel (ICMP port unreachable, never
rate-limited there); in the lab a real router REJECTs (icmp-admin-prohibited, icmp-port-unreachable)
or DROPs, and the far host refuses a closed port, each on its own port, all at once from one client.
An ICMP error names the destination of the datagram it refused: only the transactions sent there
may end on it, so a silent server beside a refused one stays silence.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path

import pytest
from conftest import needs_lab
from lab import Lab
from test_stun_client import ScriptedServer, success

from checks.contract import Reason, evidence_dict
from checks.transport.stun_client import Deadline, StunClient

REPO = Path(__file__).resolve().parent.parent
# A refused transaction must end on the refusal, long before this deadline (the check's default
# timeout is 10 s); ignoring the ICMP error it would last until the deadline and call it silence.
REFUSED_DEADLINE_SECONDS = 30.0
# No retransmission within any test here, however late a busy machine runs the event loop: the
# first request's refusal is what ends the transaction ("within one RTO").
LONG_RTO_SECONDS = 60.0
SILENCE_SECONDS = 3.0  # for the silent server: several 0.1 s RTOs, so its silence counts


def closed_port() -> tuple[str, int]:
    """A loopback UDP port nothing listens on (bound, then closed again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()


def test_a_closed_port_is_port_unreachable_at_the_first_request():
    async def main():
        with StunClient.open() as client:
            started = time.monotonic()
            answer = await client.binding(closed_port(), deadline=Deadline(started + REFUSED_DEADLINE_SECONDS),
                                          rto=LONG_RTO_SECONDS)
            return answer, time.monotonic() - started

    answer, elapsed = asyncio.run(main())
    assert answer.kind is Reason.PORT_UNREACHABLE and answer.kind is Reason.PORT_UNREACHABLE
    assert answer.attempts == 1  # no retransmission was waited for
    assert evidence_dict(answer.icmp) == {"type": 3, "code": 3, "from": "127.0.0.1", "description": "port unreachable",
                                           "from_this_host": False}
    assert answer.detail == "ICMP port unreachable (type 3, code 3) from 127.0.0.1"
    assert elapsed < REFUSED_DEADLINE_SECONDS / 2  # generous: ended by the ICMP error, not the deadline


def test_a_refusal_ends_only_the_transactions_sent_where_it_names():
    async def main():
        live = ScriptedServer(lambda n, request, source: (success(request, source), None)).start()
        refused = closed_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent, StunClient.open() as client:
                silent.bind(("127.0.0.1", 0))  # bound: the kernel queues what arrives and refuses nothing
                refusal_deadline = Deadline(time.monotonic() + REFUSED_DEADLINE_SECONDS)
                answers = await asyncio.gather(
                    client.binding(refused, deadline=refusal_deadline, rto=LONG_RTO_SECONDS),
                    client.binding(silent.getsockname(), deadline=Deadline(time.monotonic() + SILENCE_SECONDS),
                                   rto=0.1),
                    client.binding(live.address, deadline=refusal_deadline, rto=LONG_RTO_SECONDS),
                    client.binding(refused, deadline=refusal_deadline, rto=LONG_RTO_SECONDS),
                )
                silent.setblocking(False)
                arrivals = 0
                while True:
                    try:
                        silent.recv(65535)
                    except BlockingIOError:
                        return answers, arrivals
                    arrivals += 1
        finally:
            live.close()

    (first_refused, silence, answered, second_refused), arrivals = asyncio.run(main())
    assert (first_refused.kind, second_refused.kind) == (Reason.PORT_UNREACHABLE,) * 2
    assert answered.kind is Reason.SUCCESS and answered.icmp is None
    # The refusals are not the silent server's, nor is the send each of them fails once on the shared
    # socket (IP_RECVERR): every request went out and reached it, and no ICMP error ended it.
    assert silence.kind is Reason.NO_RESPONSE and silence.icmp is None
    assert 1 <= silence.attempts == arrivals
    assert silence.detail == f"no answer to {arrivals} datagrams and no ICMP error"


# -- the lab: a router that REJECTs or DROPs, and a far host with a closed port ----------------------

BINDINGS = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
from checks.contract import evidence_dict
from checks.transport.stun_client import Deadline, StunClient

async def main(targets):
    with StunClient.open() as client:
        started = time.monotonic()

        async def one(host, port, seconds):
            answer = await client.binding((host, port), deadline=Deadline(started + seconds))
            return {"kind": str(answer.kind), "attempts": answer.attempts, "detail": answer.detail,
                    "icmp": evidence_dict(answer.icmp), "seconds": time.monotonic() - started}

        return await asyncio.gather(*(one(*target) for target in targets))

print(json.dumps(asyncio.run(main(json.loads(sys.argv[2])))))
"""

ROUTER_RULES = {  # port on the STUN server's address -> what the router does with UDP to it
    3479: ("REJECT", "--reject-with", "icmp-admin-prohibited"),
    3480: ("REJECT", "--reject-with", "icmp-port-unreachable"),
    3481: ("DROP",),
}


@pytest.mark.lab
@needs_lab
def test_the_lab_tells_prohibited_port_unreachable_and_silence_apart():
    with Lab(nat="masquerade", stun="plain") as lab:
        for port, target in ROUTER_RULES.items():
            lab.router_iptables("-I", "FORWARD", "-p", "udp", "--dport", str(port), "-j", *target)
        targets = [
            (lab.stun_primary, lab.stun_port, REFUSED_DEADLINE_SECONDS),  # coturn answers
            (lab.stun_alternate, lab.stun_port, REFUSED_DEADLINE_SECONDS),  # on the far host, nothing listens
            (lab.stun_primary, 3479, REFUSED_DEADLINE_SECONDS),
            (lab.stun_primary, 3480, REFUSED_DEADLINE_SECONDS),
            (lab.stun_primary, 3481, SILENCE_SECONDS),
        ]
        completed = lab.run(lab.onprem, [sys.executable, "-c", BINDINGS, str(REPO), json.dumps(targets)], timeout=120)
    assert completed.returncode == 0, completed.stderr
    answered, closed, prohibited, rejected, dropped = json.loads(completed.stdout)
    assert answered["kind"] == "success", answered
    # The far host itself refused (through the NAT, which translates the ICMP error back to us).
    assert closed["kind"] == "port_unreachable" and closed["icmp"]["from"] == lab.stun_alternate, closed
    # The router refused, not the server: the ICMP error names who said no.
    assert prohibited["kind"] == "prohibited", prohibited
    assert prohibited["icmp"] == {"type": 3, "code": 13, "from": lab.onprem_gateway,
                                  "description": "communication administratively prohibited", "from_this_host": False}
    assert rejected["kind"] == "port_unreachable" and rejected["icmp"]["from"] == lab.onprem_gateway, rejected
    for refusal in (closed, prohibited, rejected):
        assert refusal["seconds"] < REFUSED_DEADLINE_SECONDS / 2, refusal  # generous: not the deadline
    assert dropped["kind"] == "no_response" and dropped["icmp"] is None and dropped["attempts"] >= 1, dropped
