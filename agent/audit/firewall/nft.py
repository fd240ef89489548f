"""nftables: the ruleset as `nft -j list ruleset` prints it (libnftables-json(5)) into the model.

Tables of the ip and inet families are on IPv4's paths; ip6, arp and bridge tables are not (noted
and skipped); netdev tables and inet ingress chains are, but bound to a device this listing does
not name: not evaluated, and said so. Each rule's expressions are kept in order. Payload fields
carry their protocol dependency as nft adds it (`udp dport 500` holds only for UDP). Whatever is
not modelled (meta mark, fib, socket, limit, a concatenation ...) is kept as an unknown match or
statement with its text, and the parse status lists it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from agent.audit.findings import ParseStatus
from agent.audit.firewall.model import RuleRef
from agent.audit.firewall.reading import Unknowns, bounded_text, failed, quote
from agent.audit.firewall.ruleset import (
    CT_STATES, HOOKS, IPV4_FAMILIES, PORTED_PROTOCOLS, PROTOCOL_NUMBERS, TCP_FLAGS, Chain, Effect, Field, Flags, Item,
    Kind, Match, Names, Numbers, Rule, Ruleset, Statement, Table, Verdict, VerdictMap, ipv4_int, ipv4_network,
)

NFT_COMMAND = "nft -j list ruleset"
KIND = "nftables"
MAX_EXPR_DEPTH = 32  # nft itself nests a few levels; deeper is not a listing nft printed
OTHER_FAMILIES = frozenset({"ip6", "arp", "bridge"})  # never see an IPv4 packet on our paths
# nft's named priorities, in case a listing gives them by name.
PRIORITY_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
# Services nft may print by name (`nft -j` prints numbers, `nft -S` names).
SERVICES = {"ssh": 22, "domain": 53, "http": 80, "https": 443, "isakmp": 500, "ipsec-nat-t": 4500}
CT_BITS = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
MAX_ADDRESS, MAX_PORT, MAX_PROTOCOL = 2**32 - 1, 65535, 255
# Statements that change nothing the evaluator reads; a verdict-less rule of these is skipped.
NOTE_STATEMENTS = frozenset({"counter", "log", "set", "map", "ct helper", "ct timeout", "ct expectation",
                             "secmark", "flow", "dup", "last"})
NAT_STATEMENTS = frozenset({"snat", "dnat", "masquerade", "redirect"})
VERDICTS = {"accept": Kind.ACCEPT, "drop": Kind.DROP, "reject": Kind.REJECT, "jump": Kind.JUMP, "goto": Kind.GOTO,
            "return": Kind.RETURN, "continue": Kind.CONTINUE, "queue": Kind.UNKNOWN, "tproxy": Kind.UNKNOWN,
            "synproxy": Kind.UNKNOWN, "fwd": Kind.UNKNOWN}
MATCH_LIKE = frozenset({"limit", "quota", "meter", "connlimit"})  # statements that end the rule when over a rate
# iptables-nft's compatibility targets (their options are not in the JSON): ends the rule or not.
XT_NOTE_TARGETS = frozenset({"LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "TCPMSS", "CLASSIFY", "DSCP", "TOS",
                             "TTL", "ECN", "SET", "CHECKSUM", "TRACE", "AUDIT", "SECMARK", "CONNSECMARK", "TEE",
                             "IDLETIMER", "LED", "HMARK", "RATEEST"})
XT_NAT_TARGETS = frozenset({"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"})


class _Unreadable(Exception):
    """An expression this reader cannot take apart: kept as unknown, with its text."""


def read_nft_json(text: str | bytes, file: str = NFT_COMMAND) -> tuple[Ruleset | None, ParseStatus]:
    body, why = bounded_text(text)
    if body is None:
        return None, failed(file, KIND, why)
    try:
        document = json.loads(body)
    except RecursionError:
        return None, failed(file, KIND, "not a ruleset: JSON nested deeper than a parser may follow")
    except ValueError as exc:
        hint = (": this is `nft list ruleset` text, give `nft -j list ruleset`"
                if body.lstrip().startswith("table ") else "")
        return None, failed(file, KIND, f"not JSON ({quote(str(exc))}){hint}")
    objects = document.get("nftables") if isinstance(document, dict) else None
    if not isinstance(objects, list):
        return None, failed(file, KIND, 'not `nft -j list ruleset` output: no "nftables" array at the top')
    try:
        return _Reader(file).read(objects)
    except RecursionError:  # every walk over expressions is bounded; this is the backstop
        return None, failed(file, KIND, "not a ruleset: expressions nested deeper than nft prints")


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.unknowns = Unknowns()
        self.notes: list[str] = []
        self.tables: dict[tuple[str, str], list[dict]] = {}  # (family, table) -> its chain objects
        self.sets: dict[tuple[str, str, str], dict] = {}
        self.rules: dict[tuple[str, str, str], list[dict]] = {}

    def read(self, objects: list[Any]) -> tuple[Ruleset, ParseStatus]:
        for obj in objects:
            if not isinstance(obj, dict) or len(obj) != 1 or not isinstance(next(iter(obj.values())), dict):
                self.unknowns.add(None, f"not an nft object: {_json(obj)}")
                continue
            (kind, body), = obj.items()
            self._object(kind, body)
        tables = [self._table(family, name, chains) for (family, name), chains in self.tables.items()]
        ruleset = Ruleset(KIND, self.file, tuple(tables), tuple(self.notes))
        rule_count = sum(1 for _ in ruleset.rules())
        detail = f"{len(tables)} tables, {rule_count} rules" + (f"; {'; '.join(self.notes)}" if self.notes else "")
        return ruleset, self.unknowns.status(self.file, KIND, detail)

    def _object(self, kind: str, body: dict) -> None:
        if kind == "metainfo":
            return
        family = body.get("family")
        table = body.get("name") if kind == "table" else body.get("table")
        if not isinstance(family, str) or not isinstance(table, str):
            self.unknowns.add(None, f"{kind} without family or table: {_json(body)}")
            return
        if family in OTHER_FAMILIES:
            if kind == "table":
                self.notes.append(f"table {family} {table} skipped (not on IPv4 paths)")
            return
        if family == "netdev":
            if kind == "chain" and body.get("hook"):
                self.unknowns.add(None, f"chain netdev {table} {body.get('name')}: a device's {body.get('hook')} "
                                        "hook, not evaluated")
            return
        if family not in IPV4_FAMILIES:
            self.unknowns.add(None, f"table of unknown family {quote(family)}")
            return
        if kind == "table":
            self.tables.setdefault((family, table), [])
        elif kind == "chain":
            self.tables.setdefault((family, table), []).append(body)
        elif kind in ("set", "map"):
            if isinstance(body.get("name"), str):
                self.sets[(family, table, body["name"])] = body
        elif kind == "rule":
            chain = body.get("chain")
            if isinstance(chain, str):
                self.rules.setdefault((family, table, chain), []).append(body)
            else:
                self.unknowns.add(None, f"rule without a chain: {_json(body)}")
        elif kind not in ("element", "flowtable", "counter", "quota", "ct helper", "limit", "ct timeout",
                          "ct expectation", "secmark", "synproxy"):
            self.unknowns.add(None, f"{kind} object: {_json(body)}")

    def _table(self, family: str, name: str, chain_objects: list[dict]) -> Table:
        chains = []
        for body in chain_objects:
            chain_name = body.get("name")
            if not isinstance(chain_name, str):
                self.unknowns.add(None, f"chain without a name in table {family} {name}")
                continue
            chains.append(self._chain(family, name, chain_name, body))
        known = {chain.name for chain in chains}
        for (rule_family, table, chain_name), rules in self.rules.items():
            if (rule_family, table) == (family, name) and chain_name not in known:
                self.unknowns.add(None, f"{len(rules)} rules of chain {chain_name}, which table {family} {name} "
                                        "does not declare")
        return Table.of(family, name, chains)

    def _chain(self, family: str, table: str, name: str, body: dict) -> Chain:
        context = _Context(self, family, table, name)
        rules = tuple(context.rule(obj, position)
                      for position, obj in enumerate(self.rules.get((family, table, name), []), start=1))
        hook = body.get("hook")
        if hook is None:
            return Chain(family, table, name, rules)
        policy = body.get("policy", "accept")
        priority = body.get("prio", 0)
        priority = PRIORITY_NAMES.get(priority, priority) if isinstance(priority, str) else priority
        where = f"chain {family} {table} {name}"
        if not isinstance(hook, str) or hook not in HOOKS:  # inet's ingress/egress: bound to a device, not evaluated
            if rules or policy != "accept":
                self.unknowns.add(None, f"{where}: the {quote(str(hook))} hook is not evaluated")
            return Chain(family, table, name, rules)
        if not isinstance(policy, str) or policy not in ("accept", "drop") or not isinstance(priority, int) \
                or isinstance(priority, bool):
            self.unknowns.add(None, f"{where}: policy {_json(policy)} or priority {_json(priority)} not understood")
            return Chain(family, table, name, rules)
        chain_type = body.get("type", "filter")
        if not isinstance(chain_type, str):
            self.unknowns.add(None, f"{where}: type {_json(chain_type)} not understood")
            return Chain(family, table, name, rules)
        return Chain(family, table, name, rules, hook=hook, priority=priority, type=chain_type, policy=policy,
                     policy_ref=RuleRef(self.file, None, f"{family} {table}", name,
                                        f"type {chain_type} hook {hook} priority {priority}; policy {policy};"))


class _Context:
    """Reads the rules of one chain: named sets are its table's."""

    def __init__(self, reader: _Reader, family: str, table: str, chain: str) -> None:
        self.reader, self.family, self.table, self.chain = reader, family, table, chain
        self.unmodelled: list[str] = []

    def rule(self, body: dict, position: int) -> Rule:
        self.unmodelled = []
        handle = body.get("handle") if isinstance(body.get("handle"), int) else None
        exprs = body.get("expr")
        items: list[Item] = []
        if not isinstance(exprs, list):
            items.append(self._unknown_statement(f"rule body {_json(exprs)}"))
            exprs = []
        for expr in exprs:
            items.extend(self._expression(expr))
        text = " ".join(_render(e) for e in exprs)
        if isinstance(body.get("comment"), str):
            text += f' comment "{body["comment"]}"'
        text = quote(text) + (f" # handle {handle}" if handle is not None else "")
        ref = RuleRef(self.reader.file, None, f"{self.family} {self.table}", self.chain, text)
        if self.unmodelled:
            self.reader.unknowns.add(None, f"chain {self.family} {self.table} {self.chain}: `{text}`: "
                                           f"{', '.join(self.unmodelled)} not modelled")
        return Rule(ref, tuple(items), position, handle, tuple(self.unmodelled))

    def unknown_match(self, text: str) -> Match:
        self.unmodelled.append(f"`{quote(text)}`")
        return Match(Field.UNKNOWN, None, False, quote(text))

    def _unknown_statement(self, text: str) -> Statement:
        self.unmodelled.append(f"`{quote(text)}`")
        return Statement(Effect.UNKNOWN, quote(text))

    def _expression(self, expr: Any) -> list[Item]:
        if not isinstance(expr, dict) or len(expr) != 1:
            return [self._unknown_statement(_render(expr))]
        (key, value), = expr.items()
        text = _render(expr)
        try:
            if key == "match":
                return self._match(value, text)
            if key in VERDICTS:
                target = value.get("target") if isinstance(value, dict) else None
                if key in ("jump", "goto") and not isinstance(target, str):
                    raise _Unreadable(text)
                return [Verdict(VERDICTS[key], text, target)]
            if key in NAT_STATEMENTS:
                return [Verdict(Kind.NAT, text)]
            if key == "vmap":
                return self._vmap(value, text)
            if key == "mangle":
                return [self._mangle(value, text)]
            if key == "notrack":
                return [Statement(Effect.NOTRACK, text)]
            if key in NOTE_STATEMENTS:
                return [Statement(Effect.NOTE, text)]
            if key in MATCH_LIKE:
                return [self.unknown_match(text)]
            if key == "xt":
                return [self._xt(value, text)]
        except _Unreadable:
            pass
        return [self._unknown_statement(text)]

    def _xt(self, value: Any, text: str) -> Item:
        kind, name = (value.get("type"), value.get("name")) if isinstance(value, dict) else (None, None)
        if kind == "match":
            return self.unknown_match(text)
        if name in XT_NOTE_TARGETS:
            return Statement(Effect.NOTE, text)
        if name in XT_NAT_TARGETS:
            return Verdict(Kind.NAT, text)
        if name == "REJECT":
            return Verdict(Kind.REJECT, text)
        return self._unknown_statement(text)

    def _mangle(self, value: Any, text: str) -> Statement:
        key = value.get("key") if isinstance(value, dict) else None
        option = key.get("tcp option") if isinstance(key, dict) else None
        if isinstance(option, dict) and option.get("name") == "maxseg":
            size = value.get("value")
            if isinstance(size, int) and not isinstance(size, bool):
                return Statement(Effect.MSS_CLAMP, text, size)
            if size == {"rt": {"key": "mtu"}}:
                return Statement(Effect.MSS_CLAMP, text, None)
            return self._unknown_statement(text)
        payload = key.get("payload") if isinstance(key, dict) else None
        if isinstance(payload, dict) and payload.get("field") in ("saddr", "daddr", "sport", "dport", "protocol"):
            return self._unknown_statement(text)  # rewrites what later rules match on
        return Statement(Effect.NOTE, text)  # a mark, a priority, a DSCP: not read by any modelled match

    def _vmap(self, value: Any, text: str) -> list[Item]:
        if not isinstance(value, dict):
            raise _Unreadable(text)
        left = _Left.of(value.get("key"), self)
        data = value.get("data")
        if isinstance(data, str) and data.startswith("@"):
            named = self.reader.sets.get((self.family, self.table, data[1:]))
            elements = named.get("elem", []) if named and named.get("map") == "verdict" else None
        else:
            elements = data.get("set") if isinstance(data, dict) else None
        if left.field in (Field.UNKNOWN, None) or not isinstance(elements, list):
            return [*left.dependencies, self._unknown_statement(text)]
        entries = []
        for element in elements:
            if not (isinstance(element, list) and len(element) == 2 and isinstance(element[1], dict)):
                raise _Unreadable(text)
            verdict = self._expression(element[1])
            if len(verdict) != 1 or not isinstance(verdict[0], Verdict):
                raise _Unreadable(text)
            entries.append((left.match("==", element[0], _render(element[0])), verdict[0]))
        return [*left.dependencies, VerdictMap(tuple(entries), text)]

    def _match(self, value: Any, text: str) -> list[Item]:
        if not isinstance(value, dict):
            return [self.unknown_match(text)]
        left = _Left.of(value.get("left"), self)
        if left.field is Field.UNKNOWN:
            return [*left.dependencies, self.unknown_match(text)]
        op = value.get("op", "==")
        if left.field is None:
            return left.constant(op, value.get("right"), text)
        return [*left.dependencies, left.match(op, value.get("right"), text)]

    def named_elements(self, name: str) -> list[Any]:
        found = self.reader.sets.get((self.family, self.table, name))
        if found is None:
            raise _Unreadable(f"@{name}")
        elements = found.get("elem", [])
        if not isinstance(elements, list) or isinstance(found.get("type"), list):
            raise _Unreadable(f"@{name}")  # a concatenation: not modelled
        return elements


