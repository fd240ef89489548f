"""The metrics (agent/metrics.py) of what real checks measured: every recorded lab run
(tests/recorded.py) through the mapping, checked against its own facts and verdicts, against the
one documented table (and the README's copy of it), and by `promtool check metrics`; then the
exports of `xcheck run` (--textfile, the checks of --push-gateway before measuring)."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from conftest import run_xcheck, validate_report
from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from recorded import SCENARIOS, load, targets

from agent import __version__
from agent.assessment import Assessment, assessment_of
from agent.audit.findings import FILE_KINDS, ParseState, Severity
from agent.audit.run import audit
from agent.config import build_settings, parse_values
from agent.facts import REACHABILITY_CHECKS
from agent.metrics import (CACHED_NOTE, LOCAL_TARGET, METRICS, AssessmentCollector, ConfigReload, Exposed, families,
                           probe_families, render, write_textfile)
from agent.verdicts import OPTIONS, VERDICTS, load_ruleset
from checks.contract import Reason, Scope
from checks.registry import CHECKS

README = (Path(__file__).parent.parent / "README.md").read_text()
PROMTOOL = shutil.which("promtool")
FROM_ASSESSMENT = {name for name, d in METRICS.items() if d.exposed is Exposed.ASSESSMENT}
BEHAVIOURS = {"endpoint-independent", "address-dependent", "address-and-port-dependent", "unknown"}


FIXTURES = Path(__file__).parent / "fixtures"
# What every recorded run's audit reads: a site whose ESP accepts no rekey of Azure's (an error),
# and a gateway host's real nftables listing (readable, findings of its own).
AUDITED = {"audit.ipsec_config": [str(FIXTURES / "ipsec" / "swanctl" / "rekey-pfs-only.conf")],
           "audit.firewall": [str(FIXTURES / "firewall_read" / "gateway-host.json")]}


@functools.cache
def recorded(scenario: str) -> tuple[dict, Assessment]:
    """The recorded run as the daemon would hold it, with the audit `xcheck run` makes beside it."""
    report, runs = load(scenario)
    ruleset = load_ruleset(report["ruleset"])
    assessment = assessment_of(runs, ruleset, report["requirements"], targets(report),
                               datetime.fromisoformat(report["started_at"]),
                               datetime.fromisoformat(report["finished_at"]))
    settings = build_settings(parse_values({**AUDITED, "gateway": report["targets"]["gateways"]}, "test"))
    return report, dataclasses.replace(assessment, audit=audit(settings, ruleset, assessment.facts))


def samples(collected) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label pairs: value}."""
    found: dict[str, dict[tuple, float]] = {}
    for family in collected:
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def of(scenario: str) -> dict[str, dict[tuple, float]]:
    return samples(families(recorded(scenario)[1]))


def one(found: dict, name: str, **labels: str) -> float | None:
    return found.get(name, {}).get(tuple(sorted(labels.items())))


def promtool_problems(text: bytes) -> str:
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (Debian: prometheus)")
    completed = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=30)
    return "" if completed.returncode == 0 else (completed.stdout + completed.stderr).decode()


# ---- the documented set, and only it ----

@pytest.mark.parametrize("scenario", SCENARIOS)
def test_only_documented_metrics_with_their_documented_shape(scenario):
    for family in families(recorded(scenario)[1]):
        assert family.name in FROM_ASSESSMENT, family.name
        definition = METRICS[family.name]
        assert family.type == definition.type
        # HELP: the documented meaning, and that it is cached wherever it is.
        assert family.documentation == definition.meaning + (CACHED_NOTE if definition.cached else "")
        assert family.samples, f"{family.name}: a family without a sample"
        for sample in family.samples:
            assert sample.name == family.name and tuple(sample.labels) == definition.labels


def test_every_documented_metric_comes_from_some_recording():
    emitted = {name for scenario in SCENARIOS for name in of(scenario)}
    assert emitted == FROM_ASSESSMENT


