"""Rule sets are checked data: a rule file that strays from the format is refused at load time,
naming the file, the rule and what is wrong; Azure's limits and IKE suites live in the rule set,
so a new SKU, a changed limit or another IKE suite is a TOML edit and nothing else.

Every case edits a copy of a shipped rule file's text and loads it with the loader itself
(agent.verdicts.parse_ruleset, which load_ruleset uses).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.verdicts import RuleSetError, evaluate, load_ruleset, parse_ruleset
from checks.protocols import ike
from checks.protocols.ike_suites import (AES_CBC_KEY_BITS, IKEV1_HASH, IKEV2_INTEGRITY, IKEV2_PRF, MAX_SUITES,
                                         MODP_GROUP_NAMES, IkeOffer, Ikev1Suite, Ikev2Suite)
from test_ike import fixture, spi_of

RULES = Path(__file__).parent.parent / "agent" / "rules"
CURRENT = (RULES / "azure-current.toml").read_text(encoding="utf-8")
NO_DECLARATION = {"bandwidth_bits_per_second": None, "clients": None, "private_only": None,
                  "vpn_device": None, "colocation": None, "nsp_wan": None}


def edited(text: str, old: str, new: str, *, within: str | None = None) -> str:
    """`text` with `old` replaced once by `new`, in the [[rules]] block of rule `within` if given."""
    start, end = 0, len(text)
    if within is not None:
        start = text.index(f'id = "{within}"\n')
        end = text.find("\n[", start)
    assert text.count(old, start, end) >= 1, f"{old!r} not in {within or 'the file'}"
    at = text.index(old, start, end)
    return text[:at] + new + text[at + len(old):]


def without(text: str, header: re.Pattern[str]) -> str:
    """`text` without every table whose header line matches (up to the next header line)."""
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            dropping = bool(header.fullmatch(line.strip()))
        if not dropping:
            kept.append(line)
    return "".join(kept)


def refusal(text: str, name: str = "azure-current") -> str:
    with pytest.raises(RuleSetError) as refused:
        parse_ruleset(text, name)
    return str(refused.value)


def fired(result: dict, option: str) -> dict[str, dict]:
    return {reason["rule"]: reason for reason in result["options"][option]["reasons"]}


def test_the_shipped_text_loads_as_load_ruleset_loads_it():
    assert parse_ruleset(CURRENT, "azure-current") == load_ruleset("azure-current")


# ---------------------------------------------------------------- every path a rule reads exists


@pytest.mark.parametrize("rule, old, new, path", [
    # in `when`
    ("current.s2s.cgnat", '"facts.nat.cgnat" = true', '"facts.nat.cgnta" = true', "facts.nat.cgnta"),
    # the typo that used to pass and then fired always: only the first segment was checked
    ("current.s2s.nat-unknown", '"facts.nat.detected" = { missing = true }',
     '"facts.nat.detectd" = { missing = true }', "facts.nat.detectd"),
    ("current.s2s.no-vpn-device", '"requirements.vpn_device"', '"requirements.vpn_devices"',
     "requirements.vpn_devices"),
    ("current.s2s.public-ipv4", '"facts.public_ipv4.present" = true', '"facts.public_ipv4.present.really" = true',
     "facts.public_ipv4.present.really"),
    # in an `any` alternative
    ("current.s2s.beside-expressroute", '{ "requirements.nsp_wan" = true }', '{ "requirements.nspwan" = true }',
     "requirements.nspwan"),
    # in text placeholders
    ("current.s2s.mtu-above-azure", "{facts.path_mtu.bytes}-byte", "{facts.path_mtu.byte}-byte",
     "facts.path_mtu.byte"),
    ("current.s2s.bandwidth-above", "{option.max_bits_per_second|rate}", "{option.max_bit_per_second|rate}",
     "option.max_bit_per_second"),
    # in `$path` operands
    ("current.s2s.mtu-above-azure", '"$limits.max_packet_bytes"', '"$limits.max_packets_bytes"',
     "limits.max_packets_bytes"),
    ("current.p2s.sstp-clients", '"$option.sstp_max_clients"', '"$option.ssstp_max_clients"',
     "option.ssstp_max_clients"),
    # option.* is the rule's own option's table: s2s has no sstp_max_clients
    ("current.s2s.bandwidth-fits", '"$option.per_tunnel_bits_per_second"', '"$option.sstp_max_clients"',
     "option.sstp_max_clients"),
])
def test_a_typo_in_a_path_is_a_load_error_naming_file_rule_and_path(rule, old, new, path):
    message = refusal(edited(CURRENT, old, new, within=rule))
    assert message.startswith("azure-current: ") and f"rule {rule}:" in message and repr(path) in message, message


def test_a_typo_in_a_recommendation_path_is_a_load_error():
    message = refusal(edited(CURRENT, '"requirements.clients" = { le = 10 }', '"requirements.client" = { le = 10 }'))
    assert "azure-current: recommendation 1" in message and "'requirements.client'" in message, message


def test_the_refusal_says_what_the_table_has():
    message = refusal(edited(CURRENT, '"facts.nat.cgnat"', '"facts.nat.cgnta"', within="current.s2s.cgnat"))
    assert "facts.nat has no 'cgnta'" in message and "cgnat" in message.split("(it has", 1)[1], message


# ---------------------------------------------------------------- schema and tables


def test_schema_must_be_there_and_be_1():
    assert "schema = 1" in refusal(CURRENT.replace("\nschema = 1\n", "\n", 1))
    assert "schema = 2" in refusal(CURRENT.replace("\nschema = 1\n", "\nschema = 2\n", 1))
    assert "schema = '1'" in refusal(CURRENT.replace("\nschema = 1\n", '\nschema = "1"\n', 1))


@pytest.mark.parametrize("header, named", [
    (r"\[sources\]", "[sources]"),
    (r"\[options\.\w+\]", "[options]"),
    (r"\[options\.s2s\]", "[options.s2s]"),
    (r"\[limits\]", "[limits]"),
    (r"\[ike\]", "[ike]"),
    (r"\[\[rules\]\]", "[[rules]]"),
    (r"\[\[recommendation\]\]", "[[recommendation]]"),
])
def test_a_missing_table_is_named_never_a_key_error(header, named):
    message = refusal(without(CURRENT, re.compile(header)))
    assert message.startswith("azure-current: ") and named in message, message


@pytest.mark.parametrize("old, new, named", [
    # a rule reading a limit the table lacks
    ('max_packet_bytes = 1400', '', "rule current.s2s.mtu-above-azure: unknown path 'limits.max_packet_bytes'"),
    ('max_packet_bytes = 1400', 'max_packet_bytes = "1400"', "max_packet_bytes"),
    ('[limits]\nsource = "vpn-devices"', '[limits]\nsource = "nowhere"', "[limits]"),
    ('title = "Site-to-Site (IPsec VPN device)"\n', "", "[options.s2s]"),
    ('name = "azure-current"', 'name = "azure-2024"', "azure-2024"),
    ('\n[sources]', '\nweather = "fine"\n[sources]', "weather"),
])
def test_a_broken_table_is_named(old, new, named):
    assert named in refusal(edited(CURRENT, old, new))


def test_two_rules_with_one_id_are_refused():
    assert "current.s2s.cgnat: a second rule" in refusal(
        edited(CURRENT, 'id = "current.s2s.no-nat"', 'id = "current.s2s.cgnat"'))


# ---------------------------------------------------------------- any


ANY_RULE = """
[[rules]]
id = "test.any"
option = "s2s"
verdict = "note"
when = { "facts.nat.detected" = true, any = [{ "facts.nat.cgnat" = true }, { "facts.nat.udp_blocked" = { missing = true } }] }
text = "either"
source = "vpn-faq"
"""


@pytest.mark.parametrize("nat, holds", [
    ({"detected": True, "cgnat": True, "udp_blocked": False}, True),  # the first alternative
    ({"detected": True, "cgnat": False, "udp_blocked": None}, True),  # the second one
    ({"detected": True, "cgnat": True, "udp_blocked": None}, True),  # both
    ({"detected": True, "cgnat": False, "udp_blocked": False}, False),  # none
    ({"detected": False, "cgnat": True, "udp_blocked": None}, False),  # both, but not the key beside `any`
])
def test_any_holds_when_one_alternative_holds_and_the_other_keys_do(nat, holds):
    ruleset = parse_ruleset(CURRENT + ANY_RULE, "azure-current")
    reasons = fired(evaluate(ruleset, {"nat": nat}, NO_DECLARATION), "s2s")
    assert ("test.any" in reasons) is holds
    if holds:  # the reason lists what every alternative read, and the key beside them
        assert reasons["test.any"]["facts"] == {"facts.nat.detected": True, "facts.nat.cgnat": nat["cgnat"],
                                                "facts.nat.udp_blocked": nat["udp_blocked"]}


@pytest.mark.parametrize("requirements, holds", [
    ({"colocation": True}, True), ({"nsp_wan": True}, True), ({"colocation": True, "nsp_wan": True}, True),
    ({"colocation": False, "nsp_wan": False}, False), ({}, False),
])
def test_a_rule_that_was_two_for_or_is_one(requirements, holds):
    result = evaluate(load_ruleset("azure-current"), {}, NO_DECLARATION | requirements)
    for option, rule in (("p2s", "current.p2s.beside-expressroute"), ("s2s", "current.s2s.beside-expressroute")):
        reasons = fired(result, option)
        assert (rule in reasons) is holds
        if holds:
            assert set(reasons[rule]["facts"]) == {"requirements.colocation", "requirements.nsp_wan"}


@pytest.mark.parametrize("when", [
    'any = [{ "facts.nat.cgnat" = true }]',  # one alternative: no "any of"
    "any = []",
    'any = [{ "facts.nat.cgnat" = true }, {}]',  # an empty table would hold always
    'any = { "facts.nat.cgnat" = true }',
    'any = [{ "facts.nat.cgnat" = { approx = true } }, { "facts.nat.cgnat" = true }]',
])
def test_a_malformed_any_is_refused(when):
    rule = ANY_RULE.replace(ANY_RULE.split("when = ", 1)[1].split("\n", 1)[0], "{ " + when + " }")
    assert "rule test.any" in refusal(CURRENT + rule)


# ---------------------------------------------------------------- a new SKU, a changed limit: TOML only


def test_a_new_sku_row_needs_only_a_toml_edit():
    need = NO_DECLARATION | {"bandwidth_bits_per_second": 15e9}
    before = evaluate(load_ruleset("azure-current"), {}, need)
    assert before["options"]["p2s"]["verdict"] == "infeasible" and "current.p2s.bandwidth-above" in fired(before, "p2s")
    with_row = edited(CURRENT, '  { name = "VpnGw5", bits_per_second = 10_000_000_000 },\n',
                      '  { name = "VpnGw5", bits_per_second = 10_000_000_000 },\n'
                      '  { name = "VpnGw6", bits_per_second = 20_000_000_000 },\n')  # the first: [options.p2s]
    after = evaluate(parse_ruleset(with_row, "azure-current"), {}, need)
    reasons = fired(after, "p2s")
    assert "current.p2s.bandwidth-above" not in reasons
    assert "a VpnGw6 gateway" in reasons["current.p2s.bandwidth-fits"]["text"]
    assert after["options"]["p2s"]["verdict"] == "conditional"  # TCP 443 not measured: no longer infeasible
    assert after["options"]["s2s"] == before["options"]["s2s"]  # its own table was not touched


def test_a_changed_limit_needs_only_a_toml_edit():
    facts = {"path_mtu": {"bytes": 1450}}
    before = fired(evaluate(load_ruleset("azure-current"), facts, NO_DECLARATION), "s2s")
    assert "at most 1400: clamp TCP MSS at 1350" in before["current.s2s.mtu-above-azure"]["text"]
    assert "current.s2s.mtu-below-azure" not in before
    raised = edited(CURRENT, "max_packet_bytes = 1400", "max_packet_bytes = 1500")
    raised = edited(raised, "mss_bytes = 1350", "mss_bytes = 1450")
    after = fired(evaluate(parse_ruleset(raised, "azure-current"), facts, NO_DECLARATION), "s2s")
    assert "current.s2s.mtu-above-azure" not in after
    reason = after["current.s2s.mtu-below-azure"]
    assert "below the 1500 Azure assumes: clamp TCP MSS lower than 1450" in reason["text"]
    assert reason["facts"]["limits.max_packet_bytes"] == 1500 and reason["facts"]["facts.path_mtu.bytes"] == 1450


# ---------------------------------------------------------------- the IKE offer


@pytest.mark.parametrize("old, new, named", [
    ('{ encryption = "aes128", integrity = "sha1"', '{ encryption = "aes128", integrity = "sha512"',
     "ikev2 entry 3: integrity 'sha512'"),
    ('{ encryption = "aes256", integrity = "sha256", prf = "sha256", dh_group = 14 }',
     '{ encryption = "aes256", integrity = "sha256", prf = "sha256", dh_group = 19 }', "ikev2 entry 4: dh_group 19"),
    ('{ encryption = "aes256", integrity = "sha1"', '{ encryption = "3des", integrity = "sha1"',
     "ikev2 entry 2: encryption '3des'"),
    ('{ encryption = "aes256", hash = "sha256", dh_group = 2 }', '{ encryption = "aes256", hash = "md5", dh_group = 2 }',
     "ikev1 entry 1: hash 'md5'"),
    ('{ encryption = "aes256", hash = "sha1", dh_group = 2 }', '{ encryption = "aes256", hash = "sha1", dh_group = true }',
     "ikev1 entry 2: dh_group True"),
    ('{ encryption = "aes128", hash = "sha1", dh_group = 2 }', '{ encryption = "aes128", hash = "sha1" }',
     "ikev1 entry 3: not a table of encryption, hash, dh_group"),
    ("lifetime_seconds = 28_800", "lifetime_seconds = 0", "lifetime_seconds 0"),
    ("lifetime_seconds = 28_800", "", "['lifetime_seconds'] missing"),
])
def test_an_unknown_ike_algorithm_is_a_load_error_naming_rule_set_and_entry(old, new, named):
    message = refusal(edited(CURRENT, old, new))
    assert message.startswith("azure-current: [ike] ") and named in message, message


@pytest.mark.parametrize("name", [f.stem.removeprefix("strongswan-") for f in sorted(
    (Path(__file__).parent / "fixtures" / "ike").glob("strongswan-*.hex"))])
def test_the_shipped_table_sends_what_was_recorded_byte_for_byte(name):
    """Every request recorded against charon is rebuilt from the rule set's [ike] table, with the
    recording's random parts (SPI, KE, nonce): nothing on the wire moved with the table."""
    from scapy.contrib.ikev2 import IKEv2, IKEv2_KE, IKEv2_Nonce

    recorded = fixture(name)
    for ruleset in ("azure-current", "azure-2015"):
        offer = load_ruleset(ruleset).ike_offer
        if name.startswith("ikev1"):
            request = ike.MainModeRequest.build(offer=offer, spi=spi_of(recorded))
        else:
            natt = recorded["remote"][1] == 4500
            message = IKEv2(recorded["request"][4 if natt else 0:])
            request = ike.IkeSaInit.build(recorded["local"], recorded["remote"], natt=natt, offer=offer,
                                          dh_group=message[IKEv2_KE].group, spi=spi_of(recorded),
                                          public_value=bytes(message[IKEv2_KE].ke),
                                          nonce=bytes(message[IKEv2_Nonce].nonce))
        assert request.datagram == recorded["request"], ruleset