class _Left:
    """The left side of a match: its dependencies (`udp dport` holds only for UDP), the field, and
    how to read the right side. field None: a constant for IPv4 (meta nfproto, meta protocol, an ip6
    field), decided by `constant`."""

    def __init__(self, context: _Context, field: Field | None, dependencies: list[Match], key: str = "") -> None:
        self.context, self.field, self.dependencies, self.key = context, field, dependencies, key
        self.mask: Any = None  # the `&` mask applied before comparing, if any

    @classmethod
    def of(cls, left: Any, context: _Context, depth: int = 0) -> _Left:
        unknown = cls(context, Field.UNKNOWN, [])
        if not isinstance(left, dict) or len(left) != 1 or depth > MAX_EXPR_DEPTH:
            return unknown
        (key, value), = left.items()
        if key == "&" and isinstance(value, list) and len(value) == 2:
            inner = cls.of(value[0], context, depth + 1)
            if inner.field in (Field.TCP_FLAGS, Field.CT_STATE, Field.SADDR, Field.DADDR) and inner.mask is None:
                inner.mask = value[1]
                return inner
            return cls(context, Field.UNKNOWN, inner.dependencies)
        if key == "concat" and isinstance(value, list):  # not modelled, but `ip daddr . udp dport` holds only for UDP
            parts = [cls.of(part, context, depth + 1) for part in value]
            return cls(context, Field.UNKNOWN, [dependency for part in parts for dependency in part.dependencies])
        if not isinstance(value, dict):
            return unknown
        if key == "payload":
            return cls._payload(value, context)
        if key == "meta":
            return cls._meta(value.get("key"), context)
        if key == "ct" and value.get("key") == "state" and set(value) == {"key"}:
            return cls(context, Field.CT_STATE, [])
        return unknown

    @classmethod
    def _payload(cls, value: dict, context: _Context) -> _Left:
        protocol, name = value.get("protocol"), value.get("field")
        if protocol == "ip":
            field = {"saddr": Field.SADDR, "daddr": Field.DADDR, "protocol": Field.PROTOCOL}.get(name, Field.UNKNOWN)
            return cls(context, field, [])
        if protocol in ("ip6", "icmpv6"):  # nft adds `meta nfproto ipv6` first: never an IPv4 packet
            return cls(context, None, [Match(Field.NEVER, None, False, f"{protocol} {name}")], key="ip6")
        if protocol == "th":
            return cls(context, {"sport": Field.SPORT, "dport": Field.DPORT}.get(name, Field.UNKNOWN), [])
        number = PROTOCOL_NUMBERS.get(protocol) if isinstance(protocol, str) else None
        if number is None:
            return cls(context, Field.UNKNOWN, [])
        dependency = [Match(Field.PROTOCOL, Numbers.of([(number, number)]), False, f"meta l4proto {protocol}")]
        if number in PORTED_PROTOCOLS and name in ("sport", "dport"):
            return cls(context, Field.SPORT if name == "sport" else Field.DPORT, dependency)
        if protocol == "tcp" and name == "flags":
            return cls(context, Field.TCP_FLAGS, dependency)
        return cls(context, Field.UNKNOWN, dependency)

    @classmethod
    def _meta(cls, key: Any, context: _Context) -> _Left:
        if key == "l4proto":
            return cls(context, Field.PROTOCOL, [])
        if key in ("iifname", "iif"):
            return cls(context, Field.IIFNAME, [], key=key)
        if key in ("oifname", "oif"):
            return cls(context, Field.OIFNAME, [], key=key)
        if key in ("nfproto", "protocol"):  # the packet is IPv4: a constant
            return cls(context, None, [], key=key)
        return cls(context, Field.UNKNOWN, [])

    def constant(self, op: Any, right: Any, text: str) -> list[Match]:
        """meta nfproto / meta protocol, whose value for IPv4 is ipv4 / ip: nothing to test when the
        match holds, a match that never does when it does not."""
        if self.key == "ip6":
            return self.dependencies
        ours = "ipv4" if self.key == "nfproto" else "ip"
        try:
            values = self._elements(right)
        except _Unreadable:
            return [self.context.unknown_match(text)]
        holds = (ours in values) != (op == "!=")
        return [] if holds else [Match(Field.NEVER, None, False, text)]

    def match(self, op: Any, right: Any, text: str) -> Match:
        """The match of `left op right`; unknown when the right side or the operator is not understood."""
        try:
            if op not in ("==", "!=", "in", "<", ">", "<=", ">="):
                raise _Unreadable(text)
            if self.field in (Field.TCP_FLAGS, Field.CT_STATE):
                return self._bits(op, right, text)
            if op not in ("==", "!=", "in") and self.field in (Field.IIFNAME, Field.OIFNAME):
                raise _Unreadable(text)
            if self.field in (Field.IIFNAME, Field.OIFNAME):
                return Match(self.field, self._names(right), op == "!=", text)
            return self._numbers(op, right, text)
        except _Unreadable:
            return self.context.unknown_match(text)

    def _elements(self, right: Any) -> list[Any]:
        if isinstance(right, str) and right.startswith("@"):
            return [_element_value(e) for e in self.context.named_elements(right[1:])]
        if isinstance(right, dict) and "set" in right and isinstance(right["set"], list):
            return [_element_value(e) for e in right["set"]]
        return [right]

    def _names(self, right: Any) -> Names:
        exact, prefixes = set(), []
        for value in self._elements(right):
            if not isinstance(value, str):
                raise _Unreadable(_render(value))
            if self.key in ("iifname", "oifname") and value.endswith("*") and not value.endswith("\\*"):
                prefixes.append(value[:-1].replace("\\*", "*"))
            else:
                exact.add(value.replace("\\*", "*"))
        return Names(frozenset(exact), tuple(prefixes))

    def _numbers(self, op: str, right: Any, text: str) -> Match:
        scalar, top = {Field.SADDR: (ipv4_int, MAX_ADDRESS), Field.DADDR: (ipv4_int, MAX_ADDRESS),
                       Field.PROTOCOL: (_protocol, MAX_PROTOCOL)}.get(self.field, (_port, MAX_PORT))
        if self.mask is not None:  # ip saddr & 255.255.0.0 == 10.1.0.0: a prefix when the mask is one
            mask, value = ipv4_int(str(self.mask)), ipv4_int(str(right))
            contiguous = mask is not None and mask == (MAX_ADDRESS << (32 - bin(mask).count("1"))) & MAX_ADDRESS
            if not contiguous or value is None or op not in ("==", "!="):
                raise _Unreadable(text)
            low = value & mask
            return Match(self.field, Numbers.of([(low, low | (~mask & MAX_ADDRESS))]), op == "!=", text)
        if op in ("<", ">", "<=", ">="):
            bound = scalar(right)
            if bound is None:
                raise _Unreadable(text)
            span = {"<": (0, bound - 1), "<=": (0, bound), ">": (bound + 1, top), ">=": (bound, top)}[op]
            return Match(self.field, Numbers.of([span] if span[0] <= span[1] else []), False, text)
        spans = []
        for element in self._elements(right):
            span = _span(element, scalar)
            if span is None:
                raise _Unreadable(text)
            spans.append(span)
        return Match(self.field, Numbers.of(spans), op == "!=", text)

    def _bits(self, op: str, right: Any, text: str) -> Match:
        """A flags field (tcp flags, ct state): which values the packet's may take, found by trying
        each. `in` is "any of these bits", `==`/`!=` compare the whole value, a set is membership."""
        names = TCP_FLAGS if self.field is Field.TCP_FLAGS else CT_BITS
        mask = _bits_value(self.mask, names) if self.mask is not None else 0xFFFF
        if mask is None:
            raise _Unreadable(text)
        if isinstance(right, dict) and "set" in right or isinstance(right, str) and right.startswith("@"):
            members = {_bits_value(value, names) for value in self._elements(right)}
            if None in members:
                raise _Unreadable(text)
            holds = (lambda v: (v & mask) in members) if op != "!=" else (lambda v: (v & mask) not in members)
        else:
            wanted = _bits_value(right, names)
            if wanted is None or op not in ("==", "!=", "in"):
                raise _Unreadable(text)
            holds = {"==": lambda v: (v & mask) == wanted, "!=": lambda v: (v & mask) != wanted,
                     "in": lambda v: (v & mask & wanted) != 0}[op]
        if self.field is Field.TCP_FLAGS:
            return Match(Field.TCP_FLAGS, Flags(frozenset(v for v in range(256) if holds(v))), False, text)
        return Match(Field.CT_STATE, frozenset(s for s in CT_STATES if holds(CT_BITS[s])), False, text)


