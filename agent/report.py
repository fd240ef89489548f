"""The report: one schema-versioned document from settings, results, facts and verdicts.

Its fields are a contract (agent/schema/report-v1.schema.json); add fields freely, never
rename or remove one without a new schema_version.
"""

from __future__ import annotations

import functools
import getpass
import ipaddress
import json
import os
import platform
import re
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import DEFAULT_STUN, Settings
from checks.addressing import classify
from checks.contract import CheckResult, Endpoint

SCHEMA_VERSION = 1


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


def build_report(
    settings: Settings,
    started_at: datetime,
    finished_at: datetime,
    results: Sequence[CheckResult],
    facts: dict[str, Any],
    assessment: dict[str, Any],
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "xcheck", "version": __version__},
        "started_at": rfc3339(started_at),
        "finished_at": rfc3339(finished_at),
        "host": host_info(),
        "redacted": False,
        "ruleset": settings.ruleset,
        "requirements": settings.requirements.to_dict(),
        "targets": {"stun": [str(endpoint) for endpoint in settings.stun],
                    "iperf": str(settings.iperf) if settings.iperf else None,
                    "gateways": list(settings.gateway)},
        "summary": summary_line(facts),
        "checks": [result.to_dict() for result in results],
        "facts": facts,
        "options": assessment["options"],
        "recommendation": assessment["recommendation"],
    }


# ---------------------------------------------------------------- redaction
#
# Every string of the report is scrubbed, whatever field it is in (peer text quotes addresses
# too), and so are keys; only what the schema fixes (field names, enum and const values) and the
# tool's identity are left as they are, so that a redacted report is as valid as the original.
# Candidates are looked for at every position (a lookahead that captures), so that a string that
# is not an address ("999.198.51.100.2") does not hide the address inside it; where candidates
# overlap, the leftmost wins, then the longest: the FQDN over the host name that begins it, the
# address "10.0.0.2" over a host named "10".

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


def _target_hosts(targets: dict[str, Any]) -> list[str]:
    """The names (not the addresses) the user gave as targets, but for xcheck's own defaults."""
    endpoints = [*targets.get("stun", []), *filter(None, [targets.get("iperf")])]
    hosts = [Endpoint.parse(text, 1).host for text in endpoints] + list(targets.get("gateways", []))
    defaults = {Endpoint.parse(text, 1).host for text in DEFAULT_STUN}
    names = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host not in defaults:
                names.append(host)
    return names


def _names_to_hide(report: dict[str, Any]) -> dict[str, str]:
    """Lower-cased name -> kind: this host's names and DNS domain, the user's name and home
    (also of a `sudo` caller), and the targets' names."""
    fqdn = socket.getfqdn()
    names = {name: "host" for name in (socket.gethostname(), fqdn, report["host"]["hostname"])}
    domain = fqdn.partition(".")[2]
    if "." in domain:  # a one-label domain ("lan", "home") names no one
        names[domain] = "domain"
    try:
        names[getpass.getuser()] = "user"
        names[os.path.expanduser("~")] = "home"
    except (KeyError, OSError):
        pass
    if os.environ.get("SUDO_USER"):
        names[os.environ["SUDO_USER"]] = "user"
    names.update((host, "target") for host in _target_hosts(report.get("targets", {})))
    hidden: dict[str, str] = {}
    for name, kind in names.items():
        if name and name.lower() not in _SAME_EVERYWHERE:
            hidden.setdefault(name.lower(), kind)
    return hidden


def _shape(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """A schema node with its $ref and allOf folded in: the properties, items, enum and const it allows."""
    if "$ref" in node:
        node = {**root["$defs"][node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
    for part in node.get("allOf", []):
        part = _shape(part, root)
        node = {**part, **node, "properties": {**part.get("properties", {}), **node.get("properties", {})}}
    return node


class _Scrubber:
    """Replaces addresses and the given names in any string by their pseudonyms."""

    def __init__(self, names: dict[str, str]) -> None:
        self.pseudonyms = Pseudonyms()
        self._names = names
        longest_first = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
        # A name is whole labels: "vm" in "vm.example.net" or "backup.vm", not in "vm-2" or "xvm".
        self._name_pattern = re.compile(rf"(?<![\w-])(?=({longest_first})(?![\w-]))", re.IGNORECASE) if names else None

    def _candidates(self, text: str) -> list[tuple[int, int, Callable[[], str]]]:
        found: list[tuple[int, int, Callable[[], str]]] = []
        if self._name_pattern is not None:
            for match in self._name_pattern.finditer(text):
                name = match.group(1).lower()
                found.append((match.start(1), match.end(1), functools.partial(self.pseudonyms.name, name, self._names[name])))
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
    """A copy with addresses, host, user and target names replaced by pseudonyms in every string
    and key of the report, whatever field it is in. What the schema fixes (field names, enum and
    const values) is the report's own vocabulary and stays, so the copy is as valid as the original."""
    scrub = _Scrubber(_names_to_hide(report))
    root = schema()

    def walk(node: Any, shape: dict[str, Any]) -> Any:
        shape = _shape(shape, root)
        if isinstance(node, dict):
            fields = shape.get("properties", {})
            return {key if key in fields or not isinstance(key, str) else scrub(key): walk(value, fields.get(key, {}))
                    for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item, shape.get("items", {})) for item in node]
        if isinstance(node, str) and node not in [*shape.get("enum", []), shape.get("const")]:
            return scrub(node)
        return node

    # The top level's keys are ours, and so is the tool's identity: its version is no address.
    fields = root["properties"]
    redacted = {key: value if key == "tool" else walk(value, fields.get(key, {})) for key, value in report.items()}
    redacted["redacted"] = True
    return redacted
