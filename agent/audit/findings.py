"""What an audit finds: findings, each with the line that causes it and its fix, and for every
input file whether it was understood (Batfish's way: a file half understood says so, never a guess)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.StrEnum):
    ERROR = "error"  # the connection will not work (or will drop) as configured
    WARNING = "warning"  # it may work, but against Azure's parameters or on luck
    INFO = "info"  # worth knowing; nothing to fix


class ParseState(enum.StrEnum):
    PARSED = "parsed"  # every line understood
    PARTIALLY_UNRECOGNIZED = "partially_unrecognized"  # some lines not understood: listed, and judged "unknown"
    FAILED = "failed"  # nothing usable: binary, too large, an include loop, a syntax error that stops the parser


@dataclass(frozen=True)
class Evidence:
    """Where a finding comes from: the file and line (1-based) a person would open; line None for a
    whole file or something measured."""

    file: str
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line}


@dataclass(frozen=True)
class Finding:
    id: str  # stable, dotted: "ipsec.ike-lifetime", "firewall.udp4500-dropped"
    severity: Severity
    option: str  # the option it bears on: p2s, s2s, expressroute_exp, expressroute_nsp, or "site" (all)
    text: str  # what is wrong, naming the connection/rule and the values (never a secret)
    fix: str  # what to change, concretely
    source: str  # a key of the rule set's [sources]: the document the parameter comes from
    evidence: Evidence

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "severity": str(self.severity), "option": self.option, "text": self.text,
                "fix": self.fix, "source": self.source, "evidence": self.evidence.to_dict()}


@dataclass(frozen=True)
class Unrecognized:
    """A line (or statement) the reader did not understand, quoted bounded."""

    line: int | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "text": self.text}


# What an input file can be: a closed set, so that a metric labelled with it stays bounded.
FILE_KINDS = frozenset({"swanctl", "strongswan-ipsec.conf", "libreswan-ipsec.conf", "ipsec.secrets", "nftables",
                        "iptables", "firewall", "frr", "bird"})


@dataclass(frozen=True)
class ParseStatus:
    file: str  # a path, or the command that produced it ("nft -j list ruleset")
    kind: str  # one of FILE_KINDS
    status: ParseState
    detail: str = ""  # for failed: why, in one line
    unrecognized: tuple[Unrecognized, ...] = field(default=())

    def __post_init__(self) -> None:
        assert self.kind in FILE_KINDS, f"unknown input kind {self.kind!r}: add it to FILE_KINDS"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "kind": self.kind, "status": str(self.status), "detail": self.detail,
                "unrecognized": [u.to_dict() for u in self.unrecognized]}
