"""`xcheck run --gateway` in the lab against `xcheck responder` as the gateway: every probe of
issue 4 through NAT, then TCP 443 and ESP blocked at the router (DROP and REJECT), with the
facts, the verdicts and the exit code that follow."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import XCHECK, needs_lab, run_xcheck
from lab import Lab

pytestmark = [pytest.mark.lab, needs_lab]

GATEWAY = "203.0.113.10"
# Each check's deadline. Generous: the IKE checks import scapy inside it (0.4 s on an idle core,
# seconds on a loaded CI machine), and a probe that has not sent by then reports silence. Where a
# port is dropped, the run waits all of it.
TIMEOUT_SECONDS = "8"


def start_responder(lab: Lab, *extra: str, prefix: tuple[str, ...] = (), address: str = GATEWAY) -> None:
    """`prefix` runs it under another command (tests/test_systemd_units.py: setpriv, as the unit would)."""
    # coturn holds 3478 on the same address: the responder's own STUN moves aside.
    lab.spawn(lab.cloud, [*prefix, XCHECK, "responder", "--listen", address, "--stun-port", "3490", *extra],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        listening = lab.run(lab.cloud, ["ss", "-tlnH"]).stdout
        if f"{address}:443 " in listening and f"{address}:8081 " in listening:
            return
        time.sleep(0.05)
    raise AssertionError("xcheck responder did not start listening")


def probe(lab: Lab, *extra: str):
    return run_xcheck("run", "--format", "json", "--stun", GATEWAY, "--gateway", GATEWAY, "--timeout", TIMEOUT_SECONDS,
                      "--vpn-device", *extra, lab=lab)


def reachable(report: dict) -> dict[str, bool | None]:
    return {name: fact["reachable"] for name, fact in report["facts"]["reachability"].items()}


def fired(report: dict, option: str) -> set[str]:
    return {reason["rule"] for reason in report["options"][option]["reasons"]}


@pytest.fixture(params=["public", "masquerade"])
def gateway_lab(request):
    with Lab(nat=request.param) as lab:
        start_responder(lab)
        yield lab


def test_every_probe_reaches_the_responder(gateway_lab):
    completed, report = probe(gateway_lab)
    assert completed.returncode == 0, completed.stderr
    state = reachable(report)
    assert all(state.values()), state  # IKE on 500 and 4500, IKEv1, ESP, TLS, SSTP, health probe
    nat = report["facts"]["nat"]
    assert nat["detected"] is (gateway_lab.onprem_address != "198.51.100.2")
    # The stub answers a bare NO_PROPOSAL_CHOSEN, without NAT_DETECTION: no second signal, not a "no"
    # (against strongSwan, tests/test_lab_ike.py shows it true behind NAT and false without).
    assert nat["ike_detected"] is None
    assert report["facts"]["path_mtu"]["bytes"] == 1500
    (tls,) = next(c for c in report["checks"] if c["name"] == "tls_tcp443")["results"]
    assert [g["gateway"] for g in report["facts"]["reachability"]["tls_tcp443"]["gateways"]] == [GATEWAY]
    evidence = tls["evidence"]
    assert evidence["chain_verified"] is False and evidence["exchange"]["interception_suspected"] is False  # self-signed, not re-signed
    assert report["facts"]["tls_interception"] is False
    assert {"current.p2s.sstp-reachable", "current.p2s.tls-reachable"} <= fired(report, "p2s")
    assert {"current.s2s.esp-echoed", "current.s2s.ike-reachable", "current.s2s.mtu-above-azure"} <= fired(report, "s2s")


@pytest.mark.parametrize("target", ["-j DROP", "-j REJECT --reject-with tcp-reset"])
def test_tcp_443_blocked_at_the_router(target):
    with Lab(nat="masquerade") as lab:
        start_responder(lab)
        lab.router_iptables("-A", "FORWARD", "-p", "tcp", "--dport", "443", *target.split())
        completed, report = probe(lab)
    assert completed.returncode == 0
    state = reachable(report)
    assert state["tls_tcp443"] is False and state["sstp"] is False
    assert state["gateway_health"] is True  # 8081 still passes
    checks = {c["name"]: c for c in report["checks"]}
    expected = "no_response" if "DROP" in target else "connection_refused"
    assert checks["tls_tcp443"]["reason"] == expected
    assert "current.p2s.tls-unreachable" in fired(report, "p2s")  # IKEv2 P2S remains (the stub answers IKE)
    assert report["options"]["p2s"]["verdict"] == "conditional"


@pytest.mark.parametrize("target", ["-j DROP", "-j REJECT --reject-with icmp-admin-prohibited"])
def test_esp_blocked_at_the_router(target):
    with Lab(nat="public") as lab:
        start_responder(lab)
        lab.router_iptables("-A", "FORWARD", "-p", "esp", *target.split())
        completed, report = probe(lab, "--ruleset", "azure-2015")
    assert completed.returncode == 0
    esp = report["facts"]["reachability"]["esp"]
    if "DROP" in target:
        assert esp["reachable"] is None  # silence proves nothing: a gateway answers ESP only inside an SA
        assert "2015.s2s.esp-blocked" not in fired(report, "s2s")
    else:
        assert esp["reachable"] is False
        assert report["options"]["s2s"]["verdict"] == "infeasible"
        assert "2015.s2s.esp-blocked" in fired(report, "s2s")


@pytest.mark.parametrize("nat_mode", ["masquerade", "random-fully"])
def test_responder_answers_rfc5780_discovery_like_coturn(nat_mode):
    """turnutils_natdiscovery against the responder's STUN (with padding: it never amplifies)
    finds the same NAT behaviour as against coturn, in the same lab."""
    from lab import parse_natdiscovery

    with Lab(nat=nat_mode) as lab:
        start_responder(lab, "--alternate", lab.stun_alternate)
        ours = parse_natdiscovery(lab.run(lab.onprem, ["turnutils_natdiscovery", "-m", "-f", "-P", "-p", "3490", GATEWAY],
                                          timeout=30).stdout)
        coturn = lab.natdiscovery()
    assert ours["mapping"] is not None and ours["filtering"] is not None, ours["raw"]
    assert (ours["mapping"], ours["filtering"]) == (coturn["mapping"], coturn["filtering"])


@pytest.mark.parametrize(("port", "target", "rule", "reason"), [
    ("500", "-j DROP", "current.s2s.ike-unreachable", "no_response"),
    ("500", "-j REJECT --reject-with icmp-port-unreachable", "current.s2s.ike-unreachable", "port_unreachable"),
    ("4500", "-j DROP", "current.s2s.natt-unreachable", "no_response"),
    ("4500", "-j REJECT --reject-with icmp-admin-prohibited", "current.s2s.natt-unreachable", "prohibited"),
])
def test_ike_ports_blocked_at_the_router(port, target, rule, reason):
    with Lab(nat="masquerade") as lab:
        start_responder(lab)
        # Linux rate-limits ICMP errors; the lab's router must not turn a REJECT into silence.
        lab.run(lab.router, ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"], check=True)
        lab.router_iptables("-A", "FORWARD", "-p", "udp", "--dport", port, *target.split())
        completed, report = probe(lab)
    assert completed.returncode == 0
    name = "ike_udp500" if port == "500" else "ike_natt_udp4500"
    other = "ike_natt_udp4500" if port == "500" else "ike_udp500"
    state = reachable(report)
    assert state[name] is False and state[other] is True
    assert {c["name"]: c["reason"] for c in report["checks"]}[name] == reason
    assert report["options"]["s2s"]["verdict"] == "infeasible" and rule in fired(report, "s2s")
