"""The firewall's findings for an Azure VPN: whether UDP 500, UDP 4500, ESP and TCP 443 toward each
gateway leave this host (OUTPUT) or pass through it (FORWARD, on a host that forwards), and whether
their answers come back (INPUT, or FORWARD back, as conntrack's established); and whether the TCP
MSS is clamped at 1350 or less.

A drop or reject names the rule (file:line, table, chain, text) and says what to add; an answer the
evaluator cannot give names the rule it could not judge (firewall.unknown); with measured
reachability the two are set side by side, so "the firewall drops UDP 4500 at rule N, and the probe
saw silence" tells the user where to look, and a firewall that passes a probe that saw silence
says the block is elsewhere.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.audit.findings import Evidence, Finding, Severity
from agent.audit.firewall.walk import clamps_on, trace
from agent.audit.firewall.model import CtState, Outcome, Packet, Path, Protocol, RuleRef
from agent.audit.firewall.ruleset import Chain, Rule, Ruleset, Statement, combined

MSS_LIMIT_BYTES = 1350  # vpn-devices: clamp TCP MSS at 1350 (or a tunnel MTU of 1400)
MAX_NAMED_GATEWAYS = 5  # in one finding's text; the rest counted
NO_RULESET = "no firewall ruleset"  # evidence when no rule decided (no chain on the path, none read)


@dataclass(frozen=True)
class Flow:
    id: str
    name: str
    protocol: Protocol
    port: int | None  # the gateway's port; IKE sends from the same port, TCP from an ephemeral one
    option: str
    severity: Severity  # of a drop
    source: str  # a key of the rule set's [sources]
    checks: tuple[str, ...]  # the probes of facts.reachability that measure it

    @property
    def source_port(self) -> int | None:
        return self.port if self.protocol is Protocol.UDP else None


FLOWS = (
    Flow("firewall.udp500", "UDP 500 (IKE)", Protocol.UDP, 500, "s2s", Severity.ERROR, "vpn-devices",
         ("ike_udp500", "ikev1_udp500")),
    Flow("firewall.udp4500", "UDP 4500 (IKE and ESP behind a NAT: NAT-T)", Protocol.UDP, 4500, "s2s", Severity.ERROR,
         "vpn-faq", ("ike_natt_udp4500",)),
    # Without NAT-T's UDP encapsulation the tunnel comes up (IKE passes) and carries nothing.
    Flow("firewall.esp", "ESP (IP protocol 50)", Protocol.ESP, None, "s2s", Severity.WARNING, "vpn-devices", ("esp",)),
    Flow("firewall.tcp443", "TCP 443 (SSTP, OpenVPN)", Protocol.TCP, 443, "p2s", Severity.ERROR, "p2s-faq",
         ("tls_tcp443", "sstp")),
)


@dataclass(frozen=True)
class Question:
    words: str  # "from this host", "through this host", ...
    path: Path
    answer: bool  # the gateway's answer coming back, not the packet toward it
    measured: bool  # what this host's probes went through (OUTPUT and INPUT, not FORWARD)


SENT = Question("sent by this host", Path.OUTPUT, False, True)
ANSWERED = Question("answers coming back to this host", Path.INPUT, True, True)
FORWARDED = Question("forwarded by this host", Path.FORWARD, False, False)
FORWARDED_BACK = Question("answers forwarded back through this host", Path.FORWARD, True, False)


def judge_firewall(rulesets: Sequence[Ruleset], gateways: Sequence[str], site_address: str | None,
                   reachability: Mapping[str, Any] | None, *, forwards: bool = False,
                   wan_interface: str | None = None, lan_interface: str | None = None,
                   forwarded_source: str | None = None) -> list[Finding]:
    """Findings for each gateway's packets through `rulesets` (all in force at once).

    site_address: this host's own address toward the gateways (the source of what it sends), None
    when not known; reachability: facts.reachability of a run, or None. forwards: the host routes
    for a VPN device behind it (then FORWARD is judged, for packets from `forwarded_source`, None
    when not known, entering on `lan_interface`); wan_interface: the interface toward the gateways,
    None when not known. A rule that depends on a value left unknown makes its answer unknown."""
    if not rulesets:  # none could be read: the parse status says so, and there is nothing to judge
        return []
    ruleset = combined(list(rulesets))
    index = _Index(rulesets)
    questions = [SENT, ANSWERED] + ([FORWARDED, FORWARDED_BACK] if forwards else [])
    groups: dict[tuple, list[str]] = {}
    passed: dict[tuple[str, str], int] = {}  # (flow, gateway) -> how many measured questions it passed
    for gateway in gateways:
        for flow in FLOWS:
            untracked = False
            for question in questions:
                packet = _packet(flow, question, gateway, site_address, forwarded_source, wan_interface,
                                 lan_interface, untracked)
                walked = trace(ruleset, packet)
                if not question.answer:
                    untracked = walked.untracked
                decision = walked.decision
                if decision.outcome is Outcome.ACCEPTED:
                    if question.measured:
                        passed[(flow.id, gateway)] = passed.get((flow.id, gateway), 0) + 1
                    continue
                key = (flow, question, packet.ct_state, decision.outcome, decision.rule, decision.reason)
                groups.setdefault(key, []).append(gateway)
    findings = [_finding(flow, question, state, outcome, rule, reason, names, reachability, index)
                for (flow, question, state, outcome, rule, reason), names in groups.items()]
    findings += _silence_elsewhere(passed, reachability, ruleset)
    return findings + _mss_findings(ruleset, forwards)


def _packet(flow: Flow, question: Question, gateway: str, site_address: str | None, forwarded_source: str | None,
            wan: str | None, lan: str | None, untracked: bool) -> Packet:
    local = forwarded_source if question.path is Path.FORWARD else site_address
    inside = lan if question.path is Path.FORWARD else None
    if not question.answer:
        return Packet(question.path, flow.protocol, local, gateway, flow.source_port, flow.port, inside, wan)
    # An answer conntrack knows as established, unless the packet toward the gateway left conntrack
    # (notrack): then its answer starts a connection of its own. A forwarded answer is seen as the
    # forward chain sees it, after conntrack undid this host's NAT.
    state = CtState.NEW if untracked else CtState.ESTABLISHED
    return Packet(question.path, flow.protocol, gateway, local, flow.port, flow.source_port, wan, inside, state)


class _Index:
    """From a RuleRef back to its rule and chain, and which reader it came from (for the fix)."""

    def __init__(self, rulesets: Sequence[Ruleset]) -> None:
        self.rules: dict[RuleRef, tuple[str, Chain, Rule | None]] = {}
        for ruleset in rulesets:
            for table in ruleset.tables:
                for chain in table.chains.values():
                    if chain.policy_ref is not None:
                        self.rules[chain.policy_ref] = (ruleset.kind, chain, None)
                    for rule in chain.rules:
                        self.rules[rule.ref] = (ruleset.kind, chain, rule)

    def get(self, ref: RuleRef | None) -> tuple[str, Chain, Rule | None] | None:
        return self.rules.get(ref) if ref is not None else None


def _finding(flow: Flow, question: Question, state: CtState, outcome: Outcome, rule: RuleRef | None, reason: str,
             gateways: list[str], reachability: Mapping[str, Any] | None, index: _Index) -> Finding:
    toward = _gateway_words(gateways)
    what = f"{flow.name} {question.words}" + (f" from {toward}" if question.answer else f" to {toward}")
    if question.answer and state is CtState.NEW:
        what += " (not established to conntrack: what went out was notracked)"
    measured = _measured(flow, gateways, reachability) if question.measured else ""
    evidence = Evidence(rule.file, rule.line) if rule else Evidence(NO_RULESET, None)
    if outcome is Outcome.UNKNOWN:
        return Finding("firewall.unknown", Severity.WARNING, flow.option,
                       f"Whether the firewall passes {what} cannot be told: {reason}.{measured}",
                       _check_by_hand(flow, rule, gateways), flow.source, evidence)
    verb = "drops" if outcome is Outcome.DROPPED else "rejects"
    return Finding(flow.id, flow.severity, flow.option,
                   f"The firewall {verb} {what} ({question.path.value} path): {reason}.{measured}",
                   _fix(flow, question.answer, state is CtState.ESTABLISHED, rule, gateways, index), flow.source,
                   evidence)


def _gateway_words(gateways: list[str]) -> str:
    named = ", ".join(gateways[:MAX_NAMED_GATEWAYS])
    more = len(gateways) - MAX_NAMED_GATEWAYS
    return named + (f" and {more} more gateways" if more > 0 else "")


def _probed(reachability: Mapping[str, Any] | None, flow: Flow, gateways: Collection[str]) -> list[tuple[str, Mapping]]:
    """(check, facts.reachability entry) of this flow's probes toward these gateways."""
    seen = []
    for check in flow.checks:
        fact = reachability.get(check) if isinstance(reachability, Mapping) else None
        for entry in fact.get("gateways", []) if isinstance(fact, Mapping) else []:
            if isinstance(entry, Mapping) and entry.get("gateway") in gateways:
                seen.append((check, entry))
    return seen


