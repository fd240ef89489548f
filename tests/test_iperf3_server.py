"""Our iperf3 server against the stock `iperf3 -c` (3.12) and against our own client, on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from agent.responder.iperf3_server import Iperf3Server
from checks.transport.iperf3_client import Failure, TestSpec, run_test

LOOPBACK = "127.0.0.1"
pytestmark = pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3 (apt install iperf3)")


class ServerThread:
    """Our asyncio server on its own loop in a thread, so that tests can block on subprocesses."""

    def __init__(self, **options) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Iperf3Server(LOOPBACK, 0, logger=logging.getLogger("test.iperf3"), **options)
        self._call(self.server.start())
        self.port = self.server.port

    def _call(self, coroutine, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self._call(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture
def server():
    running = ServerThread(max_duration_seconds=30)
    yield running
    running.close()


def until_not_busy(attempt, busy, timeout: float = 30.0):
    """attempt() again while our server turns it away as busy: it takes a new test only once the last
    one's clean-up is done, which on a loaded machine can take a while (stock iperf3 -s accepts only
    when idle, so its next client waits instead)."""
    until = time.monotonic() + timeout
    while busy(outcome := attempt()) and time.monotonic() < until:
        time.sleep(0.05)
    return outcome


def wait_test_running(port: int, timeout: float = 30.0) -> None:
    """Wait until a client's test data flows to our server on 127.0.0.1:port (past TEST_START)."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        sockets = subprocess.run(["ss", "-tinH", "state", "established", f"( dport = :{port} )"],
                                 capture_output=True, text=True, timeout=10).stdout
        if any(int(count) > 1_000_000 for count in re.findall(r"bytes_acked:(\d+)", sockets)):
            return
        time.sleep(0.05)
    raise TimeoutError(f"no test data flows to {LOOPBACK}:{port}")


def stock_client(port: int, *args: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess, dict | None]:
    completed = subprocess.run(["iperf3", "-c", LOOPBACK, "-p", str(port), "-J", *args],
                               capture_output=True, text=True, timeout=timeout)
    report = json.loads(completed.stdout) if completed.stdout.strip() else None
    return completed, report


@pytest.mark.parametrize("args", [[], ["-R"], ["-P", "4"], ["-O", "1"], ["-R", "-P", "4"]],
                         ids=["plain", "reverse", "parallel-4", "omit-1", "reverse-parallel-4"])
def test_stock_client_accepts_us(server, args):
    completed, report = stock_client(server.port, "-t", "1", *args)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "error" not in report
    end = report["end"]
    for side in ("sum_received", "sum_sent"):
        figures = end[side]
        assert figures["bits_per_second"] > 0
        assert figures["bits_per_second"] == pytest.approx(figures["bytes"] * 8 / figures["seconds"], rel=1e-3)
    # About the test's length (in seconds, not a unit off); the timers of a busy machine run late.
    assert 0.5 <= end["sum_received"]["seconds"] < 1.0 + 10
    streams = 4 if "-P" in args else 1
    assert len(end["streams"]) == streams
    # Our figures reached the client: for upload we are the receiver, for -R the sender.
    assert end["cpu_utilization_percent"]["remote_total"] > 0
    if "-R" in args:
        assert end["sum_sent"]["retransmits"] >= 0
        # iperf3 -c stops reading at EXCHANGE_RESULTS: what was still in flight counts on our side only.
        # How much that is depends on the sockets' buffers against the rate, which a loaded machine lowers.
        assert end["sum_received"]["bytes"] <= end["sum_sent"]["bytes"]
        assert end["sum_received"]["bytes"] == pytest.approx(end["sum_sent"]["bytes"], rel=0.5)
    elif "-O" not in args:  # each side times its own omit period, so with -O the two need not agree
        assert end["sum_received"]["bytes"] <= end["sum_sent"]["bytes"]
        assert end["sum_received"]["bytes"] == pytest.approx(end["sum_sent"]["bytes"], rel=0.5)  # in flight: see above


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("streams", [1, 4])
def test_our_client_against_our_server(server, reverse, streams):
    spec = TestSpec(LOOPBACK, server.port, duration_seconds=1.0, streams=streams, reverse=reverse)
    result = run_test(spec, deadline=time.monotonic() + 10)
    assert result.ok, result.detail
    assert result.bits_per_second > 0 and 0.5 <= result.duration_seconds < 1.0 + 10  # timers of a busy machine run late
    assert [s["id"] for s in result.server_results["streams"]] == [1, 3, 4, 5][:streams]
    if reverse:
        assert result.retransmits is not None


