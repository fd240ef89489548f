"""The netfilter walk of `evaluate` over rulesets the real tools printed (tests/fixtures/firewall_read):
verdicts, jump/goto/return, sets and maps, negation, interface wildcards, conntrack (raw before it,
notrack), matches not modelled, policies, base chains and priorities. The kernel itself is the
oracle in tests/test_lab_firewall_kernel.py; these pin each rule of the walk one by one."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agent.audit.firewall import (
    CtState, Outcome, Packet, Path as Hook, Protocol, evaluate, read_iptables_save, read_nft_json,
)
from agent.audit.firewall import walk
from agent.audit.firewall.walk import clamps_on, trace
from agent.audit.firewall.ruleset import Ruleset, combined

FIXTURES = Path(__file__).parent / "fixtures" / "firewall_read"
SITE, GATEWAY = "198.51.100.2", "203.0.113.10"
UDP, TCP, ESP = Protocol.UDP, Protocol.TCP, Protocol.ESP
NEW, ESTABLISHED = CtState.NEW, CtState.ESTABLISHED


def nft(name: str) -> Ruleset:
    return read_nft_json((FIXTURES / name).read_text(), name)[0]


def iptables(text: str, name: str = "rules") -> Ruleset:
    ruleset, status = read_iptables_save(text, name)
    assert ruleset is not None, status
    return ruleset


def save(table_lines: dict[str, list[str]]) -> Ruleset:
    """iptables-save text for a few tables: {"*filter": [":INPUT DROP [0:0]", "-A ..."]}."""
    lines = []
    for table, body in table_lines.items():
        lines += [table, *body, "COMMIT"]
    return iptables("\n".join(lines) + "\n")


def out(protocol: Protocol, port: int | None, destination: str = GATEWAY, interface: str | None = "eth0",
        state: CtState = NEW, source_port: int | None = None) -> Packet:
    sport = port if source_port is None and protocol is UDP else source_port
    return Packet(Hook.OUTPUT, protocol, SITE, destination, sport, port, None, interface, state)


def inp(protocol: Protocol, port: int | None, source: str = GATEWAY, interface: str | None = "eth0",
        state: CtState = NEW, source_port: int | None = None) -> Packet:
    sport = port if source_port is None and protocol is UDP else source_port
    return Packet(Hook.INPUT, protocol, source, SITE, sport, port, interface, None, state)


def fwd(protocol: Protocol, port: int | None, destination: str = GATEWAY, source: str | None = "10.0.0.5",
        into: str | None = "lan0", out_of: str | None = "eth0", state: CtState = NEW) -> Packet:
    sport = port if protocol is UDP else 40000 if protocol is TCP else None
    return Packet(Hook.FORWARD, protocol, source, destination, sport, port, into, out_of, state)


def decided(ruleset: Ruleset, packet: Packet, outcome: Outcome, rule_text: str | None) -> None:
    decision = evaluate(ruleset, packet)
    assert decision.outcome is outcome, decision.reason
    if rule_text is None:
        assert decision.rule is None or decision.rule.text.startswith(":") or "policy" in decision.rule.text, decision
    else:
        assert decision.rule is not None and rule_text in decision.rule.text, decision.reason
    assert decision.reason and "\n" not in decision.reason


# nftables: gateway-host.json ---------------------------------------------------------------------

GATEWAY_HOST_CASES = [
    # set lookups (interval set with a prefix, port set), interface wildcard
    ("in ike from gateway", inp(UDP, 4500), Outcome.ACCEPTED, '"eth*" ip saddr @azure_gateways udp dport @ike_ports'),
    ("in ike from stranger", inp(UDP, 4500, "203.0.113.99"), Outcome.REJECTED, "reject with icmp admin-prohibited"),
    ("in ike on another interface", inp(UDP, 4500, interface="wlan0"), Outcome.REJECTED, "reject with icmp"),
    ("in esp from set prefix", inp(ESP, None, "198.51.100.15"), Outcome.ACCEPTED, "ip saddr @azure_gateways meta l4proto esp"),
    ("in esp past the prefix", inp(ESP, None, "198.51.100.16"), Outcome.REJECTED, "reject with icmp"),
    # jump, then return to the rule after the jump
    ("in dns returns from jump", inp(UDP, 53, "192.0.2.1", source_port=5353), Outcome.ACCEPTED, "udp dport 53 accept comment"),
    # a verdict map on conntrack state
    ("in established", inp(UDP, 4500, "192.0.2.1", state=ESTABLISHED), Outcome.ACCEPTED, "ct state vmap"),
    # goto: the chain's return goes to the base chain's policy, not to the rule after the goto
    ("fwd https", fwd(TCP, 443), Outcome.ACCEPTED, "tcp dport 443 accept"),
    ("fwd http returns to policy", fwd(TCP, 80), Outcome.DROPPED, None),
    ("fwd dns after goto", fwd(UDP, 53), Outcome.DROPPED, None),
    ("fwd dns without goto", fwd(UDP, 53, out_of="wlan0"), Outcome.ACCEPTED, 'iifname "lan0" udp dport 53 accept'),
    ("fwd to blocked address", fwd(UDP, 500, "192.0.2.66"), Outcome.DROPPED, "ip daddr 192.0.2.66 drop"),
    ("fwd from outside the lan prefix", fwd(UDP, 500, source="10.0.1.5"), Outcome.DROPPED, None),
    # jump and return by set; reject in a jumped-to chain; drop on protocol
    ("out natt to gateway", out(UDP, 4500), Outcome.ACCEPTED, "udp dport 4500 accept # handle 34"),
    ("out natt to stranger", out(UDP, 4500, "203.0.113.99"), Outcome.REJECTED, "udp dport 4500 reject"),
    ("out esp to stranger", out(ESP, None, "203.0.113.99"), Outcome.DROPPED, "ip protocol esp drop"),
    ("out esp not via eth0", out(ESP, None, "203.0.113.99", "wlan0"), Outcome.ACCEPTED, None),
    ("out to blocked address", out(UDP, 4500, "192.0.2.99"), Outcome.DROPPED, "ip daddr 192.0.2.99 drop"),
]


@pytest.mark.parametrize("name, packet, outcome, rule_text", GATEWAY_HOST_CASES, ids=[c[0] for c in GATEWAY_HOST_CASES])
def test_gateway_host_nft(name, packet, outcome, rule_text):
    decided(nft("gateway-host.json"), packet, outcome, rule_text)


def test_policy_is_named_with_its_chain():
    decision = evaluate(nft("gateway-host.json"), fwd(TCP, 80))
    assert decision.rule.chain == "forward" and decision.rule.table == "inet filter"
    assert "policy drop" in decision.reason and "chain forward" in decision.reason


def test_an_unknown_interface_is_not_guessed():
    decision = evaluate(nft("gateway-host.json"), out(UDP, 4500, "203.0.113.99", interface=None))
    assert decision.outcome is Outcome.UNKNOWN
    assert 'oifname "eth0" jump out_eth' in decision.rule.text and "output interface" in decision.reason
    assert "accepted or rejected" in decision.reason
    # The interface is known not to exist on OUTPUT's input side: no guess needed there.
    assert evaluate(nft("gateway-host.json"), out(UDP, 4500, "203.0.113.99", interface="eth0")).outcome is Outcome.REJECTED


# nftables: priorities.json -----------------------------------------------------------------------

PRIORITY_CASES = [
    # accept in the chain at -10 ends only that chain: the one at 10 still drops
    ("accept ends only its chain", out(UDP, 4500), Outcome.DROPPED, "table_late:udp dport 4500 drop"),
    ("both chains accept", out(UDP, 500), Outcome.ACCEPTED, "table_late:udp dport 500 accept"),
    # nat chains see only a connection's first packet
    ("nat chain drops new", out(UDP, 500, "203.0.113.66"), Outcome.DROPPED, "table_nat:ip daddr 203.0.113.66 drop"),
    ("nat chain skipped when established", out(UDP, 500, "203.0.113.66", state=ESTABLISHED), Outcome.ACCEPTED,
     "table_late:ct state established accept"),
    # raw (priority -300) runs before conntrack: even an established packet is "invalid" there
    ("raw sees no conntrack state", out(UDP, 7000, state=ESTABLISHED), Outcome.DROPPED, "table_raw:ct state invalid drop"),
    ("raw sees no conntrack state, new", out(UDP, 7000), Outcome.DROPPED, "table_raw:ct state invalid drop"),
    ("policy of the late chain", out(UDP, 53), Outcome.DROPPED, None),
    # notrack in raw: the answer is untracked, not established, from there on
    ("notracked answer", inp(ESP, None, state=ESTABLISHED), Outcome.ACCEPTED, "table_answers:ct state untracked"),
    ("notracked answer from elsewhere", inp(ESP, None, "203.0.113.11", state=ESTABLISHED), Outcome.DROPPED, None),
    ("tracked answer", inp(UDP, 4500, "203.0.113.11", state=ESTABLISHED), Outcome.ACCEPTED,
     "table_answers:ct state established accept"),
]


@pytest.mark.parametrize("name, packet, outcome, rule", PRIORITY_CASES, ids=[c[0] for c in PRIORITY_CASES])
def test_priorities_nft(name, packet, outcome, rule):
    decision = evaluate(nft("priorities.json"), packet)
    assert decision.outcome is outcome, decision.reason
    if rule is not None:
        table, text = rule.split(":", 1)
        assert decision.rule.table.endswith(table.removeprefix("table_")) and text in decision.rule.text, decision
    else:
        assert "policy drop" in decision.reason


def test_notrack_is_reported_to_the_judge():
    ruleset = nft("priorities.json")
    assert trace(ruleset, out(ESP, None)).untracked
    assert not trace(ruleset, out(UDP, 500)).untracked


def test_equal_priorities_run_the_later_registered_chain_first():
    """Two tables with a drop each at priority 0: the kernel (tests/fixtures/firewall_read/README:
    a new hook goes before those of its priority) runs the one listed last first."""
    ruleset = save({"*filter": [":OUTPUT ACCEPT [0:0]", "-A OUTPUT -p udp -j DROP"]})
    other = iptables("*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p udp -m udp --dport 4500 -j DROP\nCOMMIT\n", "second")
    decision = evaluate(combined([ruleset, other]), out(UDP, 4500))
    assert decision.outcome is Outcome.DROPPED and decision.rule.file == "second"


# nftables: sets-and-flags.json -------------------------------------------------------------------

SETS_CASES = [
    ("named verdict map accepts", out(UDP, 500), Outcome.ACCEPTED, "udp dport vmap @ike_verdicts"),
    ("named verdict map jumps, anonymous set", out(UDP, 4500), Outcome.ACCEPTED, "ip daddr { 198.51.100.1-198.51.100.9"),
    ("range in anonymous set", out(UDP, 4500, "198.51.100.9"), Outcome.ACCEPTED, "ip daddr {"),
    ("negated prefix, then drop", out(UDP, 4500, "192.0.2.7"), Outcome.DROPPED, "drop # handle"),
    ("continue goes on", out(UDP, 4500, "203.0.113.99"), Outcome.DROPPED, "drop # handle"),
    ("literal star", out(UDP, 123, interface="eth*"), Outcome.DROPPED, 'oifname "eth\\*" drop'),
    ("not the literal star", out(UDP, 123, interface="eth0"), Outcome.ACCEPTED, None),
    ("wildcard", out(UDP, 700, interface="wg0"), Outcome.ACCEPTED, 'oifname "wg*" accept'),
    ("mask as a prefix", out(UDP, 53, "10.1.200.3"), Outcome.DROPPED, "ip daddr 10.1.0.0/16 drop"),
    ("outside the mask", out(UDP, 700, "10.2.0.1"), Outcome.REJECTED, "udp dport < 1024 reject"),
    ("negated set with range and comparison", out(UDP, 700), Outcome.REJECTED, "udp dport != { 53, 123, 1000-2000 }"),
    ("in the negated set", out(UDP, 1500), Outcome.ACCEPTED, None),
    ("above the comparison", out(UDP, 2500), Outcome.ACCEPTED, None),
    ("first tcp packet is a syn", out(TCP, 8443, source_port=40000), Outcome.DROPPED, "tcp flags syn tcp dport 8443"),
    ("syn-ack mask never on a first packet", out(TCP, 443, source_port=40000), Outcome.ACCEPTED, None),
    ("answer not established", inp(TCP, 40000, source_port=443), Outcome.DROPPED, "ct state != established"),
    ("answer established", inp(TCP, 40000, source_port=443, state=ESTABLISHED), Outcome.ACCEPTED, None),
]


@pytest.mark.parametrize("name, packet, outcome, rule_text", SETS_CASES, ids=[c[0] for c in SETS_CASES])
def test_sets_and_flags_nft(name, packet, outcome, rule_text):
    decided(nft("sets-and-flags.json"), packet, outcome, rule_text)


def test_ipv6_only_matches_never_hold_for_ipv4():
    ruleset = nft("sets-and-flags.json")
    assert evaluate(ruleset, out(UDP, 123, "0.0.0.1")).outcome is Outcome.ACCEPTED  # meta nfproto ipv6 / ip6 daddr


def test_established_tcp_flags_are_not_one_packet():
    """An established connection's packets are a SYN-ACK, then ACKs: a rule on flags that tells
    them apart decides some and not others, so the answer is unknown, naming it."""
    decision = evaluate(nft("sets-and-flags.json"), inp(TCP, 40000, source_port=8443, state=ESTABLISHED))
    assert decision.outcome is Outcome.UNKNOWN and "TCP flags" in decision.reason
    assert "tcp sport 8443" in decision.rule.text


def test_th_port_of_esp_is_its_spi():
    decision = evaluate(nft("sets-and-flags.json"), out(ESP, None))
    assert decision.outcome is Outcome.UNKNOWN and "th dport 9000" in decision.rule.text


# nftables: unmodelled.json -----------------------------------------------------------------------

def test_unmodelled_match_with_a_verdict_is_unknown_naming_the_rule():
    decision = evaluate(nft("unmodelled.json"), out(UDP, 4500))
    assert decision.outcome is Outcome.UNKNOWN
    assert decision.rule.text.startswith("ip daddr . udp dport @pairs accept")
    assert "not modelled" in decision.reason and "accepted or dropped" in decision.reason


def test_unmodelled_match_without_a_verdict_is_passed_over():
    # `meta mark 0x1 counter` comes first for every packet; it changes nothing.
    decision = evaluate(nft("unmodelled.json"), out(TCP, 80, source_port=40000))
    assert decision.outcome is Outcome.DROPPED and "policy drop" in decision.reason


def test_rule_ruled_out_by_its_other_matches_is_skipped():
    # `udp dport 500 meta skuid 0 accept` and the UDP concatenation do not concern TCP 443.
    decision = evaluate(nft("unmodelled.json"), out(TCP, 443, source_port=40000))
    assert decision.outcome is Outcome.UNKNOWN and "limit rate 10/second" in decision.rule.text


def test_unmodelled_match_on_input():
    decision = evaluate(nft("unmodelled.json"), inp(UDP, 4500, state=ESTABLISHED))
    assert decision.outcome is Outcome.UNKNOWN and decision.rule.text.startswith("ct mark 7 drop")


# iptables: gateway-host, both back ends ----------------------------------------------------------

IPTABLES_CASES = [
    ("user chain accepts", inp(UDP, 500), Outcome.ACCEPTED, "-A IKE -s 203.0.113.0/24 -i eth+ -j ACCEPT"),
    ("iprange", inp(UDP, 500, "198.51.100.7", "wlan0"), Outcome.ACCEPTED, "-A IKE -m iprange"),
    ("return, then log-and-drop chain", inp(UDP, 500, "192.0.2.1"), Outcome.DROPPED, "-A LOGDROP -j DROP"),
    ("conntrack established", inp(UDP, 500, "192.0.2.1", state=ESTABLISHED), Outcome.ACCEPTED,
     "--ctstate RELATED,ESTABLISHED"),
    ("notracked answer is not established", inp(UDP, 4500, "192.0.2.1", state=ESTABLISHED), Outcome.DROPPED,
     "-A LOGDROP -j DROP"),
    ("notracked answer from the gateway", inp(UDP, 4500, state=ESTABLISHED), Outcome.ACCEPTED, "-A IKE -s 203.0.113.0/24"),
    ("reject", out(UDP, 4500, "192.0.2.99"), Outcome.REJECTED, "--reject-with icmp-port-unreachable"),
    ("owner either way accepts", out(TCP, 80, source_port=40000), Outcome.ACCEPTED, None),
    ("esp out of eth0", out(ESP, None), Outcome.ACCEPTED, None),
    ("goto'd chain accepts", fwd(UDP, 500), Outcome.ACCEPTED, "-A LANOUT -p udp -m multiport --dports 500,4500"),
    ("goto'd chain returns to the policy", fwd(UDP, 53), Outcome.DROPPED, None),
    ("no goto", fwd(UDP, 53, out_of="wlan0"), Outcome.ACCEPTED, "-A FORWARD -i lan0 -p udp -m udp --dport 53"),
]


@pytest.mark.parametrize("back_end", ["iptables-nft", "iptables-legacy"])
@pytest.mark.parametrize("name, packet, outcome, rule_text", IPTABLES_CASES, ids=[c[0] for c in IPTABLES_CASES])
def test_gateway_host_iptables(back_end, name, packet, outcome, rule_text):
    name = f"gateway-host.{back_end}.save"
    decided(iptables((FIXTURES / name).read_text(), name), packet, outcome, rule_text)


def test_iptables_rule_names_its_line():
    name = "gateway-host.iptables-legacy.save"
    text = (FIXTURES / name).read_text()
    decision = evaluate(iptables(text, name), out(UDP, 4500, "192.0.2.99"))
    assert text.splitlines()[decision.rule.line - 1] == decision.rule.text
    assert f"{name}:{decision.rule.line}" in decision.reason


def test_unknown_source_port_is_not_guessed():
    ruleset = iptables((FIXTURES / "gateway-host.iptables-nft.save").read_text())
    decision = evaluate(ruleset, out(TCP, 80))  # an ephemeral source port: not known
    assert decision.outcome is Outcome.UNKNOWN and "source port" in decision.reason
    assert "--sports 1:1023" in decision.rule.text


def test_unmodelled_match_deciding_between_accept_and_drop():
    ruleset = iptables((FIXTURES / "gateway-host.iptables-nft.save").read_text())
    decision = evaluate(ruleset, out(ESP, None, interface="wlan0"))
    assert decision.outcome is Outcome.UNKNOWN and "-m owner --uid-owner 0" in decision.rule.text


def test_same_outcome_either_way_is_decided():
    """The Docker-like `-m addrtype` jump and `-m recent` drop are undecidable, but every way
    ends the same: dropped by LOGDROP's last rule."""
    ruleset = iptables((FIXTURES / "gateway-host.iptables-nft.save").read_text())
    decision = evaluate(ruleset, inp(UDP, 500, "192.0.2.1"))
    assert decision.outcome is Outcome.DROPPED and decision.rule.text == "-A LOGDROP -j DROP"
    assert "the same whether or not" in decision.reason and "-m recent" in decision.reason