def _told(seen: list[tuple[str, Mapping]]) -> str:
    return "; ".join(f"{check} to {entry['gateway']}: "
                     + ("silence (no_response)" if entry.get("reason") == "no_response" else str(entry.get("reason")))
                     for check, entry in seen)


def _measured(flow: Flow, gateways: list[str], reachability: Mapping[str, Any] | None) -> str:
    """What the probes of this flow saw toward these gateways, when measured."""
    seen = _probed(reachability, flow, gateways)
    if not seen:
        return ""
    answered = [f"{check} to {entry['gateway']}" for check, entry in seen if entry.get("reachable") is True]
    if answered:
        return (f" Yet the probe got an answer ({', '.join(answered)}): the ruleset read is not the one on the "
                "probe's path (another host's, or not loaded).")
    return f" The probe saw: {_told(seen)}."


def _silence_elsewhere(passed: Mapping[tuple[str, str], int], reachability: Mapping[str, Any] | None,
                       ruleset: Ruleset) -> list[Finding]:
    """A flow this host's firewall passes both ways while its probe was refused or met silence:
    the block is beyond this host, and saying so saves looking at the wrong box."""
    findings = []
    for flow in FLOWS:
        open_to = {gateway for (flow_id, gateway), count in passed.items() if flow_id == flow.id and count == 2}
        stopped = [(check, entry) for check, entry in _probed(reachability, flow, open_to)
                   if entry.get("reachable") is False or entry.get("reason") == "no_response"]
        if stopped:
            findings.append(Finding(
                flow.id, Severity.INFO, flow.option,
                f"This host's firewall passes {flow.name} to the gateway and its answers, but the probe did not get "
                f"through ({_told(stopped)}): what stops it is beyond this host.",
                "Look on the path (a router's or the network's filter) and at the gateway's side (a local network "
                "gateway and connection for this site's public address).", flow.source,
                Evidence(ruleset.file, None)))
    return findings


