"""`xcheck run` in the onprem namespace of a real lab (tests/lab.py): Linux NAT, coturn, iptables.

Facts, verdicts and exit codes are asserted; mapping and filtering are compared with coturn's
own `turnutils_natdiscovery -m -f` run in the same lab.
"""

from __future__ import annotations

import pytest
from conftest import needs_lab, run_xcheck
from lab import Lab

pytestmark = [pytest.mark.lab, needs_lab]

TIMEOUT = "2"


def xcheck_json(lab: Lab, *extra: str, stun: tuple[str, ...] | None = None):
    servers = stun if stun is not None else (lab.stun_primary,)
    args = ["run", "--format", "json", "--timeout", TIMEOUT, *extra]
    for server in servers:
        args += ["--stun", server]
    return run_xcheck(*args, lab=lab)


def verdicts(report: dict) -> dict[str, str]:
    return {option: entry["verdict"] for option, entry in report["options"].items()}


def fired(report: dict, option: str) -> set[str]:
    return {reason["rule"] for reason in report["options"][option]["reasons"]}


def test_public_address_no_nat():
    with Lab(nat="public") as lab:
        completed, report = xcheck_json(lab, "--ruleset", "azure-2015", "--vpn-device")
    assert completed.returncode == 0, completed.stderr
    facts = report["facts"]
    assert facts["public_ipv4"] == {"present": True, "addresses": ["198.51.100.2"], "site_address": "198.51.100.2",
                                    "site_address_source": "stun"}
    nat = facts["nat"]
    assert nat["detected"] is False
    assert nat["reflexive_address"] == "198.51.100.2" and nat["reflexive_port"] == nat["local_port"]
    assert nat["mapping"] == "endpoint-independent" and nat["filtering"] == "endpoint-independent"
    assert nat["cgnat"] is False and nat["udp_blocked"] is False
    assert report["summary"] == ("udp=true public_ipv4=true nat=false mapping=endpoint-independent "
                                 "filtering=endpoint-independent cgnat=false")
    # The seed's requirements hold; only IKE/ESP (not measured yet) keep S2S conditional.
    assert verdicts(report)["s2s"] == "conditional"
    assert {"2015.s2s.public-ipv4", "2015.s2s.no-nat", "2015.s2s.ipsec-not-measured"} <= fired(report, "s2s")
    assert not any(r["verdict"] == "infeasible" for r in report["options"]["s2s"]["reasons"])


@pytest.mark.parametrize("nat_mode", ["masquerade", "random-fully"])
def test_behind_nat_matches_turnutils_natdiscovery(nat_mode):
    with Lab(nat=nat_mode) as lab:
        completed, report = xcheck_json(lab, "--ruleset", "azure-2015")
        current_completed, current = xcheck_json(lab)
        reference = lab.natdiscovery()
    assert completed.returncode == 0 and current_completed.returncode == 0, completed.stderr
    nat = report["facts"]["nat"]
    assert nat["detected"] is True
    assert nat["reflexive_address"] == "203.0.113.1" and nat["local_address"] == "10.0.0.2"
    assert reference["mapping"] is not None and reference["filtering"] is not None, reference["raw"]
    assert (nat["mapping"], nat["filtering"]) == (reference["mapping"], reference["filtering"])
    expected_mapping = "endpoint-independent" if nat_mode == "masquerade" else "address-and-port-dependent"
    assert nat["mapping"] == expected_mapping
    assert nat["filtering"] == "address-and-port-dependent"
    assert report["facts"]["public_ipv4"]["present"] is False
    # The seed: no NAT for S2S. Today: NAT-T makes it conditional.
    assert verdicts(report)["s2s"] == "infeasible"
    assert "2015.s2s.behind-nat" in fired(report, "s2s")
    assert verdicts(current)["s2s"] == "conditional"
    assert "current.s2s.behind-nat" in fired(current, "s2s")
    assert verdicts(current)["p2s"] == "conditional"


def test_cgnat():
    with Lab(nat="cgnat") as lab:
        completed, report = xcheck_json(lab)
    assert completed.returncode == 0
    nat = report["facts"]["nat"]
    assert nat["cgnat"] is True and nat["detected"] is True and nat["local_address"] == "100.64.0.2"
    classes = {a["address"]: a["class"] for i in report["facts"]["interfaces"] for a in i["addresses"]}
    assert classes["100.64.0.2"] == "cgnat"
    assert "current.s2s.cgnat" in fired(report, "s2s")


