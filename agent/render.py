"""Human renderings of a report: a terminal summary (rich) and Markdown for a ticket.

Both are drawn from the same rows (`_fact_rows`, `_interface_rows`, `_check_rows`, `first_contact`),
so they never say different things.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from typing import Any

from agent.facts import REACHABILITY_CHECKS
from agent.text import markdown, markdown_code, visible
from agent.verdicts import format_rate
from checks.contract import Reason

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
        ("Site's public address", _site_address_text(public)),
        ("NAT", nat_text),
        ("NAT mapping", mapping),
        ("NAT filtering", nat["filtering"] or "not measured"),
        ("CGNAT", _yes_no(nat["cgnat"])),
        ("Outbound UDP", _yes_no(nat["udp_blocked"], "blocked (every STUN server silent)", "open")),
        ("NAT seen by the gateway (IKE)", _yes_no(nat.get("ike_detected"))),
        ("Throughput", _throughput_text(facts["throughput"])),
        ("Latency (TCP connect)", _latency_text(facts["latency"])),
        *((f"Gateway {REACHABILITY_CHECKS[name]}", _reachability_text(fact))
          for name, fact in facts["reachability"].items()),
        ("TLS interception", _yes_no(facts["tls_interception"], "suspected (SSTP would break)", "none seen")),
        ("Path MTU", _path_mtu_text(facts["path_mtu"])),
    ]


def _reachability_text(fact: dict[str, Any]) -> str:
    if not fact["gateways"]:
        return "not measured"
    state = {True: "reachable", False: "not reachable", None: "not known"}[fact["reachable"]]
    if fact["reachable"] is None and fact["reason"] in (Reason.NO_RESPONSE, Reason.STALLED):
        state = "no answer (silence proves no block)"
    reasons = sorted({g["reason"] for g in fact["gateways"]})
    return f"{state} ({', '.join(reasons)})"


def _site_address_text(public: dict[str, Any]) -> str:
    source = {"stun": "as a STUN server saw it", "interface": "this host's own"}.get(public["site_address_source"])
    return f"{public['site_address']} ({source})" if public["site_address"] else "not measured"


def _path_mtu_text(path_mtu: dict[str, Any]) -> str:
    if path_mtu["bytes"] is None:
        return "not measured" + (" (the gateway answered no probe)" if path_mtu["reason"] == Reason.NO_RESPONSE else "")
    return f"{path_mtu['bytes']} bytes (TCP MSS up to {path_mtu['tcp_mss_bytes']})"


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
    """A row per check; beneath a check of several targets, a row per target."""
    rows = []
    for c in report["checks"]:
        rows.append((c["name"], c["status"], c["reason"], f"{c['duration_seconds']:.3f} s", c.get("detail", "")))
        if len(c["results"]) > 1:
            rows += [(f"  {c['name']} @ {r['target']}", r["status"], r["reason"], f"{r['duration_seconds']:.3f} s",
                      r["detail"]) for r in c["results"]]
    return rows


# Why a check measured nothing, in the order a reader should look (this host first, then the path).
# Any other ending (an answer, even an ICMP refusal or a bad answer) means something was reached.
_REACHED_NOTHING = {
    Reason.NO_INTERFACES: "this host has no interface with an address ({checks})",
    Reason.RESOLVE_FAILED: "no name resolved, so nothing was sent ({checks}); check this host's DNS",
    Reason.NETWORK_ERROR: "this host has no route to the targets, or a local firewall refused to send ({checks})",
    Reason.NO_RESPONSE: "nothing answered ({checks}), so the traffic is dropped on the way or nothing listens there",
    Reason.CONNECTION_FAILED: "no TCP connection could be made ({checks})",
    Reason.TIMEOUT: "no answer came before the deadline ({checks})",
    Reason.EXCEPTION: "a check failed on a bug of its own ({checks})",
}
# Checks that read only this host: their success says nothing about the network.
_LOCAL_CHECKS = frozenset({"interfaces"})


def first_contact(report: dict[str, Any]) -> str | None:
    """One plain sentence when no target was reached (or none was given), saying why from the
    checks' own reasons; None when anything beyond this host was measured."""
    remote = [c for c in report["checks"] if c["name"] not in _LOCAL_CHECKS and c["status"] != "skipped"]
    if not remote:
        if any(c["reason"] == Reason.NO_TARGET for c in report["checks"]):
            return ("Nothing was measured beyond this host's own addresses: "
                    "no STUN server, gateway (--gateway) or far end (--iperf) was given.")
        return None
    considered = remote + [c for c in report["checks"] if c["reason"] == Reason.NO_INTERFACES]
    if any(c["reason"] not in _REACHED_NOTHING for c in considered):
        return None
    causes = [why.format(checks=", ".join(c["name"] for c in considered if c["reason"] == reason))
              for reason, why in _REACHED_NOTHING.items() if any(c["reason"] == reason for c in considered)]
    return "Nothing could be measured: " + "; ".join(causes) + "."


