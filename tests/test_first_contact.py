"""First contact: on a host with no DNS, no route or only silence, the text report leads with one plain
sentence that says nothing could be measured and why, taken from the checks' own reasons; and no
reason claims "no STUN server answered" when none was asked."""

from __future__ import annotations

import json
import socket
import time

import pytest
import recorded
from conftest import XCHECK, needs_lab, run_xcheck, validate_report
from lab import Lab

from agent.render import first_contact, render_markdown, render_text

# Loopback's discard port: nothing listens there, and nothing leaves the machine.
CLOSED_STUN = "127.0.0.1:9"
_EVERY_GATEWAY_PROBE = "ike_udp500, ike_natt_udp4500, ikev1_udp500, esp, tls_tcp443, sstp, gateway_health, path_mtu"


# Reports real runs wrote in the lab (tests/record_evidence.py says how each was made).
@pytest.mark.parametrize(("scenario", "sentence"), [
    ("unresolvable",
     "Nothing could be measured: no name resolved, so nothing was sent (stun_binding); check this host's DNS."),
    ("no-route",
     "Nothing could be measured: this host has no route to the targets, or a local firewall refused to send "
     f"(stun_binding, {_EVERY_GATEWAY_PROBE})."),
    ("no-network",
     "Nothing could be measured: this host has no interface with an address (interfaces); this host has no route "
     f"to the targets, or a local firewall refused to send (stun_binding, {_EVERY_GATEWAY_PROBE})."),
    ("udp-dropped",
     "Nothing could be measured: nothing answered (stun_binding), so the traffic is dropped on the way or nothing "
     "listens there."),
    ("all-dropped",
     f"Nothing could be measured: nothing answered (stun_binding, {_EVERY_GATEWAY_PROBE}, latency), so the traffic "
     "is dropped on the way or nothing listens there; no TCP connection could be made (throughput)."),
    ("no-targets",
     "Nothing was measured beyond this host's own addresses: no STUN server, gateway (--gateway) or far end "
     "(--iperf) was given."),
])
def test_the_sentence_says_why_from_the_reasons(scenario, sentence):
    assert first_contact(recorded.report(scenario)) == sentence


def with_checks_of(scenario: str, other: str, *names: str) -> dict:
    """The report of `scenario` with the checks named taken from the recording `other`."""
    report, taken = recorded.report(scenario), {c["name"]: c for c in recorded.report(other)["checks"]}
    report["checks"] = [taken[c["name"]] if c["name"] in names else c for c in report["checks"]]
    return report


@pytest.mark.parametrize("report", [
    recorded.report("public-responder"),
    recorded.report("refused-at-router"),  # every gateway probe refused: refusals come from out there
    recorded.report("two-gateways"),
    # A name that did not resolve, but TCP 443 was refused by a host out there: something was reached.
    with_checks_of("unresolvable", "nat-strongswan", "tls_tcp443"),
    # Silence from the STUN server, an ICMP port unreachable from a gateway's host.
    with_checks_of("udp-dropped", "two-gateways", "ike_udp500"),
], ids=["answered", "refused", "one-gateway-answered", "resolve-failed-but-tcp-refused", "silence-but-icmp"])
def test_no_sentence_once_anything_out_there_was_reached(report):
    assert first_contact(report) is None


def test_a_measured_report_reads_as_before():
    report = recorded.report("public-responder")
    assert render_text(report).startswith("xcheck ") and render_markdown(report).startswith("## xcheck")


def test_a_recorded_silence_leads_the_text():
    _leads_with(render_text(recorded.report("all-dropped")), "nothing answered (stun_binding, ike_udp500")


def _leads_with(output: str, words: str) -> None:
    first = output.splitlines()[0]
    assert first.startswith("Nothing could be measured: ") and words in first, output
    assert output.index(first) < output.index("Interfaces (up)") < output.index("Verdicts")


def test_silence_on_a_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never read: silence, no ICMP
        silent.bind(("127.0.0.1", 0))
        server = "127.0.0.1:%d" % silent.getsockname()[1]
        # 3 s: time for silence to count (one RTO, 0.5 s, after the first send), however loaded the machine.
        completed, _ = run_xcheck("run", "--stun", server, "--timeout", "3", "--format", "text")
        markdown, _ = run_xcheck("run", "--stun", server, "--timeout", "3", "--format", "markdown")
    assert completed.returncode == 0, completed.stderr
    _leads_with(completed.stdout, "nothing answered (stun_binding)")
    lines = markdown.stdout.splitlines()
    assert lines[0].startswith("## xcheck") and lines[2].startswith("**Nothing could be measured: nothing answered")


def test_a_closed_loopback_port_is_an_answer():
    """The host said ICMP port unreachable: something out there was reached, so no sentence."""
    completed, report = run_xcheck("run", "--stun", CLOSED_STUN, "--timeout", "1", "--format", "json")
    assert completed.returncode == 0, completed.stderr
    assert {c["name"]: c["reason"] for c in report["checks"]}["stun_binding"] == "port_unreachable"
    assert first_contact(report) is None


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