def _element_value(element: Any) -> Any:
    """A set element without its per-element attributes (timeout, comment, counter)."""
    if isinstance(element, dict) and isinstance(element.get("elem"), dict):
        return element["elem"].get("val")
    return element


def _span(element: Any, scalar: Callable[[Any], int | None]) -> tuple[int, int] | None:
    if isinstance(element, dict) and isinstance(element.get("prefix"), dict) and scalar is ipv4_int:
        prefix = element["prefix"]
        return ipv4_network(f"{prefix.get('addr')}/{prefix.get('len')}")
    if isinstance(element, dict) and isinstance(element.get("range"), list) and len(element["range"]) == 2:
        low, high = (scalar(v) for v in element["range"])
        return (low, high) if low is not None and high is not None and low <= high else None
    value = scalar(element)
    return (value, value) if value is not None else None


def _protocol(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= MAX_PROTOCOL else None
    return PROTOCOL_NUMBERS.get(value) if isinstance(value, str) else None


def _port(value: Any) -> int | None:
    if isinstance(value, str):
        value = int(value) if value.isdigit() else SERVICES.get(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_PORT else None


def _bits_value(value: Any, names: Mapping[str, int], depth: int = 0) -> int | None:
    """A flags value: a name, a number, a list or `|` of them (ORed)."""
    if isinstance(value, bool) or depth > MAX_EXPR_DEPTH:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return names.get(value, int(value) if value.isdigit() else None)
    parts = value.get("|") if isinstance(value, dict) and len(value) == 1 else value
    if isinstance(parts, list):
        total = 0
        for part in parts:
            bits = _bits_value(part, names, depth + 1)
            if bits is None:
                return None
            total |= bits
        return total
    return None


def _json(value: Any) -> str:
    return quote(json.dumps(value, separators=(",", ":"), default=str))


def _render(expr: Any, depth: int = 0) -> str:
    """An expression as `nft list ruleset` would print it, near enough to find it; JSON where not known."""
    if depth > MAX_EXPR_DEPTH:
        return "..."
    deeper = depth + 1
    if isinstance(expr, (str, int, float)) or expr is None:
        return str(expr)
    if isinstance(expr, list):
        if len(expr) == 2 and isinstance(expr[1], dict) and set(expr[1]) <= set(VERDICTS):  # a map element
            return f"{_render(expr[0], deeper)} : {_render(expr[1], deeper)}"
        return ",".join(_render(e, deeper) for e in expr)
    if not isinstance(expr, dict) or len(expr) != 1:
        return _json(expr)
    (key, value), = expr.items()
    if key == "set" and isinstance(value, list):  # an anonymous set, not the `set` statement
        return "{ " + ", ".join(_render(e, deeper) for e in value) + " }"
    if key in ("set", "map") and isinstance(value, dict):  # add @dyn { ip daddr }
        return f"{value.get('op')} {value.get('set')} {{ {_render(value.get('elem'), deeper)} }}"
    if key in VERDICTS or key in NOTE_STATEMENTS or key in NAT_STATEMENTS or key in ("notrack",):
        if isinstance(value, dict) and "target" in value:
            return f"{key} {value['target']}"
        if key == "reject" and isinstance(value, dict):
            return f"reject with {value.get('type', '')} {value.get('expr', '')}".rstrip()
        if key == "log" and isinstance(value, dict) and "prefix" in value:
            return f'log prefix "{value["prefix"]}"'
        if key in ("snat", "dnat") and isinstance(value, dict) and "addr" in value:
            return f"{key} to {_render(value['addr'], deeper)}"
        return key
    if key == "match" and isinstance(value, dict):
        op, left, right = value.get("op", "=="), value.get("left"), value.get("right")
        masked = isinstance(left, dict) and "&" in left  # nft prints `tcp flags & (syn | rst) == syn`
        shown = "" if op in ("==", "in") and not masked else f"{op} "
        meta = left.get("meta") if isinstance(left, dict) else None
        quoted = isinstance(meta, dict) and meta.get("key") in ("iifname", "oifname") and isinstance(right, str)
        return f"{_render(left, deeper)} {shown}" + (f'"{right}"' if quoted else _render(right, deeper))
    if key == "payload" and isinstance(value, dict):
        if "protocol" in value:
            return f"{value['protocol']} {value.get('field')}"
        return f"@{value.get('base')},{value.get('offset')},{value.get('len')}"
    if key == "meta" and isinstance(value, dict):
        name = value.get("key")
        return str(name) if name in ("iifname", "oifname", "iif", "oif") else f"meta {name}"
    if key == "ct" and isinstance(value, dict):
        return f"ct {value.get('key')}"
    if key in ("&", "|") and isinstance(value, list):
        return f" {key} ".join(f"({' | '.join(_render(v, deeper) for v in e)})" if isinstance(e, list)
                               else _render(e, deeper) for e in value)
    if key == "prefix" and isinstance(value, dict):
        return f"{value.get('addr')}/{value.get('len')}"
    if key == "range" and isinstance(value, list):
        return "-".join(_render(e, deeper) for e in value)
    if key == "concat" and isinstance(value, list):
        return " . ".join(_render(e, deeper) for e in value)
    if key == "elem" and isinstance(value, dict):
        return _render(value.get("val"), deeper)
    if key == "mangle" and isinstance(value, dict):
        return f"{_render(value.get('key'), deeper)} set {_render(value.get('value'), deeper)}"
    if key == "tcp option" and isinstance(value, dict):
        return f"tcp option {value.get('name')} {value.get('field')}"
    if key == "vmap" and isinstance(value, dict):
        return f"{_render(value.get('key'), deeper)} vmap {_render(value.get('data'), deeper)}"
    if key == "limit" and isinstance(value, dict):
        return f"limit rate {value.get('rate')}/{value.get('per')}"
    if key in ("fib", "socket", "osf", "rt", "numgen", "jhash", "symhash", "ipsec") and isinstance(value, dict):
        return f"{key} " + " ".join(_render(v, deeper) for v in value.values())
    if key == "xt" and isinstance(value, dict):
        return f"xt {value.get('type')} {value.get('name')}"
    return _json(expr)
