"""Metrics: an assessment as Prometheus metric families, the one documented table of them, and
the one-shot exports of `xcheck run` (`--textfile`, `--push-gateway`).

A pure mapping from an `Assessment` (or, for `/probe`, from one target's runs), rebuilt for each
new assessment: no check sets a metric and nothing here is global. Unknown (None in the facts, a
check that measured nothing) is absent, never 0. `METRICS` is the one list of what is emitted;
the README's table of metrics is checked against it (tests/test_metrics.py).
"""

from __future__ import annotations

import enum
import http.client
import ipaddress
import re
import socket
import threading
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import basic_auth_handler, generate_latest, push_to_gateway
from prometheus_client.registry import Collector

from agent import __version__
from agent.assessment import Assessment
from agent.audit.findings import ParseState, Severity
from agent.audit.run import AuditReport
from agent.facts import reachability
from agent.output import write_report
from agent.verdicts import VERDICTS
from checks.contract import CheckRun, Scope, Status, Target, TargetResult
from checks.targets import Endpoint


class Exposed(enum.StrEnum):
    """Where a metric appears."""

    ASSESSMENT = "assessment"  # the daemon's /metrics, and `xcheck run --textfile` / `--push-gateway`
    DAEMON = "daemon"  # the daemon's /metrics only: the daemon's own state
    PROBE = "probe"  # the daemon's /probe only (blackbox_exporter's names)


@dataclass(frozen=True)
class MetricDefinition:
    type: str  # a Prometheus metric type
    unit: str  # the base unit the name ends with; "" for a state (1/0) or a label carrier
    labels: tuple[str, ...]
    meaning: str  # the HELP text, and the README's "meaning"
    exposed: Exposed = Exposed.ASSESSMENT
    # From the latest run: HELP says so (only build_info, the daemon's own state and /probe's fresh
    # answers are not).
    cached: bool = True


# Appended to the HELP of every cached metric.
CACHED_NOTE = " From the latest run, cached between scrapes."

