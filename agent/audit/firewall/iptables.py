"""iptables: the ruleset as `iptables-save` prints it (the legacy and nf_tables back ends print the
same format) into the model.

Tables filter, nat, mangle, raw and security, each hooked at its fixed priority; `:CHAIN POLICY
[packets:bytes]`, `-A` rules with their line numbers, COMMIT. A table without COMMIT was never
loaded by iptables-restore and is left out, said so. Matches that are not modelled (-m owner,
-m mark, -m recent, -m set, -m u32 ...) are kept as unknown matches with their text.
"""

from __future__ import annotations

import shlex

from agent.audit.findings import ParseStatus
from agent.audit.firewall.model import RuleRef
from agent.audit.firewall.reading import Unknowns, bounded_text, failed, quote
from agent.audit.firewall.ruleset import (
    CT_STATES, PROTOCOL_NUMBERS, TCP_FLAGS, Chain, Effect, Field, Flags, Item, Kind, Match, Names, Numbers, Rule,
    Ruleset, Statement, Table, Verdict, ipv4_int, ipv4_network,
)

IPTABLES_COMMAND = "iptables-save"
KIND = "iptables"
# Built-in chains per table: hook and priority (NF_IP_PRI_*), and the chain type as nft would say.
BUILTIN = {
    "raw": {"PREROUTING": ("prerouting", -300), "OUTPUT": ("output", -300)},
    "mangle": {"PREROUTING": ("prerouting", -150), "INPUT": ("input", -150), "FORWARD": ("forward", -150),
               "OUTPUT": ("output", -150), "POSTROUTING": ("postrouting", -150)},
    "nat": {"PREROUTING": ("prerouting", -100), "INPUT": ("input", 100), "OUTPUT": ("output", -100),
            "POSTROUTING": ("postrouting", 100)},
    "filter": {"INPUT": ("input", 0), "FORWARD": ("forward", 0), "OUTPUT": ("output", 0)},
    "security": {"INPUT": ("input", 50), "FORWARD": ("forward", 50), "OUTPUT": ("output", 50)},
}
TERMINAL = {"ACCEPT": Kind.ACCEPT, "DROP": Kind.DROP, "REJECT": Kind.REJECT, "RETURN": Kind.RETURN}
NAT_TARGETS = frozenset({"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"})
# Targets that return XT_CONTINUE and change nothing a modelled match reads.
NOTE_TARGETS = frozenset({"LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CLASSIFY", "DSCP", "TOS", "TTL", "ECN",
                          "SET", "CHECKSUM", "TRACE", "AUDIT", "SECMARK", "CONNSECMARK", "TEE", "IDLETIMER", "LED",
                          "HMARK", "RATEEST"})
# Options of the top level (not of a -m module): where an unknown module's options end.
TOP_LEVEL = frozenset({"-s", "--source", "-d", "--destination", "-p", "--protocol", "-i", "--in-interface", "-o",
                       "--out-interface", "-f", "--fragment", "-m", "--match", "-j", "--jump", "-g", "--goto"})
# Options of the modelled modules, with how many arguments each takes.
MODULE_OPTIONS = {
    "tcp": {"--sport": 1, "--source-port": 1, "--dport": 1, "--destination-port": 1, "--tcp-flags": 2, "--syn": 0},
    "udp": {"--sport": 1, "--source-port": 1, "--dport": 1, "--destination-port": 1},
    "multiport": {"--dports": 1, "--destination-ports": 1, "--sports": 1, "--source-ports": 1, "--ports": 1},
    "conntrack": {"--ctstate": 1},
    "state": {"--state": 1},
    "comment": {"--comment": 1},
    "iprange": {"--src-range": 1, "--dst-range": 1},
}
MAX_PORT = 65535
PORT_OPTIONS = {"--sport": Field.SPORT, "--source-port": Field.SPORT, "--sports": Field.SPORT,
                "--source-ports": Field.SPORT, "--dport": Field.DPORT, "--destination-port": Field.DPORT,
                "--dports": Field.DPORT, "--destination-ports": Field.DPORT, "--ports": Field.PORT}


class _Unreadable(Exception):
    pass