# Verdicts and walks on small rulesets ------------------------------------------------------------

def test_multiport_ports_is_either_port():
    ruleset = save({"*filter": [":OUTPUT DROP [0:0]", "-A OUTPUT -p udp -m multiport --ports 500,4500 -j ACCEPT",
                                "-A OUTPUT -p tcp -m multiport ! --ports 1:1023 -j ACCEPT"]})
    assert evaluate(ruleset, out(UDP, 4500)).outcome is Outcome.ACCEPTED  # both ports 4500
    assert evaluate(ruleset, out(UDP, 53, source_port=500)).outcome is Outcome.ACCEPTED  # the source port
    assert evaluate(ruleset, out(UDP, 53, source_port=53)).outcome is Outcome.DROPPED
    assert evaluate(ruleset, out(TCP, 443, source_port=40000)).outcome is Outcome.DROPPED  # 443 is in 1:1023
    assert evaluate(ruleset, out(TCP, 8443, source_port=40000)).outcome is Outcome.ACCEPTED
    assert evaluate(ruleset, out(TCP, 443)).outcome is Outcome.DROPPED  # either: the known port decides
    assert evaluate(ruleset, out(TCP, 8443)).outcome is Outcome.UNKNOWN  # the unknown source port could be


def test_unknown_targets_are_not_guessed():
    ruleset = save({"*filter": [":OUTPUT ACCEPT [0:0]", "-A OUTPUT -p udp -m udp --dport 500 -j NFQUEUE --queue-num 1",
                                "-A OUTPUT -p udp -m udp --dport 4500 -j TPROXY --on-port 1"]})
    for port in (500, 4500):
        decision = evaluate(ruleset, out(UDP, port))
        assert decision.outcome is Outcome.UNKNOWN and "not modelled" in decision.reason
    assert evaluate(ruleset, out(UDP, 53)).outcome is Outcome.ACCEPTED


