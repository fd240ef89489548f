"""The TLS checks on TCP (tls_tcp443, sstp, gateway_health) tell apart what became of their SYN,
against `xcheck responder` in the lab with the router filtering its ports (issue 12, item 3):

* answered: ok, reachable;
* DROP (a SYN never answered): `no_response`, reachable unknown (null), the detail naming the SYN;
* REJECT with a TCP reset: `connection_refused`, reachable false;
* REJECT with an ICMP error: `prohibited` or `port_unreachable`, reachable false, and the ICMP
  error (type, code, the router as its sender) in the evidence: the proof;
* a next hop that never answers ARP: this host's own ICMP error, `network_error`, unknown;
* silence once connected (the router passes the responder's SYN/ACK and nothing after it, as a
  path MTU black hole swallows its certificate flight): `stalled`, unknown, the detail naming
  the TLS handshake.

The three checks of one case run at once (tests/test_lab_ike.py `run_together`), so a dropped
port costs one deadline, not three.
"""

from __future__ import annotations

import json

import pytest
from conftest import needs_lab
from lab import Lab
from run_probe import run_of
from test_lab_gateway import start_responder
from test_lab_ike import probe_command, run_together

from checks.contract import evidence_dict

pytestmark = [pytest.mark.lab, needs_lab]

RESPONDER = "203.0.113.11"
PORTS = {"tls_tcp443": 443, "sstp": 443, "gateway_health": 8081}
CHECKS = tuple(PORTS)
# Each check's deadline, which a dropped SYN waits out. Generous for the open case on a loaded
# machine (a TLS handshake, and a second one without verification for the self-signed responder).
PROBE_TIMEOUT_SECONDS = 5.0
# A next hop that does not answer ARP fails after Linux's 3 solicitations 1 s apart; the deadline
# must leave room for them.
NEIGHBOUR_TIMEOUT_SECONDS = 15.0
NO_NEIGHBOUR = "10.0.0.77"  # on onprem's link, where nothing holds it
UNROUTED = "203.0.113.99"  # routed via NO_NEIGHBOUR: nothing is ever sent past onprem's link