# The one table of metrics: name -> definition, in the order they are emitted. Every one is a gauge:
# each says what the latest run found, none counts events. Bytes, not bits (Prometheus's base unit:
# `promtool check metrics` refuses "bits"); a dashboard multiplies by 8.
METRICS: dict[str, MetricDefinition] = {
    "xcheck_build_info": MetricDefinition(
        "gauge", "", ("version",), "Always 1; the version of xcheck serving these metrics.", cached=False),
    "xcheck_check_success": MetricDefinition(
        "gauge", "", ("check", "target"),
        "1 when the check succeeded for the target, 0 when it failed or erred; absent when it was skipped "
        "(nothing measured)."),
    "xcheck_check_duration_seconds": MetricDefinition(
        "gauge", "seconds", ("check", "target"), "How long the check took for the target."),
    "xcheck_check_last_run_timestamp_seconds": MetricDefinition(
        "gauge", "seconds", ("check", "target"), "When the check last ended for the target (Unix time)."),
    "xcheck_check_result": MetricDefinition(
        "gauge", "", ("check", "target", "reason"),
        "1, with the reason the check ended with for the target (the closed set of checks/contract.py); one "
        "series per check and target: the current reason only."),
    "xcheck_public_ipv4_present": MetricDefinition(
        "gauge", "", (),
        "1 when the host has a public IPv4 address (on an interface, or seen unchanged by a STUN server), 0 "
        "when not; absent when not measured."),
    "xcheck_nat_detected": MetricDefinition(
        "gauge", "", (), "1 when a STUN server saw another address than the host's own, 0 when not; absent when "
                         "no STUN server answered."),
    "xcheck_nat_info": MetricDefinition(
        "gauge", "", ("mapping", "filtering"),
        "Always 1; the NAT's RFC 5780 mapping and filtering behaviour (unknown when not decided); absent when "
        "whether there is a NAT is not known."),
    "xcheck_cgnat_detected": MetricDefinition(
        "gauge", "", (), "1 when a carrier-grade NAT address (100.64.0.0/10) is on the path, 0 when none was "
                         "seen; absent when not measured."),
    "xcheck_udp_blocked": MetricDefinition(
        "gauge", "", (), "1 when outbound UDP is blocked (every STUN server silent, or a filter refused), 0 when it "
                         "passes; absent when not known."),
    "xcheck_port_reachable": MetricDefinition(
        "gauge", "", ("target", "probe"),
        "1 when the gateway answered the probe (a check: ike_udp500, ike_natt_udp4500, ikev1_udp500, esp, "
        "tls_tcp443, sstp, gateway_health), 0 when proven unreachable (a refusal, or silence shown to be a "
        "filter); absent on bare silence."),
    "xcheck_path_mtu_bytes": MetricDefinition(
        "gauge", "bytes", ("target",), "The largest IPv4 packet that reaches the gateway with DF set."),
    "xcheck_throughput_bytes_per_second": MetricDefinition(
        "gauge", "bytes_per_second", ("target", "direction"),
        "The best complete throughput stage to the far end, per direction (upload, download)."),
    "xcheck_rtt_seconds": MetricDefinition(
        "gauge", "seconds", ("target", "percentile"),
        "TCP connect round-trip time to the far end, idle: its 50th, 90th and 99th percentile."),
    "xcheck_option_feasible": MetricDefinition(
        "gauge", "", ("option",), "1 when the option's verdict is feasible, 0 when conditional or infeasible; "
                                  "absent when unknown."),
    "xcheck_option_verdict": MetricDefinition(
        "gauge", "", ("option", "verdict"), "1 for the option's current verdict, 0 for the three others."),
    "xcheck_audit_findings": MetricDefinition(
        "gauge", "", ("severity",),
        "How many findings the audit of the site's own configuration made, per severity (error, warning, "
        "info); absent when no audit ran."),
    "xcheck_audit_parse_status": MetricDefinition(
        "gauge", "", ("file_kind", "status"),
        "How many of the audit's input files of a kind (swanctl, nftables, iptables, ...) were parsed, "
        "partially_unrecognized or failed; absent when no audit ran."),
    "xcheck_assessment_timestamp_seconds": MetricDefinition(
        "gauge", "seconds", (), "When the latest assessment finished (Unix time)."),
    "xcheck_config_last_reload_successful": MetricDefinition(
        "gauge", "", (), "xcheck daemon only: 1 when the last (re)load of the config succeeded, 0 when it failed "
                         "(the last good config stays in use).", Exposed.DAEMON, cached=False),
    "xcheck_config_last_reload_success_timestamp_seconds": MetricDefinition(
        "gauge", "seconds", (), "xcheck daemon only: when the config was last loaded successfully (Unix time).",
        Exposed.DAEMON, cached=False),
    "probe_success": MetricDefinition(
        "gauge", "", (), "/probe only: 1 when every check of the module that probed the target succeeded "
                         "(skipped ones count neither way) and one did, else 0.", Exposed.PROBE, cached=False),
    "probe_duration_seconds": MetricDefinition(
        "gauge", "seconds", (), "/probe only: how long the probe took.", Exposed.PROBE, cached=False),
}

# The host itself, as a `target` label: the runner names it "host", the metrics as configured.
LOCAL_TARGET = "local"
# Not `quantile`: Prometheus reserves that label for summaries (promtool refuses it on a gauge), and a
# summary's _sum and _count, which the far end's figures lack, would be made up as 0 by whoever re-exposes
# it (the pushgateway, node_exporter's textfile collector).
RTT_PERCENTILES = {"50": "rtt_p50_seconds", "90": "rtt_p90_seconds", "99": "rtt_p99_seconds"}
DIRECTIONS = ("upload", "download")
UNKNOWN_BEHAVIOUR = "unknown"  # nat_info's label when mapping or filtering was not decided


@dataclass(frozen=True)
class ConfigReload:
    """The daemon's last config (re)load, for its /metrics."""

    successful: bool
    success_timestamp_seconds: float | None  # None: never loaded successfully


