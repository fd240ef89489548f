"""Azure's IPsec/IKE parameters as data (agent/audit/parameters.py, the rule sets' [audit]) and the
IPsec rules that judge a site's connections against them (agent/audit/ipsec/rules.py).

Each rule fires on a connection built to break it and stays silent on a good one; the readers'
corpus (tests/fixtures/ipsec/, its README says what each file breaks) gives each broken file
exactly its finding; the lab's two site files (tests/fixtures/ipsec_rules/) are judged as
tests/test_lab_ipsec_tunnel.py shows a real charon behave with them.
"""

from __future__ import annotations

import copy
import ipaddress
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from agent.audit.findings import Severity
from agent.audit.ipsec.ipsec_conf import read_ipsec_conf
from agent.audit.ipsec.model import Child, Connection, Proposal
from agent.audit.ipsec.proposals import ESP, IKE, parse_libreswan_list, parse_strongswan_list
from agent.audit.ipsec.rules import IpsecContext, judge_ipsec, strongswan_keywords
from agent.audit.ipsec.swanctl import read_swanctl
from agent.audit.parameters import NO_PFS, POLICY_BASED, ROUTE_BASED, AzureParameters, Offer
from agent.verdicts import load_ruleset

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "ipsec"
LAB_SITES = ROOT / "tests" / "fixtures" / "ipsec_rules"
GATEWAY = "203.0.113.10"


def rule_file(name: str) -> dict:
    return tomllib.loads((ROOT / "agent" / "rules" / f"{name}.toml").read_text(encoding="utf-8"))


def parameters_of(name: str) -> AzureParameters:
    return load_ruleset(name).audit


CURRENT, OLD = parameters_of("azure-current"), parameters_of("azure-2015")
CONTEXT = IpsecContext(gateways=(GATEWAY,), gateway_type=ROUTE_BASED, onprem_prefixes=("10.1.0.0/16",),
                       vnet_prefixes=("10.20.0.0/16",))


def ss(text: str, protocol: str = ESP) -> tuple[Proposal, ...]:
    """Proposals as the swanctl reader reads them."""
    return parse_strongswan_list(text, protocol)


GOOD_CHILD = Child(name="net", line=20, local_ts=("0.0.0.0/0",), remote_ts=("0.0.0.0/0",),
                   esp_proposals=ss("aes256gcm16"), lifetime_seconds=27_000, life_bytes=None, mode="tunnel",
                   start_action="start", dpd_action="restart")
# What Microsoft's default policy wants of a site: nothing here is against Azure's parameters.
GOOD = Connection(name="azure", file="/etc/swanctl/swanctl.conf", line=3, dialect="swanctl", ike_version=2,
                  local_addrs=None, remote_addrs=(GATEWAY,), ike_proposals=ss("aes256-sha256-modp1024", IKE),
                  ike_lifetime_seconds=28_800, dpd_delay_seconds=45, dpd_timeout_seconds=None, encap=True,
                  auth="psk", psk_length=32, children=(GOOD_CHILD,),
                  lines=(("ike_version", 4), ("remote_addrs", 5), ("ike_proposals", 6), ("ike_lifetime_seconds", 7),
                         ("dpd_delay_seconds", 8), ("encap", 9), ("children.net.esp_proposals", 23),
                         ("children.net.lifetime_seconds", 24), ("children.net.local_ts", 21)))


def connection(child: dict | None = None, **changes) -> Connection:
    """GOOD with `changes`, its one child with `child`."""
    return replace(GOOD, **changes, children=(replace(GOOD_CHILD, **(child or {})),))


def judged(conn: Connection, parameters: AzureParameters = CURRENT, **context) -> list:
    return judge_ipsec([conn], parameters, replace(CONTEXT, **context))


def ids(findings) -> list[tuple[str, str]]:
    return [(finding.id, str(finding.severity)) for finding in findings]


# --- the parameters ------------------------------------------------------------------------------

def test_both_rule_sets_state_their_parameters_with_known_sources():
    for name, parameters in (("azure-current", CURRENT), ("azure-2015", OLD)):
        sources = rule_file(name)["sources"]
        assert parameters.source_keys <= set(sources), name
        assert parameters.phase1.lifetime_seconds == rule_file(name)["ike"]["lifetime_seconds"] == 28_800


