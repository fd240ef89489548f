"""`xcheck daemon` behind a real NAT, scraped by a real Prometheus, both in the lab's on-prem
namespace: the facts arrive in Prometheus, a STUN outage shows within two intervals while the
daemon keeps serving, and /probe serves a blackbox-style Prometheus job for two gateways (while a
target nobody configured gets 403 and not one packet)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import XCHECK, needs_lab
from lab import Lab
from prometheus_lab import Prometheus, http_get
from prometheus_client.parser import text_string_to_metric_families
from test_lab_gateway import GATEWAY, start_responder

from agent.daemon.scheduler import JITTER
from agent.metrics import METRICS, Exposed

pytestmark = [pytest.mark.lab, needs_lab]

LISTEN = "127.0.0.1:9478"
INTERVAL_SECONDS = 5  # the shortest the daemon takes: the outage test waits for two of them
TIMEOUT_SECONDS = 2


def start_daemon(lab: Lab, log_path, *args: str) -> None:
    with open(log_path, "wb") as log:
        lab.spawn(lab.onprem, [XCHECK, "daemon", "--listen", LISTEN, "--interval", str(INTERVAL_SECONDS),
                               "--timeout", str(TIMEOUT_SECONDS), *args], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while http_get(lab, lab.onprem, f"http://{LISTEN}/healthz", timeout=5)[0] != 200:
        assert time.monotonic() < deadline, f"daemon did not start:\n{open(log_path).read()}"
        time.sleep(0.3)


def value(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def test_prometheus_sees_the_nat_and_a_stun_outage(tmp_path):
    with Lab(nat="masquerade") as lab:
        start_responder(lab)  # the gateway and the far end, its STUN aside so coturn keeps 3478
        start_daemon(lab, tmp_path / "daemon.log", "--stun", lab.stun_primary, "--gateway", GATEWAY,
                     "--iperf", GATEWAY, "--throughput-interval", "300", "--throughput-seconds", "1",
                     "--vpn-device")
        prometheus = Prometheus(lab, lab.onprem, tmp_path / "prometheus",
                                [{"job_name": "xcheck", "static_configs": [{"targets": [LISTEN]}]}])
        stun_target = f"{lab.stun_primary}:3478"

        # Every documented metric of /metrics is there once the throughput stage has run, and no
        # other; a real scrape passes promtool's lint.
        prometheus.wait_for("xcheck_throughput_bytes_per_second", "the throughput stage", timeout=180)
        status, scrape = http_get(lab, lab.onprem, f"http://{LISTEN}/metrics")
        assert status == 200
        emitted = {family.name for family in text_string_to_metric_families(scrape)}
        documented = {name for name, definition in METRICS.items() if definition.exposed is not Exposed.PROBE}
        assert emitted == documented
        lint = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True)
        assert lint.returncode == 0 and not lint.stdout.strip() and "error" not in lint.stderr.lower(), lint

        assert value(prometheus.wait_for("xcheck_nat_detected", "the NAT")) == 1
        nat = prometheus.wait_for("xcheck_nat_info", "the NAT's behaviour")[0]["metric"]
        assert (nat["mapping"], nat["filtering"]) == ("endpoint-independent", "address-and-port-dependent")
        verdicts = prometheus.wait_for("xcheck_option_verdict == 1", "a verdict per option")
        assert sorted(v["metric"]["option"] for v in verdicts) == ["expressroute_exp", "expressroute_nsp", "p2s", "s2s"]
        assert value(prometheus.query(f'xcheck_check_success{{check="stun_binding",target="{stun_target}"}}')) == 1

        # The STUN server dies: the next cycles say so, while the daemon keeps answering.
        for process in lab.coturn:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        killed = time.time()
        failed = prometheus.wait_for('xcheck_check_success{check="stun_binding"} == 0', "the outage")
        assert failed[0]["metric"]["target"] == stun_target
        seen = value(prometheus.query('xcheck_check_last_run_timestamp_seconds{check="stun_binding"}'))
        # The first cycle that started after the kill ended within two intervals of it (the daemon's
        # own timestamps: how quickly this test polled does not count).
        assert seen - killed <= 2 * INTERVAL_SECONDS * (1 + JITTER) + TIMEOUT_SECONDS + 1
        result = prometheus.query(f'xcheck_check_result{{check="stun_binding",target="{stun_target}"}} == 1')
        # Its host is still there and says nothing listens: ICMP port unreachable, not silence.
        assert [r["metric"]["reason"] for r in result] == ["port_unreachable"]
        assert value(prometheus.query('up{job="xcheck"}')) == 1
        assert http_get(lab, lab.onprem, f"http://{LISTEN}/healthz")[0] == 200

        lab._start_coturn("stun-again", [lab.stun_primary, lab.stun_alternate], alt_port=True)
        prometheus.wait_for('xcheck_check_success{check="stun_binding"} == 1', "the server back")
        assert value(prometheus.query("xcheck_nat_detected")) == 1


def test_probe_serves_a_blackbox_style_job_for_two_gateways(tmp_path):
    second = "203.0.113.11"
    with Lab(nat="masquerade") as lab:
        start_responder(lab)
        start_responder(lab, address=second)
        # The second gateway is allowed only for /probe; the daemon's own cycles probe the first.
        start_daemon(lab, tmp_path / "daemon.log", "--stun", lab.stun_primary, "--gateway", "203.0.113.10",
                     "--probe-target", second, "--interval", "300")
        job = {"job_name": "xcheck_gateways", "metrics_path": "/probe", "params": {"module": ["gateway"]},
               "scrape_interval": "5s", "scrape_timeout": "4s",
               "static_configs": [{"targets": ["203.0.113.10", second]}],
               "relabel_configs": [{"source_labels": ["__address__"], "target_label": "__param_target"},
                                   {"source_labels": ["__param_target"], "target_label": "instance"},
                                   {"target_label": "__address__", "replacement": LISTEN}]}
        prometheus = Prometheus(lab, lab.onprem, tmp_path / "prometheus", [job])
        deadline = time.monotonic() + 120
        while True:
            found = {r["metric"]["instance"]: float(r["value"][1]) for r in prometheus.query("probe_success")}
            if len(found) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert found == {"203.0.113.10": 1.0, second: 1.0}, prometheus.api("targets")
        reachable = prometheus.query(f'xcheck_port_reachable{{instance="{second}",probe="ike_natt_udp4500"}}')
        assert value(reachable) == 1 and reachable[0]["metric"]["target"] == second
        durations = prometheus.query("probe_duration_seconds")
        assert all(float(d["value"][1]) < 4 for d in durations)  # inside the scrape timeout, by the header

        # Not configured, not allowed: 403, and not one packet left for it (the router counts).
        lab.router_iptables("-I", "FORWARD", "-d", "203.0.113.12")
        status, body = http_get(lab, lab.onprem, f"http://{LISTEN}/probe?module=gateway&target=203.0.113.12")
        assert status == 403 and "not allowed" in body
        counters = lab.run(lab.router, ["iptables", "-w", "-nvxL", "FORWARD"]).stdout
        line = next(line for line in counters.splitlines() if "203.0.113.12" in line)
        assert line.split()[0] == "0", counters
