"""Reading real firewall listings (tests/fixtures/firewall_read, recorded from nft and iptables):
the model they give, what is noted or listed as not understood, and hostile input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.audit.findings import ParseState
from agent.audit.firewall import (
    CtState, Outcome, Packet, Path as Hook, Protocol, evaluate, read_host_firewall, read_iptables_save, read_nft_json,
)
from agent.audit.firewall import host
from agent.audit.firewall.reading import MAX_INPUT_CHARS, MAX_UNRECOGNIZED
from agent.audit.firewall.ruleset import Field, Match, Ruleset, combined, ipv4_int
from conftest import needs_lab

FIXTURES = Path(__file__).parent / "fixtures" / "firewall_read"
REPOSITORY = Path(__file__).parent.parent


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def nft(name: str) -> Ruleset:
    ruleset, status = read_nft_json(fixture(name), name)
    assert ruleset is not None, status
    return ruleset


def chains(ruleset: Ruleset) -> dict[str, object]:
    return {f"{t.family} {t.name} {c.name}": c for t in ruleset.tables for c in t.chains.values()}


def out_udp(port: int, destination: str = "203.0.113.10", interface: str | None = "eth0") -> Packet:
    return Packet(Hook.OUTPUT, Protocol.UDP, "198.51.100.2", destination, port, port, None, interface)


# nftables ----------------------------------------------------------------------------------------

def test_nft_tables_chains_and_base_chains_are_read_as_listed():
    ruleset, status = read_nft_json(fixture("gateway-host.json"), "gateway-host.json")
    by_name = chains(ruleset)
    assert set(by_name) == {"inet filter input", "inet filter input_refuse", "inet filter forward",
                            "inet filter lan_out", "inet filter output", "inet filter out_eth", "ip nat postrouting"}
    base = {name: (c.hook, c.priority, c.type, c.policy) for name, c in by_name.items() if c.is_base}
    assert base == {"inet filter input": ("input", 0, "filter", "drop"),
                    "inet filter forward": ("forward", 0, "filter", "drop"),
                    "inet filter output": ("output", 0, "filter", "accept"),
                    "ip nat postrouting": ("postrouting", 100, "nat", "accept")}
    assert by_name["inet filter input_refuse"].policy is None
    # ip6 and bridge tables never see our IPv4 packets: noted, not evaluated, not "not understood".
    assert any("ip6 filter6 skipped" in note for note in ruleset.notes)
    assert any("bridge lanbridge skipped" in note for note in ruleset.notes)
    assert "ip6" in status.detail and "bridge" in status.detail


def test_nft_rules_keep_their_order_handle_and_text():
    by_name = chains(nft("gateway-host.json"))
    texts = [rule.ref.text for rule in by_name["inet filter output"].rules]
    assert texts == ["ip daddr 192.0.2.99 drop # handle 32", 'oifname "eth0" jump out_eth # handle 33',
                     "udp dport 4500 accept # handle 34"]
    rule = by_name["inet filter input"].rules[2]
    assert rule.ref.text == 'iifname "eth*" ip saddr @azure_gateways udp dport @ike_ports accept # handle 12'
    assert (rule.ref.file, rule.ref.line, rule.ref.table, rule.ref.chain) == ("gateway-host.json", None,
                                                                               "inet filter", "input")
    assert (rule.handle, rule.position) == (12, 3)
    assert by_name["inet filter input"].rules[0].ref.text.startswith(
        "ct state vmap { invalid : drop, established : accept, related : accept }")


def test_nft_named_interval_set_is_resolved_into_the_match():
    rule = chains(nft("gateway-host.json"))["inet filter input"].rules[2]
    saddr = next(item for item in rule.items if isinstance(item, Match) and item.field is Field.SADDR)
    assert all(ipv4_int(address) in saddr.values for address in ("203.0.113.10", "198.51.100.0", "198.51.100.15"))
    assert ipv4_int("198.51.100.16") not in saddr.values  # just past the /28
    assert ipv4_int("203.0.113.11") not in saddr.values
    ports = next(item for item in rule.items if isinstance(item, Match) and item.field is Field.DPORT)
    assert 500 in ports.values and 4500 in ports.values and 501 not in ports.values


def test_nft_udp_port_match_carries_its_protocol_dependency():
    rule = chains(nft("gateway-host.json"))["inet filter output"].rules[2]  # udp dport 4500 accept
    assert [item.field for item in rule.items if isinstance(item, Match)] == [Field.PROTOCOL, Field.DPORT]


def test_nft_fully_modelled_listing_is_parsed():
    ruleset, status = read_nft_json(fixture("priorities.json"), "priorities.json")
    assert status.status is ParseState.PARSED and not status.unrecognized
    base = {name: (c.hook, c.priority, c.type) for name, c in chains(ruleset).items() if c.is_base}
    assert base["inet early output"] == ("output", -10, "filter")
    assert base["inet late output"] == ("output", 10, "filter")
    assert base["ip raw output"] == ("output", -300, "filter")
    assert base["ip nat output"] == ("output", -100, "nat")
    assert [c.priority for c in ruleset.base_chains["output"]] == [-300, -100, -10, 10]


def test_nft_unmodelled_matches_are_listed_and_kept_as_unknown():
    ruleset, status = read_nft_json(fixture("unmodelled.json"), "unmodelled.json")
    assert status.status is ParseState.PARTIALLY_UNRECOGNIZED
    listed = " | ".join(u.text for u in status.unrecognized)
    for unmodelled in ("meta mark 1", "ip daddr . udp dport @pairs", "meta skuid 0", "limit rate 10/second",
                       "fib", "ct mark 7", "chain netdev edge ingress"):
        assert unmodelled in listed
    assert len(status.unrecognized) == 7
    rule = chains(ruleset)["inet t output"].rules[2]  # udp dport 500 meta skuid 0 accept
    assert [item.field for item in rule.items if isinstance(item, Match)] == [Field.PROTOCOL, Field.DPORT,
                                                                              Field.UNKNOWN]
    assert rule.unmodelled == ("`meta skuid 0`",)


def test_nft_concatenation_keeps_its_protocol_dependency():
    rule = chains(nft("unmodelled.json"))["inet t output"].rules[1]  # ip daddr . udp dport @pairs accept
    assert [item.field for item in rule.items if isinstance(item, Match)] == [Field.PROTOCOL, Field.UNKNOWN]


def test_nft_constants_for_ipv4_are_folded():
    rules = chains(nft("sets-and-flags.json"))["inet matches output"].rules
    assert [item.field for item in rules[0].items if isinstance(item, Match)] == [Field.NEVER]  # nfproto ipv6
    assert [item.field for item in rules[1].items if isinstance(item, Match)] == [Field.NEVER]  # ip6 daddr
    # The masked address nft printed as a prefix, and `ip daddr & 255.255.0.0 == 10.1.0.0` the same way.
    masked = next(item for item in rules[5].items if isinstance(item, Match))
    assert (masked.values.lows, masked.values.highs) == ((0x0A010000,), (0x0A01FFFF,))


def test_iptables_nft_tables_seen_by_nft_are_opaque_xt():
    ruleset, status = read_nft_json(fixture("gateway-host.iptables-nft.json"), "x.json")
    assert status.status is ParseState.PARTIALLY_UNRECOGNIZED
    assert any("xt match conntrack" in u.text for u in status.unrecognized)
    assert {t.name for t in ruleset.tables} == {"raw", "mangle", "nat", "filter"}


# iptables ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gateway-host.iptables-nft.save", "gateway-host.iptables-legacy.save"])
def test_iptables_tables_chains_policies_and_line_numbers(name):
    text = fixture(name)
    ruleset, status = read_iptables_save(text, name)
    by_name = chains(ruleset)
    assert {n for n, c in by_name.items() if c.is_base} == {
        "ip raw PREROUTING", "ip raw OUTPUT", "ip mangle PREROUTING", "ip mangle INPUT", "ip mangle FORWARD",
        "ip mangle OUTPUT", "ip mangle POSTROUTING", "ip nat PREROUTING", "ip nat INPUT", "ip nat OUTPUT",
        "ip nat POSTROUTING", "ip filter INPUT", "ip filter FORWARD", "ip filter OUTPUT"}
    assert (by_name["ip filter INPUT"].policy, by_name["ip filter OUTPUT"].policy) == ("drop", "accept")
    assert (by_name["ip raw PREROUTING"].priority, by_name["ip mangle FORWARD"].priority,
            by_name["ip nat POSTROUTING"].priority, by_name["ip nat PREROUTING"].priority) == (-300, -150, 100, -100)
    assert by_name["ip nat POSTROUTING"].type == "nat"
    assert not by_name["ip filter IKE"].is_base
    lines = text.splitlines()
    for chain in by_name.values():
        for position, rule in enumerate(chain.rules, start=1):
            assert lines[rule.ref.line - 1] == rule.ref.text  # the line a person opens
            assert rule.position == position
        if chain.policy_ref:
            assert lines[chain.policy_ref.line - 1].startswith(f":{chain.name} ")
    assert status.status is ParseState.PARTIALLY_UNRECOGNIZED
    listed = " | ".join(u.text for u in status.unrecognized)
    assert len(status.unrecognized) == 4
    assert all(f"`-m {module} " in listed for module in ("addrtype", "limit", "owner", "recent"))


def test_iptables_legacy_and_nft_back_ends_give_the_same_rules():
    legacy, _ = read_iptables_save(fixture("gateway-host.iptables-legacy.save"), "l")
    nf, _ = read_iptables_save(fixture("gateway-host.iptables-nft.save"), "n")

    def shape(ruleset):
        return {name: (c.hook, c.priority, c.policy, [r.ref.text for r in c.rules]) for name, c in chains(ruleset).items()}

    assert shape(legacy) == shape(nf)


def test_iptables_rule_matches_targets_and_negation():
    by_name = chains(read_iptables_save(fixture("gateway-host.iptables-nft.save"), "x")[0])
    output = by_name["ip filter OUTPUT"].rules
    assert output[1].ref.text == "-A OUTPUT -p tcp -m tcp ! --dport 443 -m multiport --sports 1:1023 -j DROP"
    dport = next(i for i in output[1].items if isinstance(i, Match) and i.field is Field.DPORT)
    assert dport.negated and 443 in dport.values
    sport = next(i for i in output[1].items if isinstance(i, Match) and i.field is Field.SPORT)
    assert 1 in sport.values and 1023 in sport.values and 1024 not in sport.values
    wildcard = next(i for i in output[3].items if isinstance(i, Match) and i.field is Field.OIFNAME)
    assert wildcard.negated and "eth7" in wildcard.values and "wlan0" not in wildcard.values
    clamp = by_name["ip mangle FORWARD"].rules[0].items[-1]
    assert (clamp.effect.value, clamp.mss_bytes) == ("mss_clamp", 1400)


def test_iptables_table_without_commit_is_left_out_and_said():
    text = "*filter\n:INPUT DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp --dport 500 -j DROP\n"
    ruleset, status = read_iptables_save(text, "x")
    assert ruleset.tables == ()
    assert status.status is ParseState.PARTIALLY_UNRECOGNIZED
    assert "without COMMIT" in status.unrecognized[0].text and status.unrecognized[0].line == 1


def test_iptables_odd_lines_are_listed_not_fatal():
    text = "\n".join([
        "# a comment", "*filter", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        "[12:3456] -A OUTPUT -p udp -m udp --dport 4500 -j DROP",  # iptables-save -c
        "-A NOSUCH -j DROP", "-I OUTPUT 1 -j ACCEPT", '-A OUTPUT -m comment --comment "unterminated -j ACCEPT',
        "-A OUTPUT -p udp -m udp --dport 500 -j NOSUCHCHAIN", "COMMIT", "*weird", "COMMIT"])
    ruleset, status = read_iptables_save(text, "x")
    rules = chains(ruleset)["ip filter OUTPUT"].rules
    assert rules[0].ref.line == 5
    assert evaluate(ruleset, out_udp(4500)).outcome is Outcome.DROPPED
    texts = " | ".join(f"{u.line}: {u.text}" for u in status.unrecognized)
    for expected in ("7: -I OUTPUT 1", "6: rules of chain NOSUCH", "8: ", "9: ", "11: table weird"):
        assert expected in texts
    # What iptables would do with an unknown target is not guessed.
    assert evaluate(ruleset, out_udp(500)).outcome is Outcome.UNKNOWN


def test_iptables_empty_listing_is_an_empty_ruleset():
    ruleset, status = read_iptables_save("", "x")
    assert ruleset.tables == () and status.status is ParseState.PARSED


# Hostile input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", [read_nft_json, read_iptables_save])
def test_binary_input_fails_cleanly(reader):
    for junk in (b"\x7fELF\x02\x01\x01\x00\x00\x00", bytes(range(256)), "table\x00 inet"):
        ruleset, status = reader(junk, "junk")
        assert ruleset is None and status.status is ParseState.FAILED
        assert "binary" in status.detail


@pytest.mark.parametrize("reader", [read_nft_json, read_iptables_save])
def test_huge_input_fails_without_being_read(reader):
    huge = "#" * (MAX_INPUT_CHARS + 1)
    ruleset, status = reader(huge, "huge")
    assert ruleset is None and status.status is ParseState.FAILED and "too large" in status.detail


def test_deep_json_nesting_fails_cleanly():
    ruleset, status = read_nft_json("[" * 200_000 + "]" * 200_000, "deep")
    assert ruleset is None and status.status is ParseState.FAILED


def test_deep_expression_nesting_inside_a_rule_is_an_unknown_match():
    left: dict = {"payload": {"protocol": "tcp", "field": "flags"}}
    for _ in range(400):
        left = {"&": [left, "syn"]}
    document = {"nftables": [{"table": {"family": "inet", "name": "t"}},
                             {"chain": {"family": "inet", "table": "t", "name": "o", "type": "filter",
                                        "hook": "output", "prio": 0, "policy": "accept"}},
                             {"rule": {"family": "inet", "table": "t", "chain": "o",
                                       "expr": [{"match": {"op": "==", "left": left, "right": "syn"}},
                                                {"drop": None}]}}]}
    ruleset, status = read_nft_json(json.dumps(document), "deep")
    assert status.status is ParseState.PARTIALLY_UNRECOGNIZED
    assert evaluate(ruleset, out_udp(500)).outcome is Outcome.UNKNOWN


def test_unknown_json_keys_objects_and_expressions_are_listed():
    document = json.loads(fixture("priorities.json"))
    objects = document["nftables"]
    objects[1]["table"]["future_key"] = {"anything": [1, 2]}  # unknown keys inside known objects: ignored
    objects.append({"tunnel": {"family": "inet", "table": "early", "name": "x"}})  # an object kind not known
    objects.append({"rule": {"family": "inet", "table": "early", "chain": "output",
                             "expr": [{"hologram": {"beam": 1}}, {"accept": None}]}})
    objects.append(["not", "an", "object"])
    ruleset, status = read_nft_json(json.dumps(document), "p.json")
    assert status.status is ParseState.PARTIALLY_UNRECOGNIZED
    listed = " | ".join(u.text for u in status.unrecognized)
    assert "tunnel object" in listed and "hologram" in listed and "not an nft object" in listed
    # The unknown statement makes a packet that reaches that rule unknown, naming it.
    decision = evaluate(ruleset, out_udp(53))
    assert decision.outcome is Outcome.UNKNOWN and "hologram" in decision.rule.text


@pytest.mark.parametrize("text, why", [
    ("table inet filter {\n\tchain input {\n\t}\n}\n", "give `nft -j list ruleset`"),
    ('{"nftables": {"table": {}}}', 'no "nftables" array'),
    ("[1, 2, 3]", 'no "nftables" array'),
    ("{not json", "not JSON"),
])
def test_not_an_nft_listing_fails_with_why(text, why):
    ruleset, status = read_nft_json(text, "x")
    assert ruleset is None and status.status is ParseState.FAILED and why in status.detail


def test_not_an_iptables_listing_fails_with_why():
    ruleset, status = read_iptables_save(fixture("gateway-host.json"), "x")
    assert ruleset is None and status.status is ParseState.FAILED and "no *table line" in status.detail


def test_unrecognized_list_is_bounded():
    lines = ["*filter", ":OUTPUT ACCEPT [0:0]"] + [f"-A OUTPUT -m owner --uid-owner {i} -j DROP" for i in range(500)]
    ruleset, status = read_iptables_save("\n".join(lines + ["COMMIT"]), "x")
    assert len(status.unrecognized) == MAX_UNRECOGNIZED
    assert "500 not understood" in status.detail
    assert len(chains(ruleset)["ip filter OUTPUT"].rules) == 500


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_random_text_never_raises(text):
    for reader in (read_nft_json, read_iptables_save):
        ruleset, status = reader(text, "random")
        assert status.status in tuple(ParseState)
        if ruleset is not None:
            evaluate(ruleset, out_udp(4500))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["table", "chain", "rule", "set", "map", "x"]),
                                st.dictionaries(st.sampled_from(["family", "table", "name", "chain", "hook", "prio",
                                                                 "policy", "type", "expr", "elem", "handle"]),
                                                json_values, max_size=8), min_size=1, max_size=1), max_size=8))
def test_random_nft_objects_never_raise(objects):
    ruleset, status = read_nft_json(json.dumps({"nftables": objects}), "random")
    assert status.status in tuple(ParseState)
    if ruleset is not None:
        for path in Hook:
            evaluate(ruleset, Packet(path, Protocol.TCP, "198.51.100.2", "203.0.113.10", None, 443, None, None))


NFT_WORDS = ["match", "payload", "meta", "ct", "&", "|", "set", "prefix", "range", "concat", "elem", "mangle",
             "vmap", "jump", "goto", "accept", "drop", "reject", "return", "counter", "limit", "xt", "tcp option",
             "rt", "notrack", "dnat", "op", "left", "right", "key", "protocol", "field", "target", "data", "value",
             "addr", "len", "name", "type", "ip", "udp", "tcp", "th", "saddr", "daddr", "dport", "flags", "state",
             "iifname", "l4proto", "nfproto", "==", "!=", "in", "<", "syn", "established", "maxseg", "@s"]
nft_expressions = st.recursive(
    st.none() | st.integers(-1, 70000) | st.sampled_from(NFT_WORDS) | st.sampled_from(["10.0.0.1", "eth*", "1.2.3.4/8"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NFT_WORDS), inner, min_size=1,
                                                                max_size=3),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(st.lists(nft_expressions, max_size=5), st.lists(nft_expressions, max_size=3))
@example([{"match": {"op": "==", "left": {"meta": "iifname"}, "right": "eth0"}}, {"accept": None}], [])
def test_random_nft_expressions_never_raise(expressions, elements):
    document = {"nftables": [
        {"table": {"family": "inet", "name": "t"}},
        {"set": {"family": "inet", "table": "t", "name": "s", "type": "ipv4_addr", "elem": elements}},
        {"chain": {"family": "inet", "table": "t", "name": "o", "type": "filter", "hook": "output", "prio": 0}},
        {"rule": {"family": "inet", "table": "t", "chain": "o", "expr": expressions}}]}
    ruleset, status = read_nft_json(json.dumps(document), "random")
    assert status.status in tuple(ParseState)
    for protocol, port in ((Protocol.UDP, 4500), (Protocol.TCP, 443), (Protocol.ESP, None)):
        evaluate(ruleset, Packet(Hook.OUTPUT, protocol, "198.51.100.2", "10.0.0.1", port, port, None, "eth0"))


IPTABLES_WORDS = ["-A", "OUTPUT", "X", "-p", "udp", "tcp", "esp", "all", "-m", "tcp", "udp", "multiport", "conntrack",
                  "state", "iprange", "comment", "owner", "--dport", "--sport", "--dports", "--ctstate", "--state",
                  "NEW,ESTABLISHED", "SNAT", "--tcp-flags", "SYN,RST", "SYN", "ALL", "--syn", "--src-range",
                  "1.2.3.4-1.2.3.9", "!", "-s", "-d", "10.0.0.0/8", "10.0.0.0/255.0.255.0", "-i", "-o", "eth+", "-f",
                  "-j", "-g", "ACCEPT", "DROP", "REJECT", "RETURN", "TCPMSS", "--set-mss", "1350", "--clamp-mss-to-pmtu",
                  "CT", "--notrack", "NFQUEUE", "DNAT", "LOG", "500", "1:1023", ":", '"', "[1:2]"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(IPTABLES_WORDS), max_size=12), max_size=6))
def test_random_iptables_rules_never_raise(rules):
    text = "\n".join(["*filter", ":OUTPUT DROP [0:0]", ":X - [0:0]", *(" ".join(["-A", "OUTPUT", *r]) for r in rules),
                      "COMMIT"])
    ruleset, status = read_iptables_save(text, "random")
    assert status.status in tuple(ParseState)
    for protocol, port in ((Protocol.UDP, 4500), (Protocol.TCP, 443), (Protocol.ESP, None)):
        evaluate(ruleset, Packet(Hook.OUTPUT, protocol, "198.51.100.2", "10.0.0.1", port, port, None, "eth0"))


# The host's own firewall -------------------------------------------------------------------------

HOST_OUTPUTS = {"nft": "host-all.json", "iptables-save": "host-all.iptables-nft.save",
                "iptables-legacy-save": "host-all.iptables-legacy.save"}


def recorded_host(argv: list[str]) -> tuple[str | None, str]:
    errors = fixture("host-all.iptables-nft.stderr") if argv[0] == "iptables-save" else ""
    return fixture(HOST_OUTPUTS[argv[0]]), errors


def test_host_firewall_takes_iptables_nft_tables_from_iptables_save_once():
    rulesets, statuses = read_host_firewall(recorded_host)
    assert [r.kind for r in rulesets] == ["nftables", "iptables", "iptables"]
    assert [s.file for s in statuses] == ["nft -j list ruleset", "iptables-save", "iptables-legacy-save"]
    nft_ruleset = rulesets[0]
    assert {(t.family, t.name) for t in nft_ruleset.tables} == {("inet", "host_filter")}
    assert any("table ip filter read from iptables-save" in note for note in nft_ruleset.notes)
    # Each table walked once: nft's own, iptables-nft's (with its own matches understood), legacy's.
    everything = combined(rulesets)
    assert evaluate(everything, out_udp(500, "203.0.113.55")).rule.table == "inet host_filter"
    assert evaluate(everything, out_udp(4500, "203.0.113.77")).rule.file == "iptables-legacy-save"
    answer = Packet(Hook.INPUT, Protocol.UDP, "192.0.2.1", "198.51.100.2", 500, 500, "eth0", None, CtState.ESTABLISHED)
    assert evaluate(everything, answer).outcome is Outcome.ACCEPTED  # -m conntrack, opaque `xt` to nft


def test_host_firewall_with_legacy_back_end_keeps_nft_tables():
    outputs = {"nft": fixture("host.json"), "iptables-save": fixture("host-legacy.iptables")}
    rulesets, statuses = read_host_firewall(lambda argv: (outputs[argv[0]], ""))
    assert [r.kind for r in rulesets] == ["nftables", "iptables"]
    assert len(statuses) == 2


def test_host_firewall_reports_a_listing_that_failed():
    def runner(argv):
        if argv[0] == "nft":
            return None, "nft -j list ruleset failed: Operation not permitted (you must be root)"
        return fixture("host-legacy.iptables"), ""

    rulesets, statuses = read_host_firewall(runner)
    assert [r.kind for r in rulesets] == ["iptables"]
    failed = [s for s in statuses if s.status is ParseState.FAILED]
    assert [(s.file, s.kind) for s in failed] == [("nft -j list ruleset", "nftables")]
    assert "Operation not permitted" in failed[0].detail


def test_host_firewall_with_neither_tool_says_so():
    rulesets, statuses = read_host_firewall(lambda argv: (None, f"{argv[0]} {host.NOT_INSTALLED}"))
    assert rulesets == []
    assert len(statuses) == 1 and statuses[0].status is ParseState.FAILED and "neither" in statuses[0].detail


def test_host_firewall_with_one_tool_missing_is_not_a_failure():
    outputs = {"nft": (fixture("host.json"), "")}
    rulesets, statuses = read_host_firewall(lambda argv: outputs.get(argv[0], (None, f"{argv[0]} {host.NOT_INSTALLED}")))
    assert [r.kind for r in rulesets] == ["nftables"] and [s.status for s in statuses] == [ParseState.PARSED]


def test_run_command_bounds_output_time_and_failure(monkeypatch):
    python = sys.executable
    text, errors = host.run_command([python, "-c", "import sys; print('listing'); sys.stderr.write('# Warning')"])
    assert (text, errors) == ("listing\n", "# Warning")
    text, why = host.run_command([python, "-c", f"import sys; sys.stdout.write('x' * {MAX_INPUT_CHARS + 1})"])
    assert text is None and "more than" in why
    text, why = host.run_command([python, "-c", "import sys; sys.stderr.write('denied'); sys.exit(1)"])
    assert text is None and "denied" in why
    monkeypatch.setattr(host, "COMMAND_SECONDS", 0.5)
    text, why = host.run_command([python, "-c", "import time; time.sleep(30)"])
    assert text is None and "did not finish" in why
    text, why = host.run_command([f"no-such-tool-{uuid.uuid4().hex}"])
    assert text is None and why.endswith(host.NOT_INSTALLED)


@needs_lab
@pytest.mark.lab
def test_host_firewall_read_for_real_in_a_namespace():
    """nft, iptables-nft and iptables-legacy tables at once in a namespace's real netfilter, read
    back by read_host_firewall run inside it."""
    for tool in ("nft", "iptables-nft-restore", "iptables-legacy-restore"):
        assert shutil.which(tool), f"{tool} is needed"
    namespace = f"xcheck-fwhost-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        def run(*argv: str, stdin: str | None = None) -> str:
            return subprocess.run(["ip", "netns", "exec", namespace, *argv], input=stdin, capture_output=True,
                                  text=True, check=True, timeout=60).stdout

        run("nft", "-f", str(FIXTURES / "host.nft"))
        run("iptables-nft-restore", stdin=fixture("gateway-host.rules"))
        run("iptables-legacy-restore", stdin=fixture("host-legacy.iptables"))
        script = ("import json; from agent.audit.firewall import read_host_firewall; "
                  "r, s = read_host_firewall(); "
                  "print(json.dumps({'kinds': [x.kind for x in r], 'tables': [sorted(f'{t.family} {t.name}' "
                  "for t in x.tables) for x in r], 'statuses': [st.to_dict() for st in s]}))")
        seen = json.loads(subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", script],
                                         capture_output=True, text=True, check=True, timeout=60,
                                         cwd=REPOSITORY).stdout)
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert seen["kinds"] == ["nftables", "iptables", "iptables"]
    assert seen["tables"][0] == ["inet host_filter"]
    assert seen["tables"][1] == ["ip filter", "ip mangle", "ip nat", "ip raw"]
    assert seen["tables"][2] == ["ip filter"]
    assert [s["file"] for s in seen["statuses"]] == ["nft -j list ruleset", "iptables-save", "iptables-legacy-save"]
