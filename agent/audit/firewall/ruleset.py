"""The ruleset model both readers fill: tables with a family, chains (base chains with their hook,
priority, type and policy), rules in order, each an ordered list of matches, statements and at most
one verdict, and each with the `RuleRef` a person finds it by.

Only what decides whether one of our packets (UDP 500/4500, ESP, TCP 443 over IPv4) passes is
modelled: addresses, protocol, ports, interface names, conntrack state, TCP flags. Anything else a
rule matches on is an `UNKNOWN` match, kept with its text: the evaluator answers "unknown" with
that rule named rather than guess. Named and anonymous sets are resolved into the match's values
when read, so evaluating never looks anything up by name but a chain.
"""

from __future__ import annotations

import enum
import ipaddress
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.audit.firewall.model import RuleRef

# IP protocol numbers by the names nft and iptables print (iptables-save prints "esp" for 50).
PROTOCOL_NUMBERS = {"icmp": 1, "igmp": 2, "ipip": 4, "ipencap": 4, "tcp": 6, "egp": 8, "udp": 17, "dccp": 33,
                    "gre": 47, "esp": 50, "ah": 51, "icmpv6": 58, "ipv6-icmp": 58, "ospf": 89, "pim": 103,
                    "comp": 108, "vrrp": 112, "l2tp": 115, "sctp": 132, "udplite": 136}
PORTED_PROTOCOLS = frozenset({6, 17, 33, 132, 136})  # transport headers that start with two 16-bit ports

# TCP header flag bits, as nft names them (iptables in upper case).
TCP_FLAGS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20, "ecn": 0x40, "cwr": 0x80}
CT_STATES = frozenset({"new", "established", "related", "invalid", "untracked"})

# Hooks that IPv4 packets cross, per family: ip and inet tables (iptables' tables are ip tables).
IPV4_FAMILIES = frozenset({"ip", "inet"})
HOOKS = frozenset({"prerouting", "input", "forward", "output", "postrouting"})
CONNTRACK_PRIORITY = -200  # NF_IP_PRI_CONNTRACK: chains before it (raw) see no conntrack state yet


class Field(enum.Enum):
    SADDR = "ip saddr"
    DADDR = "ip daddr"
    PROTOCOL = "l4proto"
    SPORT = "sport"
    DPORT = "dport"
    PORT = "sport or dport"  # iptables' -m multiport --ports
    IIFNAME = "iifname"
    OIFNAME = "oifname"
    CT_STATE = "ct state"
    TCP_FLAGS = "tcp flags"
    NEVER = "never"  # a match no IPv4 packet meets (meta nfproto ipv6, an ip6 header field)
    UNKNOWN = "unknown"  # not modelled: the packet may or may not match


ADDRESS_FIELDS = frozenset({Field.SADDR, Field.DADDR})


def ipv4_int(text: str) -> int | None:
    try:
        return int(ipaddress.IPv4Address(text))
    except (ipaddress.AddressValueError, ValueError):
        return None


def ipv4_network(text: str, strict: bool = False) -> tuple[int, int] | None:
    """(first, last) of "a.b.c.d", "a.b.c.d/len" or "a.b.c.d/m.m.m.m" (a contiguous mask);
    None if it is not one. Not strict: host bits are cleared, as iptables and nft do."""
    try:
        net = ipaddress.IPv4Network(text, strict=strict)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError):
        return None
    return int(net.network_address), int(net.broadcast_address)


@dataclass(frozen=True)
class Numbers:
    """A set of integers (addresses, ports, protocol numbers) as sorted disjoint closed intervals."""

    lows: tuple[int, ...]
    highs: tuple[int, ...]

    @classmethod
    def of(cls, spans: Iterable[tuple[int, int]]) -> Numbers:
        merged: list[list[int]] = []
        for low, high in sorted(spans):
            if merged and low <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        return cls(tuple(m[0] for m in merged), tuple(m[1] for m in merged))

    def __contains__(self, value: int) -> bool:
        i = bisect_right(self.lows, value) - 1
        return i >= 0 and value <= self.highs[i]