def test_second_client_while_busy_is_denied(server):
    holder = subprocess.Popen(["iperf3", "-c", LOOPBACK, "-p", str(server.port), "-t", "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_test_running(server.port)
        completed = subprocess.run(["iperf3", "-c", LOOPBACK, "-p", str(server.port), "-t", "1"],
                                   capture_output=True, text=True, timeout=10)
        assert completed.returncode != 0
        assert "the server is busy" in completed.stdout + completed.stderr
        result = run_test(TestSpec(LOOPBACK, server.port, duration_seconds=1), deadline=time.monotonic() + 5)
        assert result.failure == Failure.ACCESS_DENIED
    finally:
        out, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, out + err


def test_parameters_out_of_bounds_get_server_error(server):
    completed = subprocess.run(["iperf3", "-c", LOOPBACK, "-p", str(server.port), "-t", "31"],
                               capture_output=True, text=True, timeout=10)
    assert completed.returncode != 0 and "test duration too long" in completed.stdout + completed.stderr
    result = until_not_busy(lambda: run_test(TestSpec(LOOPBACK, server.port, duration_seconds=40),
                                             deadline=time.monotonic() + 5), lambda r: r.failure == Failure.ACCESS_DENIED)
    assert result.failure == Failure.SERVER_ERROR and "IEDURATION" in result.detail
    completed = until_not_busy(lambda: subprocess.run(["iperf3", "-c", LOOPBACK, "-p", str(server.port), "-t", "1", "-u"],
                                                      capture_output=True, text=True, timeout=10),
                               lambda c: "the server is busy" in c.stdout + c.stderr)
    assert completed.returncode != 0 and "not implemented" in completed.stdout + completed.stderr


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 20,
    b"a" * 36 + b"\0" + b"\xff\xff\xff\xff",  # good cookie, 4 GiB of parameters announced
    b"a" * 36 + b"\0" + b"\x00\x00\x00\x03[1]",
    b"a" * 36 + b"\0" + b"\x00\x00\x00\x0f{\"parallel\":\"x\"}",
    b"a" * 36 + b"\0",  # then silence and close
    b"",
])
def test_garbage_is_dropped_and_the_server_keeps_serving(server, garbage, caplog):
    with socket.create_connection((LOOPBACK, server.port), timeout=5) as sock:
        sock.sendall(garbage)
        sock.settimeout(1)  # then we hang up, whatever the server did
        try:
            while sock.recv(1024):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
    result = until_not_busy(lambda: run_test(TestSpec(LOOPBACK, server.port, duration_seconds=0.5),
                                             deadline=time.monotonic() + 10), lambda r: r.failure == Failure.ACCESS_DENIED)
    assert result.ok, result.detail


def test_close_aborts_a_running_test():
    running = ServerThread()
    client = subprocess.Popen(["iperf3", "-c", LOOPBACK, "-p", str(running.port), "-t", "30"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_test_running(running.port)
        started = time.monotonic()
        running.close()
        assert time.monotonic() - started < 10  # aborted, not waited for (30 s); generous for a loaded machine
        assert client.wait(30) != 0  # the client sees its server go
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


def test_a_next_test_arriving_before_the_last_goodbye_is_served_not_turned_away(server, monkeypatch):
    """xcheck's stages run back to back: the next one may connect before the server has read the
    last one's IPERF_DONE. Made deterministic here: the first client connects the second test at the
    moment it would say goodbye, and says it only after."""
    from checks.protocols import iperf3
    from checks.transport import iperf3_client

    second: list = []
    send = iperf3_client._ClientTest._send

    def send_late_goodbye(self, data: bytes) -> None:
        if data == iperf3.encode_state(iperf3.State.IPERF_DONE) and not second:
            second.append(None)  # the second test says goodbye at once
            second[0] = run_test(TestSpec(LOOPBACK, server.port, duration_seconds=0.5), deadline=time.monotonic() + 30)
        send(self, data)

    monkeypatch.setattr(iperf3_client._ClientTest, "_send", send_late_goodbye)
    first = run_test(TestSpec(LOOPBACK, server.port, duration_seconds=0.5), deadline=time.monotonic() + 60)
    assert first.ok, first.detail
    assert second[0].ok, second[0].detail  # never ACCESS_DENIED: the slot was about to free