def test_nft_queue_is_unknown():
    # queue is not in this kernel (nft_queue), so this listing is written by hand after libnftables-json(5).
    document = ('{"nftables": [{"table": {"family": "inet", "name": "q"}}, {"chain": {"family": "inet", "table": "q", '
                '"name": "o", "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}, {"rule": {"family": '
                '"inet", "table": "q", "chain": "o", "handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": '
                '{"protocol": "udp", "field": "dport"}}, "right": 4500}}, {"queue": {"num": 1}}]}}]}')
    ruleset, _ = read_nft_json(document, "q.json")
    decision = evaluate(ruleset, out(UDP, 4500))
    assert decision.outcome is Outcome.UNKNOWN and "queue" in decision.reason
    assert evaluate(ruleset, out(UDP, 500)).outcome is Outcome.ACCEPTED


def test_nat_targets_end_the_nat_chain_and_are_noted():
    ruleset = save({"*nat": [":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]",
                             "-A OUTPUT -p udp -m udp --dport 4500 -j DNAT --to-destination 192.0.2.5",
                             "-A OUTPUT -p udp -m udp --dport 4500 -j DROP"]})
    walked = trace(ruleset, out(UDP, 4500))
    assert walked.decision.outcome is Outcome.ACCEPTED and "rewritten by `-A OUTPUT" in walked.decision.reason
    assert [ref.text for ref in walked.rewrites] == ["-A OUTPUT -p udp -m udp --dport 4500 -j DNAT --to-destination 192.0.2.5"]


