"""`xcheck responder`'s cap on the length of a test, end to end in the lab: by default it takes no
test over a minute, `--max-test-seconds` moves the cap, and `xcheck run` says why it was refused."""

from __future__ import annotations

import subprocess

import pytest
from conftest import XCHECK, needs_lab
from lab import Lab
from test_lab_throughput import FAR_END, checks, measure, wait_listening

pytestmark = [pytest.mark.lab, needs_lab]


def start_responder(lab: Lab, *flags: str) -> subprocess.Popen:
    process = lab.spawn(lab.cloud, [XCHECK, "responder", "--listen", FAR_END, *flags],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(lab, 5201)
    return process


def test_the_responder_caps_the_test_length_and_xcheck_run_says_why():
    with Lab(nat="masquerade", stun="none") as lab:
        default = start_responder(lab)
        # 60 s plus xcheck's 1 s warm-up is over the default minute: refused at once, with the way out.
        completed, report = measure(lab, seconds="60")
        stock = lab.run(lab.onprem, ["iperf3", "-c", FAR_END, "-t", "300"], timeout=30)
        default.terminate()
        default.wait(10)

        start_responder(lab, "--max-test-seconds", "3")
        within, within_report = measure(lab, seconds="2")
        beyond, beyond_report = measure(lab, seconds="3")

    assert completed.returncode == 0, completed.stderr
    refused = checks(report)["throughput"]
    assert (refused["status"], refused["reason"]) == ("fail", "peer_error")
    assert "refuses a 61 s test" in refused["detail"] and "--max-test-seconds" in refused["detail"], refused["detail"]
    assert stock.returncode != 0 and "test duration too long" in stock.stdout + stock.stderr

    assert within.returncode == 0 and checks(within_report)["throughput"]["status"] == "ok", within.stderr
    assert beyond.returncode == 0, beyond.stderr
    refused = checks(beyond_report)["throughput"]
    assert (refused["status"], refused["reason"]) == ("fail", "peer_error")
    assert "refuses a 4 s test" in refused["detail"]
