"""The iperf3 server of `xcheck responder`: stock `iperf3 -c` (3.12 and newer) tests against it.

It speaks the protocol described in checks/protocols/iperf3.py, TCP only, one test at a time like
iperf3 (others get ACCESS_DENIED). The control channel runs on asyncio; each data stream
is a thread on a blocking socket, so a test runs at kernel speed without holding the loop.
A client that sends garbage, stalls or vanishes is logged and dropped; parameters outside
our bounds get SERVER_ERROR with iperf3's own error numbers, which `iperf3 -c` prints.

The one test slot is never held for long: a test may last at most `max_duration_seconds`
(omitted seconds included), a client whose control connection or data streams go silent for
`idle_timeout_seconds` is dropped, and a whole session ends at its test's length plus a margin.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from dataclasses import dataclass, field

from checks.protocols.iperf3 import (
    COOKIE_SIZE,
    DEFAULT_PORT,
    IEDURATION,
    MAX_BLOCK_BYTES,
    MAX_PARAMETERS_JSON_BYTES,
    MAX_RESULTS_JSON_BYTES,
    MAX_STREAMS,
    MAX_WINDOW_BYTES,
    Iperf3ProtocolError,
    PeerResults,
    State,
    StreamFigures,
    TestParameters,
    check_cookie,
    decode_json,
    decode_json_length,
    decode_state,
    encode_json,
    encode_state,
    results_json,
    stream_ids,
)
from checks.transport.streams import CpuMeter, StreamPump, TcpFigures, close_pumps, congestion_control, tcp_figures

# The longest test (omitted seconds included) `xcheck responder` takes by default: six of xcheck's
# default 10 s stages, and short enough that one client cannot keep everyone else waiting for long.
DEFAULT_MAX_TEST_SECONDS = 60
# A client sends each control message right after the previous step, and a running test moves data
# all the time; ten seconds of silence on either is generous for a slow path (xcheck's own client
# calls three seconds without data a stall), and bounds how long a silent client keeps the slot.
IDLE_TIMEOUT_SECONDS = 10.0
# iperf3's server gives up on a test time + omit + 5 s after it started (create_server_timers). We count
# from the connection, so the session's bound also gives set-up and results one idle timeout.
TEST_GRACE_SECONDS = 5.0
# After DISPLAY_RESULTS the client answers IPERF_DONE at once; not waiting long frees the server.
DONE_TIMEOUT_SECONDS = 2.0
# One client's next test waits for the slot; a crowd arriving in that moment is turned away at once,
# so it cannot hold sockets for seconds.
MAX_WAITING_CLIENTS = 2

# iperf3's i_errno values (iperf_api.h) for the refusals below, besides IEDURATION: `iperf3 -c` prints their text.
IENUMSTREAMS = 6
IEBLOCKSIZE = 7
IEBUFSIZE = 8
IEUNIMP = 13


class _Drop(Exception):
    """End this client's session: logged, its connections closed."""


