"""Our iperf3 server against the stock `iperf3 -c` (3.12) and against our own client, on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import subprocess
import threading
import time

import pytest

from agent.iperf3_server import Iperf3Server
from checks.iperf3 import Failure, TestSpec, run_test

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


def wait_idle() -> None:
    """Our server takes a new test once the last one's clean-up is done; give it that moment."""
    time.sleep(0.2)


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
    assert end["sum_received"]["seconds"] == pytest.approx(1.0, abs=0.2)
    streams = 4 if "-P" in args else 1
    assert len(end["streams"]) == streams
    # Our figures reached the client: for upload we are the receiver, for -R the sender.
    assert end["cpu_utilization_percent"]["remote_total"] > 0
    if "-R" in args:
        assert end["sum_sent"]["retransmits"] >= 0
        # iperf3 -c stops reading at EXCHANGE_RESULTS: what was still in flight counts on our side only.
        assert end["sum_received"]["bytes"] == pytest.approx(end["sum_sent"]["bytes"], rel=0.05)
    elif "-O" not in args:  # each side times its own omit period, so with -O the two need not agree
        assert end["sum_received"]["bytes"] <= end["sum_sent"]["bytes"]
        assert end["sum_received"]["bytes"] == pytest.approx(end["sum_sent"]["bytes"], rel=0.05)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("streams", [1, 4])
def test_our_client_against_our_server(server, reverse, streams):
    spec = TestSpec(LOOPBACK, server.port, duration_seconds=1.0, streams=streams, reverse=reverse)
    result = run_test(spec, deadline=time.monotonic() + 10)
    assert result.ok, result.detail
    assert result.bits_per_second > 0 and result.duration_seconds == pytest.approx(1.0, abs=0.1)
    assert [s["id"] for s in result.server_results["streams"]] == [1, 3, 4, 5][:streams]
    if reverse:
        assert result.retransmits is not None
    wait_idle()


def test_second_client_while_busy_is_denied(server):
    holder = subprocess.Popen(["iperf3", "-c", LOOPBACK, "-p", str(server.port), "-t", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.8)
        completed = subprocess.run(["iperf3", "-c", LOOPBACK, "-p", str(server.port), "-t", "1"],
                                   capture_output=True, text=True, timeout=10)
        assert completed.returncode != 0
        assert "the server is busy" in completed.stdout + completed.stderr
        result = run_test(TestSpec(LOOPBACK, server.port, duration_seconds=1), deadline=time.monotonic() + 5)
        assert result.failure == Failure.ACCESS_DENIED
    finally:
        out, err = holder.communicate(timeout=10)
    assert holder.returncode == 0, out + err


def test_parameters_out_of_bounds_get_server_error(server):
    completed = subprocess.run(["iperf3", "-c", LOOPBACK, "-p", str(server.port), "-t", "31"],
                               capture_output=True, text=True, timeout=10)
    assert completed.returncode != 0 and "test duration too long" in completed.stdout + completed.stderr
    wait_idle()
    result = run_test(TestSpec(LOOPBACK, server.port, duration_seconds=40), deadline=time.monotonic() + 5)
    assert result.failure == Failure.SERVER_ERROR and "IEDURATION" in result.detail
    wait_idle()
    completed = subprocess.run(["iperf3", "-c", LOOPBACK, "-p", str(server.port), "-t", "1", "-u"],
                               capture_output=True, text=True, timeout=10)
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
    wait_idle()
    result = run_test(TestSpec(LOOPBACK, server.port, duration_seconds=0.5), deadline=time.monotonic() + 10)
    assert result.ok, result.detail


def test_close_aborts_a_running_test():
    running = ServerThread()
    client = subprocess.Popen(["iperf3", "-c", LOOPBACK, "-p", str(running.port), "-t", "5"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        started = time.monotonic()
        running.close()
        assert time.monotonic() - started < 3
        assert client.wait(10) != 0  # the client sees its server go
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
