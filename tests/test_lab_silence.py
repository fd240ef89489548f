"""Silence from a gateway is not a verdict: `xcheck run` against strongSwan's charon in the lab.

A gateway that stays silent on IKE may sit behind a filter that drops it, or may ignore a peer it
has no connection for (Azure's does until a local network gateway names the site). xcheck must
call that conditional and say what to do, and keep "infeasible" for what it can prove: an ICMP
refusal, or silence on one IKE port while the same gateway answers on the other (an IKE endpoint
listens on both, RFC 7296 §2.23). Every case runs the real CLI in the lab's onprem namespace
against charon (tests/test_lab_ike.py `charon`) at 203.0.113.10, with coturn there as STUN server.
"""

from __future__ import annotations

import pytest
from conftest import run_xcheck
from lab import Lab
from test_lab_ike import GATEWAY, charon
from test_lab_ike import pytestmark  # noqa: F401  (the same marks: a lab, charon and ike-scan installed)

# Each check's deadline: a dropped port costs all of it, and the IKE checks import scapy inside it.
TIMEOUT = "5"
ROUTER_PUBLIC = Lab.router_wan_address  # what the gateway (and the STUN server beside it) sees behind MASQUERADE
# A gateway that ignores IKE from every peer but the one configured on its side.
CONFIGURED_PEER = "198.51.100.99"


def run(lab: Lab) -> dict:
    completed, report = run_xcheck("run", "--format", "json", "--vpn-device", "--stun", GATEWAY, "--gateway", GATEWAY,
                                   "--timeout", TIMEOUT, lab=lab, timeout=180)
    assert completed.returncode == 0, completed.stderr
    return report


def reasons(report: dict, option: str = "s2s") -> dict[str, dict]:
    return {reason["rule"]: reason for reason in report["options"][option]["reasons"]}


def ike(report: dict, name: str = "ike_udp500") -> dict:
    return report["facts"]["reachability"][name]


def drop_ike_except(lab: Lab, peer: str) -> None:
    """The gateway's own firewall: IKE from `peer` only (replacing what it allowed before)."""
    lab.run(lab.cloud, ["iptables", "-F", "INPUT"], check=True)
    lab.run(lab.cloud, ["iptables", "-A", "INPUT", "-p", "udp", "-m", "multiport", "--dports", "500,4500",
                        "!", "-s", peer, "-j", "DROP"], check=True)


def assert_conditional_on_silence(report: dict) -> None:
    """S2S conditional, never infeasible, with both causes and this site's public address named."""
    for name in ("ike_udp500", "ike_natt_udp4500"):
        assert (ike(report, name)["reachable"], ike(report, name)["reason"]) == (None, "no_response"), ike(report, name)
    assert report["facts"]["public_ipv4"]["site_address"] == ROUTER_PUBLIC
    s2s = report["options"]["s2s"]
    assert s2s["verdict"] == "conditional", s2s
    assert not [r for r in s2s["reasons"] if r["verdict"] == "infeasible"], s2s
    text = reasons(report)["current.s2s.ike-silent"]["text"]
    assert "firewall" in text and "UDP 500 and UDP 4500" in text  # cause one, and what to open
    assert "ignores peers it has no connection for" in text and "local network gateway" in text  # cause two
    assert f"this site's public address, {ROUTER_PUBLIC}," in text
    assert "s2s" in report["recommendation"]


@pytest.fixture()
def gateway_lab():
    with Lab(nat="masquerade", stun="rfc5780") as lab, charon(lab):
        # Linux sends at most 6 ICMP errors at once to one host: a REJECT must not turn into silence.
        lab.run(lab.router, ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"], check=True)
        yield lab


def test_udp_500_dropped_while_4500_answers_is_infeasible_and_says_500_is_filtered(gateway_lab):
    gateway_lab.router_iptables("-A", "FORWARD", "-p", "udp", "--dport", "500", "-j", "DROP")
    report = run(gateway_lab)
    assert ike(report, "ike_natt_udp4500")["reachable"] is True
    assert (ike(report)["reachable"], ike(report)["reason"]) == (False, "no_response")
    assert ike(report)["detail"] == "filtered: no answer on UDP 500 while the same gateway answers IKEv2 NAT-T on UDP 4500"
    assert report["options"]["s2s"]["verdict"] == "infeasible"
    blocked = reasons(report)["current.s2s.ike-unreachable"]
    assert blocked["verdict"] == "infeasible" and "answers IKEv2 NAT-T on UDP 4500" in blocked["text"]
    assert "current.s2s.ike-silent" not in reasons(report)


def test_silence_on_both_ike_ports_is_conditional_and_names_both_causes_and_the_sites_address(gateway_lab):
    gateway_lab.router_iptables("-A", "FORWARD", "-p", "udp", "-m", "multiport", "--dports", "500,4500", "-j", "DROP")
    assert_conditional_on_silence(run(gateway_lab))


def test_a_gateway_that_ignores_unknown_peers_is_conditional_until_this_site_is_its_peer(gateway_lab):
    drop_ike_except(gateway_lab, CONFIGURED_PEER)
    assert_conditional_on_silence(run(gateway_lab))

    drop_ike_except(gateway_lab, ROUTER_PUBLIC)  # the gateway's side now names this site's address
    configured = run(gateway_lab)
    for name in ("ike_udp500", "ike_natt_udp4500"):
        assert (ike(configured, name)["reachable"], ike(configured, name)["reason"]) == (True, "success")
    assert "current.s2s.ike-reachable" in reasons(configured)
    assert "current.s2s.ike-silent" not in reasons(configured)
    assert configured["options"]["s2s"]["verdict"] != "infeasible"


def test_ike_rejected_with_icmp_is_infeasible_and_the_reason_names_the_icmp_type(gateway_lab):
    gateway_lab.router_iptables("-A", "FORWARD", "-p", "udp", "-m", "multiport", "--dports", "500,4500", "-j", "REJECT",
                                "--reject-with", "icmp-admin-prohibited")
    report = run(gateway_lab)
    for name in ("ike_udp500", "ike_natt_udp4500"):
        assert (ike(report, name)["reachable"], ike(report, name)["reason"]) == (False, "prohibited")
    assert report["options"]["s2s"]["verdict"] == "infeasible"
    text = reasons(report)["current.s2s.ike-unreachable"]["text"]
    assert "ICMP communication administratively prohibited (type 3, code 13)" in text
    assert f"from {gateway_lab.onprem_gateway}" in text