class _Families:
    """Families being built, one per metric of METRICS; a None value adds nothing (unknown is absent)."""

    def __init__(self, cached: bool) -> None:
        self._cached = cached
        self._built: dict[str, GaugeMetricFamily] = {}

    def add(self, name: str, labels: Sequence[str], value: float | bool | None) -> None:
        if value is None:
            return
        definition = METRICS[name]
        assert len(labels) == len(definition.labels), f"{name}: labels {definition.labels}, given {labels}"
        if name not in self._built:
            note = CACHED_NOTE if self._cached and definition.cached else ""
            self._built[name] = GaugeMetricFamily(name, definition.meaning + note, labels=definition.labels,
                                                  unit=definition.unit)
        self._built[name].add_metric(list(labels), float(value))

    def collected(self) -> list[Metric]:
        return [self._built[name] for name in METRICS if name in self._built]


def _target(target: Target) -> str:
    return LOCAL_TARGET if target.scope is Scope.HOST else target.name


def _add_results(out: _Families, results: Iterable[TargetResult]) -> None:
    for result in results:
        key = (result.check, _target(result.target))
        out.add("xcheck_check_success", key, None if result.status is Status.SKIPPED else result.succeeded)
        out.add("xcheck_check_duration_seconds", key, result.duration_seconds)
        out.add("xcheck_check_last_run_timestamp_seconds", key, result.ended_at)
        out.add("xcheck_check_result", (*key, str(result.reason)), 1)


def _add_gateway_facts(out: _Families, runs: Mapping[str, CheckRun], reachable: Mapping[str, Any]) -> None:
    """Per gateway: each probe's reachability (facts.reachability) and the path MTU."""
    for probe, fact in reachable.items():
        for gateway in fact["gateways"]:
            out.add("xcheck_port_reachable", (gateway["gateway"], probe), gateway["reachable"])
    path_mtu = runs.get("path_mtu")
    for result in path_mtu.results if path_mtu else ():
        out.add("xcheck_path_mtu_bytes", (_target(result.target),),
                result.evidence.path_mtu_bytes if result.evidence is not None else None)


def _add_facts(out: _Families, assessment: Assessment) -> None:
    facts = assessment.facts
    nat = facts["nat"]
    out.add("xcheck_public_ipv4_present", (), facts["public_ipv4"]["present"])
    out.add("xcheck_nat_detected", (), nat["detected"])
    if nat["detected"] is not None:
        out.add("xcheck_nat_info", (nat["mapping"] or UNKNOWN_BEHAVIOUR, nat["filtering"] or UNKNOWN_BEHAVIOUR), 1)
    out.add("xcheck_cgnat_detected", (), nat["cgnat"])
    out.add("xcheck_udp_blocked", (), nat["udp_blocked"])
    _add_gateway_facts(out, {run.name: run for run in assessment.runs}, facts["reachability"])
    for far_end in assessment.targets.of_scope(Scope.FAR_END):
        for direction in DIRECTIONS:
            rate = facts["throughput"][f"{direction}_bits_per_second"]
            out.add("xcheck_throughput_bytes_per_second", (far_end.name, direction),
                    rate / 8 if rate is not None else None)
        for percentile, key in RTT_PERCENTILES.items():
            out.add("xcheck_rtt_seconds", (far_end.name, percentile), facts["latency"][key])


def _add_options(out: _Families, options: Mapping[str, Any]) -> None:
    for option, entry in options.items():
        verdict = entry["verdict"]
        out.add("xcheck_option_feasible", (option,), verdict == "feasible" if verdict != "unknown" else None)
        for each in VERDICTS:
            out.add("xcheck_option_verdict", (option, each), each == verdict)


def _add_audit(out: _Families, audit: AuditReport) -> None:
    for severity in Severity:  # a bounded set, each present: 0 errors is a fact worth a series
        out.add("xcheck_audit_findings", (str(severity),), sum(f.severity is severity for f in audit.findings))
    kinds = sorted({status.kind for status in audit.inputs})
    for kind in kinds:
        for state in ParseState:
            out.add("xcheck_audit_parse_status", (kind, str(state)),
                    sum(s.kind == kind and s.status is state for s in audit.inputs))


