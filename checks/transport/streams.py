"""Bulk TCP data streams, each moved by its own thread, and what the kernel says about them: the
stream pumps, TCP_INFO figures and congestion control, and the CPU the pumps' threads use (iperf3's
cpu_util, and whether this host's CPU limited a measurement). Shared by the iperf3 client
(checks/transport/iperf3_client.py) and the responder's iperf3 server (agent/responder/iperf3_server.py).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Near-saturation, in percent of one core. Our data threads hold the GIL between send()/recv()
# calls, so user time near one core means Python is the bottleneck; the kernel's copies run in
# parallel, so total time counts as limiting only near every core the streams could use.
CPU_LIMITED_PERCENT = 90.0

# struct tcp_info (linux/tcp.h): eight u8 fields, then u32 tcpi_rto ... tcpi_rcv_space (23 of them),
# so tcpi_total_retrans (u32) is at 8 + 23 * 4 = 100; then u64 tcpi_pacing_rate (104) and
# tcpi_max_pacing_rate (112), and u64 tcpi_bytes_acked at 120 (Linux 4.1+). tcpi_rtt, the smoothed
# RTT in microseconds, is the 16th u32: 8 + 15 * 4 = 68.
TCP_INFO_RTT_OFFSET = 68
TCP_INFO_TOTAL_RETRANS_OFFSET = 100
TCP_INFO_BYTES_ACKED_OFFSET = 120
_TCP_INFO_BYTES = 232
_TCP_CONGESTION_NAME_MAX = 16
_CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_limited(cpu: Mapping[str, float], streams: int) -> bool:
    cores = min(streams, os.cpu_count() or 1)
    return cpu["user"] >= CPU_LIMITED_PERCENT or cpu["total"] >= CPU_LIMITED_PERCENT * cores


@dataclass(frozen=True)
class TcpFigures:
    total_retrans: int
    bytes_acked: int | None  # None on kernels before 4.1
    round_trip_seconds: float = 0.0  # smoothed RTT (tcpi_rtt)


def tcp_figures(sock: socket.socket) -> TcpFigures | None:
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
    except OSError:
        return None
    if len(raw) < TCP_INFO_TOTAL_RETRANS_OFFSET + 4:
        return None
    retrans = struct.unpack_from("=I", raw, TCP_INFO_TOTAL_RETRANS_OFFSET)[0]
    acked = None
    if len(raw) >= TCP_INFO_BYTES_ACKED_OFFSET + 8:
        acked = struct.unpack_from("=Q", raw, TCP_INFO_BYTES_ACKED_OFFSET)[0]
    rtt_microseconds = struct.unpack_from("=I", raw, TCP_INFO_RTT_OFFSET)[0]
    return TcpFigures(retrans, acked, rtt_microseconds / 1e6)


def congestion_control(sock: socket.socket) -> str | None:
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, _TCP_CONGESTION_NAME_MAX)
    except OSError:
        return None
    return raw.split(b"\0", 1)[0].decode("ascii", "replace") or None


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds of one thread since it was created."""

    total: float = 0.0
    user: float = 0.0
    system: float = 0.0


def _thread_cpu_times(clock_id: int, native_id: int) -> CpuTimes:
    """A live thread's CPU, readable from any thread of the process, also while that one is blocked.

    The total is the thread's CPU clock (pthread_getcpuclockid): the scheduler's own runtime of the
    thread, to the nanosecond, for one system call. The kernel splits that runtime into user and
    system only at clock ticks, and only the thread itself may ask getrusage(RUSAGE_THREAD), so the
    split comes from /proc/self/task/TID/stat, in ticks (10 ms): user + system may fall a tick or two
    short of the total, as iperf3's own cpu_util takes its total and its split from different calls.
    """
    total = time.clock_gettime(clock_id)
    with open(f"/proc/self/task/{native_id}/stat", "rb") as stat:
        # proc(5): utime and stime are fields 14 and 15, counted after the name in parentheses (field 2,
        # which may itself hold spaces and parentheses): the state, field 3, is the first one after it.
        fields = stat.read().rpartition(b")")[2].split()
    return CpuTimes(total, int(fields[11]) / _CLOCK_TICKS_PER_SECOND, int(fields[12]) / _CLOCK_TICKS_PER_SECOND)