def test_current_parameters_are_the_documents_figures():
    route = CURRENT.gateways[ROUTE_BASED]
    # "Azure Gateway as initiator": what the site must accept when Azure rekeys.
    assert route.child_initiator_offers == (
        Offer("aes256gcm16", None, NO_PFS), Offer("aes256", "sha1", NO_PFS), Offer("3des", "sha1", NO_PFS),
        Offer("aes256", "sha256", NO_PFS), Offer("aes128", "sha1", NO_PFS), Offer("3des", "sha256", NO_PFS))
    assert len(route.child_offers) == 26 and set(route.child_initiator_offers) <= set(route.child_offers)
    assert {offer.group for offer in route.ike_offers} == {2} and route.ike_versions == (1, 2)
    assert CURRENT.gateways[POLICY_BASED].ike_versions == (1,) and not CURRENT.gateways[POLICY_BASED].dpd
    custom = CURRENT.custom_policy
    assert (custom.child_lifetime_min_seconds, custom.child_lifetime_min_bytes) == (300, 1024 * 1024)
    assert (custom.dpd_timeout_min_seconds, custom.dpd_timeout_max_seconds) == (9, 3600)
    assert custom.gateway_types == (ROUTE_BASED,) and "aes256gcm16" not in custom.ike_encryption[1]
    assert CURRENT.nat.supported and CURRENT.nat_encapsulation.forced
    assert CURRENT.psk_strength.min_length == 20 and CURRENT.psk_charset.forbidden == " -~"
    for asn in (8074, 8075, 12076, 65515, 65516, 65520, 0, 23456, 64500, 65535, 65551, 4_294_967_295):
        assert CURRENT.reserved_asn(asn), asn
    for asn in (1, 8073, 65001, 65514, 65521, 65552, 4_200_000_000):
        assert CURRENT.reserved_asn(asn) is None, asn
    assert CURRENT.reserved_asn(65516).source == "er-routing"
    assert ipaddress.IPv4Address("169.254.21.0") in CURRENT.bgp_apipa
    assert ipaddress.IPv4Address("169.254.22.255") in CURRENT.bgp_apipa
    assert ipaddress.IPv4Address("169.254.23.0") not in CURRENT.bgp_apipa


def test_2015_parameters_state_only_what_its_pages_say():
    route = OLD.gateways[ROUTE_BASED]
    assert route.ike_versions == (2,) and route.child_lifetime_seconds is None
    assert Offer("aes256", "sha1", None) not in route.child_offers  # as responder it offers no ESP AES_256
    assert OLD.gateways[POLICY_BASED].child_lifetime_seconds == 3_600
    assert not OLD.nat.supported
    assert (OLD.custom_policy, OLD.ike_version_advice, OLD.nat_encapsulation, OLD.traffic_selectors,
            OLD.psk_charset, OLD.bgp_apipa, OLD.reserved_asns) == (None, None, None, None, None, None, ())


def _broken(path: str, value, delete: bool = False) -> dict:
    table = copy.deepcopy(rule_file("azure-current")["audit"])
    *parents, last = path.split(".")
    node = table
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if delete:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return table


