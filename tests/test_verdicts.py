"""The rule engine, table-driven: every option under both rule sets, and every rule fires somewhere."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from agent.verdicts import (OPTIONS, RuleSetError, available_rulesets, evaluate, format_rate, load_ruleset, lookup,
                            parse_ruleset)

MEASURED_PUBLIC = {
    "public_ipv4": {"present": True, "addresses": ["198.51.100.2"], "site_address": "198.51.100.2",
                    "site_address_source": "stun"},
    "nat": {"detected": False, "reflexive_address": "198.51.100.2", "reflexive_port": 40000,
            "local_address": "198.51.100.2", "local_port": 40000, "mapping": "endpoint-independent",
            "filtering": "endpoint-independent", "cgnat": False, "udp_blocked": False},
}
BEHIND_NAT = {
    "public_ipv4": {"present": False, "addresses": [], "site_address": "203.0.113.1", "site_address_source": "stun"},
    "nat": {"detected": True, "reflexive_address": "203.0.113.1", "reflexive_port": 1024,
            "local_address": "10.0.0.2", "local_port": 40000, "mapping": "endpoint-independent",
            "filtering": "address-and-port-dependent", "cgnat": False, "udp_blocked": False},
}
BEHIND_CGNAT = copy.deepcopy(BEHIND_NAT)
BEHIND_CGNAT["nat"] = BEHIND_NAT["nat"] | {"local_address": "100.64.0.2", "cgnat": True}
UDP_BLOCKED = {
    "public_ipv4": {"present": False, "addresses": []},
    "nat": {"detected": None, "reflexive_address": None, "reflexive_port": None, "local_address": None,
            "local_port": None, "mapping": None, "filtering": None, "cgnat": None, "udp_blocked": True},
}
def with_path(facts, bits_per_second, cpu_limited=False):
    throughput = {"upload_bits_per_second": bits_per_second * 1.5, "download_bits_per_second": bits_per_second,
                  "path_bits_per_second": bits_per_second, "both_directions": True, "cpu_limited": cpu_limited}
    return facts | {"throughput": throughput}


SILENT = "silent"  # bare silence: reachable null, reason no_response (a proven block is False)
STALLED = "stalled"  # a TCP connection, then silence
_STATES = {True: (True, "success"), False: (False, "prohibited"), None: (None, "no_target"),
           SILENT: (None, "no_response"), STALLED: (None, "stalled")}


def with_reach(facts, mtu=None, interception=None, **states):
    reachability = {name: dict(zip(("reachable", "reason"), _STATES[state]), detail=f"{name} said so")
                    for name, state in states.items()}
    path_mtu = {"bytes": None, "reason": "no_response"} if mtu == SILENT else {"bytes": mtu, "reason": "success"}
    return facts | {"reachability": reachability, "path_mtu": path_mtu, "tls_interception": interception}


def without_site_address(facts):
    return facts | {"public_ipv4": facts["public_ipv4"] | {"site_address": None, "site_address_source": None}}


NOTHING_MEASURED = {"public_ipv4": {"present": None, "addresses": []}, "nat": {k: None for k in UDP_BLOCKED["nat"]}}

NO_DECLARATION = {"bandwidth_bits_per_second": None, "clients": None, "private_only": False,
                  "vpn_device": None, "colocation": None, "nsp_wan": None}


def req(**changes):
    return NO_DECLARATION | changes


# (ruleset, facts, requirements) -> verdict per option (p2s, s2s, expressroute_exp, expressroute_nsp),
# and rule ids that must be among the reasons.
TABLE = [
    # A host with a public address, no NAT, a VPN device, 50 Mbit/s, no ExpressRoute presence.
    ("azure-2015", MEASURED_PUBLIC, req(bandwidth_bits_per_second=50e6, vpn_device=True, colocation=False, nsp_wan=False),
     ("conditional", "conditional", "infeasible", "infeasible"),
     {"2015.s2s.public-ipv4", "2015.s2s.no-nat", "2015.s2s.vpn-device", "2015.s2s.ipsec-not-measured",
      "2015.p2s.sstp-not-measured", "2015.p2s.bandwidth-within-typical", "2015.s2s.bandwidth-within-typical",
      "2015.er-exp.no-colocation", "2015.er-nsp.no-wan", "2015.p2s.no-device-no-public-ip-needed"}),
    ("azure-current", MEASURED_PUBLIC, req(bandwidth_bits_per_second=50e6, vpn_device=True, colocation=False, nsp_wan=False),
     ("conditional", "conditional", "infeasible", "infeasible"),
     {"current.s2s.public-ipv4", "current.s2s.no-nat", "current.s2s.vpn-device", "current.s2s.bandwidth-fits",
      "current.p2s.same-public-ip-as-s2s",
      "current.p2s.bandwidth-fits", "current.er-exp.no-colocation", "current.er-nsp.no-wan"}),
    # Behind a NAT: the seed forbids S2S, NAT-T makes it conditional today.
    ("azure-2015", BEHIND_NAT, req(vpn_device=True),
     ("conditional", "infeasible", "unknown", "unknown"),
     {"2015.s2s.behind-nat", "2015.s2s.no-public-ipv4", "2015.er-exp.colocation-undeclared", "2015.er-nsp.wan-undeclared"}),
    ("azure-current", BEHIND_NAT, req(vpn_device=True),
     ("conditional", "conditional", "unknown", "unknown"),
     {"current.s2s.behind-nat", "current.s2s.no-public-ipv4", "current.er-exp.colocation-undeclared"}),
    ("azure-current", BEHIND_CGNAT, req(),
     ("conditional", "conditional", "unknown", "unknown"),
     {"current.s2s.cgnat", "current.s2s.behind-nat", "current.s2s.vpn-device-undeclared"}),
    ("azure-2015", BEHIND_CGNAT, req(vpn_device=False),
     ("conditional", "infeasible", "unknown", "unknown"),
     {"2015.s2s.no-vpn-device", "2015.s2s.behind-nat"}),
    # Every STUN server silent.
    ("azure-2015", UDP_BLOCKED, req(vpn_device=True),
     ("conditional", "infeasible", "unknown", "unknown"),
     {"2015.s2s.udp-blocked", "2015.s2s.nat-unknown", "2015.s2s.no-public-ipv4"}),
    ("azure-current", UDP_BLOCKED, req(vpn_device=True),
     ("conditional", "unknown", "unknown", "unknown"),
     {"current.s2s.udp-blocked", "current.s2s.nat-unknown", "current.p2s.udp-blocked"}),
    # Nothing measured at all: never a guess.
    ("azure-2015", NOTHING_MEASURED, req(),
     ("conditional", "unknown", "unknown", "unknown"),
     {"2015.s2s.public-ipv4-unknown", "2015.s2s.nat-unknown", "2015.s2s.vpn-device-undeclared"}),
    ("azure-current", NOTHING_MEASURED, req(vpn_device=False),
     ("conditional", "infeasible", "unknown", "unknown"),
     {"current.s2s.no-vpn-device", "current.s2s.nat-unknown"}),
    # Traffic must stay off the Internet, presence at an exchange.
    ("azure-2015", MEASURED_PUBLIC, req(private_only=True, colocation=True, nsp_wan=True, bandwidth_bits_per_second=500e6),
     ("infeasible", "infeasible", "feasible", "feasible"),
     {"2015.p2s.internet", "2015.s2s.internet", "2015.er-exp.private", "2015.er-nsp.private", "2015.er-exp.colocation",
      "2015.er-nsp.wan", "2015.er-exp.bandwidth-fits", "2015.er-nsp.bandwidth-fits", "2015.p2s.no-expressroute",
      "2015.p2s.bandwidth-above-typical", "2015.s2s.bandwidth-above-typical"}),
    ("azure-current", MEASURED_PUBLIC, req(private_only=True, colocation=True, nsp_wan=True, bandwidth_bits_per_second=500e6),
     ("infeasible", "infeasible", "feasible", "feasible"),
     {"current.p2s.internet", "current.s2s.internet", "current.er-exp.private", "current.er-nsp.private",
      "current.p2s.beside-expressroute", "current.er-exp.bandwidth-fits",
      "current.er-nsp.bandwidth-fits", "current.er-exp.colocation", "current.er-nsp.wan"}),
    # 2 Gbit/s: above VPN's typical range in 2015 ("typically": conditional), several tunnels today;
    # above NSP's 1 Gbps in 2015.
    ("azure-2015", MEASURED_PUBLIC, req(bandwidth_bits_per_second=2e9, colocation=True, nsp_wan=True, vpn_device=True),
     ("conditional", "conditional", "feasible", "infeasible"),
     {"2015.er-nsp.bandwidth-above", "2015.er-exp.bandwidth-fits"}),
    ("azure-current", MEASURED_PUBLIC, req(bandwidth_bits_per_second=2e9, colocation=True, nsp_wan=True, vpn_device=True),
     ("conditional", "conditional", "feasible", "feasible"),
     {"current.s2s.bandwidth-several-tunnels"}),
    # 20 Gbit/s: beyond every gateway, circuit and ExpressRoute gateway (ErGw3Az, 10 Gbps) today.
    ("azure-2015", MEASURED_PUBLIC, req(bandwidth_bits_per_second=20e9, colocation=True, nsp_wan=True),
     ("conditional", "conditional", "infeasible", "infeasible"),
     {"2015.er-exp.bandwidth-above", "2015.er-nsp.bandwidth-above", "2015.s2s.bandwidth-above-typical"}),
    ("azure-current", MEASURED_PUBLIC, req(bandwidth_bits_per_second=20e9, colocation=True, nsp_wan=True),
     ("infeasible", "infeasible", "infeasible", "infeasible"),
     {"current.p2s.bandwidth-above", "current.s2s.bandwidth-above", "current.er-nsp.bandwidth-above",
      "current.er-exp.bandwidth-above", "current.s2s.beside-expressroute"}),
    # A measured Internet path: below the need rules the VPN out (unless the CPU limited the
    # measurement), at or above it supports the VPN; ExpressRoute does not ride it.
    ("azure-2015", with_path(MEASURED_PUBLIC, 40e6), req(bandwidth_bits_per_second=50e6, vpn_device=True, colocation=True, nsp_wan=True),
     ("infeasible", "infeasible", "feasible", "feasible"),
     {"2015.p2s.path-below-need", "2015.s2s.path-below-need", "2015.er-exp.internet-path-below-need",
      "2015.er-nsp.internet-path-below-need"}),
    ("azure-current", with_path(MEASURED_PUBLIC, 40e6), req(bandwidth_bits_per_second=50e6, vpn_device=True, colocation=True, nsp_wan=True),
     ("infeasible", "infeasible", "feasible", "feasible"),
     {"current.p2s.path-below-need", "current.s2s.path-below-need", "current.er-exp.internet-path-below-need",
      "current.er-nsp.internet-path-below-need"}),
    ("azure-2015", with_path(MEASURED_PUBLIC, 40e6, cpu_limited=True), req(bandwidth_bits_per_second=50e6, vpn_device=True),
     ("conditional", "conditional", "unknown", "unknown"),
     {"2015.p2s.path-below-need-cpu-limited", "2015.s2s.path-below-need-cpu-limited"}),
    ("azure-current", with_path(MEASURED_PUBLIC, 40e6, cpu_limited=True), req(bandwidth_bits_per_second=50e6, vpn_device=True),
     ("conditional", "conditional", "unknown", "unknown"),
     {"current.p2s.path-below-need-cpu-limited", "current.s2s.path-below-need-cpu-limited"}),
    ("azure-2015", with_path(MEASURED_PUBLIC, 90e6), req(bandwidth_bits_per_second=50e6),
     ("conditional", "conditional", "unknown", "unknown"),
     {"2015.p2s.path-carries-need", "2015.s2s.path-carries-need"}),
    ("azure-current", with_path(MEASURED_PUBLIC, 90e6), req(bandwidth_bits_per_second=50e6),
     ("conditional", "conditional", "unknown", "unknown"),
     {"current.p2s.path-carries-need", "current.s2s.path-carries-need"}),
    ("azure-2015", MEASURED_PUBLIC, req(bandwidth_bits_per_second=50e6),
     ("conditional", "conditional", "unknown", "unknown"),
     {"2015.p2s.path-not-measured", "2015.s2s.path-not-measured"}),
    ("azure-current", MEASURED_PUBLIC, req(bandwidth_bits_per_second=50e6),
     ("conditional", "conditional", "unknown", "unknown"),
     {"current.p2s.path-not-measured", "current.s2s.path-not-measured"}),
    # Measured against a gateway (--gateway): IKE, NAT-T, ESP, TLS, SSTP, health probe, path MTU.
    ("azure-2015", with_reach(MEASURED_PUBLIC, ike_udp500=True, ikev1_udp500=False, esp=None, sstp=True),
     req(vpn_device=True),
     ("feasible", "conditional", "unknown", "unknown"),
     {"2015.p2s.sstp-reachable", "2015.s2s.ike-reachable", "2015.s2s.ikev1-unreachable", "2015.s2s.esp-not-measurable"}),
    ("azure-current", with_reach(MEASURED_PUBLIC, mtu=1500, ike_udp500=True, ikev1_udp500=False, esp=None, sstp=True,
                                 tls_tcp443=True, gateway_health=True),
     req(vpn_device=True),
     ("feasible", "conditional", "unknown", "unknown"),
     {"current.p2s.sstp-reachable", "current.p2s.tls-reachable", "current.s2s.ike-reachable",
      "current.s2s.ikev1-unreachable", "current.s2s.esp-not-measurable", "current.s2s.mtu-above-azure"}),
    ("azure-2015", with_reach(MEASURED_PUBLIC, interception=True, ike_udp500=False, esp=False, sstp=False),
     req(vpn_device=True),
     ("infeasible", "infeasible", "unknown", "unknown"),
     {"2015.p2s.sstp-unreachable", "2015.p2s.tls-interception", "2015.s2s.ike-unreachable", "2015.s2s.esp-blocked"}),
    ("azure-current", with_reach(MEASURED_PUBLIC, mtu=1300, interception=True, ike_udp500=False, esp=False,
                                 tls_tcp443=False, gateway_health=False),
     req(vpn_device=True),
     ("infeasible", "infeasible", "unknown", "unknown"),
     {"current.p2s.nothing-reachable", "current.p2s.tls-interception", "current.s2s.ike-unreachable",
      "current.s2s.esp-blocked", "current.s2s.mtu-below-azure", "current.s2s.health-probe-unreachable"}),
    ("azure-current", with_reach(BEHIND_NAT, ike_udp500=True, ike_natt_udp4500=True, esp=None, tls_tcp443=False),
     req(vpn_device=True),
     ("conditional", "conditional", "unknown", "unknown"),
     {"current.s2s.natt-reachable", "current.s2s.esp-in-natt", "current.p2s.tls-unreachable"}),
    ("azure-current", with_reach(BEHIND_NAT, tls_tcp443=False), req(vpn_device=True),
     ("conditional", "conditional", "unknown", "unknown"),
     {"current.p2s.tls-unreachable-ike-not-measured"}),
    ("azure-current", with_reach(BEHIND_NAT, ike_udp500=True, ike_natt_udp4500=False), req(vpn_device=True),
     ("conditional", "infeasible", "unknown", "unknown"),
     {"current.s2s.natt-unreachable"}),
    ("azure-2015", with_reach(MEASURED_PUBLIC, ike_udp500=True, esp=True, sstp=True), req(vpn_device=True),
     ("feasible", "feasible", "unknown", "unknown"),
     {"2015.s2s.esp-echoed"}),
    ("azure-current", with_reach(MEASURED_PUBLIC, ike_udp500=True, esp=True, tls_tcp443=True, sstp=True), req(vpn_device=True),
     ("feasible", "feasible", "unknown", "unknown"),
     {"current.s2s.esp-echoed"}),
    # Silence proves nothing: conditional, naming a filter and a gateway not configured for this site.
    ("azure-current", with_reach(BEHIND_NAT, mtu=SILENT, ike_udp500=SILENT, ike_natt_udp4500=SILENT, esp=SILENT,
                                 tls_tcp443=SILENT, sstp=SILENT, gateway_health=SILENT), req(vpn_device=True),
     ("conditional", "conditional", "unknown", "unknown"),
     {"current.s2s.ike-silent", "current.p2s.tls-silent", "current.s2s.health-probe-silent",
      "current.s2s.mtu-not-measured"}),
    ("azure-current", with_reach(without_site_address(BEHIND_NAT), ike_udp500=SILENT, sstp=True), req(vpn_device=True),
     ("feasible", "conditional", "unknown", "unknown"),
     {"current.s2s.ike-silent-address-unknown"}),
    ("azure-current", with_reach(MEASURED_PUBLIC, ike_udp500=True, ikev1_udp500=SILENT, esp=True, sstp=True),
     req(vpn_device=True),
     ("feasible", "feasible", "unknown", "unknown"),
     {"current.s2s.ikev1-silent"}),
    ("azure-2015", with_reach(MEASURED_PUBLIC, ike_udp500=SILENT, sstp=SILENT), req(vpn_device=True),
     ("conditional", "conditional", "unknown", "unknown"),
     {"2015.s2s.ike-silent", "2015.p2s.sstp-silent"}),
    ("azure-2015", with_reach(without_site_address(MEASURED_PUBLIC), ike_udp500=SILENT, sstp=True), req(vpn_device=True),
     ("feasible", "conditional", "unknown", "unknown"),
     {"2015.s2s.ike-silent-address-unknown"}),
    ("azure-2015", with_reach(MEASURED_PUBLIC, ike_udp500=True, ikev1_udp500=SILENT, esp=True, sstp=True),
     req(vpn_device=True),
     ("feasible", "feasible", "unknown", "unknown"),
     {"2015.s2s.ikev1-silent"}),
    # Connected, then silent: a black hole, neither a block nor "not measured".
    ("azure-current", with_reach(MEASURED_PUBLIC, ike_udp500=True, esp=True, tls_tcp443=STALLED, sstp=STALLED),
     req(vpn_device=True),
     ("conditional", "feasible", "unknown", "unknown"),
     {"current.p2s.tls-stalled"}),
    ("azure-2015", with_reach(MEASURED_PUBLIC, ike_udp500=True, esp=True, sstp=STALLED), req(vpn_device=True),
     ("conditional", "feasible", "unknown", "unknown"),
     {"2015.p2s.sstp-stalled"}),
    # A web server on 443: TLS answers, SSTP does not.
    ("azure-current", with_reach(MEASURED_PUBLIC, tls_tcp443=True, sstp=False), req(vpn_device=True),
     ("conditional", "conditional", "unknown", "unknown"),
     {"current.p2s.sstp-unavailable", "current.p2s.tls-reachable"}),
    # Clients: the seed's "a few", today's SSTP limit of 128 and the largest gateway's 10,000.
    ("azure-2015", MEASURED_PUBLIC, req(clients=50),
     ("conditional", "conditional", "unknown", "unknown"), {"2015.p2s.many-clients"}),
    ("azure-current", MEASURED_PUBLIC, req(clients=500),
     ("conditional", "conditional", "unknown", "unknown"), {"current.p2s.sstp-clients"}),
    ("azure-current", MEASURED_PUBLIC, req(clients=20_000),
     ("infeasible", "conditional", "unknown", "unknown"), {"current.p2s.too-many-clients"}),
]


@pytest.mark.parametrize(("ruleset", "facts", "requirements", "verdicts", "rules"), TABLE)
def test_verdict_table(ruleset, facts, requirements, verdicts, rules):
    result = evaluate(load_ruleset(ruleset), facts, requirements)
    got = tuple(result["options"][option]["verdict"] for option in OPTIONS)
    assert got == verdicts
    fired = {reason["rule"] for option in OPTIONS for reason in result["options"][option]["reasons"]}
    assert rules <= fired, f"missing {sorted(rules - fired)}"


@pytest.mark.parametrize("ruleset", available_rulesets())
def test_every_rule_is_reached_by_the_table(ruleset):
    """A rule no scenario reaches is either dead or untested."""
    fired = set()
    for name, facts, requirements, _, _ in TABLE:
        if name == ruleset:
            result = evaluate(load_ruleset(name), facts, requirements)
            fired |= {r["rule"] for o in OPTIONS for r in result["options"][o]["reasons"]}
    assert {rule.id for rule in load_ruleset(ruleset).rules} - fired == set()


def test_reasons_name_rule_source_and_facts_and_worst_comes_first():
    result = evaluate(load_ruleset("azure-2015"), BEHIND_NAT, req(vpn_device=True))
    s2s = result["options"]["s2s"]
    first = s2s["reasons"][0]
    assert first["verdict"] == "infeasible"
    nat_reason = next(r for r in s2s["reasons"] if r["rule"] == "2015.s2s.behind-nat")
    assert nat_reason["source"].startswith("About secure cross-premises connectivity for virtual networks (2015-08-07)")
    assert nat_reason["facts"]["facts.nat.detected"] is True
    assert nat_reason["facts"]["facts.nat.reflexive_address"] == "203.0.113.1"
    assert "203.0.113.1:1024" in nat_reason["text"] and "10.0.0.2:40000" in nat_reason["text"]


def test_rate_placeholders_read_as_rates():
    result = evaluate(load_ruleset("azure-current"), MEASURED_PUBLIC, req(bandwidth_bits_per_second=2e9))
    text = next(r["text"] for r in result["options"]["s2s"]["reasons"] if r["rule"] == "current.s2s.bandwidth-several-tunnels")
    assert "2 Gbit/s" in text and "1 Gbit/s" in text and "VpnGw3" in text
    assert format_rate(650e6) == "650 Mbit/s" and format_rate(999) == "999 bit/s"


def test_recommendation_ranks_by_verdict_then_preference():
    rs = load_ruleset("azure-current")
    colocated = evaluate(rs, MEASURED_PUBLIC, req(colocation=True, nsp_wan=False, vpn_device=True))
    # ExpressRoute EXP is feasible, the VPN options conditional, NSP infeasible (never recommended).
    assert colocated["recommendation"] == ["expressroute_exp", "s2s", "p2s"]
    few = evaluate(rs, MEASURED_PUBLIC, req(clients=3, vpn_device=True))
    assert few["recommendation"][:2] == ["p2s", "s2s"]
    many = evaluate(rs, MEASURED_PUBLIC, req(clients=300, vpn_device=True))
    assert many["recommendation"][:2] == ["s2s", "p2s"]
    none = evaluate(rs, MEASURED_PUBLIC, req(private_only=True, colocation=False, nsp_wan=False))
    assert none["recommendation"] == []


def test_lookup_treats_absent_parts_as_not_measured():
    context = {"facts": {"nat": {"detected": False}}}
    assert lookup(context, "facts.nat.detected") is False
    assert lookup(context, "facts.reachability.sstp.reachable") is None
    assert lookup(context, "facts.nat.detected.deeper") is None


def test_unknown_ruleset_is_refused_with_the_known_ones():
    with pytest.raises(RuleSetError, match="azure-2015"):
        load_ruleset("azure-1999")


@pytest.mark.parametrize("rule", [
    'id = "r1"\noption = "p3s"\nverdict = "feasible"\nwhen = {}\ntext = "t"\nsource = "seed-s2s"',
    'id = "r2"\noption = "p2s"\nverdict = "maybe"\nwhen = {}\ntext = "t"\nsource = "seed-s2s"',
    'id = "r3"\noption = "p2s"\nverdict = "feasible"\nwhen = {}\ntext = "t"\nsource = "nowhere"',
    'id = "r4"\noption = "p2s"\nverdict = "feasible"\nwhen = { "facts.nat.detected" = { approx = 1 } }\ntext = "t"\nsource = "seed-s2s"',
    'id = "r5"\noption = "p2s"\nverdict = "feasible"\nwhen = { "weather.x" = 1 }\ntext = "t"\nsource = "seed-s2s"',
    'id = "r6"\noption = "p2s"\nverdict = "feasible"\nwhen = {}\ntext = "value {secrets.key}"\nsource = "seed-s2s"',
])
def test_broken_rule_files_are_refused(rule):
    shipped = (Path(__file__).parent.parent / "agent" / "rules" / "azure-2015.toml").read_text()
    with pytest.raises(RuleSetError, match=rule.split('"')[1]):
        parse_ruleset(f"{shipped}\n[[rules]]\n{rule}\n", "azure-2015")


@pytest.mark.parametrize("ruleset", available_rulesets())
def test_a_stalled_connection_is_neither_a_block_nor_not_measured(ruleset):
    stalled = with_reach(MEASURED_PUBLIC, ike_udp500=True, esp=True, tls_tcp443=STALLED, sstp=STALLED)
    result = evaluate(load_ruleset(ruleset), stalled, req(vpn_device=True))
    fired = {reason["rule"].split(".", 1)[1] for reason in result["options"]["p2s"]["reasons"]}
    assert "p2s.sstp-stalled" in fired or "p2s.tls-stalled" in fired
    assert not {"p2s.sstp-not-measured", "p2s.tls-not-measured", "p2s.sstp-silent", "p2s.tls-silent",
                "p2s.sstp-unreachable", "p2s.sstp-unavailable"} & fired


@pytest.mark.parametrize("ruleset", available_rulesets())
def test_silence_is_neither_a_block_nor_not_measured(ruleset):
    """Bare silence fires the silence rules only: not "blocked", not "not measured in this run"."""
    silent = with_reach(BEHIND_NAT, mtu=SILENT, ike_udp500=SILENT, ike_natt_udp4500=SILENT, ikev1_udp500=SILENT,
                        esp=SILENT, tls_tcp443=SILENT, sstp=SILENT, gateway_health=SILENT)
    result = evaluate(load_ruleset(ruleset), silent, req(vpn_device=True))
    fired = {reason["rule"].split(".", 1)[1]: reason for option in OPTIONS for reason in result["options"][option]["reasons"]}
    assert {"s2s.ike-silent", "p2s.sstp-silent" if ruleset == "azure-2015" else "p2s.tls-silent"} <= set(fired)
    assert not {"s2s.ipsec-not-measured", "p2s.sstp-not-measured", "p2s.tls-not-measured", "s2s.ike-unreachable",
                "s2s.natt-unreachable", "p2s.sstp-unreachable", "p2s.nothing-reachable"} & set(fired)
    assert "203.0.113.1" in fired["s2s.ike-silent"]["text"]
    assert fired["s2s.ike-silent"]["facts"]["facts.public_ipv4.site_address"] == "203.0.113.1"