@pytest.mark.parametrize("policy", ["drop", "reject"])
def test_udp_blocked_at_the_router(policy):
    with Lab(nat="masquerade", udp=policy) as lab:
        completed, report = xcheck_json(lab, "--vpn-device")
    assert completed.returncode == 0
    nat = report["facts"]["nat"]
    assert nat["udp_blocked"] is True
    assert nat["detected"] is None and nat["mapping"] is None and nat["reflexive_address"] is None
    checks = {c["name"]: c for c in report["checks"]}
    (server,) = checks["stun_binding"]["results"]
    if policy == "drop":
        assert (checks["stun_binding"]["status"], checks["stun_binding"]["reason"]) == ("fail", "no_response")
        # Sent, then silence until the deadline: how many retransmissions fit depends on how busy the
        # machine is (the schedule is tested in test_stun_client.py).
        attempts = server["evidence"]["attempts"]
        assert attempts >= 1 and server["detail"] == f"no answer to {attempts} datagrams and no ICMP error"
    else:
        # STUN reads ICMP as the IKE probes do (issue 9): the router's refusal is said at once, and
        # names the router, not the server, as who refused.
        assert (checks["stun_binding"]["status"], checks["stun_binding"]["reason"]) == ("fail", "port_unreachable")
        assert server["detail"] == f"ICMP port unreachable (type 3, code 3) from {lab.onprem_gateway}"
    assert (checks["nat_behavior"]["status"], checks["nat_behavior"]["reason"]) == ("skipped", "dependency_unavailable")
    assert verdicts(report)["s2s"] == "unknown"
    assert {"current.s2s.udp-blocked", "current.s2s.nat-unknown"} <= fired(report, "s2s")
    assert report["summary"].startswith("udp=false public_ipv4=false nat=-")


def test_expect_sets_the_exit_code():
    with Lab(nat="public") as lab:
        met, _ = xcheck_json(lab, "--colocation", "--expect", "expressroute_exp")
        unmet, report = xcheck_json(lab, "--ruleset", "azure-2015", "--no-vpn-device", "--expect", "s2s")
    assert met.returncode == 0, met.stderr
    assert unmet.returncode == 1
    assert "s2s is infeasible" in unmet.stderr
    assert report["options"]["s2s"]["verdict"] == "infeasible"  # the report is still written


def test_plain_servers_compare_mappings_across_destinations():
    for nat_mode, varies in (("masquerade", False), ("random-fully", True)):
        with Lab(nat=nat_mode, stun="plain", extra_plain_stun=2) as lab:
            completed, report = xcheck_json(lab, stun=(lab.stun_primary, *lab.plain_stun_servers))
        assert completed.returncode == 0
        nat = report["facts"]["nat"]
        assert nat["mapping_varies_by_destination"] is varies, nat_mode
        assert nat["mapping"] is None and nat["filtering"] is None  # no OTHER-ADDRESS: not guessed
        checks = {c["name"]: c for c in report["checks"]}
        assert (checks["nat_behavior"]["status"], checks["nat_behavior"]["reason"]) == ("skipped", "not_supported")


def test_a_silent_server_beside_a_live_one():
    with Lab(nat="masquerade", stun="plain") as lab:
        # 203.0.113.11 is on the cloud host but nothing listens there: its ICMP port unreachable, not an error.
        completed, report = xcheck_json(lab, stun=(lab.stun_primary, "203.0.113.11"))
    assert completed.returncode == 0
    checks = {c["name"]: c for c in report["checks"]}
    servers = checks["stun_binding"]["results"]
    assert [(s["target"], s["evidence"]["result"]) for s in servers] == [
        (f"{lab.stun_primary}:3478", "success"), ("203.0.113.11:3478", "port_unreachable")]
    assert report["facts"]["nat"]["udp_blocked"] is False
    assert report["facts"]["nat"]["detected"] is True


def test_redacted_report_hides_addresses_but_keeps_classes():
    with Lab(nat="masquerade") as lab:
        completed, report = xcheck_json(lab, "--redact")
    assert completed.returncode == 0
    text = completed.stdout
    for secret in ("10.0.0.2", "203.0.113.1\"", "203.0.113.10"):
        assert secret not in text
    nat = report["facts"]["nat"]
    assert nat["reflexive_address"].startswith("public-ipv4-") and nat["local_address"].startswith("rfc1918-ipv4-")
    assert report["redacted"] is True


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_human_formats(fmt):
    with Lab(nat="masquerade") as lab:
        completed = lab.run(lab.onprem, [run_xcheck.__globals__["XCHECK"], "run", "--format", fmt,
                                         "--timeout", TIMEOUT, "--stun", lab.stun_primary])
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "Site-to-Site" in out and "ExpressRoute via a Network Service Provider" in out
    assert "current.s2s.behind-nat" in out
    assert "address-and-port-dependent" in out and "Recommendation" in out
    assert "\x1b[" not in out  # no colour codes when piped