def test_jump_loops_and_missing_chains_end_unknown():
    loop = save({"*filter": [":OUTPUT ACCEPT [0:0]", ":A - [0:0]", ":B - [0:0]", "-A OUTPUT -j A", "-A A -j B",
                             "-A B -j A"]})
    decision = evaluate(loop, out(UDP, 500))
    assert decision.outcome is Outcome.UNKNOWN and "loop" in decision.reason
    goto_loop = save({"*filter": [":OUTPUT ACCEPT [0:0]", ":A - [0:0]", ":B - [0:0]", "-A OUTPUT -g A", "-A A -g B",
                                  "-A B -g A"]})
    assert evaluate(goto_loop, out(UDP, 500)).outcome is Outcome.UNKNOWN
    missing = save({"*filter": [":OUTPUT ACCEPT [0:0]", "-A OUTPUT -g NOWHERE"]})
    assert evaluate(missing, out(UDP, 500)).outcome is Outcome.UNKNOWN


def test_return_from_base_chain_applies_the_policy():
    ruleset = save({"*filter": [":OUTPUT DROP [0:0]", "-A OUTPUT -p udp -j RETURN", "-A OUTPUT -p udp -j ACCEPT"]})
    decision = evaluate(ruleset, out(UDP, 500))
    assert decision.outcome is Outcome.DROPPED and decision.rule.text == ":OUTPUT DROP [0:0]"