def _heading(report: dict[str, Any]) -> str:
    return (f"xcheck {report['tool']['version']} on {report['host']['hostname']}, "
            f"rule set {report['ruleset']}, {report['started_at']}")


def _recommendation(report: dict[str, Any]) -> str:
    ranked = report["recommendation"]
    if not ranked:
        return "none: every option is infeasible for this site"
    return ", then ".join(report["options"][option]["title"] for option in ranked)


def _cell(value: Any, style: str = "") -> Any:
    """A table cell drawn as itself: no rich markup or emoji codes are read from a report, and it
    passes through `visible`, so a peer's "[/x]" or ESC stays text."""
    from rich.text import Text

    return Text(visible(str(value)), style=style)


def _console(color: bool, width: int) -> tuple[Any, io.StringIO]:
    from rich.console import Console

    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=color, no_color=not color, width=width, highlight=False,
                   markup=False, emoji=False), buffer


def render_text(report: dict[str, Any], *, color: bool = False, width: int = 110) -> str:
    from rich.table import Table
    from rich.text import Text

    cell = _cell
    console, buffer = _console(color, width)
    sentence = first_contact(report)
    if sentence:
        console.print(cell(sentence, "bold"), soft_wrap=True)  # one line, whatever the width: read first
    console.print(cell(_heading(report), "bold"))
    console.print(cell(report["summary"]), soft_wrap=True)

    interfaces = Table(title="Interfaces (up)", title_justify="left", show_edge=False)
    for column in ("interface", "address", "class"):
        interfaces.add_column(column)
    for row in _interface_rows(report):
        interfaces.add_row(*map(cell, row))
    console.print(interfaces)

    facts = Table(title="Facts", title_justify="left", show_header=False, show_edge=False)
    facts.add_column(style="bold")
    facts.add_column()
    for row in _fact_rows(report):
        facts.add_row(*map(cell, row))
    console.print(facts)

    checks = Table(title="Checks", title_justify="left", show_edge=False)
    for column in ("check", "status", "reason", "time", "detail"):
        checks.add_column(column, overflow="fold")
    for name, status, reason, duration, detail in _check_rows(report):
        checks.add_row(cell(name), cell(status, _STATUS_STYLES.get(status, "")), cell(reason), cell(duration), cell(detail))
    console.print(checks)

    verdicts = Table(title="Verdicts", title_justify="left", show_edge=False, show_lines=True)
    verdicts.add_column("option")
    verdicts.add_column("verdict")
    verdicts.add_column("reasons (rule: text)", overflow="fold")
    for entry in report["options"].values():
        # One line per reason: the only newlines in the output are ours.
        reasons = Text("\n").join(cell(f"{r['rule']}: {r['text']}") for r in entry["reasons"])
        verdicts.add_row(cell(entry["title"]), cell(entry["verdict"], _VERDICT_STYLES.get(entry["verdict"], "")), reasons)
    console.print(verdicts)
    console.print(Text("Recommendation: ", style="bold") + cell(_recommendation(report)))
    if "audit" in report:
        _print_audit(console, report["audit"])
    return buffer.getvalue()


# ---------------------------------------------------------------- the audit

# Findings are grouped by the option they bear on, in this order; "site" bears on all of them.
AUDIT_GROUPS = {"site": "The whole site", "s2s": "Site-to-Site", "p2s": "Point-to-Site",
                "expressroute_exp": "ExpressRoute (EXP)", "expressroute_nsp": "ExpressRoute (NSP)"}
_SEVERITY_STYLES = {"error": "red", "warning": "yellow", "info": "bright_black"}


def _grouped(findings: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(title, [f for f in findings if f["option"] == option]) for option, title in AUDIT_GROUPS.items()
            if any(f["option"] == option for f in findings)]


def _where(evidence: dict[str, Any]) -> str:
    return evidence["file"] + (f":{evidence['line']}" if evidence["line"] is not None else "")


def _audit_counts(audit: dict[str, Any]) -> str:
    counts = {severity: sum(f["severity"] == severity for f in audit["findings"]) for severity in _SEVERITY_STYLES}
    return ", ".join(f"{count} {severity}{'s' if count != 1 and severity != 'info' else ''}"
                     for severity, count in counts.items())