@pytest.mark.parametrize("path, value, named", [
    ("weather", "fine", "unknown weather"),
    ("route_based.colour", "blue", "unknown colour"),
    ("route_based.ike_offers.0", {"encryption": "aes512", "integrity": "sha1", "group": 2}, "ike_offers[0].encryption"),
    ("route_based.child_offers.0", {"encryption": "aes256gcm16", "integrity": "sha256", "group": 0}, "child_offers[0]"),
    ("route_based.child_offers.1", {"encryption": "aes256", "group": 0}, "child_offers[1]"),
    ("route_based.ike_offers.1", {"encryption": "aes256", "integrity": "sha256"}, "ike_offers[1]"),
    ("route_based.child_offers.2", {"encryption": "3des", "integrity": "sha1", "group": 3}, "child_offers[2].group"),
    ("route_based.child_initiator_offers.1", {"encryption": "aes256gcm16", "group": 0}, "the same offer twice"),
    ("route_based.ike_versions", [3], "ike_versions[0]"),
    ("route_based.source", "somewhere", "audit.route_based.source"),
    ("phase1.reports", ["nowhere"], "audit.phase1.reports"),
    ("phase1.lifetime_seconds", True, "audit.phase1.lifetime_seconds"),
    ("custom_policy.esp_integrity", ["sha256", "sha3"], "custom_policy.esp_integrity"),
    ("custom_policy.dh_groups", [14, 0], "custom_policy.dh_groups"),
    ("custom_policy.dpd_timeout_min_seconds", 4000, "dpd_timeout_min_seconds is above"),
    ("custom_policy.gateway_types", ["route-based", "cloud"], "custom_policy.gateway_types"),
    ("nat.supported", "yes", "audit.nat.supported"),
    ("psk_charset.forbidden", "é", "psk_charset.forbidden"),
    ("bgp_apipa.first", "169.254.300.1", "bgp_apipa.first"),
    ("bgp_apipa.first", "169.254.23.0", "first is above last"),
    ("reserved_asns.0.asns", [{"first": 65520, "last": 65517}], "reserved_asns[0].asns[0]"),
    ("reserved_asns.1.asns", [2**32], "reserved_asns[1].asns[0]"),
])
def test_bad_audit_tables_are_refused_naming_the_key(path, value, named):
    with pytest.raises(ValueError) as refused:
        AzureParameters.from_table(_broken(path, value), rule_file("azure-current")["sources"])
    assert named in str(refused.value)


def test_a_missing_table_is_refused_naming_it():
    with pytest.raises(ValueError, match="missing phase1"):
        AzureParameters.from_table(_broken("phase1", None, delete=True), rule_file("azure-current")["sources"])
    with pytest.raises(ValueError, match=r"\[audit\] is not a table"):
        AzureParameters.from_table([], rule_file("azure-current")["sources"])


# --- the rules: good connections -----------------------------------------------------------------

def test_a_good_connection_has_no_finding():
    assert judged(GOOD) == []
    # The same under the 2015 rule set, with that page's offers: AES256/SHA1 phase 1, ESP AES128/SHA1.
    old = connection(child={"esp_proposals": ss("aes128-sha1")}, ike_proposals=ss("aes256-sha1-modp1024", IKE))
    assert judged(old, OLD) == []


def test_every_finding_cites_its_rule_sets_source_the_option_and_the_line():
    broken = connection(child={"esp_proposals": ss("aes256-sha256-modp2048"), "lifetime_seconds": 120},
                        ike_lifetime_seconds=86_400, dpd_delay_seconds=5, psk_length=6, encap=None)
    findings = judged(broken, behind_nat=True)
    assert {f.id for f in findings} >= {"ipsec.ike-lifetime", "ipsec.dpd", "ipsec.psk-weak", "ipsec.nat-t",
                                        "ipsec.rekey-proposal", "ipsec.child-lifetime"}
    sources = rule_file("azure-current")["sources"]
    lines = {f.id: f.evidence.line for f in findings}
    assert lines == {"ipsec.ike-lifetime": 7, "ipsec.dpd": 8, "ipsec.psk-weak": 3, "ipsec.nat-t": 9,
                     "ipsec.rekey-proposal": 23, "ipsec.child-lifetime": 24}
    for finding in findings:
        assert finding.option == "s2s" and finding.source in sources and finding.fix
        assert finding.evidence.file == GOOD.file and finding.text.startswith("Connection 'azure': ")


# --- the rules, one by one -----------------------------------------------------------------------

@pytest.mark.parametrize("gateway_type, version, dialect, expected", [
    (POLICY_BASED, 2, "swanctl", [("ipsec.ike-version", "error")]),
    (POLICY_BASED, None, "swanctl", [("ipsec.ike-version", "error")]),  # version 0 initiates IKEv2
    (POLICY_BASED, 1, "swanctl", []),
    (ROUTE_BASED, 1, "swanctl", [("ipsec.ike-version", "warning")]),  # IKEv1 reconnects at Main Mode rekeys
    (ROUTE_BASED, 2, "swanctl", []),
    (None, 1, "swanctl", []),  # the gateway type not declared: IKEv1 may be right
])
def test_ike_version_against_the_gateway_type(gateway_type, version, dialect, expected):
    findings = [f for f in judged(connection(ike_version=version, dialect=dialect), gateway_type=gateway_type)
                if f.id == "ipsec.ike-version"]
    assert ids(findings) == expected
    if version is None and expected:
        assert "not set: strongSwan's default" in findings[0].text and "version = 1" in findings[0].fix


