"""CPU accounting for `cpu_limited` (issue 9, item 6): only the threads that pump a test's streams
count, so other work in a long-running process (here a thread spinning in Python for the whole test,
as a busy web server or another check would) cannot make a measurement look limited by this host's
CPU, nor inflate the cpu_util the responder reports to its client; what the pumps burn does count.

Every assertion is a relation between CPU clocks, which do not advance while a thread waits for a
core, so it holds however loaded the machine is: a meter's reading never exceeds the CPU its own
pumps' threads used, as each of them reads it itself when it ends.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
from test_iperf3_server import ServerThread

from checks.protocols.iperf3 import PeerResults
from checks.transport.iperf3_client import TestSpec, run_test
from checks.transport.streams import CpuMeter, CpuTimes, StreamPump, close_pumps

LOOPBACK = "127.0.0.1"
# Bounds that only prove "does not hang": far above what a loaded 2-core machine needs.
GENEROUS_SECONDS = 30.0
# Float sums of clock readings in seconds: far below any CPU a thread can use.
ROUNDING_SECONDS = 1e-6
# CPU a pump's thread uses after its own last reading and before the spy's: a few statements.
AFTER_LAST_READING_SECONDS = 0.005


@dataclass
class CpuSpy:
    """Every StreamPump's own CPU (time.thread_time() in its thread, read as it ends) and every
    CpuMeter's pumps and readings (CpuMeter.used(), which its percent() is made of)."""

    own_seconds: dict[StreamPump, float] = field(default_factory=dict)
    meters: dict[CpuMeter, tuple[list[StreamPump], list[CpuTimes]]] = field(default_factory=dict)

    def own(self, pumps: list[StreamPump]) -> float:
        for pump in pumps:
            if pump.ident is not None:
                pump.join(GENEROUS_SECONDS)
                assert not pump.is_alive(), f"{pump.name} did not end"
        return sum(self.own_seconds.get(pump, 0.0) for pump in pumps)

    def assert_meters_count_only_their_pumps(self) -> None:
        assert self.meters, "no CpuMeter was used"
        for pumps, readings in self.meters.values():
            own = self.own(pumps)
            assert readings
            for used in readings:
                assert used.total <= own + ROUNDING_SECONDS, (used, own)


@pytest.fixture
def cpu_spy(monkeypatch):
    spy = CpuSpy()
    run, init, used = StreamPump.run, CpuMeter.__init__, CpuMeter.used

    def spied_run(pump: StreamPump) -> None:
        try:
            run(pump)
        finally:
            spy.own_seconds[pump] = time.thread_time()

    def spied_init(meter: CpuMeter, pumps) -> None:
        init(meter, pumps)
        spy.meters[meter] = (list(pumps), [])

    def spied_used(meter: CpuMeter) -> CpuTimes:
        reading = used(meter)
        spy.meters[meter][1].append(reading)
        return reading

    monkeypatch.setattr(StreamPump, "run", spied_run)
    monkeypatch.setattr(CpuMeter, "__init__", spied_init)
    monkeypatch.setattr(CpuMeter, "used", spied_used)
    return spy


class Spinner(threading.Thread):
    """Other work in the process: a pure-Python busy loop, holding the GIL as such work does."""

    def __init__(self) -> None:
        super().__init__(name="spinner", daemon=True)
        self.stopping = False
        self.cpu_seconds = 0.0

    def run(self) -> None:
        while not self.stopping:
            pass
        self.cpu_seconds = time.thread_time()


@pytest.fixture
def spinner():
    thread = Spinner()
    thread.start()
    yield thread
    thread.stopping = True
    thread.join(GENEROUS_SECONDS)


@pytest.fixture
def responder():
    running = ServerThread()
    yield running
    running.close()


@pytest.mark.parametrize("reverse", [False, True], ids=["upload", "download"])
def test_a_busy_thread_elsewhere_in_the_process_is_not_counted(cpu_spy, spinner, responder, reverse):
    """Our client and the responder's server in one process with a spinning thread: neither side's
    CPU figure holds the spinner's CPU (nor the other side's pumps), so the test is not cpu_limited."""
    result = run_test(TestSpec(LOOPBACK, responder.port, duration_seconds=1, reverse=reverse),
                      deadline=time.monotonic() + GENEROUS_SECONDS)
    spinner.stopping = True
    spinner.join(GENEROUS_SECONDS)
    assert result.ok, result.detail
    assert spinner.cpu_seconds > 0  # it ran during the test, and RUSAGE_SELF would have counted it
    cpu_spy.assert_meters_count_only_their_pumps()
    assert len(cpu_spy.meters) == 2  # ours and the responder's
    # Ours: a pump waits for the spinner's GIL after every block it moves, so it cannot use a core.
    assert result.cpu_limited is False, result.local_cpu_percent
    # The responder's cpu_util, as its client reads it. Its meter's span holds the seconds it reports
    # (it starts before TEST_START is timed and reads after TEST_END is), so at most its pumps' CPU over them.
    [server_pumps] = [pumps for pumps, _ in cpu_spy.meters.values() if pumps[0].sending == reverse]
    reported_seconds = PeerResults.from_json(result.server_results).measuring_seconds
    assert result.remote_cpu_percent["total"] / 100 * reported_seconds <= cpu_spy.own(server_pumps) + ROUNDING_SECONDS


def _drain(sock: socket.socket, paused: threading.Event) -> None:
    with sock:
        while True:
            paused.wait()
            if not sock.recv(1 << 20):
                return


def test_a_meter_counts_what_its_pump_burns(cpu_spy):
    with socket.create_server((LOOPBACK, 0)) as listener:
        sending = socket.create_connection(listener.getsockname(), timeout=GENEROUS_SECONDS)
        receiving, _ = listener.accept()
    sending.settimeout(None)
    reading = threading.Event()
    reading.set()
    sink = threading.Thread(target=_drain, args=(receiving, reading), daemon=True)  # not a pump: not metered
    sink.start()
    pump = StreamPump(sending, sending=True, block_bytes=128 * 1024, name="burning pump")
    meter = CpuMeter([pump])
    pump.start()
    try:
        until = time.monotonic() + GENEROUS_SECONDS
        while pump.bytes < 16 << 20 and pump.is_alive() and time.monotonic() < until:
            time.sleep(0.01)
        assert pump.bytes >= 16 << 20, pump.error
        reading.clear()  # the sink stops reading: the pump soon blocks in send(), and is read all the same
        live = meter.used()  # from this thread, while the pump's thread lives
    finally:
        reading.set()
        close_pumps([pump])
        sink.join(GENEROUS_SECONDS)
    ended = meter.used()
    own = cpu_spy.own([pump])
    assert 0 < live.total <= ended.total
    # All of what its thread used, once it ended, but for the statements after its last reading.
    assert own - AFTER_LAST_READING_SECONDS <= ended.total <= own + ROUNDING_SECONDS
    # The kernel's user/system split of that time, in whole clock ticks (one each may be cut off).
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert ended.total - 2 * tick - AFTER_LAST_READING_SECONDS <= ended.user + ended.system \
        <= ended.total + AFTER_LAST_READING_SECONDS
    percent = meter.percent()
    assert percent["total"] > 0 and set(percent) == {"total", "user", "system"}
