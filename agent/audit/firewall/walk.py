"""The netfilter walk of one packet through a ruleset: what the kernel would do with it.

Per path the hooks in order (OUTPUT: output, postrouting; FORWARD: prerouting, forward,
postrouting; INPUT: prerouting, input), on each hook every base chain of every ip and inet table
in priority order. accept (or a NAT target) ends only that base chain; drop and reject end
everything; jump pushes a return point, goto does not, return pops it (from the base chain: the
policy). nat chains see only a connection's first packet. Chains hooked before conntrack
(priority below -200 on prerouting and output: raw) see no conntrack state yet (ct state invalid),
and notrack there makes the packet untracked for the rest of its walk.

A match the model cannot decide (not modelled, or on a value the question leaves open, such as a
forwarded packet's sender) does not end the walk: both ways are followed, and if every way ends
the same the answer stands, else it is unknown, naming the rule. A rule with such a match whose
rest changes nothing (a LOG, a counter) is passed over: whether it matches cannot change the
outcome. So the answer is never a guess.

Speed: for each chain and packet key (everything but the addresses) the rules whose other matches
already rule the packet out are dropped once and remembered (`Chain.residual_cache`); a packet
then meets only the few rules that look at its addresses or could match it.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from agent.audit.firewall.model import CtState, Decision, Outcome, Packet, Path, Protocol, RuleRef
from agent.audit.firewall.ruleset import (
    ADDRESS_FIELDS, CONNTRACK_PRIORITY, TCP_FLAGS, Chain, Effect, Field, Kind, Match, Probe, Rule, Ruleset, Statement,
    Verdict, VerdictMap, ipv4_int,
)

HOOK_PATHS = {Path.OUTPUT: ("output", "postrouting"), Path.FORWARD: ("prerouting", "forward", "postrouting"),
              Path.INPUT: ("prerouting", "input")}
PROTOCOLS = {Protocol.UDP: 17, Protocol.TCP: 6, Protocol.ESP: 50}
SYN, ACK, PSH, FIN = TCP_FLAGS["syn"], TCP_FLAGS["ack"], TCP_FLAGS["psh"], TCP_FLAGS["fin"]
# A new TCP connection's first packet is a SYN; an established one's packets are any of these.
NEW_TCP_FLAGS = (SYN,)
ESTABLISHED_TCP_FLAGS = (SYN | ACK, ACK, PSH | ACK, FIN | ACK)
MAX_FORKS = 64  # undecidable matches followed both ways before answering "unknown"
MAX_DEPTH = 64  # nested jumps; the kernel allows 16, so deeper is a loop
MAX_CHAIN_ENTRIES = 100_000  # jumps and gotos in one walk: a goto loop never nests (the kernel refuses loops)
RESIDUAL_CACHE_KEYS = 256  # packet keys remembered per chain
ENDS_CHAIN = frozenset({Kind.ACCEPT, Kind.DROP, Kind.REJECT, Kind.RETURN, Kind.GOTO, Kind.NAT})
FIELD_WORDS = {Field.SADDR: "source address", Field.DADDR: "destination address", Field.SPORT: "source port",
               Field.DPORT: "destination port", Field.PORT: "ports", Field.IIFNAME: "input interface", Field.OIFNAME: "output interface",
               Field.CT_STATE: "conntrack state", Field.TCP_FLAGS: "TCP flags"}


@dataclass(frozen=True)
class Trace:
    """A decision, with what the walk did to the packet on the way that the judge needs."""

    decision: Decision
    untracked: bool  # a notrack applied on every way: its answers are not ESTABLISHED to conntrack
    rewrites: tuple[RuleRef, ...]  # NAT rules that rewrote an address of it (noted, not followed)


def evaluate(ruleset: Ruleset, packet: Packet) -> Decision:
    return trace(ruleset, packet).decision


def trace(ruleset: Ruleset, packet: Packet) -> Trace:
    chains = [chain for hook in HOOK_PATHS[packet.path] for chain in ruleset.base_chains[hook]]
    ways, ends = [_Way(probe_of(packet))], []
    forks = 0
    for base in chains:
        pending, onward = list(ways), {}
        while pending:
            way = pending.pop()
            waiting = len(pending)
            end = way.run_chain(base, pending)
            forks += len(pending) - waiting
            if forks > MAX_FORKS:
                return _too_many(pending[-1])
            if end:
                ends.append(end)
                continue
            # Ways that leave a base chain alike walk the rest alike: keep one, the one that took the
            # fewest undecidable matches as matching.
            kept = onward.get(way.untracked)
            if kept is None or way.matched_count < kept.matched_count:
                onward[way.untracked] = way
        ways = list(onward.values())
    ends.extend(way.accepted() for way in ways)
    return Trace(_decision(ends), all(end.untracked for end in ends),
                 tuple(dict.fromkeys(ref for end in ends for ref in end.rewrites)))


def _too_many(way: _Way) -> Trace:
    rule, match, _ = way.assumed[0]
    return Trace(Decision(Outcome.UNKNOWN, rule.ref, f"unknown: rule `{rule.ref.text}` ({_where(rule.ref)}) "
                                                     f"{_why_undecidable(match)}, and so do more than {MAX_FORKS} "
                                                     "others on the path"), False, ())


def probe_of(packet: Packet) -> Probe:
    """The packet as matches see it. An interface the path has none of is "" (OUTPUT's input
    interface, INPUT's output one); any other None is not known."""
    protocol = PROTOCOLS[packet.protocol]
    tcp = packet.protocol is Protocol.TCP
    flags = (NEW_TCP_FLAGS if packet.ct_state is CtState.NEW else ESTABLISHED_TCP_FLAGS) if tcp else None
    ported = packet.protocol is not Protocol.ESP
    return Probe(ipv4_int(packet.source) if packet.source else None,
                 ipv4_int(packet.destination) if packet.destination else None, protocol,
                 packet.source_port if ported else None, packet.destination_port if ported else None,
                 "" if packet.in_interface is None and packet.path is Path.OUTPUT else packet.in_interface,
                 "" if packet.out_interface is None and packet.path is Path.INPUT else packet.out_interface,
                 packet.ct_state.value, flags)


def seen_state(chain: Chain, state: str | None, untracked: bool) -> str | None:
    """The conntrack state a base chain sees: none yet before conntrack (ct state invalid), not
    known at conntrack's own priority (the order of equal priorities is the kernel's)."""
    if untracked:
        return "untracked"
    if chain.hook in ("prerouting", "output"):
        if chain.priority < CONNTRACK_PRIORITY:
            return "invalid"
        if chain.priority == CONNTRACK_PRIORITY:
            return None
    return state


def before_conntrack(chain: Chain) -> bool:
    return chain.hook in ("prerouting", "output") and chain.priority < CONNTRACK_PRIORITY


@dataclass(frozen=True)
class _End:
    outcome: Outcome
    rule: RuleRef | None
    reason: str
    assumed: tuple[tuple[Rule, Match, bool], ...]  # the undecidable matches taken one way on this way
    untracked: bool
    rewrites: tuple[RuleRef, ...]


@dataclass
class _Way:
    """One way through the chains; a fork copies it."""

    packet: Probe  # as it entered (ct state as conntrack has it)
    frames: list[list] = field(default_factory=list)  # [chain, next rule position] per nested chain
    base: Chain | None = None
    probe: Probe | None = None  # as the current chain sees it
    untracked: bool = False
    accepted_by: RuleRef | None = None
    policy_accepts: list[RuleRef] = field(default_factory=list)
    assumed: tuple[tuple[Rule, Match, bool], ...] = ()
    matched_count: int = 0  # of the assumed, how many taken as matching
    rewrites: tuple[RuleRef, ...] = ()
    entries: int = 0

    def fork(self) -> _Way:
        return _Way(self.packet, [frame[:] for frame in self.frames], self.base, self.probe, self.untracked,
                    self.accepted_by, list(self.policy_accepts), self.assumed, self.matched_count, self.rewrites,
                    self.entries)

    def _end(self, outcome: Outcome, rule: RuleRef | None, reason: str) -> _End:
        return _End(outcome, rule, reason, self.assumed, self.untracked, self.rewrites)

    def run_chain(self, base: Chain, pending: list[_Way]) -> _End | None:
        """Through one base chain (and what it jumps to): an end, or None when the packet goes on."""
        if base.type == "nat" and (self.untracked or self.packet.ct != CtState.NEW.value):
            return None  # nat chains see only a connection's first packet
        if self.base is not base:
            self.base, self.frames = base, [[base, 0]]
            self.probe = self.packet.with_ct(seen_state(base, self.packet.ct, self.untracked))
        while self.frames:
            chain, position = self.frames[-1]
            found = _next_rule(chain, position, self.probe)
            if found is None:
                end = self._return()
                if end:
                    return end
                continue
            rule, at = found
            self.frames[-1][1] = at + 1
            end = self._rule(rule, pending)
            if end:
                return end
        return None

    def _return(self) -> _End | None:
        """The current chain ends (its last rule, or return): back to the caller, or the base
        chain's policy."""
        self.frames.pop()
        if self.frames:
            return None
        base = self.base
        if base.policy == "drop":
            return self._end(Outcome.DROPPED, base.policy_ref, f"dropped by the policy drop of {_chain_words(base)}")
        self.policy_accepts.append(base.policy_ref)
        return None

    def accepted(self) -> _End:
        # NAT does not stop a packet; it is said, since a DNAT sends it somewhere else.
        nat = "".join(f"; its address rewritten by `{ref.text}` ({_where(ref)})" for ref in self.rewrites)
        if self.accepted_by:
            return self._end(Outcome.ACCEPTED, self.accepted_by, f"accepted by rule `{self.accepted_by.text}` "
                                                                 f"({_where(self.accepted_by)}){nat}")
        if self.policy_accepts:
            last = self.policy_accepts[-1]
            return self._end(Outcome.ACCEPTED, last, f"accepted: no rule stops it and every base chain's policy "
                                                     f"accepts (last: chain {last.chain}, table {last.table}){nat}")
        return self._end(Outcome.ACCEPTED, None, "accepted: no base chain on its path")

    def _rule(self, rule: Rule, pending: list[_Way]) -> _End | None:
        items = rule.items
        for k, item in enumerate(items):
            if isinstance(item, Match):
                holds = item.test(self.probe)
                if holds is False:
                    return None
                if holds is None:
                    if not _decides(items[k + 1:]):
                        return None  # matching or not, the rest of the rule changes nothing the walk reads
                    other = self.fork()
                    other.assumed += ((rule, item, False),)
                    pending.append(other)
                    self.assumed += ((rule, item, True),)
                    self.matched_count += 1
            elif isinstance(item, Statement):
                if item.effect is Effect.UNKNOWN:
                    return self._end(Outcome.UNKNOWN, rule.ref, f"unknown: rule `{rule.ref.text}` ({_where(rule.ref)}) "
                                                                f"does `{item.text}`, which is not modelled")
                if item.effect is Effect.NOTRACK and before_conntrack(self.base):
                    self.untracked = True
                    self.probe = self.probe.with_ct("untracked")
            elif isinstance(item, VerdictMap):
                return self._map(rule, item)
            else:
                return self._verdict(rule, item)
        return None

    def _map(self, rule: Rule, vmap: VerdictMap) -> _End | None:
        for match, verdict in vmap.entries:
            holds = match.test(self.probe)
            if holds is None:
                return self._end(Outcome.UNKNOWN, rule.ref, f"unknown: rule `{rule.ref.text}` ({_where(rule.ref)}) "
                                                            f"looks up the packet's {_field_words(match)}, not known")
            if holds:
                return self._verdict(rule, verdict)
        return None

    def _verdict(self, rule: Rule, verdict: Verdict) -> _End | None:
        kind = verdict.kind
        if kind is Kind.CONTINUE:
            return None
        if kind is Kind.ACCEPT or kind is Kind.NAT:
            if kind is Kind.ACCEPT or self.accepted_by is None:  # a filter's accept says more than a NAT
                self.accepted_by = rule.ref
            if kind is Kind.NAT:
                self.rewrites += (rule.ref,)
            self.frames.clear()  # ends this base chain only
            return None
        if kind is Kind.DROP or kind is Kind.REJECT:
            outcome = Outcome.DROPPED if kind is Kind.DROP else Outcome.REJECTED
            return self._end(outcome, rule.ref, f"{outcome.value} by rule `{rule.ref.text}` ({_where(rule.ref)})")
        if kind is Kind.RETURN:
            self.frames[-1][1] = len(self.frames[-1][0].rules)
            return None
        if kind is Kind.UNKNOWN:
            return self._end(Outcome.UNKNOWN, rule.ref, f"unknown: rule `{rule.ref.text}` ({_where(rule.ref)}) "
                                                        f"hands the packet to `{verdict.text}`, which is not modelled")
        target = self.frames[-1][0].siblings.get(verdict.target)
        self.entries += 1
        if target is None or len(self.frames) >= MAX_DEPTH or self.entries > MAX_CHAIN_ENTRIES:
            why = "a chain that does not exist" if target is None else "chains that loop"
            return self._end(Outcome.UNKNOWN, rule.ref, f"unknown: rule `{rule.ref.text}` ({_where(rule.ref)}) "
                                                        f"leads to {why}")
        if kind is Kind.JUMP:
            self.frames.append([target, 0])
        else:  # GOTO: no return point; at its end the caller's caller (or the policy) takes over
            self.frames[-1] = [target, 0]
        return None


def _decides(rest: tuple) -> bool:
    """Whether the rest of a rule can change the packet's fate or what later rules see."""
    return any(isinstance(item, (Verdict, VerdictMap)) and getattr(item, "kind", None) is not Kind.CONTINUE
               or isinstance(item, Statement) and item.effect in (Effect.NOTRACK, Effect.UNKNOWN) for item in rest)


@dataclass(frozen=True)
class _Run:
    """Consecutive rules that each need one address field in a set: the first whose set holds a
    packet's address is found by bisection, not by trying each (the others cannot match it).
    `starts` cut the address space into segments; `firsts` holds, per segment, the index (in
    the residual list) of the first rule of the run whose set covers it, or None."""

    field: Field
    end: int  # one past the run's last index in the residual list
    starts: tuple[int, ...]
    firsts: tuple[int | None, ...]

    def first(self, address: int) -> int:
        found = self.firsts[bisect_right(self.starts, address) - 1]
        return self.end if found is None else found


@dataclass(frozen=True)
class _Residual:
    positions: tuple[int, ...]  # of the kept rules in the chain
    rules: tuple[Rule, ...]
    runs: dict[int, _Run]  # by the residual index each run starts at


def _next_rule(chain: Chain, position: int, probe: Probe) -> tuple[Rule, int] | None:
    """The first rule at or after `position` that the packet may match: rules its key rules out
    are never met, and a run of rules that differ only in the addresses they hold is jumped
    over to the first that holds the packet's."""
    key = probe.key()
    residual = chain.residual_cache.get(key)
    if residual is None:
        if len(chain.residual_cache) >= RESIDUAL_CACHE_KEYS:
            chain.residual_cache.clear()
        residual = chain.residual_cache[key] = _residual(chain, probe)
    i = bisect_left(residual.positions, position)
    run = residual.runs.get(i)
    if run is not None:
        address = probe.saddr if run.field is Field.SADDR else probe.daddr
        if address is not None:
            i = run.first(address)
    return (residual.rules[i], residual.positions[i]) if i < len(residual.positions) else None


def _residual(chain: Chain, probe: Probe) -> _Residual:
    kept = [(at, rule) for at, rule in enumerate(chain.rules) if not _ruled_out(rule, probe)]
    fields = [_indexed_field(rule) for _, rule in kept]
    runs: dict[int, _Run] = {}
    start = 0
    while start < len(kept):
        field_ = fields[start]
        end = start + 1
        while end < len(kept) and field_ is not None and fields[end] is field_:
            end += 1
        if field_ is not None and end - start > 1:
            runs[start] = _run(field_, start, end, [rule for _, rule in kept[start:end]])
        start = end
    return _Residual(tuple(at for at, _ in kept), tuple(rule for _, rule in kept), runs)


def _indexed_field(rule: Rule) -> Field | None:
    """The address field of the rule's first positive address match, when nothing before it has an
    effect: a packet whose address that match does not hold cannot match the rule, whatever else
    in it is open, so the rule may be passed over by the address alone."""
    for item in rule.items:
        if isinstance(item, Match):
            if item.field in ADDRESS_FIELDS and not item.negated:
                return item.field
        elif not (isinstance(item, Statement) and item.effect in (Effect.NOTE, Effect.MSS_CLAMP)):
            return None
    return None


def _run(field_: Field, start: int, end: int, rules: list[Rule]) -> _Run:
    covers: dict[int, list[tuple[int, int]]] = {}  # segment start -> (index, last address) of sets beginning there
    cuts = {0}
    for offset, rule in enumerate(rules):
        numbers = next(item.values for item in rule.items
                       if isinstance(item, Match) and item.field is field_ and not item.negated)
        for low, high in zip(numbers.lows, numbers.highs):
            covers.setdefault(low, []).append((start + offset, high))
            cuts.update((low, high + 1))
    starts, firsts, active = [], [], []
    for cut in sorted(cuts):
        for entry in covers.get(cut, ()):
            heapq.heappush(active, entry)
        while active and active[0][1] < cut:  # sets that ended before this segment
            heapq.heappop(active)
        first = active[0][0] if active else None
        if not firsts or firsts[-1] != first:
            starts.append(cut)
            firsts.append(first)
    return _Run(field_, end, tuple(starts), tuple(firsts))


def _ruled_out(rule: Rule, probe: Probe) -> bool:
    """A match on anything but the addresses fails before anything in the rule had an effect."""
    for item in rule.items:
        if isinstance(item, Match):
            if item.field not in ADDRESS_FIELDS and item.test(probe) is False:
                return True
        elif not (isinstance(item, Statement) and item.effect in (Effect.NOTE, Effect.MSS_CLAMP)):
            return False
    return False


def _decision(ends: list[_End]) -> Decision:
    outcomes = {end.outcome for end in ends}
    first = ends[0]
    if outcomes != {Outcome.UNKNOWN} and len(outcomes) == 1:
        if len(ends) == 1:
            return Decision(first.outcome, first.rule, first.reason)
        # Name the way on which the undecidable matches did not match: the ruleset's ordinary path.
        ordinary = min(ends, key=lambda end: sum(1 for _, _, matched in end.assumed if matched))
        undecided = _assumed_rules(ends)
        return Decision(ordinary.outcome, ordinary.rule,
                        f"{ordinary.reason}; the same whether or not {undecided} matches")
    deciding = _deciding(ends)
    if deciding:
        rule, match = deciding
        seen = " or ".join(sorted(outcome.value for outcome in outcomes))
        return Decision(Outcome.UNKNOWN, rule.ref, f"unknown: rule `{rule.ref.text}` ({_where(rule.ref)}) "
                                                   f"{_why_undecidable(match)}; the packet is {seen} depending on it")
    end = next((end for end in ends if end.outcome is Outcome.UNKNOWN), first)
    return Decision(Outcome.UNKNOWN, end.rule, end.reason)


def _deciding(ends: list[_End]) -> tuple[Rule, Match] | None:
    """The first undecidable match whose two ways end differently: the one that leaves the answer open."""
    taken: dict[tuple[int, int], tuple[Rule, Match, dict[bool, set[Outcome]]]] = {}
    for end in ends:
        for rule, match, matched in end.assumed:
            entry = taken.setdefault((id(rule), id(match)), (rule, match, {True: set(), False: set()}))
            entry[2][matched].add(end.outcome)
    for rule, match, outcomes in taken.values():
        if outcomes[True] and outcomes[False] and outcomes[True] != outcomes[False]:
            return rule, match
    return None


def _assumed_rules(ends: list[_End]) -> str:
    rules = dict.fromkeys(f"`{rule.ref.text}`" for end in ends for rule, _, _ in end.assumed)
    return " or ".join(rules)


def _why_undecidable(match: Match) -> str:
    if match.field is Field.UNKNOWN:
        return f"matches on `{match.text}`, which is not modelled"
    return f"matches on the packet's {_field_words(match)} (`{match.text}`), which is not known"


def _field_words(match: Match) -> str:
    return FIELD_WORDS.get(match.field, match.field.value)


def _where(ref: RuleRef) -> str:
    place = f"{ref.file}:{ref.line}" if ref.line is not None else ref.file
    return f"{place}, table {ref.table}, chain {ref.chain}"


def _chain_words(chain: Chain) -> str:
    ref = chain.policy_ref
    return f"chain {chain.name} (table {ref.table}, {ref.file}{f':{ref.line}' if ref.line is not None else ''})"


def clamps_on(ruleset: Ruleset, path: Path) -> list[tuple[Rule, Statement]]:
    """The MSS clamps a new TCP connection's SYN on `path` may meet: in every chain reachable from
    the path's base chains, each clamp whose rule's matches do not rule a SYN out and that no
    earlier rule certainly takes the SYN away from (an accept, a drop, a return before it)."""
    probe = Probe(None, None, PROTOCOLS[Protocol.TCP], None, None, "" if path is Path.OUTPUT else None, None,
                  CtState.NEW.value, NEW_TCP_FLAGS)
    found: list[tuple[Rule, Statement]] = []
    visited: set[int] = set()
    for hook in HOOK_PATHS[path]:
        for base in ruleset.base_chains[hook]:
            _clamps_in(base, probe.with_ct(seen_state(base, CtState.NEW.value, False)), visited, found, 0)
    return found


def _clamps_in(chain: Chain, probe: Probe, visited: set[int], found: list[tuple[Rule, Statement]],
               depth: int) -> None:
    if id(chain) in visited or depth > MAX_DEPTH:
        return
    visited.add(id(chain))
    for rule in chain.rules:
        certain = True
        for item in rule.items:
            if isinstance(item, Match):
                holds = item.test(probe)
                if holds is False:
                    break
                certain = certain and holds is True
            elif isinstance(item, Statement):
                if item.effect is Effect.MSS_CLAMP:
                    found.append((rule, item))
            else:
                verdicts = [item] if isinstance(item, Verdict) else [verdict for _, verdict in item.entries]
                for verdict in verdicts:
                    target = chain.siblings.get(verdict.target) if verdict.target else None
                    if target is not None:
                        _clamps_in(target, probe, visited, found, depth + 1)
                if certain and isinstance(item, Verdict) and item.kind in ENDS_CHAIN:
                    return  # a SYN never reaches the rules after this one
                break
