"""judge_firewall's findings: each fires where the firewall stops a VPN packet (or cannot be told)
and not where it passes; the deciding rule, its fix, the measured reachability beside it; the MSS
clamp."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from agent.audit.findings import Severity
from agent.audit.firewall import judge_firewall, read_iptables_save, read_nft_json
from agent.audit.firewall.judge import FLOWS
from agent.audit.firewall.ruleset import Ruleset

FIXTURES = Path(__file__).parent / "fixtures" / "firewall_read"
RULES = Path(__file__).parent.parent / "agent" / "rules"
SITE, GATEWAY = "198.51.100.2", "203.0.113.10"
AUDIT_IDS = {"firewall.udp500", "firewall.udp4500", "firewall.esp", "firewall.tcp443", "firewall.unknown",
             "mtu.mss-clamp"}
CLAMPED = ["*mangle", ":FORWARD ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]",
           "-A POSTROUTING -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1350", "COMMIT"]


def rules(*lines: str, clamp: bool = True, name: str = "rules.v4") -> Ruleset:
    text = "\n".join(["*filter", *lines, "COMMIT", *(CLAMPED if clamp else [])]) + "\n"
    ruleset, status = read_iptables_save(text, name)
    assert ruleset is not None, status
    return ruleset


def fixture(name: str) -> Ruleset:
    text = (FIXTURES / name).read_text()
    reader = read_nft_json if name.endswith(".json") else read_iptables_save
    return reader(text, name)[0]


def judge(rulesets, gateways=(GATEWAY,), reachability=None, **options):
    return judge_firewall(list(rulesets), list(gateways), options.pop("site_address", SITE), reachability,
                          wan_interface=options.pop("wan_interface", "eth0"), **options)


def by_id(findings, finding_id):
    return [f for f in findings if f.id == finding_id]


def silence(check: str, gateway: str = GATEWAY, reachable=None, reason="no_response") -> dict:
    return {check: {"reachable": reachable, "reason": reason, "detail": "",
                    "gateways": [{"gateway": gateway, "reachable": reachable, "reason": reason, "detail": ""}]}}


OPEN = rules(":INPUT DROP [0:0]", ":OUTPUT ACCEPT [0:0]", "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")


def test_an_open_firewall_has_no_findings():
    assert judge([OPEN]) == []


@pytest.mark.parametrize("flow", FLOWS, ids=[flow.id for flow in FLOWS])
def test_each_flow_dropped_on_output_fires(flow):
    match = {"udp": f"-p udp -m udp --dport {flow.port}", "esp": "-p esp", "tcp": f"-p tcp -m tcp --dport {flow.port}"}
    ruleset = rules(":INPUT DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
                    "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                    "-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT",
                    f"-A OUTPUT -d {GATEWAY}/32 {match[flow.protocol.value]} -j DROP")
    findings = judge([ruleset])
    assert [f.id for f in findings] == [flow.id]
    finding = findings[0]
    assert finding.severity is flow.severity and finding.option == flow.option and finding.source == flow.source
    assert (finding.evidence.file, finding.evidence.line) == ("rules.v4", 6)
    assert f"-A OUTPUT -d {GATEWAY}/32" in finding.text and "sent by this host" in finding.text
    assert GATEWAY in finding.text and "(output path)" in finding.text
    expected = {"udp": f"-p udp --dport {flow.port}", "esp": "-p esp", "tcp": f"-p tcp --dport {flow.port}"}
    assert f"`iptables -t filter -I OUTPUT 2 -d {GATEWAY} {expected[flow.protocol.value]} -j ACCEPT`" in finding.fix


def test_severities_and_options():
    assert {f.id: (f.severity, f.option) for f in FLOWS} == {
        "firewall.udp500": (Severity.ERROR, "s2s"), "firewall.udp4500": (Severity.ERROR, "s2s"),
        "firewall.esp": (Severity.WARNING, "s2s"), "firewall.tcp443": (Severity.ERROR, "p2s")}


def test_reject_is_named_as_such():
    ruleset = rules(":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", "-A OUTPUT -p tcp -m tcp --dport 443 -j REJECT")
    finding, = judge([ruleset])
    assert finding.id == "firewall.tcp443" and finding.text.startswith("The firewall rejects TCP 443")


def test_answers_dropped_on_input_fire_with_a_conntrack_fix():
    ruleset = rules(":INPUT DROP [0:0]", ":OUTPUT ACCEPT [0:0]", "-A INPUT -i lo -j ACCEPT")
    findings = judge([ruleset])
    assert {f.id for f in findings} == {"firewall.udp500", "firewall.udp4500", "firewall.esp", "firewall.tcp443"}
    for finding in findings:
        assert "answers coming back to this host from 203.0.113.10" in finding.text and "(input path)" in finding.text
        assert finding.evidence.line == 2  # :INPUT DROP
        assert "`iptables -t filter -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`" in finding.fix


def test_answers_of_notracked_packets_need_an_address_rule():
    ruleset = read_iptables_save("\n".join([
        "*raw", ":OUTPUT ACCEPT [0:0]", ":PREROUTING ACCEPT [0:0]",
        "-A OUTPUT -p udp -m udp --dport 4500 -j CT --notrack", "COMMIT",
        "*filter", ":INPUT DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
        "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "COMMIT", *CLAMPED]), "rules.v4")[0]
    finding, = judge([ruleset])
    assert finding.id == "firewall.udp4500" and "notracked" in finding.text
    assert f"`iptables -t filter -A INPUT -s {GATEWAY} -p udp --sport 4500 -j ACCEPT`" in finding.fix


def test_nft_drop_names_rule_by_handle_and_fix_inserts_before_it():
    findings = judge([fixture("gateway-host.json")], ["203.0.113.99"])
    udp4500, = by_id(findings, "firewall.udp4500")
    assert udp4500.severity is Severity.ERROR
    assert "udp dport 4500 reject with icmpx port-unreachable # handle 36" in udp4500.text
    assert "table inet filter, chain out_eth" in udp4500.text
    assert "`nft insert rule inet filter out_eth handle 36 ip daddr 203.0.113.99 udp dport 4500 accept`" in udp4500.fix
    assert (udp4500.evidence.file, udp4500.evidence.line) == ("gateway-host.json", None)
    esp, = by_id(findings, "firewall.esp")
    assert esp.severity is Severity.WARNING and "ip protocol esp drop # handle 37" in esp.text
    assert not by_id(findings, "firewall.udp500") and not by_id(findings, "firewall.tcp443")


def test_nft_gateway_host_passes_its_gateways():
    assert judge([fixture("gateway-host.json")], [GATEWAY, "198.51.100.5"], forwards=True, lan_interface="lan0",
                 forwarded_source="10.0.0.5") == []


def test_forward_is_judged_only_on_a_host_that_forwards():
    ruleset = fixture("gateway-host.iptables-nft.save")
    options = dict(lan_interface="lan0", forwarded_source="10.0.0.5")
    forwarded = [f for f in judge([ruleset], forwards=True, **options) if "(forward path)" in f.text]
    assert [f.id for f in forwarded] == ["firewall.udp4500"]  # raw notracks UDP 4500: its answers are not established
    assert "answers forwarded back through this host" in forwarded[0].text and "(forward path)" in forwarded[0].text
    assert "-A FORWARD -s 203.0.113.10 -p udp --sport 4500 -j ACCEPT" in forwarded[0].fix
    assert not [f for f in judge([ruleset], forwards=False, **options) if "(forward path)" in f.text]


def test_unknown_names_the_rule_it_could_not_judge():
    ruleset = rules(":INPUT ACCEPT [0:0]", ":OUTPUT DROP [0:0]", "-A OUTPUT -m owner --uid-owner 0 -j ACCEPT")
    findings = judge([ruleset])
    assert {f.id for f in findings} == {"firewall.unknown"}
    assert len(findings) == 4  # one per flow: UDP 500, UDP 4500, ESP, TCP 443
    for finding in findings:
        assert finding.severity is Severity.WARNING and finding.evidence.line == 4
        assert "-m owner --uid-owner 0" in finding.text and "cannot be told" in finding.text
        assert "watch its counters" in finding.fix


def test_unknown_does_not_fire_when_the_rule_cannot_match():
    ruleset = rules(":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                    "-A OUTPUT -p tcp -m tcp --dport 22 -m owner --uid-owner 0 -j DROP")
    assert judge([ruleset]) == []


def test_what_is_not_known_makes_rules_on_it_unknown():
    ruleset = rules(":INPUT ACCEPT [0:0]", ":OUTPUT DROP [0:0]", f"-A OUTPUT -s {SITE}/32 -j ACCEPT")
    assert judge([ruleset]) == []
    unknown = judge([ruleset], site_address=None)
    assert {f.id for f in unknown} == {"firewall.unknown"} and "source address" in unknown[0].text
    by_name = rules(":INPUT ACCEPT [0:0]", ":OUTPUT DROP [0:0]", "-A OUTPUT -d 203.0.113.0/24 -j ACCEPT")
    assert {f.id for f in judge([by_name], ["vpngw.example.net"])} == {"firewall.unknown"}
    assert judge([by_name]) == []


def test_gateways_stopped_by_one_rule_are_one_finding():
    ruleset = rules(":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", "-A OUTPUT -p udp -m udp --dport 500 -j DROP")
    gateways = [f"203.0.113.{i}" for i in range(1, 9)]
    finding, = judge([ruleset], gateways)
    assert "203.0.113.1, 203.0.113.2, 203.0.113.3, 203.0.113.4, 203.0.113.5 and 3 more gateways" in finding.text
    assert "-d GATEWAY -p udp --dport 500" in finding.fix and "for each gateway" in finding.fix


def test_drop_beside_measured_silence():
    ruleset = rules(":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", "-A OUTPUT -p udp -m udp --dport 4500 -j DROP")
    finding, = judge([ruleset], reachability=silence("ike_natt_udp4500"))
    assert finding.text.endswith("The probe saw: ike_natt_udp4500 to 203.0.113.10: silence (no_response).")
    finding, = judge([ruleset], reachability=silence("ike_natt_udp4500", reachable=True, reason="success"))
    assert "Yet the probe got an answer (ike_natt_udp4500 to 203.0.113.10)" in finding.text
    finding, = judge([ruleset], reachability=silence("ike_natt_udp4500", gateway="203.0.113.11"))
    assert "probe" not in finding.text  # that gateway was not measured
    finding, = judge([ruleset], reachability=None)
    assert "probe" not in finding.text


def test_firewall_that_passes_what_the_probe_did_not_get_says_look_elsewhere():
    findings = judge([OPEN], reachability=silence("ike_udp500"))
    finding, = findings
    assert (finding.id, finding.severity) == ("firewall.udp500", Severity.INFO)
    assert "beyond this host" in finding.text and "ike_udp500 to 203.0.113.10: silence (no_response)" in finding.text
    assert judge([OPEN], reachability=silence("ike_udp500", reachable=True, reason="success")) == []
    refused = judge([OPEN], reachability=silence("tls_tcp443", reachable=False, reason="prohibited"))
    assert [(f.id, f.severity) for f in refused] == [("firewall.tcp443", Severity.INFO)]


# MSS clamp ---------------------------------------------------------------------------------------

def test_no_clamp_on_a_forwarding_host_is_a_warning():
    finding, = judge([rules(":INPUT ACCEPT [0:0]", clamp=False)], forwards=True)
    assert (finding.id, finding.severity, finding.option, finding.source) == (
        "mtu.mss-clamp", Severity.WARNING, "site", "vpn-devices")
    assert "No rule clamps" in finding.text and "--set-mss 1350" in finding.fix and "MTU to 1400" in finding.fix


def test_no_clamp_on_a_host_that_does_not_forward_is_info():
    finding, = judge([rules(":INPUT ACCEPT [0:0]", clamp=False)], forwards=False)
    assert (finding.id, finding.severity) == ("mtu.mss-clamp", Severity.INFO)


@pytest.mark.parametrize("target, fires", [
    ("--set-mss 1350", False), ("--set-mss 1300", False), ("--set-mss 1400", True), ("--clamp-mss-to-pmtu", True)])
def test_clamp_size(target, fires):
    ruleset = read_iptables_save("\n".join([
        "*mangle", ":FORWARD ACCEPT [0:0]", f"-A FORWARD -o eth0 -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS {target}",
        "COMMIT"]) + "\n", "rules.v4")[0]
    findings = by_id(judge([ruleset], forwards=True), "mtu.mss-clamp")
    if not fires:
        assert findings == []
        return
    finding, = findings
    assert finding.severity is Severity.WARNING and finding.evidence.line == 3 and target in finding.text
    assert ("above 1350" if "1400" in target else "route's MTU") in finding.text


def test_clamp_from_the_real_listings():
    assert not by_id(judge([fixture("gateway-host.json")], forwards=True), "mtu.mss-clamp")
    finding, = by_id(judge([fixture("gateway-host.iptables-legacy.save")], forwards=True), "mtu.mss-clamp")
    assert "--set-mss 1400" in finding.text and "at 1400, above 1350" in finding.text


def test_no_ruleset_read_means_nothing_to_judge():
    # None could be read (their parse status says why): "no rule clamps" would be a guess.
    assert judge([], forwards=True) == []
    # An empty ruleset that was read is another matter: nothing filters, and nothing clamps.
    assert [f.id for f in judge([rules(":INPUT ACCEPT [0:0]", clamp=False)], forwards=True)] == ["mtu.mss-clamp"]


def test_several_rulesets_are_in_force_together():
    nft = fixture("host.json")  # drops UDP 500 to 203.0.113.55
    legacy = read_iptables_save((FIXTURES / "host-legacy.iptables").read_text(), "iptables-legacy-save")[0]  # 4500 to .77
    findings = judge([nft, legacy, rules(":INPUT ACCEPT [0:0]")], ["203.0.113.55", "203.0.113.77"])
    assert sorted((f.id, f.evidence.file) for f in findings) == [
        ("firewall.udp4500", "iptables-legacy-save"), ("firewall.udp500", "host.json")]


def test_ids_and_sources_are_the_audit_design_s():
    # Read as data, not through the rule set loader: a key of azure-current's [sources] is what a finding cites.
    sources = tomllib.loads((RULES / "azure-current.toml").read_text())["sources"]
    findings = (judge([rules(":INPUT DROP [0:0]", ":OUTPUT DROP [0:0]", "-A OUTPUT -m mark --mark 1 -j ACCEPT",
                             clamp=False)], forwards=True)
                + judge([OPEN], reachability=silence("ike_udp500")))
    for flow in FLOWS:
        findings += judge([rules(":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                                 f"-A OUTPUT -p {flow.protocol.value} -j DROP")])
    assert {f.id for f in findings} == AUDIT_IDS
    for finding in findings:
        assert finding.source in sources, finding
        assert finding.text and finding.fix and "\n" not in finding.text
