"""`xcheck run --stun RESPONDER` in the lab against `xcheck responder`: xcheck's own STUN requests are
answered (UDP is not "blocked"), RFC 5780 discovery with `--alternate` finds what
turnutils_natdiscovery finds against coturn in the same lab, and the responder refused nothing
xcheck sent for being too large (its no-amplification rule)."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import time

import pytest
from conftest import XCHECK, needs_lab, run_xcheck
from lab import Lab, parse_natdiscovery

pytestmark = [pytest.mark.lab, needs_lab]

RESPONDER = "203.0.113.10"


class Responder:
    """`xcheck responder` in the lab's cloud; `stop()` gives its STUN counts, from its last log line."""

    def __init__(self, lab: Lab, *extra: str) -> None:
        self.log = os.path.join(lab.tmpdir, "responder.log")
        with open(self.log, "wb") as log:
            self.process = lab.spawn(lab.cloud, [XCHECK, "responder", "--listen", RESPONDER, *extra],
                                     stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 15
        while "listening:" not in self.text():
            assert self.process.poll() is None and time.monotonic() < deadline, self.text()
            time.sleep(0.05)

    def text(self) -> str:
        with open(self.log, errors="replace") as log:
            return log.read()

    def stop(self) -> dict[str, int]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
        counts = re.search(r"STUN datagrams: (\{.*\})", self.text())
        assert counts, self.text()
        return ast.literal_eval(counts.group(1))


def checks_of(report: dict) -> dict[str, dict]:
    return {check["name"]: check for check in report["checks"]}


@pytest.mark.parametrize("alternate", [False, True], ids=["one address", "RFC 5780"])
def test_xcheck_run_is_answered_by_the_responder_on_the_default_port(alternate):
    """The run of issue 8 item 9: the responder alone on its host, STUN on 3478, latency's UDP samples
    beside it (with `--alternate` they get the responder's largest answers)."""
    with Lab(nat="masquerade", stun="none") as lab:
        responder = Responder(lab, *(["--alternate", lab.stun_alternate] if alternate else []))
        completed, report = run_xcheck("run", "--format", "json", "--stun", RESPONDER, "--iperf", RESPONDER,
                                       "--no-throughput", "--timeout", "10", lab=lab)
        # The reference client (padded: the responder never amplifies) against the same responder.
        reference = parse_natdiscovery(lab.run(lab.onprem, ["turnutils_natdiscovery", "-m", "-f", "-P", RESPONDER],
                                               timeout=30).stdout) if alternate else None
        counts = responder.stop()
    assert completed.returncode == 0, completed.stderr
    checks = checks_of(report)
    assert checks["stun_binding"]["status"] == "ok", checks["stun_binding"]["detail"]
    nat = report["facts"]["nat"]
    assert nat["udp_blocked"] is False
    assert (nat["reflexive_address"], nat["detected"]) == (lab.router_wan_address, True)
    if alternate:
        assert checks["nat_behavior"]["status"] == "ok", checks["nat_behavior"]["detail"]
        assert reference["mapping"] is not None and reference["filtering"] is not None, reference["raw"]
        assert (nat["mapping"], nat["filtering"]) == (reference["mapping"], reference["filtering"])
    else:
        assert checks["nat_behavior"]["reason"] == "not_supported"  # one address: no OTHER-ADDRESS
    assert report["facts"]["latency"]["udp"]["rtt_p50_seconds"] is not None
    assert counts.get("answered", 0) > 0 and "too_large" not in counts, counts


@pytest.mark.parametrize("nat_mode", ["public", "masquerade", "random-fully"])
def test_rfc5780_discovery_against_the_responder_matches_turnutils_against_coturn(nat_mode):
    with Lab(nat=nat_mode) as lab:
        # coturn holds 3478 and 3479: the responder's STUN moves aside, its alternate port is the next one.
        responder = Responder(lab, "--stun-port", "3490", "--alternate", lab.stun_alternate)
        completed, report = run_xcheck("run", "--format", "json", "--stun", f"{RESPONDER}:3490", "--timeout", "10",
                                       lab=lab)
        counts = responder.stop()
        reference = lab.natdiscovery(bind_local=nat_mode == "public")
    assert completed.returncode == 0, completed.stderr
    checks = checks_of(report)
    assert checks["stun_binding"]["status"] == "ok", checks["stun_binding"]["detail"]
    assert checks["nat_behavior"]["status"] == "ok", checks["nat_behavior"]["detail"]
    nat = report["facts"]["nat"]
    assert nat["udp_blocked"] is False and nat["detected"] is (nat_mode != "public")
    assert nat["reflexive_address"] == (lab.onprem_address if nat_mode == "public" else lab.router_wan_address)
    assert reference["mapping"] is not None and reference["filtering"] is not None, reference["raw"]
    assert (nat["mapping"], nat["filtering"]) == (reference["mapping"], reference["filtering"])
    assert counts.get("answered", 0) > 0 and "too_large" not in counts, counts