def test_ike_version_under_2015_a_dynamic_routing_gateway_speaks_only_ikev2():
    old = connection(child={"esp_proposals": ss("aes128-sha1")}, ike_proposals=ss("aes256-sha1-modp1024", IKE),
                     ike_version=1)
    assert ids(judged(old, OLD)) == [("ipsec.ike-version", "error")]


@pytest.mark.parametrize("proposals, expected, says", [
    ("aes256-sha512-curve25519", [("ipsec.ike-proposal", "error")], "no phase 1 proposal Azure accepts"),
    ("aes256-sha256-sha512-modp1024-ecp521", [("ipsec.ike-proposal", "warning")], "sha512, DH group 21"),
    ("aes256-sha256-modp2048", [("ipsec.ike-proposal", "info")], "custom IPsec/IKE policy"),
    ("aes256gcm16-prfsha384-ecp384", [("ipsec.ike-proposal", "info")], "custom IPsec/IKE policy"),
    ("aes128-sha1-modp1024", [], ""),
])
def test_ike_proposals_against_the_offers_and_the_custom_policy_tables(proposals, expected, says):
    findings = judged(connection(ike_proposals=ss(proposals, IKE)))
    assert ids(findings) == expected
    assert all(says in f.text and f.evidence.line == 6 for f in findings)


def test_ike_proposals_under_2015_only_its_offers_count():
    old = connection(child={"esp_proposals": ss("aes128-sha1")}, ike_proposals=ss("aes256-sha256-modp2048", IKE))
    assert ids(judged(old, OLD)) == [("ipsec.ike-proposal", "error")]


def test_default_ike_proposals_are_judged_as_the_implementations_defaults():
    # strongSwan's default proposals hold no DH group 2, Azure's default: a custom policy is needed.
    [finding] = judged(connection(ike_proposals=None))
    assert (finding.id, finding.severity) == ("ipsec.ike-proposal", Severity.INFO)
    assert "proposals not set, so strongSwan's default proposals apply" in finding.text


@pytest.mark.parametrize("esp, expected, says", [
    ("aes256-sha512", [("ipsec.esp-proposal", "error")], "no ESP proposal Azure accepts"),
    ("aes256-sha256-sha512", [("ipsec.esp-proposal", "warning")], "Azure accepts none of sha512"),
    ("aes128gcm16", [("ipsec.esp-proposal", "info")], "custom IPsec/IKE policy"),
    ("aes256-sha256", [], ""),
    ("aes128-sha1-modp1024", [], ""),  # PFS 2 with AES128/SHA1 is a default responder offer; no-PFS rekey too
])
def test_esp_proposals_against_the_offers_and_the_custom_policy_tables(esp, expected, says):
    esp_proposals = ss(esp) if "modp" not in esp else ss(esp) + ss("aes128-sha1")
    findings = judged(connection(child={"esp_proposals": esp_proposals}))
    assert ids(findings) == expected
    assert all(says in f.text and f.evidence.line == 23 for f in findings)


def test_gcm_with_a_separate_integrity_breaks_azures_pairing():
    # charon itself refuses this proposal; a model may still carry it (another reader, a future one).
    paired = Proposal("aes256gcm16-sha256", ("aes256gcm16",), ("sha256",), (), ())
    [finding] = judged(connection(child={"esp_proposals": (paired,)}))
    assert (finding.id, finding.severity) == ("ipsec.esp-proposal", Severity.ERROR)
    assert "pairs GCM encryption only with the same GCM" in finding.text
    alongside = judged(connection(child={"esp_proposals": (paired,) + ss("aes256gcm16")}))
    assert ids(alongside) == [("ipsec.esp-proposal", "warning")] and "same GCM" in alongside[0].text