def test_another_table_is_another_offer_on_the_wire_and_in_what_an_answer_may_choose():
    from scapy.contrib.ikev2 import IKEv2, IKEv2_KE, IKEv2_SA

    # Group 14's suite alone: the KE is for group 14 and only that proposal is offered.
    only_14 = without(CURRENT, re.compile(r"\[ike\]")) + """
[ike]
source = "vpn-devices"
lifetime_seconds = 3_600
ikev2 = [{ encryption = "aes256", integrity = "sha256", prf = "sha256", dh_group = 14 }]
ikev1 = [{ encryption = "aes128", hash = "sha256", dh_group = 14 }]
"""
    offer = parse_ruleset(only_14, "azure-current").ike_offer
    message = IKEv2(ike.IkeSaInit.build(("10.0.0.2", 40000), ("203.0.113.10", 500), natt=False, offer=offer).datagram)
    proposal = message[IKEv2_SA].prop
    assert message[IKEv2_KE].group == 14 and (proposal.proposal, proposal.next_payload) == (1, 0)  # one, the last
    # charon chose the shipped offer's fourth proposal; offered alone, the same suite is number 1.
    recorded = fixture("ikev2-sa-init-nat")
    with pytest.raises(ike.IkeParseError, match="not one we offered"):
        ike.parse_ikev2_answer(recorded["answer"], spi_of(recorded), natt=False, offer=offer)
    main_mode = fixture("ikev1-main-mode")  # charon chose AES-CBC-256/SHA2-256 with group 2
    with pytest.raises(ike.IkeParseError, match="not one we offered"):
        ike.parse_ikev1_answer(main_mode["answer"], spi_of(main_mode), offer=offer)
    from scapy.layers.isakmp import ISAKMP, ISAKMP_payload_SA

    transform = ISAKMP(ike.MainModeRequest.build(offer=offer).datagram)[ISAKMP_payload_SA].prop.trans
    assert dict(transform.transforms) == {"Encryption": "AES-CBC", "KeyLength": 128, "Hash": "SHA2-256",
                                          "Authentication": "PSK", "GroupDesc": "2048MODPgr",
                                          "LifeType": "Seconds", "LifeDuration": 3600}