def families(assessment: Assessment | None, reload: ConfigReload | None = None) -> list[Metric]:
    """The metrics of the latest assessment (None: none yet, build_info alone), with the daemon's
    config reload state when given."""
    out = _Families(cached=True)
    out.add("xcheck_build_info", (__version__,), 1)
    if assessment is not None:
        _add_results(out, (result for run in assessment.runs for result in run.results))
        _add_facts(out, assessment)
        _add_options(out, assessment.options)
        if assessment.audit is not None:
            _add_audit(out, assessment.audit)
        out.add("xcheck_assessment_timestamp_seconds", (), assessment.finished_at.timestamp())
    if reload is not None:
        out.add("xcheck_config_last_reload_successful", (), reload.successful)
        out.add("xcheck_config_last_reload_success_timestamp_seconds", (), reload.success_timestamp_seconds)
    return out.collected()


def probe_families(runs: Sequence[CheckRun], duration_seconds: float) -> list[Metric]:
    """/probe's answer, blackbox_exporter's way: the runs of one module's checks against one target,
    measured just now (so HELP says nothing of a cache)."""
    out = _Families(cached=False)
    results = [result for run in runs for result in run.results]
    measured = [result for result in results if result.status is not Status.SKIPPED]
    out.add("probe_success", (), bool(measured) and all(result.succeeded for result in measured))
    out.add("probe_duration_seconds", (), duration_seconds)
    _add_results(out, results)
    by_name = {run.name: run for run in runs}
    _add_gateway_facts(out, by_name, reachability(by_name))
    return out.collected()


class _Collected(Collector):
    def __init__(self, collected: Iterable[Metric]) -> None:
        self._collected = list(collected)

    def collect(self) -> Iterator[Metric]:
        return iter(self._collected)


def render(collected: Iterable[Metric]) -> bytes:
    """The Prometheus text format 0.0.4 (what Prometheus scrapes, the pushgateway takes and
    node_exporter's textfile collector reads): render once per new assessment, serve per scrape."""
    return generate_latest(_Collected(collected))


class AssessmentCollector(Collector):
    """The registry form (prometheus_client's custom collector): each collect() maps what `latest`
    returns at that moment."""

    def __init__(self, latest: Callable[[], Assessment | None],
                 reload: Callable[[], ConfigReload | None] = lambda: None) -> None:
        self._latest = latest
        self._reload = reload

    def collect(self) -> Iterator[Metric]:
        return iter(families(self._latest(), self._reload()))


# --------------------------------------------------------------- one-shot exports of `xcheck run`

def write_textfile(path: Path, assessment: Assessment) -> None:
    """node_exporter's textfile collector format, written as --output writes a report (atomically,
    never over what is not ours: agent/output.py); check the path with `check_output` before measuring."""
    write_report(path, render(families(assessment)).decode("utf-8"))


# A pushgateway answers in milliseconds; ten seconds covers a loaded one without holding a cron job.
PUSH_TIMEOUT_SECONDS = 10.0
# The whole push: PUSH_TIMEOUT_SECONDS bounds each connect and read, not their sum, and a peer that
# dribbles its answer a byte at a time would otherwise hold the run for hours.
PUSH_DEADLINE_SECONDS = 30.0
MAX_URL_LENGTH = 2048
# A job is a label value: any text, but one line and short enough to read in a dashboard.
_JOB = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
# RFC 3986's path characters: nothing urllib would send as something else, or refuse late.
_URL_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@/%-]*")
# Of a refusal's body (the pushgateway says why it refused a push): enough for its reason, bounded.
MAX_REFUSAL_TEXT = 200


class PushError(Exception):
    """The metrics could not be pushed; the message says why, and names the gateway without credentials."""


