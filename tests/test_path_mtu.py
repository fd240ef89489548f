"""Path MTU check (checks/probes/path_mtu.py): the size search against simulated paths, the ICMP
error parser, and real paths in the lab (tests/lab.py) whose router's WAN link MTU is set to
1500, 1400 and 1300, read as the facts the rule set compares with Azure's limit.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
import time
from pathlib import Path
from collections.abc import Sequence

import pytest
from conftest import LAB_UNAVAILABLE
from hypothesis import given
from hypothesis import strategies as st
from lab import Lab
from run_probe import run_of

from agent.facts import derive_facts
from agent.runner import run_checks
from checks.contract import Reason, Status
from checks.targets import Targets
from checks.probes import path_mtu
from checks.probes.path_mtu import IPV4_MIN_MTU, RoundResult, search, sizes_between
from checks.transport.icmp_errors import IcmpError


RUN_PROBE = str(Path(__file__).with_name("run_probe.py"))


class SimulatedPath:
    """A path whose MTU is `mtu`: a router names it in "fragmentation needed" (if `icmp`), the
    target answers at most `answers_per_round` packets a round (ICMP rate limits), largest first."""

    method = "simulated"

    def __init__(self, mtu: int, icmp: bool = True, answers_per_round: int | None = None,
                 silence_means_too_big: bool = True) -> None:
        self.mtu, self.icmp, self.answers_per_round = mtu, icmp, answers_per_round
        self.silence_means_too_big = silence_means_too_big
        self.min_round_wait_seconds = 0.0
        self.rounds: list[list[int]] = []

    async def round(self, sizes: Sequence[int], wait: float) -> RoundResult:
        self.rounds.append(list(sizes))
        result = RoundResult(rtt_seconds=0.001)
        budget = self.answers_per_round
        for size in sorted(sizes, reverse=True):
            if size > self.mtu:
                if self.icmp:
                    result.too_big[size] = self.mtu
            elif budget is None or budget > 0:
                result.passed.add(size)
                budget = None if budget is None else budget - 1
        return result


def run_search(path: SimulatedPath, ceiling: int = 1500):
    return asyncio.run(search(path, IPV4_MIN_MTU, ceiling, lambda: 10.0))


# -- the search ----------------------------------------------------------------------------------


@given(st.integers(0, 2000), st.integers(1, 2000), st.integers(1, 16))
def test_sizes_between(low, span, count):
    sizes = sizes_between(low, low + span, count)
    assert sizes[-1] == low + span and len(sizes) <= count
    assert all(low < s <= low + span for s in sizes) and sizes == sorted(set(sizes))


@given(st.integers(IPV4_MIN_MTU, 9000), st.booleans())
def test_search_finds_every_path_mtu(mtu, icmp):
    path = SimulatedPath(mtu, icmp=icmp)
    found = run_search(path, ceiling=9000)
    assert (found.path_mtu, found.largest_passed, found.upper_bound) == (mtu, mtu, mtu)
    assert found.rounds <= (2 if icmp else 6)  # a router that names the MTU makes it two rounds


def test_a_full_sized_path_takes_one_round():
    found = run_search(SimulatedPath(1500))
    assert (found.path_mtu, found.rounds) == (1500, 1)


@given(st.integers(IPV4_MIN_MTU, 1500), st.integers(1, 4))
def test_rate_limited_answers_are_not_taken_for_too_big(mtu, answers_per_round):
    path = SimulatedPath(mtu, answers_per_round=answers_per_round, silence_means_too_big=False)
    found = run_search(path)
    assert found.path_mtu == mtu


def test_silence_without_icmp_feedback_never_gives_a_path_mtu():
    """Where silence proves nothing and no router speaks, the result is bounds, not a number."""
    path = SimulatedPath(1300, icmp=False, answers_per_round=1, silence_means_too_big=False)
    found = run_search(path)
    assert found.path_mtu is None and found.largest_passed <= 1300 and found.upper_bound == 1500


def test_a_target_that_answers_nothing_stops_after_one_round():
    path = SimulatedPath(0)
    found = run_search(path)
    assert (found.largest_passed, found.path_mtu, len(path.rounds)) == (None, None, 1)
    assert IPV4_MIN_MTU in path.rounds[0]


# -- the ICMP error queue and packets -------------------------------------------------------------


def test_icmp_error_frag_needed():
    # struct sock_extended_err (EMSGSIZE, origin ICMP, type 3 code 4, info = MTU 1300) + sockaddr_in offender
    control = struct.pack("=IBBBBII", 90, 2, 3, 4, 0, 1300, 0) + struct.pack("=HH4s8x", socket.AF_INET, 0,
                                                                             socket.inet_aton("10.0.0.1"))
    error = IcmpError.parse(control, b"quoted")
    assert (error.from_icmp, error.icmp_type, error.icmp_code, error.info, error.offender) == (True, 3, 4, 1300,
                                                                                             "10.0.0.1")


@given(st.binary(max_size=64))
def test_icmp_error_parser_takes_any_bytes(control):
    try:
        IcmpError.parse(control, b"")
    except ValueError:
        pass


def test_echo_request_checksum_as_scapy_computes_it():
    from scapy.layers.inet import ICMP

    prober = path_mtu.EchoProber(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), time.monotonic, raw=True)
    packet = prober._packet(5, 100)
    assert len(packet) == 100 - 20
    reference = ICMP(packet)
    del reference.chksum
    assert ICMP(bytes(reference)).chksum == ICMP(packet).chksum


def test_no_gateway_is_skipped():
    (run,) = asyncio.run(run_checks([path_mtu.CHECK], Targets(), 2.0))
    assert (run.status, run.reason, run.detail, run.results) == (Status.SKIPPED, Reason.NO_TARGET,
                                                                 "no gateway given (--gateway)", ())


# -- lab -------------------------------------------------------------------------------------------


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


# The search ends once every size is settled (well under a second in the lab): the deadline only
# bounds it, generously for a loaded machine. Where nothing answers, the search stops after its
# first round whatever the deadline.
MEASURE_TIMEOUT_SECONDS = 20.0


def measure(lab: Lab, timeout: float = MEASURE_TIMEOUT_SECONDS, as_user: Sequence[str] = ()) -> dict:
    """The check's run toward the lab's one gateway, as tests/run_probe.py prints it."""
    completed = lab.run(lab.onprem, [*as_user, sys.executable, RUN_PROBE, "path_mtu",
                                     "--gateway", lab.stun_primary, "--timeout", str(timeout)])
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def gateway_of(run: dict) -> dict:
    (gateway,) = run["results"]
    return gateway


def path_mtu_facts(run: dict) -> dict:
    """facts.path_mtu as xcheck derives it from the run's typed evidence."""
    return derive_facts([run_of(run)])["path_mtu"]


