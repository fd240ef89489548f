"""`xcheck audit` as a whole: the routing side's rules (forwarding, BGP, overlaps, the plan), the
CLI over the readers' corpora (every output format, --fail-on, hostile input), the audit inside
the run's report and its metrics. The readers and the IPsec and firewall rules have their own
tests (test_ipsec_*, test_firewall_*, and against the real parsers and kernel in the lab)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest
from conftest import XCHECK

from agent.audit.findings import Evidence, ParseState
from agent.audit.routing import BgpSpeaker, RoutingContext, judge_routing, onprem_prefixes, read_bgp_speaker
from agent.report import audit_schema
from agent.verdicts import load_ruleset

FIXTURES = Path(__file__).parent / "fixtures"
CURRENT, Y2015 = load_ruleset("azure-current").audit, load_ruleset("azure-2015").audit
N = ipaddress.IPv4Network


def ids(findings) -> list[str]:
    return [f.id for f in findings]


# ---------------------------------------------------------------- routing side

@pytest.mark.parametrize("needs_forwarding, ip_forward, fires", [
    (True, False, True), (True, True, False), (False, False, False), (True, None, False)])
def test_ip_forward_where_this_host_carries_the_sites_traffic(needs_forwarding, ip_forward, fires):
    found = judge_routing(RoutingContext(needs_forwarding=needs_forwarding, ip_forward=ip_forward), CURRENT)
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
    site = onprem_prefixes([N("10.0.0.0/16")], [("192.168.0.0/24", Evidence("swanctl.conf", 12)),
                                                ("0.0.0.0/0", Evidence("x", 1))])
    assert [str(n) for n, _ in site] == ["10.0.0.0/16", "192.168.0.0/24"]  # any-to-any is no prefix
    found = judge_routing(RoutingContext(onprem_prefixes=site, vnet_prefixes=(N("192.168.0.128/25"),)), CURRENT)
    assert ids(found) == ["overlap.vnet"] and "swanctl.conf:12" in found[0].text
    assert found[0].evidence == Evidence("swanctl.conf", 12)
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
    assert speaker == BgpSpeaker(str(frr), ((65515, 2),), (("198.51.100.2", 4),))
    found = judge_routing(RoutingContext(speakers=(speaker,), public_address="198.51.100.2"), CURRENT)
    assert sorted(ids(found)) == ["bgp.asn-reserved", "bgp.peer-address"]
    assert {(f.evidence.file, f.evidence.line) for f in found} == {(str(frr), 2), (str(frr), 4)}
    bird = tmp_path / "bird.conf"
    bird.write_text("protocol bgp azure {\n  local 169.254.21.1 as 65010;\n  neighbor 169.254.21.2 as 65515;\n}\n")
    speaker, _ = read_bgp_speaker(bird, "bird")
    assert speaker.asns == ((65010, 2),) and speaker.peer_addresses == (("169.254.21.1", 2),)
    assert judge_routing(RoutingContext(speakers=(speaker,)), CURRENT) == []
    ospf_only = tmp_path / "ospf.conf"
    ospf_only.write_text("hostname x\nrouter ospf\n")  # no BGP: nothing to judge, nothing misread
    assert read_bgp_speaker(ospf_only, "frr") == (BgpSpeaker(str(ospf_only), (), ()), read_bgp_speaker(ospf_only, "frr")[1])
    assert read_bgp_speaker(ospf_only, "frr")[1].status is ParseState.PARSED


def test_frr_asdot_vrfs_and_what_frr_takes_for_an_interface(tmp_path):
    frr = tmp_path / "frr.conf"
    frr.write_text("router bgp 65515.1 as-notation dot\n neighbor 10.2.0.4 update-source 169.254.999.5\n"
                   "router bgp 65515 vrf AZURE\n neighbor 10.2.0.4 update-source lo\nrouter bgp 99999999999\n")
    speaker, status = read_bgp_speaker(frr, "frr")
    # 65515.1 is 65515 x 65536 + 1, a private 4-byte ASN; the VRF's 65515 is reserved; the last is no ASN.
    assert speaker.asns == ((4293591041, 1), (65515, 3)) and speaker.peer_addresses == ()
    assert status.status is ParseState.PARTIALLY_UNRECOGNIZED and status.unrecognized[0].line == 5
    found = judge_routing(RoutingContext(speakers=(speaker,)), CURRENT)
    assert [(f.id, f.evidence.line) for f in found] == [("bgp.asn-reserved", 3)]
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


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace of its own needs root (CI runs as root)")
def test_the_hosts_own_firewall_is_judged_with_the_routes_interface(tmp_path):
    """This host's own ruleset (read with iptables-save and nft, in a namespace of the test's own) is
    judged with the interface the route toward the gateway takes (lo, toward 127.0.0.5): a rule that
    matches on it decides, rather than leaving every flow unknown."""
    saved = tmp_path / "iptables.save"
    saved.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n"
                     "-A OUTPUT -o lo -p udp -m udp --dport 4500 -j DROP\n-A OUTPUT -o lo -j ACCEPT\nCOMMIT\n")
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    script = (f"ip link set lo up && iptables-restore < {saved} && "
              f"{XCHECK} audit --ipsec-config {empty} --gateway 127.0.0.5 --format json")
    completed = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    firewall = [f for f in document(completed)["audit"]["findings"] if f["id"].startswith("firewall.")]
    assert [f["id"] for f in firewall] == ["firewall.udp4500"], firewall
    assert "-o lo -p udp" in firewall[0]["text"]


def test_a_firewall_file_is_not_judged_with_this_hosts_addresses(tmp_path):
    """A listing copied from the gateway host: this machine's interface and address say nothing of
    it, so a rule on the output interface leaves the answer unknown, never a false drop."""
    saved = tmp_path / "iptables.save"
    saved.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n"
                     "-A OUTPUT -o ens192 -j ACCEPT\nCOMMIT\n")
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    completed = audit("--firewall", str(saved), "--ipsec-config", str(empty), "--gateway", "127.0.0.5",
                      "--format", "json")
    assert completed.returncode == 0, completed.stderr
    firewall = {f["id"] for f in document(completed)["audit"]["findings"] if f["id"].startswith("firewall.")}
    assert firewall == {"firewall.unknown"}


def test_without_a_gateway_the_connections_name_it_and_a_name_is_resolved(tmp_path):
    broken = str(FIXTURES / "ipsec" / "swanctl" / "rekey-pfs-only.conf")
    fw = str(FIXTURES / "firewall" / "iptables" / "01-accept-all.rules")
    # No --gateway: the connection's own remote address (203.0.113.10) is the gateway.
    found = document(audit("--ipsec-config", broken, "--firewall", fw, "--format", "json"))["audit"]["findings"]
    assert "ipsec.rekey-proposal" in {f["id"] for f in found}
    if os.geteuid() != 0:
        pytest.skip("a hosts file of the test's own needs root (a mount namespace); CI runs as root")
    # A name is resolved before it is compared with the connection's address (a hosts file of the
    # test's own, bound over /etc/hosts in a mount namespace: no DNS is asked).
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n203.0.113.10 vpngw.example.test\n")
    script = (f"mount --bind {hosts} /etc/hosts && {XCHECK} audit --ipsec-config {broken} --firewall {fw} "
              "--gateway vpngw.example.test --format json")
    completed = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    found = {f["id"] for f in document(completed)["audit"]["findings"]}
    assert "ipsec.rekey-proposal" in found and "ipsec.remote-address" not in found


def test_named_inputs_that_cannot_be_read_are_usage_errors(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for args in (("--ipsec-config", str(tmp_path / "typo.conf")), ("--firewall", str(fifo))):
        completed = audit(*args, "--fail-on", "error", timeout=60)
        assert completed.returncode == 2 and "cannot audit" in completed.stderr, completed.stderr


def test_forward_is_judged_only_for_a_host_that_routes_for_the_vpn_device(tmp_path):
    """A strongSwan gateway host forwards its LAN (ip_forward 1) but its IKE and ESP are its own:
    FORWARD toward the gateway is asked only of a host declared to route for a device behind it."""
    saved = tmp_path / "iptables.save"
    saved.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    args = ("--firewall", str(saved), "--ipsec-config", str(empty), "--gateway", "203.0.113.10", "--format", "json")
    endpoint = {f["id"] for f in document(audit(*args))["audit"]["findings"]}
    assert not {i for i in endpoint if i.startswith("firewall.")}, endpoint
    router = [f for f in document(audit(*args, "--routes-vpn-device"))["audit"]["findings"]
              if f["id"].startswith("firewall.")]
    assert {f["id"] for f in router} >= {"firewall.udp500", "firewall.udp4500"}
    assert all("forward" in f["text"].lower() for f in router)


def test_no_mss_finding_when_no_firewall_could_be_read(tmp_path):
    junk = tmp_path / "fw.txt"
    junk.write_bytes(b"\x00garbage")
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    found = {f["id"] for f in document(audit("--firewall", str(junk), "--ipsec-config", str(empty), "--gateway",
                                             "203.0.113.10", "--format", "json"))["audit"]["findings"]}
    assert "parse.failed" in found and "mtu.mss-clamp" not in found