def read_iptables_save(text: str | bytes, file: str = IPTABLES_COMMAND) -> tuple[Ruleset | None, ParseStatus]:
    body, why = bounded_text(text)
    if body is None:
        return None, failed(file, KIND, why)
    lines = body.splitlines()
    meaningful = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if meaningful and not any(line.startswith("*") for line in meaningful):
        return None, failed(file, KIND, "not iptables-save output: no *table line "
                                        f"(first line: {quote(meaningful[0])})")
    return _Reader(file).read(lines)


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.unknowns = Unknowns()
        self.tables: list[Table] = []
        self.notes: list[str] = []

    def read(self, lines: list[str]) -> tuple[Ruleset, ParseStatus]:
        section: _Section | None = None
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("*"):
                if section:
                    self.unknowns.add(section.line, f"table {section.name} without COMMIT: iptables-restore would "
                                                    "not load it, left out")
                section = _Section(self, line[1:].strip(), number)
            elif section is None:
                self.unknowns.add(number, f"outside any table: {line}")
            elif line == "COMMIT":
                table = section.table()
                if table is not None:
                    self.tables.append(table)
                section = None
            else:
                section.line_of(number, line)
        if section:
            self.unknowns.add(section.line, f"table {section.name} without COMMIT: iptables-restore would not load "
                                            "it, left out")
        ruleset = Ruleset(KIND, self.file, tuple(self.tables), tuple(self.notes))
        rule_count = sum(1 for _ in ruleset.rules())
        return ruleset, self.unknowns.status(self.file, KIND, f"{len(self.tables)} tables, {rule_count} rules")


class _Section:
    """One `*table` ... `COMMIT` block."""

    def __init__(self, reader: _Reader, name: str, line: int) -> None:
        self.reader, self.name, self.line = reader, name, line
        self.known = name in BUILTIN
        if not self.known:
            reader.unknowns.add(line, f"table {quote(name)} is not one iptables has, left out")
        self.declared: dict[str, tuple[str, int, str]] = {}  # chain -> (policy, line, text)
        self.rules: dict[str, list[tuple[int, str]]] = {}

    def line_of(self, number: int, line: str) -> None:
        if not self.known:
            return
        if line.startswith(":"):
            parts = line[1:].split()
            if len(parts) < 2:
                self.reader.unknowns.add(number, line)
                return
            self.declared[parts[0]] = (parts[1], number, line)
            return
        tokens = line.split(maxsplit=1)
        if tokens and tokens[0].startswith("[") and tokens[0].endswith("]") and len(tokens) == 2:  # iptables-save -c
            tokens = tokens[1].split(maxsplit=1)
        rest = tokens[1].split(maxsplit=1) if len(tokens) == 2 else []
        if len(tokens) != 2 or tokens[0] not in ("-A", "--append") or not rest:
            self.reader.unknowns.add(number, line)
            return
        self.rules.setdefault(rest[0], []).append((number, line))

    def table(self) -> Table | None:
        if not self.known:
            return None
        for chain in self.rules.keys() - self.declared.keys():
            self.reader.unknowns.add(self.rules[chain][0][0], f"rules of chain {chain}, which table {self.name} does "
                                                              "not declare: left out")
        chains = []
        for name, (policy, number, text) in self.declared.items():
            hook = BUILTIN[self.name].get(name)
            rules = tuple(_RuleReader(self, name, number_, line).rule(position)
                          for position, (number_, line) in enumerate(self.rules.get(name, []), start=1))
            if hook is None:
                if policy != "-":
                    self.reader.unknowns.add(number, f"policy {policy} on chain {name}, which is not built in")
                chains.append(Chain("ip", self.name, name, rules))
                continue
            if policy not in ("ACCEPT", "DROP"):
                self.reader.unknowns.add(number, f"{text}: policy {policy} not understood, taken as ACCEPT")
                policy = "ACCEPT"
            chains.append(Chain("ip", self.name, name, rules, hook=hook[0], priority=hook[1],
                                type="nat" if self.name == "nat" else "filter", policy=policy.lower(),
                                policy_ref=RuleRef(self.reader.file, number, self.name, name, text)))
        return Table.of("ip", self.name, chains)


