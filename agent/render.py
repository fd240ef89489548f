"""Human renderings of a report: a terminal summary (rich) and Markdown for a ticket.

Both are drawn from the same sections (`sections`), so they never say different things.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from agent.verdicts import format_rate

_VERDICT_STYLES = {"feasible": "green", "conditional": "yellow", "unknown": "bright_black", "infeasible": "red"}
_STATUS_STYLES = {"ok": "green", "fail": "red", "error": "magenta", "skipped": "bright_black"}


def _yes_no(value: bool | None, yes: str = "yes", no: str = "no") -> str:
    return "not measured" if value is None else (yes if value else no)


def _fact_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    facts = report["facts"]
    public, nat = facts["public_ipv4"], facts["nat"]
    if nat["detected"]:
        nat_text = (f"yes: {nat['local_address']}:{nat['local_port']} is seen as "
                    f"{nat['reflexive_address']}:{nat['reflexive_port']}")
    elif nat["detected"] is False:
        nat_text = f"no: seen as {nat['reflexive_address']}:{nat['reflexive_port']}"
    else:
        nat_text = "not measured"
    varies = nat.get("mapping_varies_by_destination")
    mapping = nat["mapping"] or ("not measured" if varies is None else
                                 f"not measured (RFC 5780); {'varies' if varies else 'same'} across servers")
    addresses = ", ".join(public["addresses"])
    return [
        ("Public IPv4", _yes_no(public["present"]) + (f" ({addresses})" if addresses else "")),
        ("NAT", nat_text),
        ("NAT mapping", mapping),
        ("NAT filtering", nat["filtering"] or "not measured"),
        ("CGNAT", _yes_no(nat["cgnat"])),
        ("Outbound UDP", _yes_no(nat["udp_blocked"], "blocked (every STUN server silent)", "open")),
        ("Throughput", _throughput_text(facts["throughput"])),
        ("Latency (TCP connect)", _latency_text(facts["latency"])),
    ]


def _throughput_text(throughput: dict[str, Any]) -> str:
    up, down = throughput["upload_bits_per_second"], throughput["download_bits_per_second"]
    if up is None and down is None:
        return "not measured"
    text = " ".join(f"{label} {'-' if rate is None else format_rate(rate)}," for label, rate in (("upload", up), ("download", down)))
    return text.rstrip(",") + f" ({throughput['streams']} streams)" + (
        ", limited by this host's CPU" if throughput["cpu_limited"] else "")


def _latency_text(latency: dict[str, Any]) -> str:
    def figures(measured: dict[str, Any]) -> str:
        if measured["rtt_p50_seconds"] is None:
            return "not measured"
        jitter = measured["jitter_seconds"] or 0.0
        return (f"p50 {measured['rtt_p50_seconds'] * 1e3:.1f} ms, p99 {measured['rtt_p99_seconds'] * 1e3:.1f} ms, "
                f"jitter {jitter * 1e3:.1f} ms, loss {measured['loss_ratio']:.0%}")

    return f"{figures(latency)}; under load: {figures(latency['under_load'])}"


def _interface_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (iface["name"], f"{addr['address']}/{addr['prefix_length']}", addr["class"])
        for iface in report["facts"].get("interfaces", [])
        for addr in iface["addresses"]
    ]


def _check_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    return [
        (c["name"], c["status"], c["reason"], f"{c['duration_seconds']:.3f} s", c.get("detail", ""))
        for c in report["checks"]
    ]


def _heading(report: dict[str, Any]) -> str:
    return (f"xcheck {report['tool']['version']} on {report['host']['hostname']}, "
            f"rule set {report['ruleset']}, {report['started_at']}")


def _recommendation(report: dict[str, Any]) -> str:
    ranked = report["recommendation"]
    if not ranked:
        return "none: every option is infeasible for this site"
    return ", then ".join(report["options"][option]["title"] for option in ranked)


def render_text(report: dict[str, Any], *, color: bool = False, width: int = 110) -> str:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=color, no_color=not color, width=width, highlight=False)
    console.print(Text(_heading(report), style="bold"))
    console.print(report["summary"], soft_wrap=True)

    interfaces = Table(title="Interfaces (up)", title_justify="left", show_edge=False)
    for column in ("interface", "address", "class"):
        interfaces.add_column(column)
    for row in _interface_rows(report):
        interfaces.add_row(*row)
    console.print(interfaces)

    facts = Table(title="Facts", title_justify="left", show_header=False, show_edge=False)
    facts.add_column(style="bold")
    facts.add_column()
    for row in _fact_rows(report):
        facts.add_row(*row)
    console.print(facts)

    checks = Table(title="Checks", title_justify="left", show_edge=False)
    for column in ("check", "status", "reason", "time", "detail"):
        checks.add_column(column, overflow="fold")
    for name, status, reason, duration, detail in _check_rows(report):
        checks.add_row(name, Text(status, style=_STATUS_STYLES[status]), reason, duration, detail)
    console.print(checks)

    verdicts = Table(title="Verdicts", title_justify="left", show_edge=False, show_lines=True)
    verdicts.add_column("option")
    verdicts.add_column("verdict")
    verdicts.add_column("reasons (rule: text)", overflow="fold")
    for entry in report["options"].values():
        reasons = "\n".join(f"{r['rule']}: {r['text']}" for r in entry["reasons"])
        verdicts.add_row(entry["title"], Text(entry["verdict"], style=_VERDICT_STYLES[entry["verdict"]]), reasons)
    console.print(verdicts)
    console.print(Text("Recommendation: ", style="bold") + Text(_recommendation(report)))
    return buffer.getvalue()


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"## {_heading(report)}", "", f"`{report['summary']}`", "", "### Facts", "", "| fact | value |", "|---|---|"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in _fact_rows(report)]
    lines += ["", "### Interfaces (up)", "", "| interface | address | class |", "|---|---|---|"]
    lines += [f"| {' | '.join(map(_md, row))} |" for row in _interface_rows(report)]
    lines += ["", "### Checks", "", "| check | status | reason | time | detail |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(map(_md, row))} |" for row in _check_rows(report)]
    lines += ["", "### Verdicts", ""]
    for entry in report["options"].values():
        lines.append(f"- **{entry['title']}: {entry['verdict']}**")
        lines += [f"  - `{r['rule']}` ({r.get('verdict', '')}): {r['text']} _Source: {r['source']}_" for r in entry["reasons"]]
    lines += ["", f"**Recommendation:** {_recommendation(report)}", ""]
    return "\n".join(lines)


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False) + "\n"


RENDERERS: dict[str, Callable[..., str]] = {"text": render_text, "json": render_json, "markdown": render_markdown}