@pytest.mark.parametrize("esp, dialect, expected", [
    ("aes256-sha256-modp2048", "swanctl", [("ipsec.rekey-proposal", "error")]),
    ("aes256gcm16-modp2048", "swanctl", [("ipsec.rekey-proposal", "error")]),
    ("aes256-sha256-modp2048, aes256-sha256", "swanctl", []),  # a no-PFS proposal beside it
    ("aes256-sha256-modp2048-none", "swanctl", []),  # "none": no PFS accepted too
    (None, "swanctl", []),  # strongSwan's default ESP proposals: GCM and CBC, no PFS
    (None, "libreswan-ipsec.conf", [("ipsec.rekey-proposal", "error")]),  # Libreswan's pfs=yes default
])
def test_a_rekey_azure_initiates_needs_a_proposal_without_pfs(esp, dialect, expected):
    conn = connection(child={"esp_proposals": ss(esp) if esp else None}, dialect=dialect)
    findings = [f for f in judged(conn) if f.id in ("ipsec.rekey-proposal", "ipsec.esp-proposal")
                and f.severity != Severity.INFO]
    assert ids(findings) == expected
    for finding in findings:
        assert "drops at Azure's first rekey" in finding.text and "aes256gcm16 (PFS none)" in finding.text
        assert finding.source == "vpn-devices" and finding.evidence.line == 23


def test_a_rekey_failing_only_with_one_gateway_type_is_a_warning_naming_it():
    # IKEv1 with AES128/SHA256 without PFS: a route-based gateway takes it as responder but never
    # offers it when rekeying; a policy-based one refuses it at once (no rekey to speak of).
    conn = connection(child={"esp_proposals": ss("aes128-sha256")}, ike_version=1)
    rekey = [f for f in judged(conn, gateway_type=None) if f.id == "ipsec.rekey-proposal"]
    assert ids(rekey) == [("ipsec.rekey-proposal", "warning")] and "if the gateway is route-based" in rekey[0].text
    assert ids(f for f in judged(conn) if f.id == "ipsec.rekey-proposal") == [("ipsec.rekey-proposal", "error")]


@pytest.mark.parametrize("lifetime, dialect, expected", [
    (86_400, "swanctl", [("ipsec.ike-lifetime", "error")]),
    (3_600, "swanctl", [("ipsec.ike-lifetime", "info")]),
    (28_800, "swanctl", []),
    (None, "swanctl", [("ipsec.ike-lifetime", "info")]),  # rekey_time's default, 4 h
    (None, "libreswan-ipsec.conf", []),  # ikelifetime's default, 8 h
])
def test_ike_lifetime_against_azures_fixed_28800_s(lifetime, dialect, expected):
    conn = connection(ike_lifetime_seconds=lifetime, dialect=dialect)
    findings = [f for f in judged(conn) if f.id == "ipsec.ike-lifetime"]
    assert ids(findings) == expected
    if lifetime is None and expected:
        assert "14400 s (rekey_time not set: strongSwan's default" in findings[0].text


@pytest.mark.parametrize("child, expected", [
    ({"lifetime_seconds": 240}, [("ipsec.child-lifetime", "warning")]),
    ({"life_bytes": 512 * 1024}, [("ipsec.child-lifetime", "warning")]),
    ({"life_bytes": 0}, []),  # no volume limit
    ({"lifetime_seconds": 300, "life_bytes": 1024 * 1024}, []),
])
def test_child_lifetime_against_the_custom_policy_minimums(child, expected):
    assert ids(judged(connection(child=child))) == expected
    old = connection(child={"esp_proposals": ss("aes128-sha1"), **child}, ike_proposals=ss("aes256-sha1-modp1024", IKE))
    assert judged(old, OLD) == []  # no such minimum on the 2015 page


@pytest.mark.parametrize("delay, timeout, expected", [
    (5, None, [("ipsec.dpd", "warning")]),
    (7200, None, [("ipsec.dpd", "warning")]),
    (45, 8, [("ipsec.dpd", "warning")]),
    (45, 150, []),
    (0, None, []),  # off
])
def test_dpd_against_azures_range(delay, timeout, expected):
    assert ids(judged(connection(dpd_delay_seconds=delay, dpd_timeout_seconds=timeout))) == expected