def test_no_chain_on_the_path_accepts():
    decision = evaluate(save({"*filter": [":INPUT DROP [0:0]"]}), out(UDP, 500))
    assert decision.outcome is Outcome.ACCEPTED and decision.rule is None


def test_unknown_addresses_are_not_guessed():
    ruleset = save({"*filter": [":FORWARD DROP [0:0]", "-A FORWARD -s 10.0.0.0/24 -j ACCEPT"]})
    decision = evaluate(ruleset, fwd(UDP, 500, source=None))
    assert decision.outcome is Outcome.UNKNOWN and "source address" in decision.reason
    assert evaluate(ruleset, fwd(UDP, 500, source="10.0.0.9")).outcome is Outcome.ACCEPTED
    assert evaluate(ruleset, fwd(UDP, 500, source="10.0.1.9")).outcome is Outcome.DROPPED


def test_too_many_undecidable_matches_end_unknown_quickly():
    body = [":OUTPUT DROP [0:0]"] + [f"-A OUTPUT -m mark --mark {i} -j ACCEPT" for i in range(500)]
    decision = evaluate(save({"*filter": body}), out(UDP, 500))
    assert decision.outcome is Outcome.UNKNOWN and "-m mark --mark 0" in decision.rule.text


def test_clamps_on_a_path():
    ruleset = nft("gateway-host.json")
    assert [statement.mss_bytes for _, statement in clamps_on(ruleset, Hook.FORWARD)] == [1350]
    assert clamps_on(ruleset, Hook.OUTPUT) == []
    # A clamp after a rule that certainly accepts a SYN is never met.
    shadowed = save({"*mangle": [":FORWARD ACCEPT [0:0]", "-A FORWARD -p tcp -j ACCEPT",
                                 "-A FORWARD -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1350"]})
    assert clamps_on(shadowed, Hook.FORWARD) == []