def test_every_name_an_offer_takes_goes_on_the_wire_as_that_algorithm():
    """The names map to the IANA numbers scapy (an independent reader) names them by."""
    from scapy.contrib.ikev2 import IKEv2, IKEv2_SA, IKEv2TransformAlgorithms
    from scapy.layers.isakmp import ISAKMP, ISAKMP_payload_SA

    scapy_names = {"prf": {"sha1": "PRF_HMAC_SHA1", "sha256": "PRF_HMAC_SHA2_256", "sha384": "PRF_HMAC_SHA2_384"},
                   "integrity": {"sha1": "HMAC-SHA1-96", "sha256": "SHA2-256-128", "sha384": "SHA2-384-192"},
                   "hash": {"sha1": "SHA", "sha256": "SHA2-256", "sha384": "SHA2-384"},
                   "group": {2: "1024MODPgr", 14: "2048MODPgr"}}
    assert (set(scapy_names["prf"]), set(scapy_names["integrity"]), set(scapy_names["hash"]),
            set(scapy_names["group"])) == (set(IKEV2_PRF), set(IKEV2_INTEGRITY), set(IKEV1_HASH), set(MODP_GROUP_NAMES))
    suites = [(encryption, integrity, prf, group) for encryption in AES_CBC_KEY_BITS for integrity in IKEV2_INTEGRITY
              for prf in IKEV2_PRF for group in MODP_GROUP_NAMES]
    for start in range(0, len(suites), MAX_SUITES):
        chunk = suites[start:start + MAX_SUITES]
        offer = IkeOffer(tuple(Ikev2Suite(*suite) for suite in chunk),
                         tuple(Ikev1Suite(encryption, prf, group) for encryption, _, prf, group in chunk), 28_800)
        proposal = IKEv2(ike.IkeSaInit.build(("10.0.0.2", 40000), ("203.0.113.10", 500), natt=False,
                                             offer=offer).datagram)[IKEv2_SA].prop
        transform = ISAKMP(ike.MainModeRequest.build(offer=offer).datagram)[ISAKMP_payload_SA].prop.trans
        for encryption, integrity, prf, group in chunk:
            ids = {}
            item = proposal.trans
            while item:
                ids[item.transform_type] = (IKEv2TransformAlgorithms[item.transform_type][item.transform_id],
                                            item.key_length if item.length == 12 else None)
                item = item.payload
            assert ids == {1: ("AES-CBC", AES_CBC_KEY_BITS[encryption]), 2: (scapy_names["prf"][prf], None),
                           3: (scapy_names["integrity"][integrity], None),
                           4: (scapy_names["group"][group], None)}
            attributes = dict(transform.transforms)
            assert (attributes["Encryption"], attributes["KeyLength"], attributes["Hash"], attributes["GroupDesc"]) == \
                ("AES-CBC", AES_CBC_KEY_BITS[encryption], scapy_names["hash"][prf], scapy_names["group"][group])
            proposal, transform = proposal.payload, transform.payload