def _fix(flow: Flow, answer: bool, established: bool, rule: RuleRef | None, gateways: list[str],
         index: _Index) -> str:
    """The rule to add, in the deciding rule's own tool: before it, or at the end of a chain whose
    policy dropped. An established answer is let in by conntrack state; anything else by address
    and port."""
    found = index.get(rule)
    if found is None:
        return f"Let {flow.name} to {gateways[0]} and its answers pass this host's firewall."
    kind, chain, deciding = found
    gateway = gateways[0] if len(gateways) == 1 else "GATEWAY"
    if kind == "iptables":
        ports = {Protocol.UDP: f"-p udp --{'s' if answer else 'd'}port {flow.port}", Protocol.ESP: "-p esp",
                 Protocol.TCP: f"-p tcp --{'s' if answer else 'd'}port {flow.port}"}[flow.protocol]
        match = ("-m conntrack --ctstate ESTABLISHED,RELATED" if established
                 else f"{'-s' if answer else '-d'} {gateway} {ports}")
        where = f"-I {chain.name} {deciding.position}" if deciding else f"-A {chain.name}"
        command = f"iptables -t {chain.table} {where} {match} -j ACCEPT"
    else:
        ports = {Protocol.UDP: f"udp {'s' if answer else 'd'}port {flow.port}", Protocol.ESP: "meta l4proto esp",
                 Protocol.TCP: f"tcp {'s' if answer else 'd'}port {flow.port}"}[flow.protocol]
        match = ("ct state established,related" if established
                 else f"ip {'saddr' if answer else 'daddr'} {gateway} {ports}")
        where = (f"insert rule {chain.family} {chain.table} {chain.name} handle {deciding.handle}"
                 if deciding and deciding.handle is not None else f"add rule {chain.family} {chain.table} {chain.name}")
        command = f"nft {where} {match} accept"
    each = " for each gateway" if "GATEWAY" in command else ""
    if deciding is None:
        return (f"Accept it in that chain, whose policy drops it: `{command}`{each}, and in the file the ruleset is "
                "loaded from.")
    return (f"Accept it before that rule: `{command}`{each}, and in the file the ruleset is loaded from; or remove "
            "the rule if nothing needs it.")