# The fast path: rules that differ only in their addresses are looked up, not tried one by one ----

def random_ruleset(seed: int) -> Ruleset:
    rng = random.Random(seed)
    lines = ["*filter", ":OUTPUT ACCEPT [0:0]", ":INPUT DROP [0:0]", ":SUB - [0:0]"]
    for _ in range(300):
        chain = rng.choice(["OUTPUT", "INPUT", "SUB"])
        net = f"203.0.113.{rng.randrange(256)}/{rng.choice([24, 28, 30, 32])}"
        field = rng.choice(["-s", "-d", "! -d"])
        extra = rng.choice(["", "-p udp -m udp --dport 4500", "-p esp", "-o eth0", "-m mark --mark 1"])
        target = rng.choice(["ACCEPT", "DROP", "REJECT", "RETURN", "SUB" if chain != "SUB" else "RETURN"])
        lines.append(f"-A {chain} {field} {net} {extra} -j {target}".replace("  ", " "))
    lines.append("COMMIT")
    return iptables("\n".join(lines))


@pytest.mark.parametrize("seed", range(6))
def test_address_index_gives_the_same_answers_as_trying_each_rule(seed, monkeypatch):
    ruleset = random_ruleset(seed)
    packets = [factory(protocol, port, address)
               for factory in (out, inp)
               for protocol, port in ((UDP, 4500), (ESP, None))
               for address in [f"203.0.113.{i}" for i in range(0, 256, 3)]]
    fast = [evaluate(ruleset, packet) for packet in packets]
    monkeypatch.setattr(walk, "_indexed_field", lambda rule: None)
    for table in ruleset.tables:
        for chain in table.chains.values():
            chain.residual_cache.clear()
    slow = [evaluate(ruleset, packet) for packet in packets]
    assert fast == slow
    assert len({d.outcome for d in fast}) > 1  # the rulesets do decide differently per address
