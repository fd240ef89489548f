"""`xcheck audit` as a whole: the routing side's rules (forwarding, BGP, overlaps, the plan), the
CLI over the readers' corpora (every output format, --fail-on, hostile input), the audit inside
the run's report and its metrics. The readers and the IPsec and firewall rules have their own
tests (test_ipsec_*, test_firewall_*, and against the real parsers and kernel in the lab)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
from conftest import XCHECK

from agent.audit.findings import ParseState
from agent.audit.routing import BgpSpeaker, RoutingContext, judge_routing, onprem_prefixes, read_bgp_speaker
from agent.report import audit_schema
from agent.verdicts import load_ruleset

FIXTURES = Path(__file__).parent / "fixtures"
CURRENT, Y2015 = load_ruleset("azure-current").audit, load_ruleset("azure-2015").audit
N = ipaddress.IPv4Network


def ids(findings) -> list[str]:
    return [f.id for f in findings]


# ---------------------------------------------------------------- routing side

@pytest.mark.parametrize("vpn_device, ip_forward, fires", [
    (True, False, True), (True, True, False), (None, False, False), (True, None, False)])
def test_ip_forward_on_the_declared_vpn_device(vpn_device, ip_forward, fires):
    found = judge_routing(RoutingContext(vpn_device=vpn_device, ip_forward=ip_forward), CURRENT)
    assert ids(found) == (["routing.ip-forward"] if fires else [])


@pytest.mark.parametrize("asn, reserved", [
    (65515, True), (65517, True), (65520, True), (8075, True), (12076, True), (23456, True), (64500, True),
    (65535, True), (4294967295, True), (65010, False), (65514, False), (65521, False), (4200000000, False)])
def test_reserved_asns(asn, reserved):
    found = judge_routing(RoutingContext(asn=asn), CURRENT)
    assert ids(found) == (["bgp.asn-reserved"] if reserved else [])
    if reserved:
        assert str(asn) in found[0].text and found[0].evidence.file == "--asn"


def test_bgp_peer_address_rules():
    public = judge_routing(RoutingContext(bgp_peer_address="198.51.100.2", public_address="198.51.100.2"), CURRENT)
    assert ids(public) == ["bgp.peer-address"] and "public address" in public[0].text
    outside = judge_routing(RoutingContext(bgp_peer_address="169.254.30.1"), CURRENT)
    assert ids(outside) == ["bgp.peer-address"] and "169.254.21.0-169.254.22.255" in outside[0].text
    for fine in ("169.254.21.1", "169.254.22.255", "10.2.0.1"):
        assert judge_routing(RoutingContext(bgp_peer_address=fine, public_address="198.51.100.2"), CURRENT) == []


def test_overlaps_with_the_vnet_and_the_expressroute_subnets():
    site = onprem_prefixes([N("10.0.0.0/16")], [("192.168.0.0/24", "swanctl.conf:12"), ("0.0.0.0/0", "x:1")])
    assert [str(n) for n, _ in site] == ["10.0.0.0/16", "192.168.0.0/24"]  # any-to-any is no prefix
    found = judge_routing(RoutingContext(onprem_prefixes=site, vnet_prefixes=(N("192.168.0.128/25"),)), CURRENT)
    assert ids(found) == ["overlap.vnet"] and "swanctl.conf:12" in found[0].text
    assert judge_routing(RoutingContext(onprem_prefixes=site, vnet_prefixes=(N("10.1.0.0/16"),)), CURRENT) == []
    er = judge_routing(RoutingContext(onprem_prefixes=site, vnet_prefixes=(N("10.1.0.0/16"),),
                                      expressroute_subnets=(N("10.1.5.0/29"), N("172.16.0.0/28"))), CURRENT)
    assert sorted(f.text.split(":")[0] for f in er) == [
        "the ExpressRoute peering subnet 10.1.5.0/29 overlaps 10.1.0.0/16 (--vnet-prefix)",
        "the ExpressRoute peering subnet 172.16.0.0/28 is a /28"]
    good = RoutingContext(onprem_prefixes=site, expressroute_subnets=(N("172.16.0.0/30"), N("172.16.0.4/30")))
    assert judge_routing(good, CURRENT) == []


def test_the_plan_against_each_rule_set():
    both = RoutingContext(plan=("p2s", "expressroute"))
    assert ids(judge_routing(both, Y2015)) == ["plan.coexistence"]  # the 2015 page forbade it
    assert judge_routing(both, CURRENT) == []  # the 2019 coexistence page allows it
    s2s = RoutingContext(plan=("s2s", "expressroute"), gateway_type="policy-based", gateway_sku="Basic")
    found = judge_routing(s2s, CURRENT)
    assert ids(found) == ["plan.coexistence"] and "policy-based and the gateway SKU is Basic" in found[0].text
    assert judge_routing(RoutingContext(plan=("s2s", "expressroute"), gateway_type="route-based",
                                        gateway_sku="VpnGw1"), CURRENT) == []


def test_bgp_speakers_from_frr_and_bird(tmp_path):
    frr = tmp_path / "frr.conf"
    frr.write_text("! FRR\nrouter bgp 65515\n neighbor 10.2.0.4 remote-as 65515\n"
                   " neighbor 10.2.0.4 update-source 198.51.100.2\n")
    speaker, status = read_bgp_speaker(frr, "frr")
    assert status.status is ParseState.PARSED
    assert speaker == BgpSpeaker(str(frr), 65515, 2, (("198.51.100.2", 4),))
    found = judge_routing(RoutingContext(speakers=(speaker,), public_address="198.51.100.2"), CURRENT)
    assert sorted(ids(found)) == ["bgp.asn-reserved", "bgp.peer-address"]
    assert {(f.evidence.file, f.evidence.line) for f in found} == {(str(frr), 2), (str(frr), 4)}
    bird = tmp_path / "bird.conf"
    bird.write_text("protocol bgp azure {\n  local 169.254.21.1 as 65010;\n  neighbor 169.254.21.2 as 65515;\n}\n")
    speaker, _ = read_bgp_speaker(bird, "bird")
    assert speaker.asn == 65010 and speaker.peer_addresses == (("169.254.21.1", 2),)
    assert judge_routing(RoutingContext(speakers=(speaker,)), CURRENT) == []
    empty = tmp_path / "empty.conf"
    empty.write_text("hostname x\n")
    assert read_bgp_speaker(empty, "frr")[1].status is ParseState.PARTIALLY_UNRECOGNIZED
    binary = tmp_path / "junk.conf"
    binary.write_bytes(b"\x00\x01" * 100)
    speaker, status = read_bgp_speaker(binary, "frr")
    assert speaker is None and status.status is ParseState.FAILED and "binary" in status.detail


# ---------------------------------------------------------------- the command

def audit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([XCHECK, "audit", *args], capture_output=True, text=True, timeout=timeout)


def document(completed: subprocess.CompletedProcess) -> dict:
    found = json.loads(completed.stdout)
    jsonschema.Draft202012Validator(audit_schema()).validate(found)
    return found


EMPTY_FIREWALL = '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "x", "json_schema_version": 1}}]}'


def test_audit_of_a_good_and_a_broken_site(tmp_path):
    nft = tmp_path / "ruleset.json"
    nft.write_text(EMPTY_FIREWALL)
    good = FIXTURES / "ipsec_rules" / "site-good.conf"
    broken = FIXTURES / "ipsec_rules" / "site-rekey-pfs.conf"
    common = ("--firewall", str(nft), "--gateway", "203.0.113.10", "--gateway-type", "route-based",
              "--onprem-prefix", "10.10.0.0/16", "--vnet-prefix", "10.20.0.0/16", "--format", "json")
    ok = audit("--ipsec-config", str(good), *common)
    assert ok.returncode == 0, ok.stderr
    findings = document(ok)["audit"]["findings"]
    assert not [f for f in findings if f["severity"] == "error"], findings
    bad = audit("--ipsec-config", str(broken), *common, "--fail-on", "error")
    assert bad.returncode == 1 and "--fail-on error" in bad.stderr
    errors = [f for f in document(bad)["audit"]["findings"] if f["severity"] == "error"]
    assert [f["id"] for f in errors] == ["ipsec.rekey-proposal"]
    assert errors[0]["evidence"]["file"] == str(broken) and errors[0]["evidence"]["line"] >= 1


def test_text_and_markdown_group_findings_by_option_with_their_fix(tmp_path):
    nft = tmp_path / "ruleset.json"
    nft.write_text(EMPTY_FIREWALL)
    args = ("--ipsec-config", str(FIXTURES / "ipsec_rules" / "site-rekey-pfs.conf"), "--firewall", str(nft),
            "--asn", "65515", "--plan", "s2s,expressroute", "--gateway-type", "policy-based")
    text = audit(*args)
    assert text.returncode == 0, text.stderr
    assert "Site-to-Site" in text.stdout and "bgp.asn-reserved" in text.stdout and "fix" in text.stdout
    markdown = audit(*args, "--format", "markdown")
    assert "#### Site-to-Site" in markdown.stdout and "_Fix:_" in markdown.stdout
    assert "`bgp.asn-reserved`" in markdown.stdout


def test_hostile_input_is_a_failed_status_and_a_finding_never_a_crash(tmp_path):
    junk = tmp_path / "junk.conf"
    junk.write_bytes(bytes(range(256)) * 64)
    loop = tmp_path / "loop.conf"
    loop.write_text(f"include {loop}\n")
    fw = tmp_path / "fw.txt"
    fw.write_bytes(b"\x00garbage")
    completed = audit("--ipsec-config", str(junk), "--ipsec-config", str(loop), "--firewall", str(fw),
                      "--format", "json", "--fail-on", "warning")
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    found = document(completed)["audit"]
    statuses = {s["file"]: s for s in found["inputs"]}
    assert statuses[str(junk)]["status"] == "failed" and statuses[str(fw)]["status"] == "failed"
    assert any(s["status"] == "failed" and "loop" in s["detail"] for s in found["inputs"]), found["inputs"]
    assert {f["id"] for f in found["findings"]} >= {"parse.failed"}


def test_bad_declarations_are_usage_errors():
    completed = audit("--vnet-prefix", "10.1.0.1/16", "--asn", "0", "--plan", "p2s,vpn")
    assert completed.returncode == 2
    for named in ("--vnet-prefix", "--asn", "--plan"):
        assert named in completed.stderr


@pytest.mark.parametrize("output_format", ["text", "json", "markdown"])
def test_no_pre_shared_key_in_any_output(tmp_path, output_format):
    """The whole output is scanned, not the fields we know: a key, its halves, nowhere."""
    secrets = {"psk-short.conf": "az1234", "good-route-based.conf": "Xk3pQ9vL2mN8rT5wY7zB4cF6hJ1sD0gA"}
    for name, secret in secrets.items():
        completed = audit("--ipsec-config", str(FIXTURES / "ipsec" / "swanctl" / name), "--firewall",
                          str(FIXTURES / "firewall_read" / "gateway-host.json"), "--gateway", "203.0.113.10",
                          "--format", output_format)
        assert completed.returncode == 0, completed.stderr
        whole = completed.stdout + completed.stderr
        for piece in (secret, secret[: len(secret) // 2], secret[len(secret) // 2:]):
            assert piece not in whole, (name, output_format)
        if name == "psk-short.conf":
            assert "ipsec.psk-weak" in whole  # judged by its length, which is all that is kept


# ---------------------------------------------------------------- packet size

LIMITS = load_ruleset("azure-current").limits


def _clamp_missing():
    from agent.audit.findings import Evidence, Finding, Severity

    return Finding("mtu.mss-clamp", Severity.WARNING, "site", "No rule clamps the TCP MSS.", "clamp it",
                   "vpn-devices", Evidence("nft -j list ruleset"))


def test_a_tunnel_interface_of_1400_stands_in_for_the_clamp():
    from agent.audit.mtu import judge_mtu

    settled = judge_mtu([_clamp_missing()], {"eth0": 1500, "xfrm0": 1400}, None, LIMITS)
    assert ids(settled) == ["mtu.tunnel-mtu"] and "xfrm0 (MTU 1400)" in settled[0].text
    kept = judge_mtu([_clamp_missing()], {"eth0": 1500, "vti0": 1480}, None, LIMITS)
    assert ids(kept) == ["mtu.mss-clamp"] and "vti0 (MTU 1480) is above 1400" in kept[0].text
    assert ids(judge_mtu([_clamp_missing()], {"eth0": 1400}, None, LIMITS)) == ["mtu.mss-clamp"]  # not a tunnel


def test_a_measured_path_smaller_than_azures_sizing_asks_for_a_smaller_clamp():
    from agent.audit.mtu import judge_mtu

    found = judge_mtu([], {}, 1420, LIMITS)
    assert ids(found) == ["mtu.path-mtu"] and "clamp the MSS at 1270" in found[0].fix
    assert judge_mtu([], {}, 1500, LIMITS) == [] and judge_mtu([], {}, None, LIMITS) == []


def test_rules_on_the_output_interface_are_judged_with_the_routes_interface(tmp_path):
    """The interface toward the gateway is the route's (here lo, toward 127.0.0.5): a rule that
    matches on it decides, rather than leaving every flow unknown."""
    saved = tmp_path / "iptables.save"
    saved.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n"
                     "-A OUTPUT -o lo -p udp -m udp --dport 4500 -j DROP\n-A OUTPUT -o lo -j ACCEPT\nCOMMIT\n")
    completed = audit("--firewall", str(saved), "--ipsec-config", str(tmp_path / "none.conf"),
                      "--gateway", "127.0.0.5", "--format", "json")
    assert completed.returncode == 0, completed.stderr
    firewall = [f for f in document(completed)["audit"]["findings"] if f["id"].startswith("firewall.")]
    assert [f["id"] for f in firewall] == ["firewall.udp4500"], firewall
    assert firewall[0]["evidence"] == {"file": str(saved), "line": 5}