@pytest.fixture(scope="module")
def lab():
    with Lab(nat="masquerade", stun="none") as lab:
        start_responder(lab, address=RESPONDER)
        # Linux rate-limits ICMP errors; the lab's router must not turn a REJECT into silence.
        lab.run(lab.router, ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"], check=True)
        yield lab


def to_ports(target: str) -> tuple[str, ...]:
    """A router rule applying iptables `target` to what onprem sends to the responder's TCP ports."""
    return ("-p", "tcp", "-d", RESPONDER, "-m", "multiport", "--dports", "443,8081", *target.split())


@pytest.fixture(scope="module")
def probed(lab):
    """The three checks' one result each against the responder with `rule` in the router's FORWARD
    chain (none: open), as run_probe printed it; each case is run once."""
    runs: dict[tuple[str, ...], dict[str, dict]] = {}

    def probed(*rule: str) -> dict[str, dict]:
        if rule not in runs:
            lab.router_iptables("-F", "FORWARD")
            if rule:
                lab.router_iptables("-A", "FORWARD", *rule)
            outputs = run_together(lab, {check: probe_command(check, RESPONDER, PROBE_TIMEOUT_SECONDS)
                                         for check in CHECKS})
            runs[rule] = {check: json.loads(output) for check, output in outputs.items()}
        return runs[rule]

    return probed


def only_result(printed: dict) -> tuple[dict, object]:
    """The run's one result as printed, and its evidence typed again (which must round-trip)."""
    (result,) = printed["results"]
    (typed,) = run_of(printed).results
    assert evidence_dict(typed.evidence) == result["evidence"]
    return result, typed.evidence


@pytest.mark.parametrize("check", CHECKS)
def test_an_open_port_is_reachable(probed, check):
    result, evidence = only_result(probed()[check])
    assert result["status"] == "ok", result
    assert evidence.reachable is True and evidence.icmp is None


@pytest.mark.parametrize("check", CHECKS)
def test_a_dropped_syn_is_silence_which_proves_nothing(probed, check):
    result, evidence = only_result(probed(*to_ports("-j DROP"))[check])
    assert (result["status"], result["reason"]) == ("fail", "no_response"), result
    assert evidence.reachable is None and evidence.icmp is None
    assert f"TCP connect to {RESPONDER}:{PORTS[check]}: no answer to the SYN" in result["detail"]


@pytest.mark.parametrize("check", CHECKS)
def test_a_reset_is_connection_refused(probed, check):
    result, evidence = only_result(probed(*to_ports("-j REJECT --reject-with tcp-reset"))[check])
    assert (result["status"], result["reason"]) == ("fail", "connection_refused"), result
    assert evidence.reachable is False and evidence.icmp is None


@pytest.mark.parametrize("check", CHECKS)
def test_icmp_prohibited_is_proof_with_the_icmp_error(probed, lab, check):
    result, evidence = only_result(probed(*to_ports("-j REJECT --reject-with icmp-admin-prohibited"))[check])
    assert (result["status"], result["reason"]) == ("fail", "prohibited"), result
    assert evidence.reachable is False
    icmp = evidence.icmp
    assert (icmp.icmp_type, icmp.icmp_code, icmp.offender) == (3, 13, lab.onprem_gateway)
    assert "type 3, code 13" in result["detail"] and lab.onprem_gateway in result["detail"]


@pytest.mark.parametrize("check", CHECKS)
def test_icmp_port_unreachable_is_not_a_reset(probed, lab, check):
    # Linux reports it to connect() as ECONNREFUSED, as it does a reset: only the error queue tells.
    result, evidence = only_result(probed(*to_ports("-j REJECT --reject-with icmp-port-unreachable"))[check])
    assert (result["status"], result["reason"]) == ("fail", "port_unreachable"), result
    assert evidence.reachable is False
    assert (evidence.icmp.icmp_type, evidence.icmp.icmp_code, evidence.icmp.offender) == (3, 3, lab.onprem_gateway)
    assert "type 3, code 3" in result["detail"]


@pytest.mark.parametrize("check", CHECKS)
def test_silence_after_the_connect_is_no_proof_and_names_its_stage(probed, check):
    # The SYN/ACK passes and nothing after it, as a path MTU black hole swallows the server's
    # certificate flight; here its close too, so that the responder's own handshake limit (5 s,
    # as long as the probe's deadline) cannot end the wait first.
    result, evidence = only_result(probed("-p", "tcp", "-s", RESPONDER, "-m", "multiport", "--sports", "443,8081",
                                          "!", "--tcp-flags", "SYN", "SYN", "-j", "DROP")[check])
    assert (result["status"], result["reason"]) == ("fail", "stalled"), result
    assert evidence.reachable is None and evidence.icmp is None
    assert result["detail"] == f"TLS handshake with {RESPONDER}: no answer before the deadline"


def test_this_hosts_own_icmp_error_is_no_proof(lab):
    """A next hop that never answers ARP: the kernel refuses the SYN with an ICMP host unreachable
    from this host's own address. Nothing on the path said anything: network_error, unknown."""
    lab.run(lab.onprem, ["ip", "route", "replace", f"{UNROUTED}/32", "via", NO_NEIGHBOUR], check=True)
    try:
        outputs = run_together(lab, {check: probe_command(check, UNROUTED, NEIGHBOUR_TIMEOUT_SECONDS)
                                     for check in CHECKS})
    finally:
        lab.run(lab.onprem, ["ip", "route", "del", f"{UNROUTED}/32"], check=True)
    for check, output in outputs.items():
        result, evidence = only_result(json.loads(output))
        assert (result["status"], result["reason"]) == ("fail", "network_error"), (check, result)
        # Kept as evidence, marked as this host's own: no proof about the path.
        assert evidence.reachable is None and evidence.icmp.from_this_host is True
        assert evidence.icmp.offender == lab.onprem_address
        assert f"from {lab.onprem_address}, this host itself" in result["detail"], result