def _print_audit(console: Any, audit: dict[str, Any]) -> None:
    from rich.table import Table

    cell = _cell
    console.print(cell(f"Audit: {_audit_counts(audit)}", "bold"))
    for title, findings in _grouped(audit["findings"]):
        table = Table(title=title, title_justify="left", show_edge=False, show_lines=True)
        for column in ("severity", "finding", "where", "fix"):
            table.add_column(column, overflow="fold")
        for f in findings:
            table.add_row(cell(f["severity"], _SEVERITY_STYLES[f["severity"]]), cell(f"{f['id']}: {f['text']}"),
                          cell(_where(f["evidence"])), cell(f["fix"]))
        console.print(table)
    inputs = Table(title="Audit inputs", title_justify="left", show_edge=False)
    for column in ("file", "kind", "status", "detail"):
        inputs.add_column(column, overflow="fold")
    for status in audit["inputs"]:
        unrecognized = "; ".join(f"line {u['line']}: {u['text']}" if u["line"] else u["text"]
                                 for u in status["unrecognized"][:5])
        inputs.add_row(cell(status["file"]), cell(status["kind"]), cell(status["status"]),
                       cell("; ".join(part for part in (status["detail"], unrecognized) if part)))
    console.print(inputs)


def _audit_markdown(audit: dict[str, Any]) -> list[str]:
    lines = ["### Audit", "", markdown(_audit_counts(audit)), ""]
    for title, findings in _grouped(audit["findings"]):
        lines += [f"#### {markdown(title)}", ""]
        lines += [f"- **{markdown(f['severity'])}** {markdown_code(f['id'])} at {markdown_code(_where(f['evidence']))}: "
                  f"{markdown(f['text'])} _Fix:_ {markdown(f['fix'])}" for f in findings]
        lines.append("")
    lines += ["#### Inputs", "", "| file | kind | status | detail |", "|---|---|---|---|"]
    lines += [_markdown_row((s["file"], s["kind"], s["status"], s["detail"])) for s in audit["inputs"]]
    return lines + [""]


def render_audit_text(document: dict[str, Any], *, color: bool = False, width: int = 110) -> str:
    """`xcheck audit`'s terminal output: the audit document alone."""
    console, buffer = _console(color, width)
    console.print(_cell(_heading(document), "bold"))
    _print_audit(console, document["audit"])
    return buffer.getvalue()


def render_audit_markdown(document: dict[str, Any]) -> str:
    return "\n".join([f"## {markdown(_heading(document))}", "", *_audit_markdown(document["audit"])])



def _markdown_row(cells: tuple[Any, ...]) -> str:
    return "| " + " | ".join(markdown(str(value)) for value in cells) + " |"


# A rule set's citation ends with the document's address (tests/test_rule_sources.py): it stays a link.
_CITED_ADDRESS = re.compile(r"(.*?)(https?://[^\s<>]+)")


def _markdown_source(source: str) -> str:
    cited = _CITED_ADDRESS.fullmatch(source)
    if cited is None:
        return markdown(source)
    return f"{markdown(cited.group(1))}<{visible(cited.group(2))}>"


def render_markdown(report: dict[str, Any]) -> str:
    sentence = first_contact(report)
    lines = [f"## {markdown(_heading(report))}", ""]
    lines += [f"**{markdown(sentence)}**", ""] if sentence else []
    lines += [markdown_code(report["summary"]), "", "### Facts", "", "| fact | value |", "|---|---|"]
    lines += [_markdown_row(r) for r in _fact_rows(report)]
    lines += ["", "### Interfaces (up)", "", "| interface | address | class |", "|---|---|---|"]
    lines += [_markdown_row(r) for r in _interface_rows(report)]
    lines += ["", "### Checks", "", "| check | status | reason | time | detail |", "|---|---|---|---|---|"]
    lines += [_markdown_row(r) for r in _check_rows(report)]
    lines += ["", "### Verdicts", ""]
    for entry in report["options"].values():
        lines.append(f"- **{markdown(entry['title'])}: {markdown(entry['verdict'])}**")
        lines += [f"  - {markdown_code(r['rule'])} ({markdown(r.get('verdict', ''))}): {markdown(r['text'])} "
                  f"_Source:_ {_markdown_source(r['source'])}" for r in entry["reasons"]]
    lines += ["", f"**Recommendation:** {markdown(_recommendation(report))}", ""]
    if "audit" in report:
        lines += _audit_markdown(report["audit"])
    return "\n".join(lines)


def render_json(report: dict[str, Any]) -> str:
    # Strict JSON: a NaN or infinity anywhere is a bug to fail on, never a report no parser reads.
    return json.dumps(report, indent=2, sort_keys=False, allow_nan=False) + "\n"


RENDERERS: dict[str, Callable[..., str]] = {"text": render_text, "json": render_json, "markdown": render_markdown}
AUDIT_RENDERERS: dict[str, Callable[..., str]] = {"text": render_audit_text, "json": render_json,
                                                  "markdown": render_audit_markdown}