def set_wan_mtu(lab: Lab, mtu: int) -> None:
    lab.run(lab.router, ["ip", "link", "set", "dev", lab.router_wan_if, "mtu", str(mtu)], check=True)


@pytest.mark.lab
@pytest.mark.skipif(LAB_UNAVAILABLE is not None, reason=LAB_UNAVAILABLE or "")
def test_lab_path_mtu_follows_the_router_link():
    with Lab(nat="masquerade", stun="none") as lab:
        # 1300 before 1400: the probes ignore the path MTU the kernel cached from the router's ICMP.
        for mtu in (1500, 1300, 1400):
            set_wan_mtu(lab, mtu)
            result = measure(lab)
            entry = gateway_of(result)["evidence"]
            assert result["status"] == "ok", result
            assert (entry["path_mtu_bytes"], entry["method"]) == (mtu, "icmp_echo")
            # The rule set compares these with Azure's 1400 bytes and MSS 1350 (tests/test_verdicts.py).
            assert path_mtu_facts(result) == {"bytes": mtu, "tcp_mss_bytes": mtu - 40, "reason": "success",
                                              "detail": result["detail"]}
            assert result["duration_seconds"] < MEASURE_TIMEOUT_SECONDS / 2  # settled, not cut off by the deadline

        # Without privileges: a ping socket where net.ipv4.ping_group_range allows (a new
        # namespace's default, "1 0", allows no one), else UDP probes.
        unprivileged = gateway_of(measure(lab, as_user=AS_NOBODY))
        assert (unprivileged["evidence"]["method"], unprivileged["evidence"]["path_mtu_bytes"]) == ("udp", 1400), \
            unprivileged
        assert unprivileged["detail"].startswith("ICMP echo needs a ping socket")
        lab.run(lab.onprem, ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"], check=True)
        ping_socket = gateway_of(measure(lab, as_user=AS_NOBODY))["evidence"]
        assert (ping_socket["method"], ping_socket["path_mtu_bytes"]) == ("icmp_echo", 1400), ping_socket

        # The router drops the "fragmentation needed" it would send (a PMTU black hole): the
        # kernel would never learn, the search still finds 1300 from the echoes alone.
        set_wan_mtu(lab, 1300)
        lab.router_iptables("-A", "OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP")
        black_hole = measure(lab)
        assert gateway_of(black_hole)["evidence"]["path_mtu_bytes"] == 1300, black_hole
        lab.router_iptables("-D", "OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP")

        # A target that answers no echo (as an Azure gateway): UDP probes, answered by ICMP port unreachable.
        lab.router_iptables("-A", "FORWARD", "-p", "icmp", "--icmp-type", "echo-request", "-j", "DROP")
        udp = measure(lab)
        entry = gateway_of(udp)
        assert (udp["status"], entry["evidence"]["method"], entry["evidence"]["path_mtu_bytes"]) == ("ok", "udp", 1300), udp
        assert entry["detail"].startswith("no answer to ICMP echo; 1300 bytes pass with DF")

        # ...and with UDP dropped as well, nothing answers: no number, only what ICMP allowed.
        lab.router_iptables("-A", "FORWARD", "-p", "udp", "-j", "DROP")
        silent = measure(lab)
        entry = gateway_of(silent)["evidence"]
        assert (silent["status"], silent["reason"]) == ("fail", "no_response"), silent
        assert entry["path_mtu_bytes"] is None and entry["largest_passed_bytes"] is None
        assert entry["upper_bound_bytes"] == 1300  # the router's "fragmentation needed" still counts
        # Not measured, and why beside it: silence, which the rules never read as a small path.
        assert path_mtu_facts(silent) == {"bytes": None, "tcp_mss_bytes": None, "reason": "no_response",
                                          "detail": silent["detail"]}