def test_the_largest_offer_stays_under_1280_bytes():
    offer = IkeOffer((Ikev2Suite("aes256", "sha384", "sha384", 14),) * MAX_SUITES,
                     (Ikev1Suite("aes256", "sha384", 14),) * MAX_SUITES, 0xFFFF_FFFF)
    retry = ike.IkeSaInit.build(("10.0.0.2", 40000), ("203.0.113.10", 4500), natt=True, offer=offer,
                                cookie=b"c" * ike.COOKIE_MAX_BYTES)
    ip_udp_headers = 28
    assert len(retry.datagram) + ip_udp_headers <= 1280
    assert len(ike.MainModeRequest.build(offer=offer).datagram) + ip_udp_headers <= 1280
    with pytest.raises(ValueError, match="1 to 16"):
        IkeOffer(offer.ikev2 * 2, offer.ikev1, 28_800)



def test_a_path_that_stops_at_a_table_is_a_load_error():
    """`"facts.nat" = { missing = true }` would hold always (a table is never null), and a comparison
    with a table never: both are mistakes, named at load."""
    message = refusal(edited(CURRENT, '"facts.nat.cgnat"', '"facts.nat"', within="current.s2s.cgnat"))
    assert "rule current.s2s.cgnat" in message and "facts.nat is a table, not a value" in message, message


def test_a_brace_that_is_no_placeholder_is_a_load_error():
    """`{facts.nat.Detected}` is no placeholder (they are lower case): it would reach the user raw."""
    message = refusal(edited(CURRENT, "{facts.nat.reflexive_address}", "{facts.nat.Reflexive_address}"))
    assert "a brace in the text that is no placeholder" in message, message