def test_cached_metrics_say_so_in_their_help():
    not_cached = {name for name, d in METRICS.items() if not d.cached}
    assert not_cached == {"xcheck_build_info", "xcheck_config_last_reload_successful",
                          "xcheck_config_last_reload_success_timestamp_seconds", "probe_success",
                          "probe_duration_seconds"}
    text = render(families(recorded("nat-strongswan")[1])).decode()
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.MULTILINE))
    for name, help_text in helps.items():
        assert help_text.endswith("From the latest run, cached between scrapes.") == (name not in not_cached), name


def test_the_readme_table_is_the_table_in_code():
    start = README.index("\n## Metrics\n")
    section = README[start:README.index("\n## ", start + 1)]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (\w+) \| (\S+) \| (.+?) \| (.+) \|$", section, re.MULTILINE)
    documented = {name: (kind, "" if unit == "-" else unit, () if labels == "-" else tuple(re.findall(r"`(\w+)`", labels)),
                         meaning) for name, kind, unit, labels, meaning in rows}
    assert documented == {name: (d.type, d.unit, d.labels, d.meaning) for name, d in METRICS.items()}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_promtool_accepts_the_rendering(scenario):
    _, assessment = recorded(scenario)
    assert promtool_problems(render(families(assessment, ConfigReload(True, 1.8e9)))) == ""


# ---- values: what the facts and verdicts say, unknown absent ----

@pytest.mark.parametrize("scenario", SCENARIOS)
def test_facts_map_one_to_one_and_unknown_is_absent(scenario):
    report, _ = recorded(scenario)
    found, facts = of(scenario), report["facts"]
    for name, fact in [("xcheck_public_ipv4_present", facts["public_ipv4"]["present"]),
                       ("xcheck_nat_detected", facts["nat"]["detected"]),
                       ("xcheck_cgnat_detected", facts["nat"]["cgnat"]),
                       ("xcheck_udp_blocked", facts["nat"]["udp_blocked"])]:
        assert one(found, name) == (None if fact is None else float(fact)), name
    for probe in REACHABILITY_CHECKS:
        for gateway in facts["reachability"][probe]["gateways"]:
            value = one(found, "xcheck_port_reachable", target=gateway["gateway"], probe=probe)
            assert value == (None if gateway["reachable"] is None else float(gateway["reachable"]))
    reachable = [g for p in REACHABILITY_CHECKS for g in facts["reachability"][p]["gateways"] if g["reachable"] is not None]
    assert len(found.get("xcheck_port_reachable", {})) == len(reachable)
    for check in report["checks"]:
        for result in check["results"]:
            target = LOCAL_TARGET if result["scope"] == "host" else result["target"]
            success = one(found, "xcheck_check_success", check=check["name"], target=target)
            assert success == {"ok": 1.0, "fail": 0.0, "error": 0.0, "skipped": None}[result["status"]]
            assert one(found, "xcheck_check_result", check=check["name"], target=target,
                       reason=result["reason"]) == 1.0
            assert one(found, "xcheck_check_duration_seconds", check=check["name"],
                       target=target) == result["duration_seconds"]
    for option, entry in report["options"].items():
        feasible = one(found, "xcheck_option_feasible", option=option)
        assert feasible == {"feasible": 1.0, "conditional": 0.0, "infeasible": 0.0, "unknown": None}[entry["verdict"]]
        assert {verdict: one(found, "xcheck_option_verdict", option=option, verdict=verdict) for verdict in VERDICTS} \
            == {verdict: float(verdict == entry["verdict"]) for verdict in VERDICTS}
    assert one(found, "xcheck_assessment_timestamp_seconds") == datetime.fromisoformat(report["finished_at"]).timestamp()
    assert one(found, "xcheck_build_info", version=__version__) == 1.0