def test_dpd_toward_a_policy_based_gateway_gets_no_answer():
    policy = connection(child={"esp_proposals": ss("aes256-sha1")}, ike_version=1)
    assert ids(judged(policy, gateway_type=POLICY_BASED, onprem_prefixes=())) == [("ipsec.dpd", "info")]
    assert judged(replace(policy, dpd_delay_seconds=0), gateway_type=POLICY_BASED, onprem_prefixes=()) == []


ONPREM = ("10.1.0.0/16", "10.3.0.0/16")


@pytest.mark.parametrize("local, remote, selectors, expected, says", [
    (("0.0.0.0/0",), ("0.0.0.0/0",), None, [], ""),
    (("10.1.0.0/16", "10.3.0.0/16"), ("10.20.0.0/16",), None, [], ""),
    (("10.1.0.0/16",), ("10.20.0.0/16",), None, [("ipsec.traffic-selectors", "warning")], "10.3.0.0/16"),
    (("10.1.0.0/16", "10.3.0.0/16"), ("10.0.0.0/8",), None, [("ipsec.traffic-selectors", "warning")],
     "10.0.0.0/8 in its selectors lies outside"),
    (None, None, None, [("ipsec.traffic-selectors", "warning")], "not set"),
    (("10.1.0.0/16", "10.3.0.0/16"), ("10.20.0.0/16",), True, [("ipsec.traffic-selectors", "error")],
     "TS_UNACCEPTABLE"),
    (("0.0.0.0/0",), ("0.0.0.0/0",), True, [("ipsec.traffic-selectors", "warning")], "broader selector"),
    (("10.1.0.0/16",), ("10.20.0.0/16",), True, [("ipsec.traffic-selectors", "error")],
     "10.3.0.0/16 <-> 10.20.0.0/16 has none"),
])
def test_traffic_selectors(local, remote, selectors, expected, says):
    conn = connection(child={"local_ts": local, "remote_ts": remote})
    findings = judged(conn, onprem_prefixes=ONPREM, policy_based_selectors=selectors)
    assert ids(findings) == expected
    assert all(says in f.text for f in findings)


def test_traffic_selectors_pair_by_pair_with_policy_based_selectors():
    pair_children = tuple(replace(GOOD_CHILD, name=f"p{i}", local_ts=(local,), remote_ts=("10.20.0.0/16",))
                          for i, local in enumerate(ONPREM))
    every_pair = replace(GOOD, children=pair_children)
    assert judged(every_pair, onprem_prefixes=ONPREM, policy_based_selectors=True) == []
    # A policy-based gateway wants the same pairs (and IKEv1).
    policy = replace(every_pair, ike_version=1, dpd_delay_seconds=0, children=tuple(
        replace(child, esp_proposals=ss("aes256-sha1")) for child in pair_children))
    assert judged(policy, onprem_prefixes=ONPREM, gateway_type=POLICY_BASED) == []
    assert ids(judged(replace(policy, children=policy.children[:1]), onprem_prefixes=ONPREM,
                      gateway_type=POLICY_BASED)) == [("ipsec.traffic-selectors", "error")]
    extra = replace(GOOD, children=pair_children + (replace(GOOD_CHILD, name="x", local_ts=("192.168.0.0/24",),
                                                            remote_ts=("10.20.0.0/16",)),))
    [finding] = judged(extra, onprem_prefixes=ONPREM, policy_based_selectors=True)
    assert finding.severity == Severity.WARNING and "192.168.0.0/24 <-> 10.20.0.0/16 is not among" in finding.text
    # Neither the prefixes nor the gateway type declared: nothing to hold the selectors against.
    assert judged(every_pair, onprem_prefixes=(), policy_based_selectors=True) == []
    assert judged(replace(GOOD, children=(replace(GOOD_CHILD, local_ts=None),)), gateway_type=None) == []


