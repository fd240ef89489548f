"""The monitoring bundle against the real thing: in the lab's on-prem namespace, behind the NAT, a real
Prometheus (with monitoring/'s recording and alert rules) scrapes a real `xcheck daemon` that probes
`xcheck responder` in the cloud namespace (gateway, far end) and coturn (STUN). Every panel query of the
Grafana dashboard, resolved for the site as Grafana would, returns data; every rule evaluates without
error and none fires on the healthy lab; a failed config reload and a stopped daemon each raise theirs.

Prometheus runs inside the on-prem namespace beside the daemon: nothing of the lab is reachable from the
host's own namespace (tests/lab.py configures nothing there), so its HTTP API is asked from inside too
(tests/prometheus_lab.py)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest
from conftest import XCHECK, needs_lab
from lab import Lab
from prometheus_lab import Prometheus
from test_lab_gateway import GATEWAY, start_responder
from test_monitoring import ALERTS, RECORDING, dashboard, panel_queries, template_variables

pytestmark = [pytest.mark.lab, needs_lab,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus not on PATH (Debian: apt-get install prometheus)")]

# A fresh namespace has no listener: the port is free there, whatever the host runs.
DAEMON = "127.0.0.1:9478"
SCRAPE_SECONDS = 2
# Generous bounds that prove "does not hang" on a loaded machine: the daemon's first cycles start within
# 10 s, the gateway checks take up to TIMEOUT_SECONDS each, the throughput stage loads the path for a while.
DATA_SECONDS = 180
ALERT_SECONDS = 60
# Each check's deadline, as tests/test_lab_gateway.py gives it (the IKE checks import scapy within it).
TIMEOUT_SECONDS = 8
# Grafana's $__rate_interval is at least four scrape intervals.
RATE_INTERVAL = f"{4 * SCRAPE_SECONDS}s"

CONFIG = f"""
stun = ["{GATEWAY}"]
gateway = ["{GATEWAY}"]
iperf = "{GATEWAY}"
timeout_seconds = {TIMEOUT_SECONDS}
throughput_seconds = 1

[requirements]
vpn_device = true

[daemon]
listen = "{DAEMON}"
interval_seconds = 5
throughput_interval_seconds = 300
"""


class Site:
    """The lab's on-prem host with its daemon (from a config file, for SIGHUP) and Prometheus."""

    def __init__(self, lab: Lab, directory: Path) -> None:
        self.config = directory / "xcheck.toml"
        self.config.write_text(CONFIG)
        self.log = directory / "daemon.log"
        with self.log.open("wb") as log:
            self.daemon = lab.spawn(lab.onprem, [XCHECK, "daemon", "--config", str(self.config)], stdout=log,
                                    stderr=subprocess.STDOUT)
        self.prometheus = Prometheus(lab, lab.onprem, directory / "prometheus",
                                     [{"job_name": "xcheck", "static_configs": [{"targets": [DAEMON]}]}],
                                     rule_files=(RECORDING, ALERTS), interval=f"{SCRAPE_SECONDS}s")
        self.daemon_running = True

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
                         for path in (self.log, self.prometheus.log))

    def wait(self, what: str, seconds: float, found):
        deadline = time.monotonic() + seconds
        while True:
            if self.daemon_running:
                assert self.daemon.poll() is None, f"the daemon exited while waiting for {what}:\n{self.logs()}"
            value = found()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {seconds} s:\n{self.logs()}")
            time.sleep(1)

    def result(self, target: dict, expr: str) -> list:
        """What Grafana gets for a panel's target: an instant query, or the last minute as a range."""
        now = time.time()
        if target["instant"]:
            return self.prometheus.api(f"query?{urlencode({'query': expr, 'time': now})}")["result"]
        return self.prometheus.api("query_range?" + urlencode(
            {"query": expr, "start": now - 60, "end": now, "step": SCRAPE_SECONDS}))["result"]

    def alerts(self, name: str | None = None) -> list[dict]:
        return [alert for alert in self.prometheus.api("alerts")["alerts"]
                if name is None or alert["labels"]["alertname"] == name]

    def stop_daemon(self) -> None:
        self.daemon_running = False
        self.daemon.send_signal(signal.SIGTERM)  # `ip netns exec` execs the daemon: this pid is the daemon
        self.daemon.wait(timeout=30)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with Lab(nat="masquerade") as lab:
        start_responder(lab)  # the gateway and the far end; its STUN aside, coturn keeps 3478
        yield Site(lab, tmp_path_factory.mktemp("site"))