@dataclass(frozen=True)
class Names:
    """Interface names: exact ones, and prefixes (nft's "eth*", iptables' "eth+")."""

    exact: frozenset[str]
    prefixes: tuple[str, ...] = ()

    def __contains__(self, name: str) -> bool:
        return name in self.exact or any(name.startswith(p) for p in self.prefixes)


@dataclass(frozen=True)
class Flags:
    """The TCP flag bytes (0-255) a flags match accepts, worked out once when read."""

    accepted: frozenset[int]


class Probe:
    """The packet as the matches see it at one point of its walk. None: not known (a forwarded
    packet's sender, an ephemeral port, an interface not given); "" for an interface: none."""

    __slots__ = ("saddr", "daddr", "protocol", "sport", "dport", "iif", "oif", "ct", "tcp_flags")

    def __init__(self, saddr: int | None, daddr: int | None, protocol: int, sport: int | None, dport: int | None,
                 iif: str | None, oif: str | None, ct: str | None, tcp_flags: tuple[int, ...] | None) -> None:
        self.saddr, self.daddr, self.protocol = saddr, daddr, protocol
        self.sport, self.dport, self.iif, self.oif = sport, dport, iif, oif
        self.ct, self.tcp_flags = ct, tcp_flags

    def with_ct(self, ct: str | None) -> Probe:
        return Probe(self.saddr, self.daddr, self.protocol, self.sport, self.dport, self.iif, self.oif, ct,
                     self.tcp_flags)

    def key(self) -> tuple:
        """Everything but the addresses: the rules a packet can meet depend mostly on this."""
        return self.protocol, self.sport, self.dport, self.iif, self.oif, self.ct, self.tcp_flags


@dataclass(frozen=True)
class Match:
    field: Field
    values: Numbers | Names | Flags | frozenset[str] | None
    negated: bool
    text: str  # as written; for an unknown match, what is not modelled

    def test(self, probe: Probe) -> bool | None:
        """True or False, or None when the packet's value is not known or the match not modelled."""
        kind = self.field
        if kind is Field.NEVER:
            return False
        if kind is Field.UNKNOWN:
            return None
        if kind is Field.TCP_FLAGS:
            if probe.tcp_flags is None:  # not TCP: the match's tcp dependency fails
                return False
            results = {(flags in self.values.accepted) != self.negated for flags in probe.tcp_flags}
            return results.pop() if len(results) == 1 else None
        if kind is Field.PORT:  # either port in the set
            if probe.protocol not in PORTED_PROTOCOLS:
                return None
            held = (self._holds(probe.sport), self._holds(probe.dport))
            either = True if True in held else None if None in held else False
            return None if either is None else either != self.negated
        if kind is Field.SADDR:
            value = probe.saddr
        elif kind is Field.DADDR:
            value = probe.daddr
        elif kind is Field.PROTOCOL:
            value = probe.protocol
        elif kind is Field.SPORT or kind is Field.DPORT:
            # ESP has no ports: nft's `th dport` would read its SPI, which nobody knows here.
            value = (probe.sport if kind is Field.SPORT else probe.dport) if probe.protocol in PORTED_PROTOCOLS else None
        elif kind is Field.IIFNAME:
            value = probe.iif
        elif kind is Field.OIFNAME:
            value = probe.oif
        else:  # CT_STATE
            value = probe.ct
        if value is None:
            return None
        return (value in self.values) != self.negated

    def _holds(self, value: int | None) -> bool | None:
        return None if value is None else value in self.values


class Effect(enum.Enum):
    NOTE = "note"  # changes nothing the evaluator reads (counter, log, a mark, a dynamic set)
    NOTRACK = "notrack"  # the packet leaves conntrack: ct state untracked from here on
    MSS_CLAMP = "mss_clamp"  # TCPMSS / tcp option maxseg size set
    UNKNOWN = "unknown"  # changes the packet or its fate in a way not modelled (queue, address rewrite)


