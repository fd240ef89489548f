"""First contact: on a host with no DNS, no route or only silence, the text report leads with one plain
sentence that says nothing could be measured and why, taken from the checks' own reasons; and no
reason claims "no STUN server answered" when none was asked."""

from __future__ import annotations

import json
import time

import pytest
from conftest import XCHECK, needs_lab, run_xcheck, validate_report
from lab import Lab
from test_report import sample_report

from agent.render import first_contact, render_markdown, render_text

# Loopback's discard port: nothing answers there, and nothing leaves the machine.
SILENT_STUN = "127.0.0.1:9"


def checks(*ended: tuple[str, str, str]) -> dict:
    return {"checks": [{"name": "interfaces", "status": "ok", "reason": "success"}]
            + [{"name": name, "status": status, "reason": reason} for name, status, reason in ended]}


@pytest.mark.parametrize(("ended", "sentence"), [
    ([("stun_binding", "fail", "resolve_failed"), ("nat_behavior", "skipped", "dependency_unavailable")],
     "Nothing could be measured: no name resolved, so nothing was sent (stun_binding); check this host's DNS."),
    ([("stun_binding", "fail", "network_error"), ("ike_udp500", "fail", "network_error")],
     "Nothing could be measured: this host has no route to the targets, or a local firewall refused to send "
     "(stun_binding, ike_udp500)."),
    ([("stun_binding", "fail", "no_response"), ("esp", "skipped", "not_permitted"), ("throughput", "fail", "connection_failed")],
     "Nothing could be measured: nothing answered (stun_binding), so the traffic is dropped on the way or nothing "
     "listens there; no TCP connection could be made (throughput)."),
    ([("stun_binding", "skipped", "no_target"), ("latency", "skipped", "no_target")],
     "Nothing was measured beyond this host's own addresses: no STUN server, gateway (--gateway) or far end "
     "(--iperf) was given."),
])
def test_the_sentence_says_why_from_the_reasons(ended, sentence):
    assert first_contact(checks(*ended)) == sentence


@pytest.mark.parametrize("ended", [
    [("stun_binding", "ok", "success")],
    [("stun_binding", "fail", "invalid_response")],  # a bad answer still came from out there
    [("stun_binding", "fail", "no_response"), ("ike_udp500", "fail", "port_unreachable")],
    [("stun_binding", "fail", "resolve_failed"), ("tls_tcp443", "ok", "success")],
])
def test_no_sentence_once_anything_out_there_was_reached(ended):
    assert first_contact(checks(*ended)) is None


def test_a_measured_report_reads_as_before():
    report = sample_report()
    assert first_contact(report) is None
    assert render_text(report).startswith("xcheck ") and render_markdown(report).startswith("## xcheck")


def _leads_with(output: str, words: str) -> None:
    first = output.splitlines()[0]
    assert first.startswith("Nothing could be measured: ") and words in first, output
    assert output.index(first) < output.index("Interfaces (up)") < output.index("Verdicts")


def test_silence_on_a_loopback_port():
    completed, _ = run_xcheck("run", "--stun", SILENT_STUN, "--timeout", "1", "--format", "text")
    assert completed.returncode == 0, completed.stderr
    _leads_with(completed.stdout, "nothing answered (stun_binding)")
    markdown, _ = run_xcheck("run", "--stun", SILENT_STUN, "--timeout", "1", "--format", "markdown")
    lines = markdown.stdout.splitlines()
    assert lines[0].startswith("## xcheck") and lines[2].startswith("**Nothing could be measured: nothing answered")


# ---------------------------------------------------------------- a host without a route or DNS

@pytest.fixture(scope="module")
def cut_off():
    """The lab's onprem namespace without its default route: no name server and no target is reachable
    (nothing leaves the namespace, whatever /etc/resolv.conf names)."""
    with Lab(stun="none") as lab:
        lab.run(lab.onprem, ["ip", "route", "del", "default"], check=True)
        yield lab


def _run(lab: Lab, *args: str):
    started = time.monotonic()
    completed = lab.run(lab.onprem, [XCHECK, "run", "--timeout", "2", *args], timeout=60)
    return completed, time.monotonic() - started


@needs_lab
@pytest.mark.lab
def test_a_name_that_cannot_resolve(cut_off):
    # RFC 2606's .invalid never resolves; the name server is unreachable from here anyway, and the
    # look-up is bounded by --timeout: the test waits on neither a DNS answer nor its timeout.
    completed, elapsed = _run(cut_off, "--stun", "stun.example.invalid", "--format", "text")
    assert completed.returncode == 0, completed.stderr
    _leads_with(completed.stdout, "no name resolved, so nothing was sent (stun_binding)")
    assert "no STUN server answered" not in completed.stdout
    assert elapsed < 30  # does not hang on DNS
    as_json, _ = _run(cut_off, "--stun", "stun.example.invalid", "--format", "json")
    report = validate_report(json.loads(as_json.stdout))
    assert {c["name"]: c["reason"] for c in report["checks"]}["stun_binding"] == "resolve_failed"
    assert "no STUN server answered" not in json.dumps(report)


@needs_lab
@pytest.mark.lab
def test_no_route(cut_off):
    completed, _ = _run(cut_off, "--stun", cut_off.stun_primary, "--gateway", cut_off.stun_primary, "--format", "text")
    assert completed.returncode == 0, completed.stderr
    _leads_with(completed.stdout, "this host has no route to the targets")
    assert "(stun_binding, ike_udp500" in completed.stdout.splitlines()[0]


@needs_lab
@pytest.mark.lab
def test_no_server_given(cut_off, tmp_path):
    config = tmp_path / "none.toml"
    config.write_text("stun = []\n")
    completed, _ = _run(cut_off, "--config", str(config), "--format", "json")
    assert completed.returncode == 0, completed.stderr
    report = validate_report(json.loads(completed.stdout))
    assert first_contact(report).startswith("Nothing was measured beyond this host's own addresses")
    assert "no STUN server answered" not in json.dumps(report)
    assert {c["name"]: c["detail"] for c in report["checks"]}["stun_binding"] == "no STUN server given"