def test_nothing_measured_is_absent_not_zero():
    # UDP dropped at the router: no STUN answer, so NAT, its behaviour and CGNAT are unknown.
    udp_dropped = of("udp-dropped")
    assert one(udp_dropped, "xcheck_udp_blocked") == 1.0
    for name in ("xcheck_nat_detected", "xcheck_nat_info", "xcheck_cgnat_detected"):
        assert name not in udp_dropped, name
    # No target given at all: nothing per gateway or far end, no fact from STUN, and the checks that
    # would probe a target have no series at all; only the host's own check ran.
    no_targets = of("no-targets")
    for name in ("xcheck_port_reachable", "xcheck_path_mtu_bytes", "xcheck_throughput_bytes_per_second",
                 "xcheck_rtt_seconds", "xcheck_nat_detected", "xcheck_udp_blocked"):
        assert name not in no_targets, name
    assert {dict(key)["check"] for key in no_targets["xcheck_check_result"]} == {"interfaces"}
    # Without CAP_NET_RAW the ESP probe is skipped: its reason is there, a success (or failure) is not.
    unprivileged = of("unprivileged")
    (gateway,) = recorded("unprivileged")[1].targets.gateways
    assert one(unprivileged, "xcheck_check_success", check="esp", target=gateway) is None
    assert one(unprivileged, "xcheck_check_result", check="esp", target=gateway, reason="not_permitted") == 1.0
    assert one(unprivileged, "xcheck_port_reachable", target=gateway, probe="esp") is None
    assert one(unprivileged, "xcheck_check_success", check="ike_udp500", target=gateway) == 1.0


def test_nat_strongswan_values():
    report, assessment = recorded("nat-strongswan")
    found = of("nat-strongswan")
    (gateway,) = assessment.targets.gateways
    (far_end,) = assessment.targets.of_scope(Scope.FAR_END)
    assert one(found, "xcheck_nat_detected") == 1.0
    assert found["xcheck_nat_info"] == {(("filtering", "address-and-port-dependent"),
                                         ("mapping", "endpoint-independent")): 1.0}
    assert one(found, "xcheck_public_ipv4_present") == 0.0 and one(found, "xcheck_udp_blocked") == 0.0
    # IKE answered on both ports and IKEv1 too; ESP, TLS, SSTP and the health probe were refused.
    assert {probe: one(found, "xcheck_port_reachable", target=gateway, probe=probe) for probe in REACHABILITY_CHECKS} \
        == {"ike_udp500": 1.0, "ike_natt_udp4500": 1.0, "ikev1_udp500": 1.0, "esp": 0.0, "tls_tcp443": 0.0,
            "sstp": 0.0, "gateway_health": 0.0}
    assert one(found, "xcheck_path_mtu_bytes", target=gateway) == report["facts"]["path_mtu"]["bytes"] == 1500
    assert one(found, "xcheck_check_result", check="esp", target=gateway, reason="protocol_unreachable") == 1.0
    assert one(found, "xcheck_check_success", check="interfaces", target="local") == 1.0
    latency = report["facts"]["latency"]
    assert {p: one(found, "xcheck_rtt_seconds", target=far_end.name, percentile=p) for p in ("50", "90", "99")} \
        == {"50": latency["rtt_p50_seconds"], "90": latency["rtt_p90_seconds"], "99": latency["rtt_p99_seconds"]}
    assert "xcheck_throughput_bytes_per_second" not in found  # --no-throughput: disabled, not zero
    assert {o: [v for v in VERDICTS if one(found, "xcheck_option_verdict", option=o, verdict=v)] for o in OPTIONS} \
        == {"p2s": ["conditional"], "s2s": ["conditional"], "expressroute_exp": ["unknown"],
            "expressroute_nsp": ["unknown"]}