def _check_by_hand(flow: Flow, rule: RuleRef | None, gateways: list[str]) -> str:
    if rule is None:
        return "Check by hand that this host's firewall passes it."
    return (f"Check by hand whether rule `{rule.text}` stops {flow.name} to {gateways[0]} (watch its counters while "
            f"`xcheck run --gateway {gateways[0]}` probes), or make it not depend on what xcheck cannot see.")


def _mss_findings(ruleset: Ruleset | None, forwards: bool) -> list[Finding]:
    """mtu.mss-clamp: a clamp at 1350 or less must apply to TCP SYNs into the tunnel (forwarded ones
    on a host that forwards; when it does not, only this host's own, so only worth knowing)."""
    path = Path.FORWARD if forwards else Path.OUTPUT
    clamps = clamps_on(ruleset, path) if ruleset is not None else []
    if any(statement.mss_bytes is not None and statement.mss_bytes <= MSS_LIMIT_BYTES for _, statement in clamps):
        return []
    severity = Severity.WARNING if forwards else Severity.INFO
    whose = "forwarded into the tunnel" if forwards else "this host sends"
    fix = (f"Clamp the MSS of TCP SYNs toward the tunnel at {MSS_LIMIT_BYTES}: `iptables -t mangle -A "
           f"{'FORWARD' if forwards else 'POSTROUTING'} -o TUNNEL -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss "
           f"{MSS_LIMIT_BYTES}` (nftables: `oifname TUNNEL tcp flags syn tcp option maxseg size set {MSS_LIMIT_BYTES}` "
           f"in a {'forward' if forwards else 'postrouting'} chain), or set the tunnel interface's MTU to 1400.")
    if not clamps:
        return [Finding("mtu.mss-clamp", severity, "site",
                        f"No rule clamps the TCP MSS of connections {whose}: Azure's VPN carries packets of at most "
                        f"1400 bytes, and a TCP connection that sends full-size segments hangs on large transfers.",
                        fix, "vpn-devices", Evidence(ruleset.file if ruleset else NO_RULESET, None))]
    rule, statement = clamps[0]
    sizes = "; ".join(f"`{r.ref.text}` ({_clamp_words(s)})" for r, s in clamps)
    return [Finding("mtu.mss-clamp", severity, "site",
                    f"The TCP MSS of connections {whose} is not clamped at {MSS_LIMIT_BYTES} or less: {sizes}.",
                    fix, "vpn-devices", Evidence(rule.ref.file, rule.ref.line))]


def _clamp_words(statement: Statement) -> str:
    if statement.mss_bytes is None:
        return ("to the route's MTU: 1360 behind a tunnel interface of MTU 1400, but 1460 for policy-based IPsec "
                "on a 1500-byte link")
    return f"at {statement.mss_bytes}, above {MSS_LIMIT_BYTES}"
