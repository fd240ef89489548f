"""Our iperf3 client against a stock `iperf3 -s` (3.12) on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port

from checks.transport import iperf3_client
from checks.transport.iperf3_client import STALL_SECONDS, Failure, TestSpec, run_test

LOOPBACK = "127.0.0.1"
pytestmark = pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3 (apt install iperf3)")


def wait_listening(port: int, timeout: float = 30.0) -> None:
    """Wait for a TCP listener on 127.0.0.1:port without connecting: a probe connection would be
    taken by iperf3 for a client (and a stock server re-opens its listener after every test)."""
    wanted = f"0100007F:{port:04X}"
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port}")


class StockServer:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.log = tmp_path / f"iperf3-s-{self.port}.json"
        self.process = subprocess.Popen(
            ["iperf3", "-s", "-B", LOOPBACK, "-p", str(self.port), "-J", "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port)
        self.tests = 0  # specs handed out: the tests whose reports the server will write, in order

    def spec(self, **fields) -> TestSpec:
        wait_listening(self.port)
        self.tests += 1
        return TestSpec(LOOPBACK, self.port, **fields)

    def reports(self) -> list[dict]:
        """The server's own JSON report of each finished test."""
        text, reports, at = self.log.read_text() if self.log.exists() else "", [], 0
        decoder = json.JSONDecoder()
        while at < len(text):
            if text[at].isspace():
                at += 1
                continue
            report, at = decoder.raw_decode(text, at)
            reports.append(report)
        return reports

    def last_report(self, timeout: float = 30.0) -> dict:
        """The report of the latest test from spec(), once written: the server writes it after our
        client is done, later the busier the machine, and an earlier one must not pass for it."""
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            try:
                reports = self.reports()
            except json.JSONDecodeError:  # caught mid-write
                reports = []
            if len(reports) >= self.tests:
                return reports[self.tests - 1]
            time.sleep(0.1)
        raise TimeoutError(f"the server wrote no report of test {self.tests}")

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot die of SIGKILL until continued
            self.process.kill()
        self.process.wait(5)


@pytest.fixture
def start_server(tmp_path):
    servers: list[StockServer] = []

    def start() -> StockServer:
        servers.append(StockServer(tmp_path))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    server = StockServer(tmp_path_factory.mktemp("iperf3"))
    yield server
    server.stop()


def run(spec: TestSpec, timeout: float = 15.0, **kwargs):
    started = time.monotonic()
    result = run_test(spec, deadline=started + timeout, **kwargs)
    return result, time.monotonic() - started


@pytest.mark.parametrize("streams", [1, 4])
def test_upload_figures_are_the_servers(shared_server, streams):
    progress: list[tuple[float, float]] = []
    result, _ = run(shared_server.spec(duration_seconds=1.5, streams=streams),
                    progress=lambda elapsed, rate: progress.append((elapsed, rate)))
    assert result.ok, result.detail
    assert result.failure is None and result.detail == "" and not result.partial
    report = shared_server.last_report()["end"]["sum_received"]
    assert result.bytes_received == report["bytes"] > 0
    assert result.duration_seconds == pytest.approx(report["seconds"], abs=1e-5)
    assert result.bits_per_second == pytest.approx(report["bits_per_second"], rel=1e-5)
    assert result.retransmits is not None and result.retransmits >= 0
    assert len(result.server_results["streams"]) == streams
    assert set(result.local_cpu_percent) == {"total", "user", "system"}
    assert result.remote_cpu_percent["total"] > 0 and result.cpu_limited in (True, False)
    assert progress and all(rate > 0 for _, rate in progress)
    assert len(result.intervals) == len(progress)
    # We count what we wrote by the last tick; the server what it read before TEST_END. What the
    # sockets held in flight in between is a larger share of a short test the busier the machine.
    assert sum(b for _, b in result.intervals) == pytest.approx(result.bytes_received, rel=0.5)


@pytest.mark.parametrize("streams", [1, 4])
def test_download_figures_agree_with_the_servers(shared_server, streams):
    result, _ = run(shared_server.spec(duration_seconds=1.0, streams=streams, reverse=True))
    assert result.ok, result.detail
    report = shared_server.last_report()["end"]["sum_sent"]
    # We count what we read, including what was in flight at TEST_END, as iperf3 -c -R does.
    assert result.bytes_received == pytest.approx(report["bytes"], rel=0.02)
    assert 1.0 <= result.duration_seconds < 1.0 + 10  # never short; late by what a busy machine adds
    assert result.retransmits == report["retransmits"]
    assert result.bits_per_second == pytest.approx(result.bytes_received * 8 / result.duration_seconds)