def test_a_broader_selector_is_an_error_for_libreswan_which_does_not_narrow():
    supernet = connection(child={"local_ts": ("10.0.0.0/14",), "remote_ts": ("10.20.0.0/16",)})
    assert ids(judged(supernet, onprem_prefixes=ONPREM, policy_based_selectors=True)) == \
        [("ipsec.traffic-selectors", "warning")]
    libreswan = replace(supernet, dialect="libreswan-ipsec.conf", ike_proposals=parse_libreswan_list(
        "aes256-sha1;modp1024", IKE), children=(replace(supernet.children[0], esp_proposals=parse_libreswan_list(
            "aes256-sha1;none", ESP)),))
    assert ids(judged(libreswan, onprem_prefixes=ONPREM, policy_based_selectors=True)) == \
        [("ipsec.traffic-selectors", "error")]


@pytest.mark.parametrize("remote, expected", [
    ((GATEWAY,), [("ipsec.ike-lifetime", "error")]),
    (("203.0.113.99",), [("ipsec.remote-address", "warning")]),
    (("%any",), [("ipsec.remote-address", "warning"), ("ipsec.ike-lifetime", "error")]),
    (None, [("ipsec.remote-address", "warning"), ("ipsec.ike-lifetime", "error")]),
    (("azure-gateway.example",), [("ipsec.ike-lifetime", "error")]),  # a name is not resolved here
])
def test_remote_address_against_the_declared_gateway(remote, expected):
    # Broken otherwise (a 24 h IKE lifetime): a connection to another peer is not judged against Azure.
    assert ids(judged(connection(remote_addrs=remote, ike_lifetime_seconds=86_400))) == expected


def test_remote_address_is_not_judged_without_a_declared_gateway():
    assert judged(connection(remote_addrs=("203.0.113.99",)), gateways=()) == []


@pytest.mark.parametrize("behind_nat, encap, parameters, expected", [
    (True, None, CURRENT, [("ipsec.nat-t", "warning")]),
    (True, False, CURRENT, [("ipsec.nat-t", "warning")]),
    (True, True, CURRENT, []),
    (None, None, CURRENT, []),  # not measured: nothing said
    (False, None, CURRENT, []),
    (True, True, OLD, [("ipsec.nat-t", "error")]),  # 2015: "This cannot be behind a NAT."
])
def test_nat_traversal_when_the_site_is_behind_a_nat(behind_nat, encap, parameters, expected):
    conn = connection(encap=encap)
    if parameters is OLD:
        conn = connection(child={"esp_proposals": ss("aes128-sha1")}, ike_proposals=ss("aes256-sha1-modp1024", IKE))
    assert ids(judged(conn, parameters, behind_nat=behind_nat)) == expected


@pytest.mark.parametrize("length, auth, expected", [
    (8, "psk", [("ipsec.psk-weak", "warning")]),
    (19, None, [("ipsec.psk-weak", "warning")]),
    (20, "psk", []),
    (8, "pubkey", []),
    (None, "psk", []),  # no secret found: its length is unknown
])
def test_a_short_pre_shared_key_is_weak(length, auth, expected):
    findings = judged(connection(psk_length=length, auth=auth))
    assert ids(findings) == expected
    for finding in findings:
        assert f"{length} characters long" in finding.text and "except space, -, ~" in finding.fix


def test_the_context_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="gateway type"):
        IpsecContext(gateway_type="vnet-to-vnet")
    with pytest.raises(ValueError, match="10.1.0.0/33"):
        IpsecContext(onprem_prefixes=("10.1.0.0/33",))


def test_azures_offers_render_as_strongswan_proposals():
    route = CURRENT.gateways[ROUTE_BASED]
    assert [strongswan_keywords(o, ike=True) for o in route.ike_offers[:2]] == ["aes256-sha1-modp1024",
                                                                                "aes256-sha256-modp1024"]
    assert [strongswan_keywords(o, ike=False) for o in route.child_initiator_offers[:2]] == \
        ["aes256gcm16", "aes256-sha1"]
    # Each renders into a proposal charon takes, read back as the same offer.
    for offer in route.child_offers:
        [proposal] = ss(strongswan_keywords(offer, ike=False))
        assert (proposal.encryption, proposal.integrity or (None,), proposal.dh_groups or (NO_PFS,)) == \
            ((offer.encryption,), (offer.integrity,), (offer.group,))


# --- the readers' corpus, and the lab's two sites ------------------------------------------------

