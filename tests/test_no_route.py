"""A host without a route to its targets: every probe that would send says so as `network_error`
(the local stack refused: ENETUNREACH), with the kernel's words, and none crashes or calls it
silence. Run from the lab's onprem namespace with its default route deleted, so nothing leaves it."""

from __future__ import annotations

import pytest
from conftest import needs_lab, run_xcheck
from lab import Lab

# Every check that sends toward --stun, --gateway or --iperf (throughput only when it is on).
SENDING_CHECKS = ("stun_binding", "ike_udp500", "ike_natt_udp4500", "ikev1_udp500", "esp", "tls_tcp443", "sstp",
                  "gateway_health", "path_mtu", "latency")


@pytest.fixture(scope="module")
def no_route():
    with Lab(stun="none") as lab:
        lab.run(lab.onprem, ["ip", "route", "del", "default"], check=True)
        yield lab


def run(lab: Lab, *extra: str) -> tuple[dict[str, dict], dict]:
    """The checks by name, and the facts."""
    target = lab.stun_primary
    completed, report = run_xcheck("run", "--stun", target, "--gateway", target, "--iperf", target, *extra,
                                   "--format", "json", lab=lab)
    assert completed.returncode == 0, completed.stderr
    return {check["name"]: check for check in report["checks"]}, report["facts"]


@needs_lab
@pytest.mark.lab
def test_every_probe_says_the_host_has_no_route(no_route):
    checks, facts = run(no_route, "--no-throughput")
    assert not [name for name, check in checks.items() if check["status"] == "error"], checks
    ended = {name: (checks[name]["status"], checks[name]["reason"]) for name in SENDING_CHECKS}
    assert ended == {name: ("fail", "network_error") for name in SENDING_CHECKS}, checks
    # The kernel's own words, where the check has them from its socket.
    for name in ("stun_binding", "ike_udp500", "esp", "tls_tcp443", "path_mtu"):
        assert "Network is unreachable" in checks[name]["detail"], checks[name]
    assert "no route" in checks["latency"]["detail"]
    # Nothing went out, so nothing is claimed about the path or the far end: unknown, never "blocked".
    assert checks["nat_behavior"]["reason"] == "dependency_unavailable"
    assert facts["nat"]["udp_blocked"] is None
    assert {name: fact["reachable"] for name, fact in facts["reachability"].items()} == \
        dict.fromkeys(facts["reachability"], None)


@needs_lab
@pytest.mark.lab
def test_throughput_says_so_too_without_retrying(no_route):
    checks, _ = run(no_route, "--throughput-seconds", "1")
    assert (checks["throughput"]["status"], checks["throughput"]["reason"]) == ("fail", "network_error"), checks
    # Refused before any stage: nothing was attempted, so there is no evidence (no stages) at all.
    assert [result["evidence"] for result in checks["throughput"]["results"]] == [None]