def test_omit_period_is_left_out_on_both_sides(shared_server):
    result, elapsed = run(shared_server.spec(duration_seconds=1.0, omit_seconds=1))
    assert result.ok, result.detail
    assert elapsed >= 2.0
    report = shared_server.last_report()
    assert report["start"]["test_start"]["omit"] == 1
    assert result.bytes_received == report["end"]["sum_received"]["bytes"]
    # The server's measuring time, which leaves the omitted second out of all that passed.
    assert result.duration_seconds == pytest.approx(report["end"]["sum_received"]["seconds"], abs=1e-5)
    assert 0 < result.duration_seconds <= elapsed - 1.0
    # Intervals are timed from TEST_START and cover the omit period too, up to the test's end (or
    # a sliver of an interval before it, which is not ticked).
    assert result.intervals[0][0] >= 0.5 and result.intervals[-1][0] >= 2.0 - 0.1 * 0.5


def test_a_busy_server_denies_access(shared_server):
    first: list = []
    running = threading.Event()
    holder = threading.Thread(target=lambda: first.append(run(shared_server.spec(duration_seconds=3),
                                                              progress=lambda *_: running.set())[0]))
    holder.start()
    try:
        assert running.wait(30), "the first test never started"
        result, elapsed = run(TestSpec(LOOPBACK, shared_server.port, duration_seconds=1))
        assert result.failure == Failure.ACCESS_DENIED and not result.ok, result.detail
        # Turned away at once, not at the deadline (15 s); generous for a loaded machine.
        assert not result.partial and result.bytes_received is None and elapsed < 10
    finally:
        holder.join(30)
    assert first[0].ok, first[0].detail


@pytest.mark.parametrize("reverse", [False, True])
def test_a_server_killed_mid_test_leaves_partial_figures(start_server, reverse):
    server = start_server()
    # Killed at the first tick: mid-test, however long a busy machine took to set the test up.
    result, elapsed = run(server.spec(duration_seconds=10, reverse=reverse),
                          progress=lambda *_: server.signal(signal.SIGKILL))
    assert result.failure == Failure.SERVER_GONE and not result.ok, result.detail
    assert result.partial and result.bytes_received > 0 and result.bits_per_second > 0
    assert 0 < result.duration_seconds < 10 and elapsed < 10  # ended by the death, not by the test's length


@pytest.mark.parametrize("reverse", [False, True])
def test_a_stopped_server_is_a_stall(start_server, reverse):
    server = start_server()
    spec = server.spec(duration_seconds=STALL_SECONDS + 1.5, reverse=reverse)
    # Stopped at the first tick: mid-test, however long a busy machine took to set the test up.
    result, elapsed = run(spec, timeout=spec.duration_seconds + 3, progress=lambda *_: server.signal(signal.SIGSTOP))
    assert result.failure == Failure.STALLED and not result.ok, result.detail
    assert result.partial and result.bytes_received > 0
    assert elapsed <= spec.duration_seconds + 3 + 10  # bounded by the deadline; generous for a loaded machine


def test_a_stall_after_test_end_is_bounded_by_the_deadline(start_server, monkeypatch):
    # Unbounded by the deadline, the wait for the results would last a minute, far beyond any bound below.
    monkeypatch.setattr(iperf3_client, "RESULTS_TIMEOUT_SECONDS", 60.0)
    server = start_server()
    # Stopped at the first tick (at the latest the one at the test's end), too late in the test for a
    # stall mid-test (STALL_SECONDS): the test ends as planned, and it is the results that never come.
    result, elapsed = run(server.spec(duration_seconds=1.0), timeout=3.0, progress=lambda *_: server.signal(signal.SIGSTOP))
    assert result.failure == Failure.STALLED and result.partial, result.detail
    assert elapsed <= 3.0 + 10  # the deadline (3 s) cut the wait short; generous for a loaded machine


def test_a_listener_that_never_answers_is_no_response():
    with socket.create_server((LOOPBACK, 0)) as silent:  # the kernel accepts; nobody reads
        result, elapsed = run(TestSpec(LOOPBACK, silent.getsockname()[1], duration_seconds=1), timeout=2.0)
    assert result.failure == Failure.NO_RESPONSE and not result.partial, result.detail
    assert 1.5 <= elapsed <= 2.0 + 10  # waited until the deadline; generous for a loaded machine


def test_nothing_listening_is_a_refused_connection():
    result, elapsed = run(TestSpec(LOOPBACK, free_port(), duration_seconds=1))
    assert result.failure == Failure.CONNECTION_REFUSED and "refused" in result.detail
    assert result.intervals == () and result.local_cpu_percent is None and elapsed < 10  # at once, not at the deadline


def test_window_is_sent_and_accepted(shared_server):
    result, _ = run(shared_server.spec(duration_seconds=1.0, window_bytes=1 << 20))
    assert result.ok, result.detail
    assert shared_server.last_report()["start"]["sock_bufsize"] == 1 << 20


def test_no_iperf3_process_is_left_behind():
    own = [p for p in Path("/proc").iterdir() if p.name.isdigit() and (p / "stat").exists()]
    children = []
    for proc in own:
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if "(iperf3)" in stat and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            children.append(proc.name)
    # The module-scoped server is still running; nothing else may be.
    assert len(children) <= 1
