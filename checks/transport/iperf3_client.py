"""The iperf3 client: one TCP test against any iperf3 server (stock `iperf3 -s` or `xcheck responder`).

It speaks the protocol of checks/protocols/iperf3.py on a control connection whose every read is
bounded in size and time, moves the data with the stream pumps of checks/transport/streams.py, and
holds a server's upload figures against what its own TCP saw. Network outcomes are data (a
`TestResult` with a closed `Failure`), never exceptions. Over 500 lines with its imports: one test's
exchange, from the cookie to IPERF_DONE, and the figures taken along it read best as one class.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from checks.protocols.iperf3 import (
    CLIENT_VERSION,
    COOKIE_SIZE,
    DEFAULT_PORT,
    IEDURATION,
    MAX_BLOCK_BYTES,
    MAX_DURATION_SECONDS,
    MAX_RESULTS_JSON_BYTES,
    MAX_STREAMS,
    MAX_WINDOW_BYTES,
    Iperf3ProtocolError,
    PeerResults,
    State,
    StreamFigures,
    TestParameters,
    UploadFigures,
    decode_json,
    decode_json_length,
    decode_state,
    describe_server_error,
    encode_json,
    encode_state,
    implausible_receiver_figures,
    make_cookie,
    results_json,
    stream_ids,
    unread_allowance_bytes,
)
from checks.transport.streams import (
    CpuMeter,
    StreamPump,
    TcpFigures,
    close_pumps,
    congestion_control,
    cpu_limited,
    tcp_figures,
)

# How long a server may take to answer each control step before the test. A real one answers in
# milliseconds; ten seconds also covers a slow path and a loaded server.
CONTROL_REPLY_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10.0
# Mid-test, no data byte moving for this long means the peer stopped: a healthy TCP stream moves
# data at least every retransmission timeout (1 s initially, RFC 6298), so three seconds leaves room
# for two backed-off retransmissions on a lossy path.
STALL_SECONDS = 3.0
# After TEST_END the server closes its streams and sends EXCHANGE_RESULTS at once (3.12 does it in the
# same select() pass); after that, the results take one round trip.
RESULTS_TIMEOUT_SECONDS = 5.0
# Reverse mode: how long to keep reading what the server had in flight after TEST_END (iperf3 counts it).
DRAIN_TIMEOUT_SECONDS = 1.0
INTERVAL_SECONDS = 0.5  # progress and evidence sampling
# Leave this much of the caller's deadline for TEST_END and the results exchange.
END_MARGIN_SECONDS = 1.0


class Failure(enum.StrEnum):
    """How a test can fail. Closed: reports and metrics may enumerate it."""

    CONNECTION_FAILED = "connection_failed"  # could not connect (no answer, no route, ...)
    CONNECTION_REFUSED = "connection_refused"  # a reset to our SYN: the host is there, nothing listens
    ACCESS_DENIED = "access_denied"  # server busy
    SERVER_ERROR = "server_error"  # SERVER_ERROR with its i_errno (and errno) in the detail
    PROTOCOL_ERROR = "protocol_error"  # garbage, unexpected state, bad JSON
    NO_RESPONSE = "no_response"  # connected, but the server said nothing within bounds
    STALLED = "stalled"  # data stopped flowing mid-test
    SERVER_GONE = "server_gone"  # connection reset/closed mid-test


@dataclass(frozen=True)
class TestSpec:
    __test__ = False  # not a pytest test class, despite its name

    host: str  # an IPv4 literal (resolution is the caller's job)
    port: int = DEFAULT_PORT
    duration_seconds: float = 10.0
    omit_seconds: float = 0.0  # whole seconds: servers count omit as an integer
    streams: int = 1
    reverse: bool = False  # False = upload (we send), True = download
    block_bytes: int = 128 * 1024
    window_bytes: int | None = None  # socket buffer, like iperf3 -w

    def __post_init__(self) -> None:
        problems = []
        try:
            ipaddress.IPv4Address(self.host)
        except ValueError:
            problems.append(f"host: {self.host!r} is not an IPv4 literal")
        if not 0 < self.port < 65536:
            problems.append(f"port: {self.port} is not 1..65535")
        if not 0 < self.duration_seconds <= MAX_DURATION_SECONDS:
            problems.append(f"duration_seconds: {self.duration_seconds} is not in (0, {MAX_DURATION_SECONDS}]")
        if not (0 <= self.omit_seconds <= MAX_DURATION_SECONDS and float(self.omit_seconds).is_integer()):
            problems.append(f"omit_seconds: {self.omit_seconds} is not a whole number of seconds >= 0")
        if not 1 <= self.streams <= MAX_STREAMS:
            problems.append(f"streams: {self.streams} is not 1..{MAX_STREAMS}")
        if not 1 <= self.block_bytes <= MAX_BLOCK_BYTES:
            problems.append(f"block_bytes: {self.block_bytes} is not 1..{MAX_BLOCK_BYTES}")
        if self.window_bytes is not None and not 1 <= self.window_bytes <= MAX_WINDOW_BYTES:
            problems.append(f"window_bytes: {self.window_bytes} is not 1..{MAX_WINDOW_BYTES}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class TestResult:
    __test__ = False

    spec: TestSpec
    ok: bool
    failure: Failure | None
    detail: str  # human reason when not ok ("" when ok)
    partial: bool  # figures are from before a failure
    duration_seconds: float | None  # receiver-side measuring time (after omit)
    bytes_received: int | None  # receiver side, after omit: the server's own figure for upload
    bits_per_second: float | None  # receiver-side rate
    retransmits: int | None  # sender side; None if unknown
    local_cpu_percent: dict | None  # {"total", "user", "system"} of our stream pumps over the test
    remote_cpu_percent: dict | None  # the server's figures from its results JSON
    cpu_limited: bool | None  # this host's CPU was the bottleneck (see streams.cpu_limited)
    server_results: dict | None  # the server's results JSON as received (evidence)
    intervals: tuple[tuple[float, int], ...]  # (seconds since start, bytes in the interval ending then)
    # Upload figures of the server refused as inconsistent with ours, beside ours:
    # {"server": {"bytes", "seconds"}, "ours": UploadFigures.evidence()}; None when none were refused.
    disputed: dict | None = None
    i_errno: int | None = None  # with Failure.SERVER_ERROR: the server's iperf3 error number


def parameters_for(spec: TestSpec) -> TestParameters:
    return TestParameters(
        omit_seconds=int(spec.omit_seconds),
        # Servers read "time" as an integer and use it only for their own give-up timer
        # (time + omit + 5 s); rounding up keeps it from firing before our timer ends the test.
        duration_seconds=math.ceil(spec.duration_seconds),
        parallel=spec.streams,
        reverse=spec.reverse,
        window_bytes=spec.window_bytes,
        block_bytes=spec.block_bytes,
        client_version=CLIENT_VERSION,
    )


class _Abort(Exception):
    """Unwinds a test to the one place that turns its end into a TestResult."""

    def __init__(self, failure: Failure, detail: str, i_errno: int | None = None) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail
        self.i_errno = i_errno


class _PeerSilent(Exception):
    pass


class _PeerClosed(Exception):
    pass


class ControlChannel:
    """The client's control connection: every read bounded in size and time."""

    def __init__(self, sock: socket.socket, clock: Callable[[], float]) -> None:
        self.sock = sock
        self.clock = clock

    def send(self, data: bytes) -> None:
        try:
            self.sock.settimeout(CONTROL_REPLY_TIMEOUT_SECONDS)
            self.sock.sendall(data)
        except OSError as exc:
            raise _PeerClosed(f"sending on the control connection: {exc}") from None

    def read_exact(self, size: int, until: float) -> bytes:
        data = bytearray()
        while len(data) < size:
            remaining = until - self.clock()
            if remaining <= 0:
                raise _PeerSilent()
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(size - len(data))
            except TimeoutError:
                raise _PeerSilent() from None
            except OSError as exc:
                raise _PeerClosed(str(exc)) from None
            if not chunk:
                raise _PeerClosed("closed")
            data += chunk
        return bytes(data)

    def read_state(self, until: float) -> State:
        return decode_state(self.read_exact(1, until))

    def read_json(self, until: float, max_bytes: int) -> dict[str, Any]:
        length = decode_json_length(self.read_exact(4, until), max_bytes)
        return decode_json(self.read_exact(length, until))


