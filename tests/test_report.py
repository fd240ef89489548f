"""The report document: schema, summary line, redaction, atomic writing."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone

import jsonschema
import pytest
from conftest import validate_report
import recorded

from agent.assessment import assessment_of
from agent.config import build_settings
from agent.facts import derive_facts
from agent.render import render_markdown, render_text
from agent.output import ReportWriteError, write_report
from agent.report import build_report, redact, schema, summary_line
from agent.verdicts import load_ruleset
from checks.contract import Reason

# A site behind a NAT (MASQUERADE, 10.0.0.2 seen as 203.0.113.1) with an RFC 5780 STUN server and
# strongSwan as its gateway, as the real checks measured it in the lab.
SCENARIO = "nat-strongswan"


def report_of(scenario, ruleset="azure-current", moment=None, **requirements):
    """The report xcheck builds from a recorded lab run's results, judged by `ruleset` with `requirements`."""
    settings = build_settings({"ruleset": ruleset, **{f"requirements.{k}": v for k, v in requirements.items()}})
    printed, runs = recorded.load(scenario)
    moment = moment or datetime(2026, 11, 25, 4, 2, 52, 123456, tzinfo=timezone.utc)
    assessment = assessment_of(runs, load_ruleset(ruleset), settings.requirements.to_dict(),
                               recorded.targets(printed), moment, moment)
    return build_report(assessment)


def sample_report(ruleset="azure-current", **requirements):
    return report_of(SCENARIO, ruleset, **requirements)


@pytest.mark.parametrize("ruleset", ["azure-current", "azure-2015"])
def test_reports_validate_against_the_shipped_schema(ruleset):
    report = validate_report(sample_report(ruleset, vpn_device=True))
    assert report["schema_version"] == 2 and report["tool"]["name"] == "xcheck"
    assert report["started_at"] == "2026-11-25T04:02:52.123Z"
    assert report["host"]["hostname"] == socket.gethostname()
    assert set(report["options"]) == {"p2s", "s2s", "expressroute_exp", "expressroute_nsp"}
    json.dumps(report)  # plain JSON all the way down


def test_the_schema_rejects_what_breaks_the_contract():
    report = sample_report()
    for breakage in (
        lambda r: r.pop("facts"),
        lambda r: r["facts"]["nat"].update(mapping="symmetric"),
        lambda r: r["options"]["s2s"].update(verdict="maybe"),
        lambda r: r["options"]["p2s"].update(reasons=[]),
        lambda r: r["checks"][0].update(status="fine"),
        lambda r: r.update(started_at="yesterday"),
    ):
        broken = json.loads(json.dumps(report))
        breakage(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate_report(broken)


def test_schema_reason_enum_is_the_contract_enum():
    assert set(schema()["$defs"]["reason"]["enum"]) == {str(r) for r in Reason}


def test_summary_line_is_pinned():
    assert sample_report()["summary"] == (
        "udp=true public_ipv4=false nat=true mapping=endpoint-independent "
        "filtering=address-and-port-dependent cgnat=false")  # 100.64.9.9 is not on the path
    nothing = derive_facts([])
    assert summary_line(nothing) == "udp=- public_ipv4=- nat=- mapping=- filtering=- cgnat=-"
    assert report_of("udp-dropped")["summary"].startswith("udp=false public_ipv4=")


def test_redaction_is_stable_keeps_classes_and_hides_names():
    report = sample_report()
    report["checks"][0]["detail"] = f"seen on {socket.gethostname()}: 10.0.0.2 then 10.0.0.2 and 203.0.113.1:40000"
    hidden = validate_report(redact(report))
    text = json.dumps(hidden)
    for secret in ("10.0.0.2", "203.0.113.1", "203.0.113.10", socket.gethostname()):
        assert secret in json.dumps(report) and secret not in text
    nat = hidden["facts"]["nat"]
    assert nat["local_address"] == "rfc1918-ipv4-1" and nat["reflexive_address"].startswith("public-ipv4-")
    assert hidden["checks"][0]["detail"] == f"seen on {hidden['host']['hostname']}: rfc1918-ipv4-1 then rfc1918-ipv4-1 and {nat['reflexive_address']}:40000"
    assert hidden["host"]["hostname"].startswith("host-")
    classes = {a["address"] for i in hidden["facts"]["interfaces"] for a in i["addresses"]}
    assert classes == {"rfc1918-ipv4-1", "loopback-ipv4-1"}  # the lab host's 10.0.0.2 and 127.0.0.1
    assert hidden["redacted"] is True and report["redacted"] is False  # the original is untouched
    # Timestamps, versions and ports survive.
    assert hidden["started_at"] == report["started_at"] and hidden["tool"] == report["tool"]


def test_human_renderings_say_the_same_thing():
    report = sample_report(vpn_device=True)
    for text in (render_text(report), render_markdown(report)):
        assert "Site-to-Site" in text and "conditional" in text and "current.s2s.behind-nat" in text
        nat = report["facts"]["nat"]
        assert "address-and-port-dependent" in text and f"10.0.0.2:{nat['local_port']}" in text
    assert render_markdown(report).startswith("## xcheck")


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    write_report(target, "first\n")
    assert target.read_text() == "first\n"

    import os

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ReportWriteError, match="No space left on device"):
        write_report(target, "second, never seen half-written\n")
    assert target.read_text() == "first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary file left


def test_atomic_write_into_a_missing_directory(tmp_path):
    with pytest.raises(ReportWriteError, match="cannot write report to"):
        write_report(tmp_path / "absent" / "r.json", "x")