@dataclass(frozen=True)
class Statement:
    effect: Effect
    text: str
    mss_bytes: int | None = None  # MSS_CLAMP: the size set; None: clamped to the route's MTU


class Kind(enum.Enum):
    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"
    JUMP = "jump"
    GOTO = "goto"
    RETURN = "return"
    CONTINUE = "continue"
    NAT = "nat"  # snat/dnat/masquerade/redirect: ends the nat chain as accept, and rewrites an address
    UNKNOWN = "unknown"  # queue, TPROXY, an unknown target: the packet's fate is not modelled


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    text: str
    target: str | None = None  # JUMP/GOTO: the chain


@dataclass(frozen=True)
class VerdictMap:
    """nft's `vmap`: the verdict of the first element that holds the packet's key, else none."""

    entries: tuple[tuple[Match, Verdict], ...]  # one match per element, all on the map's key
    text: str


Item = Match | Statement | Verdict | VerdictMap


@dataclass(frozen=True)
class Rule:
    ref: RuleRef
    items: tuple[Item, ...]  # in the order the kernel evaluates them
    position: int  # 1-based place in its chain (iptables -I CHAIN N)
    handle: int | None = None  # nft's rule handle (nft insert rule ... handle N)
    unmodelled: tuple[str, ...] = ()  # the texts of its unknown matches and statements


@dataclass(eq=False)
class Chain:
    family: str  # "ip", "inet"; iptables tables are "ip"
    table: str
    name: str
    rules: tuple[Rule, ...]
    hook: str | None = None  # base chains only
    priority: int | None = None
    type: str | None = None  # "filter", "nat", "route"
    policy: str | None = None  # "accept", "drop"; None for a regular chain
    policy_ref: RuleRef | None = None
    # The chains of its own table, which its jumps and gotos name.
    siblings: Mapping[str, Chain] = field(default_factory=dict, repr=False)
    # Per packet key: the rules whose non-address matches do not rule the packet out (see evaluate).
    residual_cache: dict = field(default_factory=dict, repr=False)

    @property
    def is_base(self) -> bool:
        return self.hook is not None


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    chains: Mapping[str, Chain]

    @classmethod
    def of(cls, family: str, name: str, chains: Iterable[Chain]) -> Table:
        by_name = {chain.name: chain for chain in chains}
        for chain in by_name.values():
            chain.siblings = by_name
        return cls(family, name, by_name)


@dataclass(eq=False)
class Ruleset:
    kind: str  # "nftables", "iptables", or "combined"
    file: str
    tables: tuple[Table, ...]
    notes: tuple[str, ...] = ()  # what was read and deliberately left out (an ip6 table)
    base_chains: Mapping[str, tuple[Chain, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_hook: dict[str, list[Chain]] = {hook: [] for hook in HOOKS}
        for table in self.tables:
            if table.family not in IPV4_FAMILIES:
                continue
            for chain in table.chains.values():
                if chain.hook in by_hook:
                    by_hook[chain.hook].append(chain)
        # Priority order. At equal priority the kernel runs the chain registered last first (a new hook
        # goes before those of its priority); a ruleset loaded in one go registers in listing order.
        self.base_chains = {hook: tuple(sorted(reversed(chains), key=lambda c: c.priority))
                            for hook, chains in by_hook.items()}

    def rules(self) -> Iterable[tuple[Chain, Rule]]:
        for table in self.tables:
            for chain in table.chains.values():
                for rule in chain.rules:
                    yield chain, rule


def combined(rulesets: Sequence[Ruleset]) -> Ruleset:
    """Several rulesets in force at once (nftables beside iptables-legacy): every base chain of
    each is on the hook, in priority order."""
    if len(rulesets) == 1:
        return rulesets[0]
    tables = tuple(table for ruleset in rulesets for table in ruleset.tables)
    return Ruleset("combined", ", ".join(r.file for r in rulesets), tables,
                   tuple(note for r in rulesets for note in r.notes))