def test_throughput_is_in_bytes_per_second():
    report, assessment = recorded("public-responder")
    (far_end,) = assessment.targets.of_scope(Scope.FAR_END)
    found = of("public-responder")
    throughput = report["facts"]["throughput"]
    assert throughput["upload_bits_per_second"] and throughput["download_bits_per_second"]
    for direction in ("upload", "download"):
        assert one(found, "xcheck_throughput_bytes_per_second", target=far_end.name, direction=direction) \
            == throughput[f"{direction}_bits_per_second"] / 8


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_label_sets_are_bounded(scenario):
    _, assessment = recorded(scenario)
    found = of(scenario)
    configured = {t.name for scope in (Scope.STUN_SERVER, Scope.GATEWAY, Scope.FAR_END)
                  for t in assessment.targets.of_scope(scope)} | {LOCAL_TARGET}
    closed = {"check": set(CHECKS), "reason": {str(r) for r in Reason}, "option": set(OPTIONS),
              "verdict": set(VERDICTS), "probe": set(REACHABILITY_CHECKS), "percentile": {"50", "90", "99"},
              "direction": {"upload", "download"}, "mapping": BEHAVIOURS, "filtering": BEHAVIOURS,
              "target": configured, "version": {__version__}, "severity": {str(s) for s in Severity},
              "file_kind": FILE_KINDS, "status": {str(s) for s in ParseState}}
    for name, series in found.items():
        for labels in series:
            for label, value in labels:
                assert value in closed[label], (name, label, value)
    # One reason per check and target: a reason that changes replaces the series, never adds one.
    per_check_target = [tuple(v for k, v in labels if k != "reason") for labels in found["xcheck_check_result"]]
    assert len(per_check_target) == len(set(per_check_target))
    assert len(found["xcheck_option_verdict"]) == len(OPTIONS) * len(VERDICTS)
    assert sum(found["xcheck_option_verdict"].values()) == len(OPTIONS)


# ---- the daemon's and /probe's forms ----

def test_the_reload_pair_only_when_given():
    _, assessment = recorded("nat-strongswan")
    assert not {"xcheck_config_last_reload_successful", "xcheck_config_last_reload_success_timestamp_seconds"} \
        & set(samples(families(assessment)))
    failed = samples(families(assessment, ConfigReload(False, 1_800_000_000.5)))
    assert one(failed, "xcheck_config_last_reload_successful") == 0.0
    assert one(failed, "xcheck_config_last_reload_success_timestamp_seconds") == 1_800_000_000.5
    never = samples(families(None, ConfigReload(False, None)))
    assert set(never) == {"xcheck_build_info", "xcheck_config_last_reload_successful"}


def test_the_collector_maps_whatever_is_latest_at_each_collect():
    latest: list[Assessment | None] = [None]
    registry = CollectorRegistry()
    registry.register(AssessmentCollector(lambda: latest[0], lambda: ConfigReload(True, 1.8e9)))
    assert set(samples(registry.collect())) == {"xcheck_build_info", "xcheck_config_last_reload_successful",
                                                "xcheck_config_last_reload_success_timestamp_seconds"}
    for scenario in ("nat-strongswan", "udp-dropped"):
        latest[0] = recorded(scenario)[1]
        assert generate_latest(registry) == render(families(latest[0], ConfigReload(True, 1.8e9)))


def _gateway_runs(scenario: str, checks: set[str]):
    return [run for run in recorded(scenario)[1].runs if run.name in checks]


def test_probe_answers_blackbox_style_for_one_target():
    gateway_checks = {name for name, check in CHECKS.items() if check.scope is Scope.GATEWAY}
    runs = _gateway_runs("nat-strongswan", gateway_checks)
    collected = probe_families(runs, 0.25)
    found = samples(collected)
    assert one(found, "probe_success") == 0.0  # ESP, TLS, SSTP and the health probe refused
    assert one(found, "probe_duration_seconds") == 0.25
    (gateway,) = recorded("nat-strongswan")[1].targets.gateways
    assert one(found, "xcheck_port_reachable", target=gateway, probe="ike_natt_udp4500") == 1.0
    assert one(found, "xcheck_path_mtu_bytes", target=gateway) == 1500
    assert set(found) == {"probe_success", "probe_duration_seconds", "xcheck_check_success",
                          "xcheck_check_duration_seconds", "xcheck_check_last_run_timestamp_seconds",
                          "xcheck_check_result", "xcheck_port_reachable", "xcheck_path_mtu_bytes"}
    # Measured just now: nothing in its HELP says cached.
    assert not any(CACHED_NOTE in family.documentation for family in collected)
    assert promtool_problems(render(collected)) == ""
    # The IKE checks alone all answered; a skipped check counts neither way, but not all skipped.
    ike = {"ike_udp500", "ike_natt_udp4500", "ikev1_udp500"}
    assert one(samples(probe_families(_gateway_runs("nat-strongswan", ike), 0.1)), "probe_success") == 1.0
    assert one(samples(probe_families(_gateway_runs("unprivileged", ike | {"esp"}), 0.1)), "probe_success") == 1.0
    assert one(samples(probe_families(_gateway_runs("unprivileged", {"esp"}), 0.1)), "probe_success") == 0.0


