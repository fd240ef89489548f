"""The report: one schema-versioned document from settings, results, facts and verdicts.

Its fields are a contract (agent/schema/report-v1.schema.json); add fields freely, never
rename or remove one without a new schema_version.
"""

from __future__ import annotations

import getpass
import ipaddress
import json
import os
import platform
import re
import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import Settings
from checks.addressing import classify
from checks.contract import CheckResult

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

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f.]{0,15}(?![\w:])")


class Pseudonyms:
    """Stable stand-ins within one report: the same input always gets the same pseudonym.

    Addresses keep their class and family ("rfc1918-ipv4-1", "public-ipv4-2"), so the
    report still says what kind of network the site has.
    """

    def __init__(self) -> None:
        self._given: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def _assign(self, key: str, kind: str) -> str:
        if key not in self._given:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self._given[key] = f"{kind}-{self._counts[kind]}"
        return self._given[key]

    def address(self, text: str) -> str:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return text
        return self._assign(f"ip:{ip}", f"{classify(ip)}-ipv{ip.version}")

    def name(self, text: str, kind: str) -> str:
        return self._assign(f"{kind}:{text}", kind)


def _names_to_hide() -> list[tuple[str, str]]:
    """(text, kind) pairs: host names and the user's name and home, longest first."""
    names = {socket.gethostname(): "host", socket.getfqdn(): "host"}
    try:
        user = getpass.getuser()
        names[user] = "user"
        names[os.path.expanduser("~")] = "home"
    except (KeyError, OSError):
        pass
    names = {text: kind for text, kind in names.items() if text and text not in ("localhost", "/", "root")}
    return sorted(names.items(), key=lambda item: -len(item[0]))


def redact(report: dict[str, Any]) -> dict[str, Any]:
    """A copy with addresses, host and user names replaced by pseudonyms, everywhere in the report."""
    pseudonyms = Pseudonyms()
    hidden = _names_to_hide()
    name_pattern = (
        re.compile("|".join(rf"(?<![\w.-]){re.escape(text)}(?![\w-])" for text, _ in hidden)) if hidden else None
    )
    kinds = dict(hidden)

    def scrub(text: str) -> str:
        text = _IPV4.sub(lambda m: pseudonyms.address(m.group()), text)
        text = _IPV6.sub(lambda m: pseudonyms.address(m.group()), text)
        if name_pattern is not None:
            text = name_pattern.sub(lambda m: pseudonyms.name(m.group(), kinds[m.group()]), text)
        return text

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return scrub(node) if isinstance(node, str) else node

    # Keys and the tool's own identity are ours, not the site's: a host named "xcheck" must not
    # rename the tool.
    redacted = {key: value if key in ("tool", "schema_version") else walk(value) for key, value in report.items()}
    redacted["redacted"] = True
    return redacted