class CpuMeter:
    """The CPU the threads pumping one test's streams use over a span, as iperf3's cpu_util() reports
    it: percent of one core's wall time, summed over the threads.

    Only those threads count: in a long-running process, other checks, a web server or the far end's
    own streams must not make a measurement look limited by this host's CPU. A pump that has not
    started yet has used nothing; one that has ended counts what it used until it ended.
    """

    def __init__(self, pumps: Sequence[StreamPump]) -> None:
        self._pumps = tuple(pumps)
        self._wall = time.monotonic()
        self._start = [pump.cpu_times() for pump in self._pumps]

    def used(self) -> CpuTimes:
        """CPU seconds the pumps' threads used since the meter started."""
        total = user = system = 0.0
        for pump, start in zip(self._pumps, self._start):
            now = pump.cpu_times()
            total += now.total - start.total
            user += now.user - start.user
            system += now.system - start.system
        return CpuTimes(total, user, system)

    def percent(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._wall, 1e-9)
        used = self.used()
        return {"total": used.total / wall * 100, "user": used.user / wall * 100, "system": used.system / wall * 100}


class StreamPump(threading.Thread):
    """One data stream, moved by its own thread on a blocking socket with one preallocated buffer.

    send()/recv_into() release the GIL for the copy, so streams run in parallel in the kernel.
    `bytes` is written by this thread only; others read it. To stop a pump that may be blocked
    (a stalled peer), set `stopping` and shut the socket down: the blocked call then returns.
    """

    def __init__(self, sock: socket.socket, *, sending: bool, block_bytes: int, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.sock = sock
        self.sending = sending
        # Random payload, as iperf3's: compressing middleboxes must not inflate the figure.
        self._buffer = bytearray(os.urandom(block_bytes)) if sending else bytearray(block_bytes)
        self.bytes = 0
        self.stopping = False
        self.eof = False  # the peer closed the stream
        self.error: OSError | None = None
        # Held while another thread reads this one's CPU clock and /proc entry, which name the thread
        # by its id: run() cannot return meanwhile, so the id cannot pass to a new thread under the read.
        self._cpu_lock = threading.Lock()
        self._cpu_source: tuple[int, int] | None = None  # (CPU clock id, native thread id) while running
        self._cpu_final: CpuTimes | None = None  # recorded by the thread as it ends

    def run(self) -> None:
        with self._cpu_lock:
            self._cpu_source = (time.pthread_getcpuclockid(threading.get_ident()), threading.get_native_id())
        try:
            if self.sending:
                self._send()
            else:
                self._receive()
        except OSError as exc:
            if not self.stopping:
                self.error = exc
        finally:
            with self._cpu_lock:
                self._cpu_final = _thread_cpu_times(*self._cpu_source)

    def cpu_times(self) -> CpuTimes:
        """What this pump's thread has used so far; from any thread, at any time."""
        with self._cpu_lock:
            if self._cpu_final is not None:
                return self._cpu_final
            if self._cpu_source is None:
                return CpuTimes()
            return _thread_cpu_times(*self._cpu_source)

    def _send(self) -> None:
        send, view, total = self.sock.send, memoryview(self._buffer), 0
        while not self.stopping:
            total += send(view)
            self.bytes = total

    def _receive(self) -> None:
        recv_into, buffer, total = self.sock.recv_into, self._buffer, 0
        while True:
            count = recv_into(buffer)
            if not count:
                self.eof = True
                return
            total += count
            self.bytes = total

    def stop(self) -> None:
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def close_pumps(pumps: Sequence[StreamPump], timeout: float = 1.0) -> None:
    """Stop, join and close. A socket whose thread will not end stays open: closing an fd that
    another thread still uses could let a new socket reuse the number under it."""
    for pump in pumps:
        pump.stop()
    until = time.monotonic() + timeout
    for pump in pumps:
        if pump.is_alive():
            pump.join(max(0.0, until - time.monotonic()))
        if not pump.is_alive():
            pump.sock.close()