@dataclass(frozen=True)
class PushGateway:
    """A pushgateway as `--push-gateway` names it: http(s)://[USER:PASSWORD@]HOST[:PORT][/PATH]."""

    url: str  # without the credentials
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str) -> PushGateway:
        """ValueError with a message that never quotes the URL: it may carry a password."""
        usage = "expected http[s]://[USER:PASSWORD@]HOST[:PORT][/PATH]"
        if len(text) > MAX_URL_LENGTH:
            raise ValueError(f"{usage}, of at most {MAX_URL_LENGTH} characters")
        try:
            parts = urllib.parse.urlsplit(text.strip())
        except ValueError:  # an unbalanced or bad [IPv6] literal
            raise ValueError(f"{usage}; an IPv6 address goes whole in brackets") from None
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{usage}; the port must be a number from 1 to 65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
                or not _URL_PATH.fullmatch(parts.path):
            raise ValueError(usage)
        if port == 0:  # the only port out of range that urlsplit lets through
            raise ValueError(f"{usage}; the port must be a number from 1 to 65535")
        host = parts.hostname
        try:
            shown_host = f"[{ipaddress.IPv6Address(host)}]"
        except ValueError:
            try:
                shown_host = Endpoint.check_host(host)
            except ValueError as exc:
                raise ValueError(f"{usage}; its host: {exc}") from None
        netloc = shown_host + (f":{port}" if port is not None else "")
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        if parts.username is None:
            return cls(url)
        return cls(url, urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))

    def __str__(self) -> str:  # for messages: never the credentials
        return self.url

    def _handler(self, url: str, method: str, timeout: float | None, headers: list, data: bytes) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, self.username, self.password)


def check_job(job: str) -> str:
    if not _JOB.fullmatch(job):
        raise ValueError("expected 1 to 128 characters, none of them a control character")
    return job


def push(gateway: PushGateway, job: str, assessment: Assessment) -> None:
    """PUT the assessment's metrics under the grouping key {job, instance: this host's name}, within
    PUSH_DEADLINE_SECONDS; PushError says why it failed.

    PUT (push_to_gateway), not POST (pushadd): it replaces the whole group, so a series this run no
    longer has (a reason that changed, a fact now unknown, a gateway removed) goes, instead of
    staying as a stale value beside the new ones."""
    failed: list[BaseException] = []

    def attempt() -> None:
        try:
            _push(gateway, job, _Collected(families(assessment)))
        except BaseException as exc:  # handed to the caller, whatever it is: a bug stays a bug
            failed.append(exc)

    # A daemon thread: past the deadline it is abandoned, and the process exits without waiting for it.
    worker = threading.Thread(target=attempt, name="xcheck-push", daemon=True)
    worker.start()
    worker.join(PUSH_DEADLINE_SECONDS)
    if worker.is_alive():
        raise PushError(f"cannot push metrics to {gateway}: no complete answer within {PUSH_DEADLINE_SECONDS:g} s")
    if failed:
        raise failed[0]


def _push(gateway: PushGateway, job: str, collected: Collector) -> None:
    try:
        push_to_gateway(gateway.url, job, collected, grouping_key={"instance": socket.gethostname()},
                        timeout=PUSH_TIMEOUT_SECONDS, handler=gateway._handler)
    except urllib.error.HTTPError as exc:
        raise PushError(f"cannot push metrics to {gateway}: HTTP {exc.code} {exc.reason}{_refusal(exc)}") from None
    except urllib.error.URLError as exc:
        raise PushError(f"cannot push metrics to {gateway}: {_why(exc.reason)}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise PushError(f"cannot push metrics to {gateway}: {_why(exc)}") from None


def _refusal(error: urllib.error.HTTPError) -> str:
    """What the pushgateway said about a refused push (it names the inconsistent metric), bounded."""
    try:
        text = error.read(MAX_REFUSAL_TEXT * 4).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        return ""
    return f": {text[:MAX_REFUSAL_TEXT]}" if text else ""


def _why(error: Any) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
