"""Throughput and latency in the lab: xcheck against a stock `iperf3 -s` in the cloud namespace
behind NAT, a shaped uplink, a busy, dead or silent far end, and `xcheck responder` as the far end
(also checked with the stock `iperf3 -c`)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
from conftest import XCHECK, needs_lab, run_xcheck
from lab import Lab

pytestmark = [pytest.mark.lab, needs_lab]

FAR_END = "203.0.113.10"


def wait_listening(lab: Lab, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f":{port} " in lab.run(lab.cloud, ["ss", "-tlnH"]).stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on tcp/{port} in the cloud namespace")


def wait_data_flowing(lab: Lab, port: int = 5201, timeout: float = 30.0) -> None:
    """Wait until the far end has received test data (not only the control exchange) on tcp/port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sockets = lab.run(lab.cloud, ["ss", "-tinH", "state", "established", f"( sport = :{port} )"]).stdout
        if any(int(count) > 1_000_000 for count in re.findall(r"bytes_received:(\d+)", sockets)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no test data reached tcp/{port} in the cloud namespace")


def iperf3_server(lab: Lab, port: int = 5201):
    process = lab.spawn(lab.cloud, ["iperf3", "-s", "-B", FAR_END, "-p", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(lab, port)
    return process


def measure(lab: Lab, *extra: str, seconds: str = "2"):
    return run_xcheck("run", "--format", "json", "--stun", FAR_END, "--iperf", FAR_END,
                      "--throughput-seconds", seconds, *extra, lab=lab, timeout=120)


def checks(report):
    return {c["name"]: c for c in report["checks"]}


@pytest.mark.parametrize("streams", ["1", "4"])
def test_upload_and_download_through_nat(streams):
    with Lab(nat="masquerade") as lab:
        iperf3_server(lab)
        completed, report = measure(lab, "--streams", streams)
    assert completed.returncode == 0, completed.stderr
    throughput = report["facts"]["throughput"]
    assert checks(report)["throughput"]["status"] == "ok", checks(report)["throughput"]["detail"]
    assert throughput["streams"] == int(streams)
    # An unshaped veth path carries far more than 100 Mbit/s in both directions.
    assert throughput["upload_bits_per_second"] > 100e6 and throughput["download_bits_per_second"] > 100e6
    assert [(s["direction"], s["ok"], s["partial"]) for s in throughput["stages"]] == [
        ("upload", True, False), ("download", True, False)]
    latency = report["facts"]["latency"]
    assert latency["rtt_p50_seconds"] is not None and latency["loss_ratio"] == 0
    assert latency["under_load"]["rtt_p50_seconds"] is not None
    # UDP round trips are STUN to port 3478 of the far end: the lab's coturn on the iperf3 host answers them.
    assert latency["udp"]["rtt_p50_seconds"] is not None and latency["udp"]["loss_ratio"] == 0


def test_a_shaped_uplink_is_measured_and_the_vpn_verdict_follows():
    with Lab(nat="masquerade") as lab:
        lab.run(lab.router, ["tc", "qdisc", "add", "dev", lab.router_wan_if, "root", "tbf", "rate", "50mbit",
                             "burst", "64kb", "latency", "50ms"], check=True)
        iperf3_server(lab)
        completed, report = measure(lab, "--bandwidth-mbps", "80", "--vpn-device", seconds="3")
    assert completed.returncode == 0, completed.stderr
    throughput = report["facts"]["throughput"]
    assert throughput["upload_bits_per_second"] == pytest.approx(50e6, rel=0.10)
    assert throughput["download_bits_per_second"] > 100e6  # tbf on the uplink shapes upload only
    s2s = report["options"]["s2s"]
    assert s2s["verdict"] == "infeasible"
    reason = next(r for r in s2s["reasons"] if r["rule"] == "current.s2s.path-below-need")
    assert "80 Mbit/s" in reason["text"] and "Mbit/s (upload" in reason["text"]


def test_a_busy_server_is_a_clear_failure():
    with Lab(nat="masquerade") as lab:
        iperf3_server(lab)
        lab.spawn(lab.onprem, ["iperf3", "-c", FAR_END, "-t", "30"])
        wait_data_flowing(lab)  # the other client's test is under way
        completed, report = measure(lab)
    assert completed.returncode == 0
    result = checks(report)["throughput"]
    assert (result["status"], result["reason"]) == ("fail", "peer_busy")
    assert report["facts"]["throughput"]["upload_bits_per_second"] is None


def test_a_server_killed_mid_test_gives_partial_figures_and_no_hang():
    with Lab(nat="masquerade") as lab:
        server = iperf3_server(lab)
        xcheck = lab.spawn(lab.onprem, [XCHECK, "run", "--format", "json", "--stun", FAR_END, "--iperf", FAR_END,
                                        "--throughput-seconds", "6"], stdout=-1, stderr=-1, text=True)
        wait_data_flowing(lab)  # mid-test: past TEST_START, data moving
        server.send_signal(signal.SIGKILL)  # `ip netns exec` execs iperf3: this pid is the server itself
        started = time.monotonic()
        out, err = xcheck.communicate(timeout=120)
        waited = time.monotonic() - started
    assert xcheck.returncode == 0, err
    report = json.loads(out)
    result = checks(report)["throughput"]
    assert result["status"] == "fail" and result["reason"] in ("connection_lost", "no_response")
    (far_end,) = result["results"]
    first = far_end["evidence"]["stages"][0]
    assert first["partial"] is True and first["ok"] is False
    assert waited < 60  # bounded by the stage's deadline, not by TCP's own timeouts (generous for a loaded machine)


def test_a_far_end_that_never_answers_is_bounded():
    silent = ("import socket,time\n"
              "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
              f"s.bind(('{FAR_END}', 5201)); s.listen(8)\n"
              "conns=[]\n"
              "while True: conns.append(s.accept())\n")
    with Lab(nat="masquerade") as lab:
        lab.spawn(lab.cloud, ["python3", "-c", silent])
        wait_listening(lab, 5201)
        started = time.monotonic()
        completed, report = measure(lab)
        elapsed = time.monotonic() - started
    assert completed.returncode == 0
    result = checks(report)["throughput"]
    assert (result["status"], result["reason"]) == ("fail", "no_response")
    assert elapsed < 60  # bounded by the client's own timeouts, not by TCP's (generous for a loaded machine)


def test_xcheck_responder_is_the_whole_far_end():
    with Lab(nat="masquerade", stun="none") as lab:  # the responder answers STUN itself
        lab.spawn(lab.cloud, [XCHECK, "responder", "--listen", FAR_END])
        wait_listening(lab, 5201)
        completed, report = measure(lab)
        stock = lab.run(lab.onprem, ["iperf3", "-c", FAR_END, "-t", "1", "-P", "2", "-J"], timeout=30)
        reverse = lab.run(lab.onprem, ["iperf3", "-c", FAR_END, "-t", "1", "-R", "-J"], timeout=30)
    assert completed.returncode == 0, completed.stderr
    assert checks(report)["throughput"]["status"] == "ok"
    latency = report["facts"]["latency"]
    assert latency["udp"]["rtt_p50_seconds"] is not None and latency["udp"]["loss_ratio"] == 0
    for run in (stock, reverse):
        assert run.returncode == 0, run.stdout + run.stderr
        assert json.loads(run.stdout)["end"]["sum_received"]["bits_per_second"] > 100e6
