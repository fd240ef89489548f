"""The report: one schema-versioned document from an assessment (results, facts, verdicts).

Its fields are a contract (agent/schema/report-v2.schema.json); add fields freely, never
rename or remove one without a new schema_version. v2 (issue 9): results per (check, target)
under each check, facts.reachability per gateway, facts.path_mtu.tcp_mss_bytes.
"""

from __future__ import annotations

import ast
import functools
import getpass
import ipaddress
import json
import os
import platform
import re
import socket
import tomllib
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from agent import __version__
from agent.assessment import Assessment
from agent.audit.run import AuditReport
from agent.config import DEFAULT_STUN
from checks.targets import Endpoint
from checks.transport.addressing import classify, is_ip_literal
from checks.registry import CHECKS

SCHEMA_VERSION = 2


def schema() -> dict[str, Any]:
    return json.loads((resources.files("agent") / "schema" / f"report-v{SCHEMA_VERSION}.schema.json").read_text())


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def host_info() -> dict[str, str]:
    return {"hostname": socket.gethostname(), "os": _os_name(), "kernel": platform.release()}


def summary_line(facts: dict[str, Any]) -> str:
    """One line in the manner of tailscale netcheck, pinned by a test: key=value, '-' for not measured."""

    def show(value: Any) -> str:
        if value is None:
            return "-"
        return str(value).lower() if isinstance(value, bool) else str(value)

    nat, public = facts["nat"], facts["public_ipv4"]
    pairs = [
        ("udp", None if nat["udp_blocked"] is None else not nat["udp_blocked"]),
        ("public_ipv4", public["present"]),
        ("nat", nat["detected"]),
        ("mapping", nat["mapping"]),
        ("filtering", nat["filtering"]),
        ("cgnat", nat["cgnat"]),
    ]
    return " ".join(f"{key}={show(value)}" for key, value in pairs)


def build_report(assessment: Assessment) -> dict[str, Any]:
    targets = assessment.targets
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "xcheck", "version": __version__},
        "started_at": rfc3339(assessment.started_at),
        "finished_at": rfc3339(assessment.finished_at),
        "host": host_info(),
        "redacted": False,
        "ruleset": assessment.ruleset,
        "requirements": dict(assessment.requirements),
        "targets": {"stun": [str(endpoint) for endpoint in targets.stun],
                    "iperf": str(targets.iperf) if targets.iperf else None,
                    "gateways": list(targets.gateways)},
        "summary": summary_line(assessment.facts),
        "checks": [run.to_dict() for run in assessment.runs],
        "facts": assessment.facts,
        "options": assessment.options,
        "recommendation": list(assessment.recommendation),
        **({"audit": assessment.audit.to_dict()} if assessment.audit is not None else {}),
    }


def build_audit_document(audit: AuditReport, ruleset: str, started_at: datetime) -> dict[str, Any]:
    """What `xcheck audit --format json` writes: the audit alone, with who wrote it, where and when
    (the report schema's `$defs/audit_document`)."""
    return {"schema_version": SCHEMA_VERSION, "tool": {"name": "xcheck", "version": __version__},
            "started_at": rfc3339(started_at), "host": host_info(), "redacted": False, "ruleset": ruleset,
            "audit": audit.to_dict()}


def audit_schema() -> dict[str, Any]:
    """The schema of `build_audit_document`'s output: the report schema rooted at its audit document."""
    whole = schema()
    return {"$schema": whole["$schema"], "$defs": whole["$defs"], "properties": whole["properties"],
            "$ref": "#/$defs/audit_document"}


# ---------------------------------------------------------------- redaction
#
# Every string of the report is scrubbed, whatever field it is in (peer text quotes addresses
# too), and so are keys; only what the schema fixes (field names, enum and const values) and the
# tool's identity are left as they are, so that a redacted report is as valid as the original.
# Candidates are looked for at every position (a lookahead that captures), so that a string that
# is not an address ("999.198.51.100.2") does not hide the address inside it; where candidates
# overlap, the leftmost wins, then the longest: the FQDN over the host name that begins it, the
# address "10.0.0.2" over a host named "10".
#
# A host may be named like a word xcheck itself writes ("gateway", "nat", "vpn"). xcheck's own
# wording is the same on every host, so it can name no site: a name is left where it lies inside
# one of xcheck's own strings ("no gateway given (--gateway)", a rule's text or source) that says
# more than the names. Everywhere else it is hidden, the host name field and the FQDN included.