class _RuleReader:
    """One -A line into a rule: matches in the order written, then the target."""

    def __init__(self, section: _Section, chain: str, number: int, line: str) -> None:
        self.section, self.chain, self.number, self.line = section, chain, number, line
        self.items: list[Item] = []
        self.unmodelled: list[str] = []
        self.protocol: str | None = None

    def rule(self, position: int) -> Rule:
        ref = RuleRef(self.section.reader.file, self.number, self.section.name, self.chain, quote(self.line))
        try:
            tokens = shlex.split(self.line)
        except ValueError as exc:
            tokens = None
            self._unknown_target(f"the line ({exc})")
        if tokens is not None:
            if tokens[0].startswith("["):
                tokens = tokens[1:]
            try:
                self._options(tokens[2:])
            except _Unreadable as exc:
                self._unknown_target(str(exc))
        if self.unmodelled:
            self.section.reader.unknowns.add(self.number, f"{quote(self.line)}: {', '.join(self.unmodelled)} "
                                                          "not modelled")
        return Rule(ref, tuple(self.items), position, None, tuple(self.unmodelled))

    def _unknown_match(self, text: str) -> None:
        self.unmodelled.append(f"`{quote(text)}`")
        self.items.append(Match(Field.UNKNOWN, None, False, quote(text)))

    def _unknown_target(self, text: str) -> None:
        self.unmodelled.append(f"`{quote(text)}`")
        self.items.append(Statement(Effect.UNKNOWN, quote(text)))

    def _options(self, tokens: list[str]) -> None:
        module: str | None = None
        negate = False
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token == "!":
                negate, i = True, i + 1
                continue
            if token in ("-j", "--jump", "-g", "--goto"):
                if i + 1 >= len(tokens):
                    raise _Unreadable(f"{token} without a target")
                self._target(token in ("-g", "--goto"), tokens[i + 1], tokens[i + 2:])
                return
            if token in ("-m", "--match"):
                if i + 1 >= len(tokens):
                    raise _Unreadable(f"{token} without a module")
                module, i = tokens[i + 1], i + 2
                if module not in MODULE_OPTIONS:
                    i = self._unknown_module(module, tokens, i, negate)
                negate = False
                continue
            if token in TOP_LEVEL:
                i = self._top_level(token, tokens, i, negate)
            elif token.startswith("--"):
                owner = module if module in MODULE_OPTIONS else self.protocol  # `-p udp --dport 500` without -m udp
                arity = MODULE_OPTIONS.get(owner or "", {}).get(token)
                if arity is None or i + arity >= len(tokens):
                    i = self._unknown_option(module or "", tokens, i, negate)
                else:
                    self._module_option(token, tokens[i + 1:i + 1 + arity], negate)
                    i += 1 + arity
            else:
                raise _Unreadable(f"option {token}")
            negate = False

    def _top_level(self, token: str, tokens: list[str], i: int, negate: bool) -> int:
        if token in ("-f", "--fragment"):  # our packets are never non-first fragments
            if not negate:
                self.items.append(Match(Field.NEVER, None, False, "-f"))
            return i + 1
        if i + 1 >= len(tokens):
            raise _Unreadable(f"{token} without a value")
        value = tokens[i + 1]
        text = f"{'! ' if negate else ''}{token} {value}"
        if token in ("-s", "--source", "-d", "--destination"):
            field = Field.SADDR if token in ("-s", "--source") else Field.DADDR
            span = ipv4_network(value)
            if span is None:  # a mask with holes (iptables takes 255.0.255.0): not modelled
                self._unknown_match(text)
            else:
                self.items.append(Match(field, Numbers.of([span]), negate, text))
        elif token in ("-p", "--protocol"):
            name = value.lower()
            self.protocol = name
            if name in ("all", "0"):
                if negate:
                    self.items.append(Match(Field.NEVER, None, False, text))
                return i + 2
            number = PROTOCOL_NUMBERS.get(name, int(name) if name.isdigit() and int(name) < 256 else None)
            if number is None:
                self._unknown_match(text)
            else:
                self.items.append(Match(Field.PROTOCOL, Numbers.of([(number, number)]), negate, text))
        else:  # -i / -o: a trailing + is a wildcard
            field = Field.IIFNAME if token in ("-i", "--in-interface") else Field.OIFNAME
            names = Names(frozenset(), (value[:-1],)) if value.endswith("+") else Names(frozenset({value}))
            self.items.append(Match(field, names, negate, text))
        return i + 2

    def _unknown_module(self, module: str, tokens: list[str], i: int, negate: bool) -> int:
        """-m owner --uid-owner 0 ...: everything up to the next top-level option, as one unknown match."""
        end = i
        while end < len(tokens) and tokens[end] not in TOP_LEVEL and not (
                tokens[end] == "!" and end + 1 < len(tokens) and tokens[end + 1] in TOP_LEVEL):
            end += 1
        self._unknown_match(" ".join(["!"] * negate + ["-m", module, *tokens[i:end]]))
        return end

    def _unknown_option(self, module: str, tokens: list[str], i: int, negate: bool) -> int:
        """An option of a modelled module that is not (--ctstatus, --tcp-option): it and its arguments."""
        end = i + 1
        while end < len(tokens) and not tokens[end].startswith("-") and tokens[end] != "!":
            end += 1
        self._unknown_match(" ".join(["!"] * negate + [f"-m {module}" if module else "", *tokens[i:end]]).strip())
        return end

    def _module_option(self, option: str, args: list[str], negate: bool) -> None:
        text = " ".join(["!"] * negate + [option, *args])
        if option == "--comment":
            return
        if option in PORT_OPTIONS:
            field = PORT_OPTIONS[option]
            spans = [_port_span(part) for part in args[0].split(",")]
            if None in spans:
                self._unknown_match(text)
            else:
                self.items.append(Match(field, Numbers.of(spans), negate, text))
        elif option in ("--tcp-flags", "--syn"):
            mask, wanted = (_flags("FIN,SYN,RST,ACK"), _flags("SYN")) if option == "--syn" else map(_flags, args)
            if mask is None or wanted is None:
                self._unknown_match(text)
            else:
                accepted = frozenset(v for v in range(256) if ((v & mask) == wanted) != negate)
                self.items.append(Match(Field.TCP_FLAGS, Flags(accepted), False, text))
        elif option in ("--ctstate", "--state"):
            states = {s.lower() for s in args[0].split(",")}
            if not states <= CT_STATES:  # SNAT, DNAT: whether the connection is NATed, not modelled
                self._unknown_match(text)
            else:
                self.items.append(Match(Field.CT_STATE, frozenset(s for s in CT_STATES if (s in states) != negate),
                                        False, text))
        else:  # --src-range / --dst-range
            low, _, high = args[0].partition("-")
            span = (ipv4_int(low), ipv4_int(high))
            if None in span or span[0] > span[1]:
                self._unknown_match(text)
            else:
                field = Field.SADDR if option == "--src-range" else Field.DADDR
                self.items.append(Match(field, Numbers.of([span]), negate, text))

    def _target(self, goto: bool, target: str, options: list[str]) -> None:
        text = " ".join(["-g" if goto else "-j", target, *options])
        if target in self.section.declared:
            self.items.append(Verdict(Kind.GOTO if goto else Kind.JUMP, text, target))
        elif goto:
            self._unknown_target(f"{text} (no such chain)")
        elif target in TERMINAL:
            self.items.append(Verdict(TERMINAL[target], text))
        elif target in NAT_TARGETS:
            self.items.append(Verdict(Kind.NAT, text))
        elif target in NOTE_TARGETS or target == "CT" and "--notrack" not in options:
            self.items.append(Statement(Effect.NOTE, text))
        elif target == "NOTRACK" or target == "CT":
            self.items.append(Statement(Effect.NOTRACK, text))
        elif target == "TCPMSS" and options[:1] == ["--clamp-mss-to-pmtu"]:
            self.items.append(Statement(Effect.MSS_CLAMP, text, None))
        elif target == "TCPMSS" and len(options) == 2 and options[0] == "--set-mss" and options[1].isdigit():
            self.items.append(Statement(Effect.MSS_CLAMP, text, int(options[1])))
        else:  # NFQUEUE, TPROXY, SYNPROXY, a chain of another table: its effect is not modelled
            self.unmodelled.append(f"`{quote(text)}`")
            self.items.append(Verdict(Kind.UNKNOWN, quote(text)))


def _port_span(text: str) -> tuple[int, int] | None:
    low, colon, high = text.partition(":")
    try:
        first = int(low) if low else 0
        last = (int(high) if high else MAX_PORT) if colon else first
    except ValueError:
        return None
    return (first, last) if 0 <= first <= last <= MAX_PORT else None


def _flags(text: str) -> int | None:
    if text == "ALL":
        return 0x3F  # iptables' ALL: FIN SYN RST PSH ACK URG
    if text == "NONE":
        return 0
    total = 0
    for name in text.split(","):
        bit = TCP_FLAGS.get(name.lower())
        if bit is None:
            return None
        total |= bit
    return total