# tests/fixtures/ipsec/README.md: the scene, and what each broken file breaks.
CORPUS_CONTEXT = IpsecContext(gateways=(GATEWAY,), gateway_type=ROUTE_BASED, onprem_prefixes=ONPREM,
                              vnet_prefixes=("10.20.0.0/16",))
EXPECTED = {
    "good-route-based": set(), "good-include": set(), "rekey-pfs-not-strict": set(),
    "ikev1-route-based": {("ipsec.ike-version", "warning")},
    "ike-proposal-not-offered": {("ipsec.ike-proposal", "error")},
    # AES256-GCM with PFS (group 14) only: the first CHILD_SA comes up (IKEv2 negotiates no PFS for it),
    # then none of Azure's initiator offers, all without PFS, is accepted at its first rekey.
    "rekey-pfs-only": {("ipsec.rekey-proposal", "error")},
    "rekey-pfs-default": {("ipsec.rekey-proposal", "error")},
    "ike-lifetime-86400": {("ipsec.ike-lifetime", "error")},
    "child-lifetime-short": {("ipsec.child-lifetime", "warning")},
    "dpd-5": {("ipsec.dpd", "warning")},
    "selectors-two-subnets": {("ipsec.traffic-selectors", "error")},
    "selectors-supernet": {("ipsec.traffic-selectors", "error")},
    "remote-not-gateway": {("ipsec.remote-address", "warning")},
    "no-encap-behind-nat": {("ipsec.nat-t", "warning")},
    "psk-short": {("ipsec.psk-weak", "warning")},
}


def corpus():
    for form in ("swanctl", "strongswan", "libreswan"):
        for path in sorted((CORPUS / form).iterdir()):
            name = path.stem
            if path.is_dir():
                path = path / ("swanctl.conf" if form == "swanctl" else "ipsec.conf")
            if path.suffix == ".conf" and name in EXPECTED:
                yield pytest.param(form, name, path, id=f"{form}/{name}")


@pytest.mark.parametrize("form, name, path", list(corpus()))
def test_each_corpus_file_gives_exactly_its_finding(form, name, path):
    conns, _ = (read_swanctl if form == "swanctl" else read_ipsec_conf)(str(path))
    assert conns, path
    context = replace(CORPUS_CONTEXT, policy_based_selectors=name.startswith("selectors") or None,
                      behind_nat=True if name == "no-encap-behind-nat" else None)
    findings = judge_ipsec(conns, CURRENT, context)
    assert {(f.id, str(f.severity)) for f in findings if f.severity != Severity.INFO} == EXPECTED[name]
    # What is left is information only: a proposal outside Azure's default offers (Libreswan has no
    # DH group 2, these files' AES128-GCM is no default ESP offer) needs a custom policy on Azure's side.
    for finding in findings:
        if finding.severity == Severity.INFO:
            assert finding.id in ("ipsec.ike-proposal", "ipsec.esp-proposal")
            assert "custom IPsec/IKE policy" in finding.text
    assert all(f.evidence.file == str(path) for f in findings)


def test_the_corpus_holds_every_expected_file():
    assert {param.values[1] for param in corpus()} == set(EXPECTED)


LAB_CONTEXT = IpsecContext(gateways=(GATEWAY,), gateway_type=ROUTE_BASED, onprem_prefixes=("10.10.0.0/16",),
                           vnet_prefixes=("10.20.0.0/16",))


def test_the_lab_sites_are_judged_as_the_real_tunnel_behaves():
    [good], _ = read_swanctl(str(LAB_SITES / "site-good.conf"))
    assert judge_ipsec([good], CURRENT, LAB_CONTEXT) == []
    path = LAB_SITES / "site-rekey-pfs.conf"
    [pfs], _ = read_swanctl(str(path))
    [finding] = judge_ipsec([pfs], CURRENT, LAB_CONTEXT)
    assert (finding.id, finding.severity) == ("ipsec.rekey-proposal", Severity.ERROR)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "esp_proposals" in text)
    assert finding.evidence.to_dict() == {"file": str(path), "line": line}
    assert "esp_proposals = aes256-sha256-modp2048 accepts none of the offers" in finding.text