_IPV4 = re.compile(r"(?<!\d)(?=((?:\d{1,3}\.){3}\d{1,3})(?!\d))")
_H16 = "[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|(?:\d{{1,3}}\.){{3}}\d{{1,3}})"
# RFC 3986's IPv6address, one form per number of groups around "::". A zone ("%eth0") is left as text.
_IPV6_FORMS = (
    rf"(?:{_H16}:){{6}}{_LS32}",
    rf"::(?:{_H16}:){{5}}{_LS32}",
    rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
    rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
    rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
    rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
)
_IPV6 = re.compile(rf"(?<![0-9A-Fa-f])(?=({'|'.join(_IPV6_FORMS)})(?![0-9A-Fa-f]))")

# Names that are the same on every host say nothing about a site: `root` (and its home) is every
# Unix host's administrator, and hiding it would also rename the word in "run as root".
_SAME_EVERYWHERE = frozenset({"localhost", "localhost.localdomain", "localdomain", "/", "root", "/root"})

# A certificate names its owner and its CA. An internal CA ("Contoso Issuing CA") names the site
# as much as the gateway's own name does; a public one ("DigiCert Inc") names no one, but telling
# them apart would take a list of every CA: every value is hidden, but the country (C), a
# two-letter code that names no one. A top-level DC ("com") is hidden too: certificates list DC
# values in either order, so which one is the top level is not known. Each kind keeps its class:
# `name-1`, `org-1`, `place-1`, `domain-1`.
_CERTIFICATE_NAME_KEYS = ("subject", "issuer", "certificate_subject")  # checks.protocols.x509's evidence
_CERTIFICATE_DNS_KEY = "san_dns"
_DN_KINDS = {"CN": "name", "O": "org", "OU": "org", "L": "place", "ST": "place", "DC": "domain",
             "emailAddress": "email"}
_DN_UNHIDDEN = frozenset({"C"})
# Where each attribute of a Name as checks.protocols.x509 writes it begins: "CN=x, O=y, 2.5.4.97=z".
_DN_ATTRIBUTE = re.compile(r"(?:^|, )([A-Za-z]+|\d+(?:\.\d+)+)=")
_DNS_NAME = re.compile(r"(?:\*\.)?(?:[\w-]+\.)+[A-Za-z][\w-]*\.?")


class Pseudonyms:
    """Stable stand-ins within one report: the same input always gets the same pseudonym.

    Addresses keep their class and family ("rfc1918-ipv4-1", "public-ipv4-2"), so the
    report still says what kind of network the site has; an IPv4-mapped IPv6 address is
    "::ffff:" and its IPv4 address's pseudonym. Names are case-blind, as DNS is.
    """

    def __init__(self) -> None:
        self._given: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def _assign(self, key: str, kind: str) -> str:
        if key not in self._given:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self._given[key] = f"{kind}-{self._counts[kind]}"
        return self._given[key]

    def address(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        if ip.version == 6 and ip.ipv4_mapped is not None:
            return "::ffff:" + self.address(ip.ipv4_mapped)
        return self._assign(f"ip:{ip}", f"{classify(ip)}-ipv{ip.version}")

    def name(self, text: str, kind: str) -> str:
        return self._assign(f"{kind}:{text.lower()}", kind)


@functools.cache
def _own_wording() -> dict[str, str]:
    """Every string xcheck's code (agent/, checks/) and rule sets spell out (a rule's text split at
    its placeholders), and every field name of its classes (typed evidence becomes the report's
    keys), each to its lower case: derived from them, so a new message needs no list."""
    strings: set[str] = set()

    def modules(folder: Any) -> Any:  # subpackages included
        for entry in folder.iterdir():
            if entry.is_dir():
                yield from modules(entry)
            elif entry.name.endswith(".py"):
                yield entry

    for package in ("agent", "checks"):
        for module in modules(resources.files(package)):
            for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    strings.add(node.value)
                elif isinstance(node, ast.ClassDef):
                    strings.update(field.target.id for field in node.body
                                   if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name))

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            strings.update(node)
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)
        elif isinstance(node, str):  # "{facts.nat.detected}", "{option.max_bits_per_second|rate}"
            strings.update(re.split(r"[{}|]", node))

    for rules in (resources.files("agent") / "rules").iterdir():
        if rules.name.endswith(".toml"):
            collect(tomllib.loads(rules.read_text(encoding="utf-8")))
    return {text: text.lower() for text in strings}


@functools.cache
def _own_wording_at_once() -> str:
    """All of `_own_wording()` in one lower-cased string: most names are in none of it, found at once."""
    return "\0".join(_own_wording().values())


