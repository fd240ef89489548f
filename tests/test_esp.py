"""ESP check (checks/probes/esp.py), its probe packet (checks/protocols/esp.py) and the
responder's ESP echo (agent/responder/esp_echo.py).

Unit tests build packets with scapy, an ESP implementation no one here wrote, as the reference.
Lab tests (tests/lab.py) run the echo in the cloud namespace and the probe in onprem, with
the router passing, dropping or rejecting ESP. What Linux NAT does with ESP, as measured here:
MASQUERADE passes it both ways. Conntrack has no ESP helper, so the generic tracker keys a
flow on the two addresses and protocol 50 only (`unknown 50 ... src=10.0.0.2 dst=203.0.113.10`,
600 s), rewrites the source address, and maps the echo back; one internal host per peer
address at a time, as there is no SPI in the key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import LAB_UNAVAILABLE
from hypothesis import given
from hypothesis import strategies as st
from lab import Lab

from agent.responder import esp_echo
from agent.responder.esp_echo import EspEcho, answer, serve_esp_echo
from agent.runner import run_checks
from checks.contract import CheckContext, Reason, Status
from checks.targets import Resolver, Targets
from checks.probes import esp
from checks.probes.esp import EspEvidence
from checks.protocols.esp import MAGIC, PROBE_SPI, EspParseError, EspProbe, Kind, esp_of_ipv4

RUN_PROBE = str(Path(__file__).with_name("run_probe.py"))
TOKEN = bytes(range(16))
IS_ROOT = os.geteuid() == 0


def ipv4_datagram(esp_packet: bytes, source: str = "198.51.100.2", **fields) -> bytes:
    from scapy.layers.inet import IP

    return bytes(IP(**{"src": source, "dst": "203.0.113.10", "proto": 50} | fields) / esp_packet)


def request(sequence: int = 1) -> bytes:
    return EspProbe(Kind.REQUEST, sequence, TOKEN).encode()


def context(gateway: str, timeout: float = 10.0) -> CheckContext:  # a bound on a hang: an echo ends it
    targets = Targets(gateways=(gateway,))
    (target,) = targets.of_scope(esp.CHECK.scope)
    return CheckContext(targets=targets, target=target, deadline=time.monotonic() + timeout, dependencies={},
                        resolver=Resolver(), logger=logging.getLogger("test_esp"))


# -- wire format ---------------------------------------------------------------------------


def test_probe_is_esp_as_scapy_reads_it():
    from scapy.layers.ipsec import ESP

    packet = ESP(request(7))
    assert (packet.spi, packet.seq) == (PROBE_SPI, 7)
    assert packet.data.startswith(MAGIC)
    assert EspProbe.parse(bytes(packet)) == EspProbe(Kind.REQUEST, 7, TOKEN)


def test_esp_of_ipv4_takes_the_header_off():
    assert esp_of_ipv4(ipv4_datagram(request())) == request()


@pytest.mark.parametrize("datagram, why", [
    (b"", "not an IPv4 datagram"),
    (ipv4_datagram(request())[:-1], "length disagree"),
    (ipv4_datagram(request(), proto=17), "IP protocol 17"),
    (ipv4_datagram(request(), flags="MF"), "a fragment"),
])
def test_esp_of_ipv4_rejects(datagram, why):
    with pytest.raises(EspParseError, match=why):
        esp_of_ipv4(datagram)


def test_parse_rejects_real_esp():
    """Real IPsec traffic (scapy's own SA, AES-CBC) is not a probe, whatever its length."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.ipsec import ESP, SecurityAssociation

    sa = SecurityAssociation(ESP, spi=0x1000, crypt_algo="AES-CBC", crypt_key=b"k" * 16,
                             auth_algo="HMAC-SHA1-96", auth_key=b"a" * 20)
    datagram = bytes(sa.encrypt(IP(src="198.51.100.2", dst="203.0.113.10") / UDP() / b"x"))
    with pytest.raises(EspParseError):
        EspProbe.parse(esp_of_ipv4(datagram))
    assert answer(datagram, "198.51.100.2") is None


@given(st.binary(max_size=200))
def test_parsers_take_any_bytes(data):
    for parse in (EspProbe.parse, esp_of_ipv4):
        try:
            parse(data)
        except EspParseError:
            pass


# -- the echo -------------------------------------------------------------------------------


def test_echo_answers_a_request_with_the_same_packet_marked_echo():
    echo = answer(ipv4_datagram(request(3)), "198.51.100.2")
    assert echo is not None and EspProbe.parse(echo) == EspProbe(Kind.ECHO, 3, TOKEN)
    assert len(echo) == len(request(3))


@pytest.mark.parametrize("source", ["0.0.0.0", "224.0.0.1", "255.255.255.255", "not an address"])
def test_echo_never_goes_where_no_single_host_is(source):
    assert answer(ipv4_datagram(request()), source) is None


def test_echo_does_not_answer_echoes():
    """Two responders must not play ping-pong."""
    echo = EspProbe(Kind.ECHO, 1, TOKEN).encode()
    assert answer(ipv4_datagram(echo), "198.51.100.2") is None


@given(st.binary(max_size=120), st.booleans(), st.integers(0, 2**32 - 1))
def test_echo_never_sends_more_bytes_than_came_in(tail, wrap_probe, sequence):
    """Amplification bound: for any datagram, bytes out <= bytes in."""
    packet = ipv4_datagram(EspProbe(Kind.REQUEST, sequence, TOKEN).encode() + tail) if wrap_probe else tail
    echo = answer(packet, "198.51.100.2")
    assert echo is None or len(echo) <= len(packet)
    if wrap_probe and not tail:
        assert echo is not None and len(echo) == len(packet) - 20


def test_rate_limit_per_source():
    now = [0.0]
    server = EspEcho(clock=lambda: now[0])
    packet = ipv4_datagram(request())
    answers = [server.handle(packet, "198.51.100.2") for _ in range(int(esp_echo.BURST) + 5)]
    assert sum(a is not None for a in answers) == esp_echo.BURST
    assert server.handle(packet, "198.51.100.3") is not None  # another source has its own budget
    now[0] += 1.0
    assert sum(server.handle(packet, "198.51.100.2") is not None for _ in range(20)) == esp_echo.RATE_PER_SECOND
    assert server.counts["rate_limited"] == 5 + 20 - esp_echo.RATE_PER_SECOND


# -- the check without the network ------------------------------------------------------------


def test_no_gateway_is_skipped():
    (run,) = asyncio.run(run_checks([esp.CHECK], Targets(), 10.0))
    assert (run.status, run.reason, run.results) == (Status.SKIPPED, Reason.NO_TARGET, ())
    assert run.detail == "no gateway given (--gateway)"


def test_without_cap_net_raw_it_is_skipped(monkeypatch):
    def refuse():
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(esp, "open_esp_socket", refuse)
    outcome = asyncio.run(esp.probe(context("203.0.113.10")))
    assert (outcome.status, outcome.reason) == (Status.SKIPPED, Reason.NOT_PERMITTED)
    assert "CAP_NET_RAW" in outcome.detail


@pytest.mark.skipif(not IS_ROOT, reason="a raw ESP socket needs root (CAP_NET_RAW)")
def test_echo_on_loopback():
    async def run():
        server = await serve_esp_echo("127.0.0.1")
        try:
            return await esp.probe(context("127.0.0.1")), server.counts
        finally:
            server.close()

    outcome, counts = asyncio.run(run())
    assert outcome.status is Status.OK and outcome.detail == "echoed from 127.0.0.1"
    # A busy machine may resend before the first echo is read, and read two echoes at once.
    assert dataclasses.replace(outcome.evidence, sent=1, echoed=1) == EspEvidence(
        address="127.0.0.1", reachable=True, result=Reason.SUCCESS, sent=1, echoed=1)
    assert outcome.evidence.echoed >= 1
    assert counts["echoed"] >= 1


# -- lab ----------------------------------------------------------------------------------------

_ECHO_SERVER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from agent.responder.esp_echo import serve_esp_echo

async def main():
    await serve_esp_echo({host!r})
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


# Where an echo or an ICMP error ends the probe, the deadline only bounds a hang; where silence
# is the answer, the probe waits all of it.
ESP_TIMEOUT_SECONDS = 10.0
DROPPED_TIMEOUT_SECONDS = 2.0


def run_esp(lab: Lab, as_user: list[str] | None = None, timeout: float = ESP_TIMEOUT_SECONDS) -> dict:
    completed = lab.run(lab.onprem, [*(as_user or []), sys.executable, RUN_PROBE, "esp",
                                     "--gateway", lab.stun_primary, "--timeout", str(timeout)])
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def start_echo(lab: Lab) -> None:
    root = str(Path(__file__).resolve().parent.parent)
    server = lab.spawn(lab.cloud, [sys.executable, "-c", _ECHO_SERVER.format(root=root, host=lab.stun_primary)],
                       stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"


def gateway(run: dict) -> dict:
    """The one gateway's evidence in the run tests/run_probe.py printed."""
    (result,) = run["results"]
    return result["evidence"]


@pytest.mark.lab
@pytest.mark.skipif(LAB_UNAVAILABLE is not None, reason=LAB_UNAVAILABLE or "")
@pytest.mark.parametrize("nat", ["public", "masquerade"])
def test_lab_esp_through_the_router(nat):
    with Lab(nat=nat, stun="none") as lab:
        # No echo and no IPsec stack: the far host's kernel itself says "protocol unreachable".
        unhandled = run_esp(lab)
        assert (unhandled["status"], unhandled["reason"]) == ("fail", "protocol_unreachable")
        assert gateway(unhandled)["result"] == "protocol_unreachable" and gateway(unhandled)["reachable"] is False

        start_echo(lab)
        echoed = run_esp(lab)
        assert (echoed["status"], echoed["reason"]) == ("ok", "success"), echoed
        assert gateway(echoed)["reachable"] is True and gateway(echoed)["echoed"] >= 1
        if nat == "masquerade":  # generic conntrack: addresses only, no SPI
            table = lab.run(lab.router, ["cat", "/proc/net/nf_conntrack"]).stdout
            assert "unknown  50 " in table and f"dst={lab.router_wan_address}" in table, table

        lab.router_iptables("-A", "FORWARD", "-p", "esp", "-j", "DROP")
        dropped = run_esp(lab, timeout=DROPPED_TIMEOUT_SECONDS)
        assert (dropped["status"], dropped["reason"]) == ("fail", "no_response")
        # Sent (how many resends fit depends on how busy the machine is), then silence until the deadline.
        assert gateway(dropped)["reachable"] is None and gateway(dropped)["sent"] >= 1
        assert "only inside an SA" in dropped["detail"]
        assert dropped["duration_seconds"] < DROPPED_TIMEOUT_SECONDS + 10  # generous: a loaded machine wakes late
        lab.router_iptables("-D", "FORWARD", "-p", "esp", "-j", "DROP")

        for reject_with, said in [("icmp-proto-unreachable", "ICMP protocol unreachable (type 3, code 2)"),
                                  ("icmp-admin-prohibited",
                                   "ICMP communication administratively prohibited (type 3, code 13)")]:
            rule = ("FORWARD", "-p", "esp", "-j", "REJECT", "--reject-with", reject_with)
            lab.router_iptables("-A", *rule)
            refused = run_esp(lab)
            lab.router_iptables("-D", *rule)
            assert (refused["status"], refused["reason"]) == ("fail", "prohibited"), refused
            assert gateway(refused)["reachable"] is False and gateway(refused)["result"] == "prohibited"
            assert refused["results"][0]["detail"] == f"{said} from {lab.onprem_gateway}"

        assert run_esp(lab)["status"] == "ok"  # and ESP passes again once the rules are gone

        unprivileged = run_esp(lab, as_user=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        assert (unprivileged["status"], unprivileged["reason"]) == ("skipped", "not_permitted")