def sites(site: Site) -> list[str]:
    """The dashboard's `site` variable, resolved as Grafana does it (label_values(xcheck_build_info, instance))."""
    query = template_variables(dashboard())["site"]["query"]["query"]
    metric, label = query.removeprefix("label_values(").removesuffix(")").split(", ")
    return site.prometheus.api(f"label/{label}/values?{urlencode({'match[]': metric})}")


def empty_panels(site: Site, instance: str) -> list[str]:
    return [f"{title}: {expr}" for title, target, expr in panel_queries(dashboard(), instance, RATE_INTERVAL)
            if not site.result(target, expr)]


def test_every_panel_query_returns_data_for_the_site(site):
    assert site.wait("site in the dashboard's variable", DATA_SECONDS, lambda: sites(site)) == [DAEMON]
    # The throughput stage and the gateway checks come last: wait until every panel has its data.
    last: list[str] = []

    def complete():
        last[:] = empty_panels(site, DAEMON)
        return not last

    try:
        site.wait("data in every panel", DATA_SECONDS, complete)
    except AssertionError as error:
        raise AssertionError(f"panels without data: {last}") from error
    # The recorded series the panels read agree with what the daemon exposes.
    ordinal = site.prometheus.query("instance_option:xcheck_option_verdict:ordinal")
    verdicts = site.prometheus.query("xcheck_option_verdict == 1")
    codes = {"infeasible": "0", "unknown": "1", "conditional": "2", "feasible": "3"}
    assert {s["metric"]["option"]: s["value"][1] for s in ordinal} == \
        {s["metric"]["option"]: codes[s["metric"]["verdict"]] for s in verdicts}
    assert len(verdicts) == 4


def test_no_alert_on_a_healthy_site_and_every_rule_evaluates(site):
    site.wait("data in every panel", DATA_SECONDS, lambda: not empty_panels(site, DAEMON))
    started = time.time()

    def evaluated_since_start():
        groups = site.prometheus.api("rules")["groups"]
        return groups if groups and all(
            datetime.fromisoformat(group["lastEvaluation"]).timestamp() > started for group in groups) else None

    groups = site.wait("a rule evaluation", ALERT_SECONDS, evaluated_since_start)
    assert {group["name"] for group in groups} == {"xcheck.recording", "xcheck.alerts"}
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule
    assert site.alerts() == []


def test_a_failed_reload_and_a_stopped_daemon_raise_their_alerts(site):
    site.wait("data in every panel", DATA_SECONDS, lambda: not empty_panels(site, DAEMON))
    site.config.write_text(CONFIG.replace("interval_seconds = 5", "interval_seconds = 1"))  # below the minimum
    site.daemon.send_signal(signal.SIGHUP)
    reload = site.wait("XcheckConfigReloadFailed", ALERT_SECONDS, lambda: site.alerts("XcheckConfigReloadFailed"))
    assert [(a["labels"]["instance"], a["labels"]["severity"], a["state"]) for a in reload] == \
        [(DAEMON, "warning", "pending")]  # pending: the rule wants 5 minutes
    site.stop_daemon()
    down = site.wait("XcheckDaemonDown", ALERT_SECONDS, lambda: site.alerts("XcheckDaemonDown"))
    assert [(a["labels"]["instance"], a["labels"]["job"], a["state"]) for a in down] == [(DAEMON, "xcheck", "pending")]