def _target_hosts(targets: dict[str, Any]) -> list[str]:
    """The hosts the user gave as targets, but for xcheck's own defaults (an address among them is
    hidden as one, by its class: `_names_to_hide` leaves it out, as it does every address)."""
    endpoints = [*targets.get("stun", []), *filter(None, [targets.get("iperf")])]
    hosts = [Endpoint.parse(text, 1).host for text in endpoints] + list(targets.get("gateways", []))
    defaults = {Endpoint.parse(text, 1).host for text in DEFAULT_STUN}
    return [host for host in hosts if host not in defaults]


def _with_domains(name: str, kind: str) -> list[tuple[str, str]]:
    """`name`, and when it is a DNS name or an e-mail address, the domains it is in (of two labels
    or more): "vpn.contoso.com" also hides "contoso.com" in "www.contoso.com", never "com" alone."""
    _, at, host = name.rpartition("@")
    if not _DNS_NAME.fullmatch(host):
        return [(name, kind)]
    labels = host.rstrip(".").split(".")
    # An absolute name ("vpn.contoso.com.") is written without its final dot as often as with it.
    relative = [(host.rstrip("."), kind)] if host.endswith(".") and not at else []
    return [(name, kind), *relative] + [(".".join(labels[i:]), "domain") for i in range(0 if at else 1, len(labels) - 1)]


def _distinguished_name_values(text: str) -> list[tuple[str, str]]:
    """(value, kind) of each attribute of a Name but the country."""
    starts = list(_DN_ATTRIBUTE.finditer(text))
    values = [(start.group(1), text[start.end():end.start() if end else len(text)])
              for start, end in zip(starts, [*starts[1:], None])]
    return [pair for key, value in values if key not in _DN_UNHIDDEN
            for pair in _with_domains(value, _DN_KINDS.get(key, "name"))]


def _certificate_names(node: Any) -> list[tuple[str, str]]:
    """(name, kind) of every name in the certificates recorded anywhere in `node`."""
    if isinstance(node, list):
        return [found for item in node for found in _certificate_names(item)]
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        if key in _CERTIFICATE_NAME_KEYS and isinstance(value, str):
            found += _distinguished_name_values(value)
        elif key == _CERTIFICATE_DNS_KEY and isinstance(value, list):
            found += [pair for name in value if isinstance(name, str) for pair in _with_domains(name, "name")]
        else:
            found += _certificate_names(value)
    return found


def _names_to_hide(report: dict[str, Any]) -> dict[str, str]:
    """Lower-cased name -> kind: this host's names and DNS domain, the user's name and home
    (also of a `sudo` caller), the targets' names, and the names in the certificates peers showed."""
    fqdn = socket.getfqdn()
    names = [(name, "host") for name in (socket.gethostname(), fqdn, report["host"]["hostname"])]
    domain = fqdn.partition(".")[2]
    if "." in domain:  # a one-label domain ("lan", "home") names no one
        names.append((domain, "domain"))
    try:
        names += [(getpass.getuser(), "user"), (os.path.expanduser("~"), "home")]
    except (KeyError, OSError):
        pass
    if os.environ.get("SUDO_USER"):
        names.append((os.environ["SUDO_USER"], "user"))
    names += [(host, "target") for host in _target_hosts(report.get("targets", {}))]
    names += _certificate_names(report)
    hidden: dict[str, str] = {}
    for name, kind in names:
        # An address is hidden as one, by its class; what holds no letter or digit names no one.
        if name.lower() not in _SAME_EVERYWHERE and any(c.isalnum() for c in name) and not is_ip_literal(name):
            hidden.setdefault(name.lower(), kind)
    return hidden


