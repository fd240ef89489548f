"""What the firewall evaluator is asked and what it answers; the ruleset model itself (tables,
chains, rules, matches) is the evaluator's, shared by the nftables and iptables readers.

A question is a `Packet` at one netfilter hook path: sent by this host (OUTPUT then POSTROUTING),
forwarded by it (a gateway host: FORWARD), or an answer arriving for it (INPUT, conntrack state
established). The answer is a `Decision`: accepted, dropped or rejected, naming the rule that
decided (or the base chain's policy), or unknown, naming the rule whose match the evaluator does
not model. Never a guess.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Path(enum.StrEnum):
    OUTPUT = "output"  # locally generated: output hook, then postrouting
    FORWARD = "forward"  # routed through this host: prerouting, forward, postrouting
    INPUT = "input"  # to this host: prerouting, input


class Protocol(enum.StrEnum):
    UDP = "udp"
    TCP = "tcp"
    ESP = "esp"


class CtState(enum.StrEnum):
    NEW = "new"
    ESTABLISHED = "established"  # an answer to what we sent (conntrack's ESTABLISHED)


@dataclass(frozen=True)
class Packet:
    path: Path
    protocol: Protocol
    source: str | None  # IPv4 address; None: not known (the device behind a forwarding host)
    destination: str | None
    source_port: int | None = None  # None for ESP, or not known (an ephemeral port)
    destination_port: int | None = None
    in_interface: str | None = None  # None where the path has none (OUTPUT has no input interface)
    out_interface: str | None = None  # None where the path has none (INPUT), or not known
    ct_state: CtState = CtState.NEW


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    DROPPED = "dropped"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class RuleRef:
    """A rule (or a base chain's policy) as a person finds it: file and line, its table/chain,
    and its text as written (iptables-save's line, or nft's rule as `nft list ruleset` prints it)."""

    file: str
    line: int | None
    table: str
    chain: str
    text: str


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    rule: RuleRef | None  # the deciding rule; the policy's chain for a policy; None: no chain on the path
    reason: str  # one line: "dropped by rule ... (udp dport 4500)", "policy drop of chain output",
                 # "unknown: match `-m owner` is not modelled"