# ---- xcheck run --textfile, and --push-gateway's checks before measuring ----

def parsed(text: str) -> list[tuple]:
    return [(f.name, f.documentation, f.type, f.samples) for f in text_string_to_metric_families(text)]


def test_the_textfile_parses_back_to_what_was_rendered(tmp_path):
    _, assessment = recorded("public-responder")
    target = tmp_path / "xcheck.prom"
    write_textfile(target, assessment)
    collected = families(assessment)
    assert parsed(target.read_text()) == [(f.name, f.documentation, f.type, f.samples) for f in collected]
    assert target.read_bytes() == render(collected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xcheck.prom"]  # no temporary file left


@pytest.mark.skipif(shutil.which("prometheus-node-exporter") is None, reason="prometheus-node-exporter is not installed")
def test_node_exporter_reads_the_textfile(tmp_path):
    """The real reader: node_exporter's textfile collector, on loopback, serves every sample as written."""
    _, assessment = recorded("nat-strongswan")
    write_textfile(tmp_path / "xcheck.prom", assessment)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exporter = subprocess.Popen([shutil.which("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{port}",
                                 "--collector.disable-defaults", "--collector.textfile",
                                 f"--collector.textfile.directory={tmp_path}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30  # only proves start-up does not hang
        while True:
            try:
                served = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)
    found = samples(text_string_to_metric_families(served))
    assert found["node_textfile_scrape_error"] == {(): 0.0}
    assert {name: series for name, series in found.items() if name in METRICS} == samples(families(assessment))


def test_run_writes_the_textfile_beside_the_report(tmp_path, stun_recorder):
    textfile, report_file = tmp_path / "xcheck.prom", tmp_path / "report.json"
    completed, _ = run_xcheck("run", "--stun", stun_recorder.address, "--timeout", "1", "--format", "json",
                              "--output", str(report_file), "--textfile", str(textfile))
    assert completed.returncode == 0, completed.stderr
    assert f"metrics written to {textfile}" in completed.stderr
    report = validate_report(json.loads(report_file.read_text()))
    found = samples(text_string_to_metric_families(textfile.read_text()))
    # The silent STUN server: UDP blocked, NAT unknown (absent), as the report says.
    assert report["facts"]["nat"]["udp_blocked"] is True and report["facts"]["nat"]["detected"] is None
    assert one(found, "xcheck_udp_blocked") == 1.0 and "xcheck_nat_detected" not in found
    assert one(found, "xcheck_check_result", check="stun_binding", target=stun_recorder.address,
               reason="no_response") == 1.0
    assert set(found) <= FROM_ASSESSMENT


@pytest.mark.parametrize(("args", "message"), [
    (["--push-gateway", "ftp://ops:hunter2secret@push.example.net"], "--push-gateway: expected http[s]://"),
    (["--push-gateway", "http://ops:hunter2secret@push.example.net:70000"], "the port must be a number"),
    (["--push-gateway", "http://ops:hunter2secret@300.1.1.1:9091"], "its host: not an IPv4 address"),
    (["--push-gateway", "http://ops:hunter2secret@push.example.net:9091/x?hunter2secret"], "expected http[s]://"),
    (["--push-gateway", "http://push.example.net:9091", "--push-job", "a\nb"], "--push-job: expected 1 to 128"),
    (["--push-job", "site-7"], "--push-job: needs --push-gateway"),
    (["--textfile", "/nonexistent-directory/xcheck.prom"], "directory /nonexistent-directory does not exist"),
])
def test_bad_exports_exit_2_before_measuring_and_never_echo_a_password(args, message, stun_recorder):
    completed, _ = run_xcheck("run", "--stun", stun_recorder.address, "--timeout", "1", *args)
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr and "Traceback" not in completed.stderr
    assert "hunter2secret" not in completed.stderr + completed.stdout
    assert not stun_recorder.received(), "xcheck measured before refusing its exports"