class _ClientTest:
    def __init__(self, spec: TestSpec, deadline: float, progress: Callable[[float, float], None] | None,
                 clock: Callable[[], float]) -> None:
        self.spec = spec
        self.deadline = deadline
        self.progress = progress
        self.clock = clock
        self.cookie = make_cookie()
        self.control: ControlChannel | None = None
        self.pumps: list[StreamPump] = []
        self.started: float | None = None  # TEST_START, on clock
        self.measuring_from: float | None = None  # end of the omit period
        self.ended: float | None = None  # TEST_END sent
        self.omit_bytes: list[int] = []
        self.omit_tcp: list[TcpFigures | None] = []
        self.last_tcp: list[TcpFigures | None] = []
        self.longest_round_trip: float | None = None  # seconds, over every TCP_INFO sample of the test
        self.intervals: list[tuple[float, int]] = []
        self._last_tick = self._last_moved = 0.0  # on clock
        self._last_total = 0
        self.cpu: CpuMeter | None = None
        self.cpu_percent: dict[str, float] | None = None

    def run(self) -> TestResult:
        try:
            return self._run()
        except _Abort as abort:
            return self._failed(abort.failure, abort.detail, i_errno=abort.i_errno)
        finally:
            close_pumps(self.pumps)
            if self.control is not None:
                self.control.sock.close()

    # -- the exchange

    def _run(self) -> TestResult:
        self._connect_control()
        self._expect(State.PARAM_EXCHANGE, "the cookie")
        self._send(encode_json(parameters_for(self.spec).to_json()))
        self._expect(State.CREATE_STREAMS, "the parameters")
        self._connect_streams()
        self._expect(State.TEST_START, "the data streams")
        self.started = self.measuring_from = self.clock()
        self.cpu = CpuMeter(self.pumps)
        self._expect(State.TEST_RUNNING, "TEST_START")
        for pump in self.pumps:
            pump.start()
        self._watch_test()
        for pump in self.pumps:
            pump.stopping = True  # senders stop before TEST_END, as iperf3's single loop does
        self.ended = self.clock()
        self.cpu_percent = self.cpu.percent()
        self._sample_tcp()
        self._send(encode_state(State.TEST_END))
        self._expect(State.EXCHANGE_RESULTS, "TEST_END", results=True)
        if self.spec.reverse:
            self._drain()
        self._send(encode_json(self._our_results()))
        server = self._read_results()
        self._expect(State.DISPLAY_RESULTS, "the results", results=True)
        self._send(encode_state(State.IPERF_DONE))
        return self._succeeded(server)

    def _until(self, seconds: float) -> float:
        return min(self.clock() + seconds, self.deadline)

    def _connect_control(self) -> None:
        timeout = min(CONNECT_TIMEOUT_SECONDS, self.deadline - self.clock())
        if timeout <= 0:
            raise _Abort(Failure.CONNECTION_FAILED, "no time left before the deadline to connect")
        try:
            sock = socket.create_connection((self.spec.host, self.spec.port), timeout=timeout)
        except OSError as exc:
            failure = Failure.CONNECTION_REFUSED if isinstance(exc, ConnectionRefusedError) else Failure.CONNECTION_FAILED
            raise _Abort(failure, f"control connection to {self.spec.host}:{self.spec.port}: {exc}") from None
        self.control = ControlChannel(sock, self.clock)
        self._send(self.cookie)

    def _connect_streams(self) -> None:
        for index in range(self.spec.streams):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if self.spec.window_bytes:
                # Before connect, as iperf3 does: the window scale is fixed by the SYN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.spec.window_bytes)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.spec.window_bytes)
            try:
                sock.settimeout(max(0.001, min(CONNECT_TIMEOUT_SECONDS, self.deadline - self.clock())))
                sock.connect((self.spec.host, self.spec.port))
                sock.sendall(self.cookie)
                sock.settimeout(None)
            except OSError as exc:
                sock.close()
                raise _Abort(Failure.CONNECTION_FAILED, f"data stream {index + 1}: {exc}") from None
            self.pumps.append(StreamPump(sock, sending=not self.spec.reverse, block_bytes=self.spec.block_bytes,
                                         name=f"iperf3 stream {index + 1}"))

    def _send(self, data: bytes) -> None:
        assert self.control is not None
        try:
            self.control.send(data)
        except _PeerClosed as exc:
            raise _Abort(Failure.SERVER_GONE, str(exc)) from None

    def _expect(self, expected: State, after: str, *, results: bool = False) -> State:
        assert self.control is not None
        timeout = RESULTS_TIMEOUT_SECONDS if results else CONTROL_REPLY_TIMEOUT_SECONDS
        try:
            state = self.control.read_state(self._until(timeout))
        except _PeerSilent:
            failure = Failure.STALLED if results else Failure.NO_RESPONSE
            raise _Abort(failure, f"no {expected.name} from the server within {timeout:g} s after {after}") from None
        except _PeerClosed as exc:
            raise _Abort(Failure.SERVER_GONE, f"server closed the control connection after {after} ({exc})") from None
        except Iperf3ProtocolError as exc:
            raise _Abort(Failure.PROTOCOL_ERROR, f"after {after}: {exc}") from None
        if state != expected:
            self._unexpected(state, f"{expected.name} after {after}")
        return state

    def _unexpected(self, state: State, wanted: str) -> None:
        if state == State.ACCESS_DENIED:
            raise _Abort(Failure.ACCESS_DENIED, "the server is busy running a test")
        if state == State.SERVER_ERROR:
            assert self.control is not None
            try:
                numbers = self.control.read_exact(8, self._until(RESULTS_TIMEOUT_SECONDS))
            except (_PeerSilent, _PeerClosed):
                raise _Abort(Failure.SERVER_ERROR, "server error (its error numbers did not follow)") from None
            i_errno, errno_value = struct.unpack("!ii", numbers)
            detail = describe_server_error(i_errno, errno_value)
            if i_errno == IEDURATION:
                asked = parameters_for(self.spec)
                detail += (f"; it refuses a {asked.duration_seconds + asked.omit_seconds} s test "
                           f"({asked.duration_seconds} s measured after {asked.omit_seconds} s omitted)")
            raise _Abort(Failure.SERVER_ERROR, detail, i_errno)
        if state == State.SERVER_TERMINATE:
            raise _Abort(Failure.SERVER_GONE, "the server terminated the test")
        raise _Abort(Failure.PROTOCOL_ERROR, f"server sent {state.name}, expected {wanted}")

    def _read_results(self) -> tuple[dict[str, Any], PeerResults]:
        assert self.control is not None
        try:
            message = self.control.read_json(self._until(RESULTS_TIMEOUT_SECONDS), MAX_RESULTS_JSON_BYTES)
            return message, PeerResults.from_json(message)
        except _PeerSilent:
            raise _Abort(Failure.STALLED, "the server's results did not come") from None
        except _PeerClosed as exc:
            raise _Abort(Failure.SERVER_GONE, f"server closed the connection before its results ({exc})") from None
        except Iperf3ProtocolError as exc:
            raise _Abort(Failure.PROTOCOL_ERROR, f"server results: {exc}") from None

    # -- the running test

    def _watch_test(self) -> None:
        """Tick until the test's end, watching the control connection and the data."""
        assert self.control is not None and self.started is not None
        omit_end = self.started + self.spec.omit_seconds
        end = min(omit_end + self.spec.duration_seconds, self.deadline - END_MARGIN_SECONDS)
        omitting = self.spec.omit_seconds > 0
        self._last_tick = self._last_moved = self.started
        self._last_total = 0
        next_tick = self.started + INTERVAL_SECONDS
        while True:
            now = self.clock()
            if now >= end:
                # The last, shorter interval, unless it is a sliver (iperf3 drops those under 10 %).
                if now - self._last_tick >= INTERVAL_SECONDS * 0.1:
                    self._tick(now)
                return
            wake = min(next_tick, end, omit_end if omitting else end)
            readable, _, _ = select.select([self.control.sock], [], [], max(0.0, wake - now))
            if readable:
                self._server_spoke_mid_test()
            now = self.clock()
            if omitting and now >= omit_end:
                omitting = False
                self.measuring_from = now
                self.omit_bytes = [pump.bytes for pump in self.pumps]
                self.omit_tcp = [tcp_figures(pump.sock) for pump in self.pumps]
            if now >= next_tick:
                self._tick(now)
                next_tick = now + INTERVAL_SECONDS

    def _tick(self, now: float) -> None:
        assert self.started is not None
        total = sum(pump.bytes for pump in self.pumps)
        moved = total - self._last_total
        self.intervals.append((now - self.started, moved))
        self._sample_tcp()
        if self.progress is not None:
            self.progress(now - self.started, moved * 8 / max(now - self._last_tick, 1e-9))
        if moved:
            self._last_moved = now
        elif now - self._last_moved >= STALL_SECONDS:
            raise _Abort(Failure.STALLED, f"no data moved for {now - self._last_moved:.1f} s mid-test")
        self._check_pumps()
        self._last_total, self._last_tick = total, now

    def _server_spoke_mid_test(self) -> None:
        assert self.control is not None
        try:
            state = self.control.read_state(self._until(RESULTS_TIMEOUT_SECONDS))
        except (_PeerClosed, _PeerSilent) as exc:
            raise _Abort(Failure.SERVER_GONE, f"server closed the control connection mid-test ({exc})") from None
        except Iperf3ProtocolError as exc:
            raise _Abort(Failure.PROTOCOL_ERROR, f"mid-test: {exc}") from None
        self._unexpected(state, "nothing mid-test")

    def _check_pumps(self) -> None:
        for index, pump in enumerate(self.pumps):
            if pump.error is not None:
                raise _Abort(Failure.SERVER_GONE, f"data stream {index + 1}: {pump.error}")
            if pump.eof:
                raise _Abort(Failure.SERVER_GONE, f"server closed data stream {index + 1} mid-test")

    def _sample_tcp(self) -> None:
        self.last_tcp = [tcp_figures(pump.sock) for pump in self.pumps]
        round_trips = [figures.round_trip_seconds for figures in self.last_tcp if figures is not None]
        if round_trips:
            self.longest_round_trip = max(self.longest_round_trip or 0.0, *round_trips)

    def _drain(self) -> None:
        """Read what the server had in flight at TEST_END; it closes its streams, so each ends in EOF."""
        until = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        for pump in self.pumps:
            pump.join(max(0.0, until - time.monotonic()))

    # -- figures

    def _measured_bytes(self) -> list[int]:
        baseline = self.omit_bytes or [0] * len(self.pumps)
        return [pump.bytes - base for pump, base in zip(self.pumps, baseline)]

    def _our_retransmits(self) -> list[int | None]:
        baseline = self.omit_tcp or [TcpFigures(0, None)] * len(self.pumps)
        return [None if now is None or base is None else now.total_retrans - base.total_retrans
                for now, base in zip(self.last_tcp, baseline)]

    def _our_results(self) -> dict[str, Any]:
        assert self.ended is not None and self.measuring_from is not None and self.cpu_percent is not None
        retransmits = self._our_retransmits() if not self.spec.reverse else [None] * len(self.pumps)
        has_retransmits = not self.spec.reverse and None not in retransmits
        ids = stream_ids(len(self.pumps))
        streams = [StreamFigures(stream_id, count, retrans, 0, self.ended - self.measuring_from)
                   for stream_id, count, retrans in zip(ids, self._measured_bytes(), retransmits)]
        congestion = congestion_control(self.pumps[0].sock) if self.pumps else None
        return results_json(cpu=self.cpu_percent, sending=not self.spec.reverse, has_retransmits=has_retransmits,
                            congestion=congestion, streams=streams)

    def _succeeded(self, server: tuple[dict[str, Any], PeerResults]) -> TestResult:
        assert self.ended is not None and self.measuring_from is not None
        message, results = server
        if self.spec.reverse:
            seconds: float | None = self.ended - self.measuring_from
            received: int | None = sum(self._measured_bytes())
            retransmits = results.retransmits
        else:
            seconds = results.measuring_seconds
            received = results.total_bytes
            counts = self._our_retransmits()
            retransmits = None if None in counts else sum(counts)  # type: ignore[arg-type]
        if not seconds or received is None:
            return self._failed(Failure.PROTOCOL_ERROR, "the results give no measuring time or byte count")
        if not self.spec.reverse:
            ours = UploadFigures(
                bytes_sent=sum(pump.bytes for pump in self.pumps), seconds=self.ended - self.measuring_from,
                # As sampled at TEST_END: what is acknowledged later may reach the server after TEST_END.
                bytes_acknowledged=self._acknowledged_since_measuring(), round_trip_seconds=self.longest_round_trip,
                # A send() still blocked at TEST_END may have handed part of its block to the kernel
                # without returning its count yet: one block per stream.
                slack_bytes=len(self.pumps) * self.spec.block_bytes,
                unread_bytes=unread_allowance_bytes(len(self.pumps), self.spec.window_bytes))
            problem = implausible_receiver_figures(received, seconds, ours)
            if problem is not None:
                return self._failed(Failure.PROTOCOL_ERROR, problem, disputed={
                    "server": {"bytes": received, "seconds": seconds}, "ours": ours.evidence()})
        if received == 0:  # a stage shorter than STALL_SECONDS can end before the watch sees the stall
            return self._failed(Failure.STALLED, f"no data moved in the {seconds:.1f} s measured")
        rate = received * 8 / seconds
        return self._result(ok=True, failure=None, detail="", partial=False, seconds=seconds, received=received,
                            rate=rate, retransmits=retransmits, remote_cpu=results.cpu_percent, server=message)

    def _failed(self, failure: Failure, detail: str, *, disputed: dict | None = None,
                i_errno: int | None = None) -> TestResult:
        if self.started is None:
            return self._result(ok=False, failure=failure, detail=detail, partial=False, seconds=None,
                                received=None, rate=None, retransmits=None, remote_cpu=None, server=None,
                                i_errno=i_errno)
        stopped = self.ended if self.ended is not None else self.clock()
        if self.cpu is not None and self.cpu_percent is None:
            self.cpu_percent = self.cpu.percent()
        assert self.measuring_from is not None
        seconds = max(0.0, stopped - self.measuring_from)
        if self.spec.reverse:
            received: int | None = sum(self._measured_bytes())
        else:
            received = self._acknowledged_bytes()
        rate = received * 8 / seconds if seconds > 0 and received is not None else None
        counts = [] if self.spec.reverse else self._our_retransmits()
        retransmits = None if not counts or None in counts else sum(counts)  # type: ignore[arg-type]
        return self._result(ok=False, failure=failure, detail=detail, partial=True, seconds=seconds,
                            received=received, rate=rate, retransmits=retransmits, remote_cpu=None, server=None,
                            disputed=disputed, i_errno=i_errno)

    def _acknowledged_bytes(self) -> int | None:
        """Upload, no server figures: what the server's TCP acknowledged (tcpi_bytes_acked) is what
        reached the receiver, a lower bound of the server's own figure."""
        latest = [tcp_figures(pump.sock) for pump in self.pumps]
        self.last_tcp = [now if now is not None else last
                         for now, last in zip(latest, self.last_tcp or [None] * len(self.pumps))]
        return self._acknowledged_since_measuring()

    def _acknowledged_since_measuring(self) -> int | None:
        """Bytes the server's TCP acknowledged from the end of the omit period to the last TCP_INFO sample."""
        # Without an omit period, from the start: the SYN counts as one acknowledged byte, then the cookie.
        baseline = self.omit_tcp or [TcpFigures(0, 1 + COOKIE_SIZE)] * len(self.pumps)
        total = 0
        for now, base in zip(self.last_tcp, baseline):
            if now is None or base is None or now.bytes_acked is None or base.bytes_acked is None:
                return None
            total += max(0, now.bytes_acked - base.bytes_acked)
        return total

    def _result(self, *, ok: bool, failure: Failure | None, detail: str, partial: bool, seconds: float | None,
                received: int | None, rate: float | None, retransmits: int | None, remote_cpu: dict | None,
                server: dict | None, disputed: dict | None = None, i_errno: int | None = None) -> TestResult:
        cpu = self.cpu_percent
        return TestResult(
            spec=self.spec, ok=ok, failure=failure, detail=detail, partial=partial, duration_seconds=seconds,
            bytes_received=received, bits_per_second=rate, retransmits=retransmits, local_cpu_percent=cpu,
            remote_cpu_percent=remote_cpu, cpu_limited=None if cpu is None else cpu_limited(cpu, self.spec.streams),
            server_results=server, intervals=tuple(self.intervals), disputed=disputed, i_errno=i_errno,
        )


def run_test(spec: TestSpec, *, deadline: float, progress: Callable[[float, float], None] | None = None,
             clock: Callable[[], float] = time.monotonic) -> TestResult:
    """Run one iperf3 TCP test against a server; network outcomes are in the result, never raised.

    Blocking (run it in a thread). Returns by `deadline` (on `clock`) plus about a second: if the
    deadline is too close for the whole test, the test is ended early, END_MARGIN_SECONDS before it,
    and the figures cover the shorter time. progress(elapsed_seconds, current_bits_per_second) is called
    about twice a second from this thread.
    """
    return _ClientTest(spec, deadline, progress, clock).run()