@dataclass
class _Session:
    peer: str
    started: float  # on the loop's clock: the session's bound counts from here
    cookie: bytes = b""
    wanted_streams: int = 0
    streams: list[socket.socket] = field(default_factory=list)
    streams_ready: asyncio.Event = field(default_factory=asyncio.Event)
    collecting: bool = False  # CREATE_STREAMS sent, streams not all here yet
    finishing: bool = False  # results sent: the session ends within DONE_TIMEOUT_SECONDS
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class Iperf3Server:
    def __init__(self, host: str, port: int = DEFAULT_PORT, *, logger: logging.Logger | None = None,
                 max_duration_seconds: float = DEFAULT_MAX_TEST_SECONDS,
                 idle_timeout_seconds: float = IDLE_TIMEOUT_SECONDS) -> None:
        self.host = host
        self.port = port
        self.max_duration_seconds = max_duration_seconds
        self.idle_timeout_seconds = idle_timeout_seconds
        self._log = logger or logging.getLogger("xcheck.responder.iperf3")
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._session: _Session | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._waiting = 0  # clients held for a finishing session's slot

    async def start(self) -> None:
        listener = socket.create_server((self.host, self.port), backlog=64)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accepting = asyncio.create_task(self._accept_loop(), name="iperf3 accept")
        self._log.info("iperf3 server listening on %s:%d", self.host, self.port)

    async def close(self) -> None:
        tasks = [task for task in (self._accepting, *self._side_tasks) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # -- connections

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(self._listener)
            except OSError as exc:  # e.g. EMFILE: keep serving once descriptors free up
                self._log.warning("iperf3 accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            peer = f"{address[0]}:{address[1]}"
            if self._session is None:
                self._admit(conn, peer)
            elif self._session.collecting:
                self._spawn(self._offer_stream(conn, peer))
            elif self._session.finishing and self._waiting < MAX_WAITING_CLIENTS:
                # A client's next test (xcheck's next stage) may connect before the last one's
                # IPERF_DONE is read: wait for the slot rather than call the server busy.
                self._spawn(self._admit_after(conn, peer, self._session))
            else:
                self._spawn(self._deny(conn, peer))

    def _admit(self, conn: socket.socket, peer: str) -> None:
        self._session = _Session(peer, asyncio.get_running_loop().time())
        self._spawn(self._serve(conn, self._session))

    async def _admit_after(self, conn: socket.socket, peer: str, finishing: _Session) -> None:
        self._waiting += 1
        try:
            await asyncio.wait_for(finishing.ended.wait(), DONE_TIMEOUT_SECONDS + self.idle_timeout_seconds)
        except TimeoutError:
            pass
        finally:
            self._waiting -= 1
        if self._session is None:
            self._admit(conn, peer)
        else:
            await self._deny(conn, peer)

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _deny(self, conn: socket.socket, peer: str) -> None:
        # Like iperf3, without reading the cookie: reading could block on a silent client.
        self._log.info("iperf3 client %s turned away: a test is running", peer)
        try:
            await _send(conn, encode_state(State.ACCESS_DENIED), self.idle_timeout_seconds)
        except (OSError, TimeoutError):
            pass
        finally:
            conn.close()

    async def _offer_stream(self, conn: socket.socket, peer: str) -> None:
        """During CREATE_STREAMS every new connection should be a data stream carrying the test's cookie."""
        session = self._session
        try:
            cookie = await _read_exact(conn, COOKIE_SIZE, self.idle_timeout_seconds)
        except (OSError, TimeoutError, ConnectionError):
            conn.close()
            return
        if session is not None and session.collecting and cookie == session.cookie \
                and len(session.streams) < session.wanted_streams:
            session.streams.append(conn)
            if len(session.streams) == session.wanted_streams:
                session.streams_ready.set()
            return
        await self._deny(conn, peer)

    # -- one test

    async def _serve(self, conn: socket.socket, session: _Session) -> None:
        pumps: list[StreamPump] = []
        # Until the parameters say how long the test is, the longest we take bounds the session.
        bound = asyncio.timeout_at(session.started + self.max_duration_seconds + self._margin_seconds)
        try:
            async with bound:
                await self._run_test(conn, session, pumps, bound)
        except _Drop as reason:
            self._log.warning("iperf3 client %s dropped: %s", session.peer, reason)
        except (OSError, TimeoutError, ConnectionError) as exc:
            if bound.expired():
                self._log.warning("iperf3 client %s dropped: still there %g s after its test's length", session.peer,
                                  self._margin_seconds)
            else:
                self._log.warning("iperf3 client %s dropped: %s", session.peer, exc or type(exc).__name__)
        except Iperf3ProtocolError as exc:
            self._log.warning("iperf3 client %s dropped: protocol error: %s", session.peer, exc)
        except asyncio.CancelledError:
            self._log.info("iperf3 test with %s aborted: the server is closing", session.peer)
            raise
        except Exception:  # a bug must cost one test, not the responder
            self._log.exception("iperf3 test with %s failed", session.peer)
        finally:
            session.collecting = False
            # The slot is free once the test is over, not once its threads are joined: xcheck's next
            # stage connects right after IPERF_DONE and must not be told the server is busy.
            if self._session is session:
                self._session = None
            session.ended.set()
            unused = [sock for sock in session.streams if all(pump.sock is not sock for pump in pumps)]
            for sock in unused:
                sock.close()
            await asyncio.shield(asyncio.to_thread(close_pumps, pumps))
            conn.close()

    @property
    def _margin_seconds(self) -> float:
        return TEST_GRACE_SECONDS + self.idle_timeout_seconds

    async def _run_test(self, conn: socket.socket, session: _Session, pumps: list[StreamPump],
                        bound: asyncio.Timeout) -> None:
        loop = asyncio.get_running_loop()
        idle = self.idle_timeout_seconds
        session.cookie = check_cookie(await _read_exact(conn, COOKIE_SIZE, idle))
        await _send(conn, encode_state(State.PARAM_EXCHANGE), idle)
        length = decode_json_length(await _read_exact(conn, 4, idle), MAX_PARAMETERS_JSON_BYTES)
        parameters = TestParameters.from_json(decode_json(await _read_exact(conn, length, idle)))
        refusal = self._refusal(parameters)
        if refusal is not None:
            i_errno, why = refusal
            await _send(conn, encode_state(State.SERVER_ERROR) + struct.pack("!ii", i_errno, 0), idle)
            raise _Drop(f"refused parameters: {why}")
        self._log.info("iperf3 test from %s: %s", session.peer, parameters)
        bound.reschedule(session.started + parameters.duration_seconds + parameters.omit_seconds
                         + self._margin_seconds)

        session.wanted_streams = parameters.parallel
        session.collecting = True
        await _send(conn, encode_state(State.CREATE_STREAMS), idle)
        try:
            await asyncio.wait_for(session.streams_ready.wait(), idle)
        except TimeoutError:
            raise _Drop(f"{len(session.streams)} of {parameters.parallel} data streams came") from None
        session.collecting = False
        for index, sock in enumerate(session.streams):
            _apply_stream_options(sock, parameters, self._log)
            pumps.append(StreamPump(sock, sending=parameters.reverse, block_bytes=parameters.block_bytes,
                                    name=f"iperf3 server stream {index + 1}"))

        # Both in one write, as 3.12 sends them.
        await _send(conn, encode_state(State.TEST_START) + encode_state(State.TEST_RUNNING), idle)
        cpu = CpuMeter(pumps)  # what the client reads as our cpu_util: these streams' threads only
        started = time.monotonic()
        baseline = _Baseline(started, [0] * len(pumps), [tcp_figures(pump.sock) for pump in pumps])
        for pump in pumps:
            pump.start()
        omit_timer = None
        if parameters.omit_seconds:  # like iperf3's server, we time our own omit period from TEST_START
            omit_timer = loop.call_later(parameters.omit_seconds, baseline.reset, pumps)
        try:
            state = await self._await_test_end(conn, pumps)
        finally:
            if omit_timer is not None:
                omit_timer.cancel()
        if state != State.TEST_END:
            raise _Drop(f"client sent {state.name} instead of TEST_END")

        ended = time.monotonic()
        cpu_percent = cpu.percent()
        tcp_now = [tcp_figures(pump.sock) for pump in pumps]
        congestion = congestion_control(pumps[0].sock) if pumps else None
        await asyncio.to_thread(close_pumps, pumps)  # iperf3 closes the streams at TEST_END too
        retransmits = [_retransmits(now, base) if parameters.reverse else None
                       for now, base in zip(tcp_now, baseline.tcp)]
        streams = [StreamFigures(stream_id, pump.bytes - base, retrans, 0, ended - baseline.since)
                   for stream_id, pump, base, retrans in
                   zip(stream_ids(len(pumps)), pumps, baseline.bytes, retransmits)]

        await _send(conn, encode_state(State.EXCHANGE_RESULTS), idle)
        length = decode_json_length(await _read_exact(conn, 4, idle), MAX_RESULTS_JSON_BYTES)
        client = PeerResults.from_json(decode_json(await _read_exact(conn, length, idle)))
        ours = results_json(cpu=cpu_percent, sending=parameters.reverse, has_retransmits=None not in retransmits,
                            congestion=congestion, streams=streams)
        await _send(conn, encode_json(ours) + encode_state(State.DISPLAY_RESULTS), idle)
        session.finishing = True
        received = sum(s.bytes for s in streams) if not parameters.reverse else client.total_bytes
        self._log.info("iperf3 test from %s done: %d bytes received in %.3f s", session.peer, received,
                       ended - baseline.since)
        try:
            state = decode_state(await _read_exact(conn, 1, DONE_TIMEOUT_SECONDS))
        except (OSError, TimeoutError, ConnectionError):
            return  # the test is over and reported; a missing goodbye changes nothing
        if state != State.IPERF_DONE:
            self._log.info("iperf3 client %s ended with %s instead of IPERF_DONE", session.peer, state.name)

    async def _await_test_end(self, conn: socket.socket, pumps: list[StreamPump]) -> State:
        """The client's next state (TEST_END), as long as data keeps moving on its streams. The control
        connection is quiet during a test; the session's bound ends a test that is never ended."""
        loop = asyncio.get_running_loop()
        reading = asyncio.ensure_future(_read_exact(conn, 1, None))
        moved, moved_at = 0, loop.time()
        try:
            while True:
                done, _ = await asyncio.wait({reading}, timeout=self.idle_timeout_seconds / 4)
                if done:
                    return decode_state(reading.result())
                total = sum(pump.bytes for pump in pumps)
                if total != moved:
                    moved, moved_at = total, loop.time()
                elif loop.time() - moved_at >= self.idle_timeout_seconds:
                    raise _Drop(f"no data moved on its streams for {self.idle_timeout_seconds:g} s mid-test")
        finally:
            reading.cancel()

    def _refusal(self, p: TestParameters) -> tuple[int, str] | None:
        if p.protocol != "tcp":
            return IEUNIMP, f"protocol {p.protocol}: only TCP is served"
        if p.bidirectional:
            return IEUNIMP, "bidirectional tests are not served"
        if p.reverse and (p.bandwidth_bits_per_second or p.bytes_to_send or p.blocks_to_send):
            return IEUNIMP, "reverse tests by rate, bytes or blocks are not served"
        if p.mss:
            return IEUNIMP, "setting the MSS is not served"
        if p.duration_seconds <= 0:
            return IEDURATION, f"duration {p.duration_seconds} s"
        if p.duration_seconds + p.omit_seconds > self.max_duration_seconds:
            return IEDURATION, (f"a {p.duration_seconds + p.omit_seconds} s test ({p.omit_seconds} s omitted) is longer "
                                f"than the {self.max_duration_seconds:g} s this server takes (--max-test-seconds)")
        if not 1 <= p.parallel <= MAX_STREAMS:
            return IENUMSTREAMS, f"{p.parallel} streams is not 1..{MAX_STREAMS}"
        if not 1 <= p.block_bytes <= MAX_BLOCK_BYTES:
            return IEBLOCKSIZE, f"block size {p.block_bytes} is not 1..{MAX_BLOCK_BYTES}"
        if p.window_bytes is not None and p.window_bytes > MAX_WINDOW_BYTES:
            return IEBUFSIZE, f"window {p.window_bytes} is over {MAX_WINDOW_BYTES}"
        return None


@dataclass
class _Baseline:
    """Where the measured part of a test starts: at TEST_START, or at the end of the omit period."""

    since: float
    bytes: list[int]
    tcp: list[TcpFigures | None]

    def reset(self, pumps: list[StreamPump]) -> None:
        self.since = time.monotonic()
        self.bytes = [pump.bytes for pump in pumps]
        self.tcp = [tcp_figures(pump.sock) for pump in pumps]


def _retransmits(now: TcpFigures | None, base: TcpFigures | None) -> int | None:
    return None if now is None or base is None else now.total_retrans - base.total_retrans


def _apply_stream_options(sock: socket.socket, parameters: TestParameters, log: logging.Logger) -> None:
    sock.setblocking(True)
    if parameters.nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if parameters.window_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, parameters.window_bytes)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, parameters.window_bytes)
    if parameters.congestion:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, parameters.congestion.encode())
        except OSError as exc:  # iperf3 only warns when the algorithm is missing here
            log.warning("iperf3 congestion control %r not set: %s", parameters.congestion, exc)


async def _read_exact(conn: socket.socket, size: int, timeout: float | None) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(timeout):
        while len(data) < size:
            chunk = await loop.sock_recv(conn, size - len(data))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(data)} of {size} bytes")
            data += chunk
    return bytes(data)


async def _send(conn: socket.socket, data: bytes, timeout: float) -> None:
    await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(conn, data), timeout)