def _shape(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """A schema node with its $ref, allOf and anyOf folded in: the properties, items, enum and const it allows."""
    if "$ref" in node:
        node = {**root["$defs"][node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
    if "anyOf" in node:  # an enum or null, as facts.reachability's reason: the values of every alternative
        node = {**node, "enum": [value for part in node["anyOf"] for value in _shape(part, root).get("enum", [])]}
    for part in node.get("allOf", []):
        part = _shape(part, root)
        node = {**part, **node, "properties": {**part.get("properties", {}), **node.get("properties", {})}}
    return node


class _Scrubber:
    """Replaces addresses and the given names in any string by their pseudonyms."""

    def __init__(self, names: dict[str, str]) -> None:
        self.pseudonyms = Pseudonyms()
        self._names = names
        self._longest_first = sorted(names, key=len, reverse=True)
        longest_first = "|".join(map(re.escape, self._longest_first))
        # A name is whole labels: "vm" in "vm.example.net" or "backup.vm", not in "xvm". A label that
        # holds it between hyphens or underscores ("vm-2", "web_vm") names the host too: hidden whole.
        self._name_pattern = re.compile(rf"(?<![\w-])(?=((?:[\w-]*[-_])?({longest_first})(?:[-_][\w-]*)?)(?![\w-]))",
                                        re.IGNORECASE) if names else None
        self._own: dict[str, list[str]] = {}

    def _own_wording_holding(self, name: str) -> list[str]:
        """xcheck's own strings that hold `name` and say more than the names they hold ("gateway"
        alone, or "gateway: ", is no wording of ours that a host named "gateway" could hide in)."""
        if name not in self._own:
            holding = [(own, lowered) for own, lowered in _own_wording().items() if name in lowered] \
                if name in _own_wording_at_once() else []
            self._own[name] = [own for own, lowered in holding if self._says_more(lowered)]
        return self._own[name]

    def _says_more(self, lowered: str) -> bool:
        for hidden in self._longest_first:
            lowered = lowered.replace(hidden, "")
        return any(c.isalnum() for c in lowered)

    def _is_own_wording(self, text: str, start: int, end: int, name: str) -> bool:
        """Whether text[start:end] lies inside one of xcheck's own strings (holding `name`) as written."""
        span = text[start:end]
        for own in self._own_wording_holding(name):
            at = own.find(span)
            while at >= 0:
                if at <= start and text.startswith(own, start - at):
                    return True
                at = own.find(span, at + 1)
        return False

    def _candidates(self, text: str) -> list[tuple[int, int, Callable[[], str]]]:
        found: list[tuple[int, int, Callable[[], str]]] = []
        if self._name_pattern is not None:
            for match in self._name_pattern.finditer(text):
                label, name = match.group(1), match.group(2).lower()  # the pseudonym is case-blind
                if not self._is_own_wording(text, match.start(1), match.end(1), name):
                    found.append((match.start(1), match.end(1),
                                  functools.partial(self.pseudonyms.name, label, self._names[name])))
        for pattern in (_IPV6, _IPV4):
            for match in pattern.finditer(text):
                try:
                    ip = ipaddress.ip_address(match.group(1))
                except ValueError:  # "999.1.2.3", "1.2.3.04"
                    continue
                found.append((match.start(1), match.end(1), functools.partial(self.pseudonyms.address, ip)))
        return found

    def __call__(self, text: str) -> str:
        pieces, done = [], 0
        for start, end, pseudonym in sorted(self._candidates(text), key=lambda c: (c[0], c[0] - c[1])):
            if start >= done:
                pieces += [text[done:start], pseudonym()]
                done = end
        return "".join(pieces) + text[done:]


def redact(report: dict[str, Any]) -> dict[str, Any]:
    """A copy with addresses, host, user, target and certificate names replaced by pseudonyms in
    every string and key of the report, whatever field it is in. What the schema fixes (field names,
    enum and const values) and the keys xcheck writes (`"gateway": ...`) are the report's own
    vocabulary and stay, so the copy is as valid as the original."""
    scrub = _Scrubber(_names_to_hide(report))
    root = schema()
    # A check's name is one of the registry's: the schema leaves it open only so that a new check
    # needs no new schema version. A host named "esp" or "latency" must not rename a check.
    root["$defs"]["check"]["properties"]["name"]["enum"] = list(CHECKS)
    own = _own_wording()

    def walk(node: Any, shape: dict[str, Any]) -> Any:
        shape = _shape(shape, root)
        if isinstance(node, dict):
            fields = shape.get("properties", {})
            ours = {key for key in node
                    if not isinstance(key, str) or key in fields or key in own and key.isidentifier()}
            return {key if key in ours else scrub(key): walk(value, fields.get(key, {})) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item, shape.get("items", {})) for item in node]
        if isinstance(node, str) and node not in [*shape.get("enum", []), shape.get("const")]:
            return scrub(node)
        return node

    # The top level's keys are ours, and so is the tool's identity: its version is no address. The
    # summary holds only booleans and enum values (`nat=true`): a host named "nat" must not rename it.
    fields = root["properties"]
    redacted = {key: value if key == "tool" or (key == "summary" and value == summary_line(report["facts"]))
                else walk(value, fields.get(key, {})) for key, value in report.items()}
    redacted["redacted"] = True
    return redacted
