"""iperf3's TCP test protocol, spoken natively (no libiperf): the codec and a client.

The protocol (esnet/iperf `iperf_api.c`, `iperf_client_api.c`, `iperf_server_api.c`), as
checked byte for byte against iperf 3.12 on loopback (tests/fixtures/iperf3/):

1. The client opens the control connection and sends a 37-byte cookie: 36 characters of
   "a-z2-7" and a NUL. Every later state change is one signed byte (`State`).
2. Server: PARAM_EXCHANGE. Client: its parameters, a 4-byte big-endian length and compact
   JSON. Server: CREATE_STREAMS (or SERVER_ERROR, i_errno and errno as two 4-byte ints).
3. The client opens each data stream to the same port and sends the same cookie on it.
   The server numbers streams 1, 3, 4, 5, ... in the order it accepts them (`iperf_add_stream`).
4. Server: TEST_START, TEST_RUNNING. Data flows; the client's timer ends the test after
   omit + time seconds, in both directions, with TEST_END.
5. Server: EXCHANGE_RESULTS. Client sends its results JSON, then reads the server's.
6. Server: DISPLAY_RESULTS. Client: IPERF_DONE, and both close.

A busy server answers a new control connection with ACCESS_DENIED and closes it.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import math
import os
import resource
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_PORT = 5201
COOKIE_SIZE = 37
COOKIE_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # iperf_util.c make_cookie
MAX_STREAMS = 16
# Announced in the parameters. We speak 3.12's dialect, so we say so: servers may adapt to it.
CLIENT_VERSION = "3.12"
# 3.12's JSON_read trusts any 32-bit length; we do not let a peer make us allocate 4 GiB.
# A results message for 16 streams is about 3 KB; server_output_json could be larger.
MAX_RESULTS_JSON_BYTES = 1 << 20
MAX_PARAMETERS_JSON_BYTES = 64 * 1024
MAX_BLOCK_BYTES = 1 << 20  # iperf3's MAX_BLOCKSIZE
MAX_WINDOW_BYTES = 64 << 20
MAX_DURATION_SECONDS = 86400  # iperf3's MAX_TIME
# iperf3 sends -1 for "unknown"; 3.12 prints it as an unsigned 64-bit number.
_UNKNOWN_NUMBERS = (-1, 2**64 - 1)
_JSON_NESTING_LIMIT = 32  # real messages nest 3 deep; deeper is garbage, and would exhaust the stack

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
# A server's receiver figures (upload) must fit what we sent. It starts its clock before ours (it sends
# TEST_START, we read it) and stops it after ours (we send TEST_END, it reads it), so its time is the
# longer one: recorded iperf 3.12 servers measured 35-43 ms more than their client on loopback. It comes
# out shorter only if the server's omit timer fires late on a busy host (the fixed allowance: a
# scheduling delay, generously) or its clock runs slower than ours (the fraction: NTP slews at most
# 500 ppm). On a 10 s stage that lets a server inflate its rate by 3.5 % at most.
MEASURING_TIME_TOLERANCE_SECONDS = 0.25
MEASURING_TIME_TOLERANCE_FRACTION = 0.01
# How much longer than ours its time may be: its start leads ours by TEST_START's one-way trip, its stop
# lags by TEST_END's, which waits behind our data in the path's queue; our streams' smoothed RTT includes
# that queue, so two of our longest RTT cover both. The fixed part is for a TEST_END lost and sent again
# (twice, at TCP's 200 ms minimum RTO) and a busy server's scheduling; the fraction is the clock rate again.
LATE_STOP_SECONDS = 1.0
# Nor may the server count fewer bytes than its TCP acknowledged (tcpi_bytes_acked) in our measuring time:
# those reached its kernel. Its own count may lack (1) what came before its window opened, if its omit
# timer fired late: the same 0.25 s + 1 % of our time as above, at our rate; (2) what sat unread in its
# receive buffer at TEST_END (iperf3 closes the streams without reading them). A server that reads as fast
# as data comes holds next to nothing; one that cannot keep up holds a full buffer, which Linux autotunes
# to a few round trips of what it reads (twice the bytes read per RTT, up to six while the rate grows;
# tcp_rcv_space_adjust) from an initial 128 KiB (tcp_rmem[1]), up to tcp_rmem[2] (6 MiB, 32 MiB since
# Linux 6.16, more on tuned hosts). Allowed: eight of our longest RTT and one more second at our rate (a
# 32 MiB buffer drains in a second at 270 Mbit/s: a far end that reads slower is not a VPN's far end),
# 1 MiB per stream for the initial buffer, and twice a window we asked for (-w sets SO_RCVBUF, which
# Linux doubles). With both rules, on a 10 s stage with 4 streams at 20 ms, a lying server can understate
# 1 Gbit/s by 24 % at most, 100 Mbit/s by 27 %, 20 Mbit/s by 39 % (the 1 MiB per stream weighs more).
UNREAD_SECONDS = 1.0
UNREAD_ROUND_TRIPS = 8
UNREAD_BYTES_PER_STREAM = 1 << 20
# cpu_util is CPU time over wall time in percent, summed over a process's threads: at most 100 per core,
# and Linux builds for at most 8192 cores (CONFIG_NR_CPUS).
MAX_CPU_PERCENT = 100.0 * 8192
# Leave this much of the caller's deadline for TEST_END and the results exchange.
END_MARGIN_SECONDS = 1.0
# Near-saturation, in percent of one core. Our data threads hold the GIL between send()/recv()
# calls, so user time near one core means Python is the bottleneck; the kernel's copies run in
# parallel, so total time counts as limiting only near every core the streams could use.
CPU_LIMITED_PERCENT = 90.0


def cpu_limited(cpu: Mapping[str, float], streams: int) -> bool:
    cores = min(streams, os.cpu_count() or 1)
    return cpu["user"] >= CPU_LIMITED_PERCENT or cpu["total"] >= CPU_LIMITED_PERCENT * cores

# struct tcp_info (linux/tcp.h): eight u8 fields, then u32 tcpi_rto ... tcpi_rcv_space (23 of them),
# so tcpi_total_retrans (u32) is at 8 + 23 * 4 = 100; then u64 tcpi_pacing_rate (104) and
# tcpi_max_pacing_rate (112), and u64 tcpi_bytes_acked at 120 (Linux 4.1+). tcpi_rtt, the smoothed
# RTT in microseconds, is the 16th u32: 8 + 15 * 4 = 68.
TCP_INFO_RTT_OFFSET = 68
TCP_INFO_TOTAL_RETRANS_OFFSET = 100
TCP_INFO_BYTES_ACKED_OFFSET = 120
_TCP_INFO_BYTES = 232
_TCP_CONGESTION_NAME_MAX = 16


class State(enum.IntEnum):
    """Control-channel states (iperf_api.h); each travels as one signed byte."""

    TEST_START = 1
    TEST_RUNNING = 2
    TEST_END = 4
    PARAM_EXCHANGE = 9
    CREATE_STREAMS = 10
    SERVER_TERMINATE = 11
    CLIENT_TERMINATE = 12
    EXCHANGE_RESULTS = 13
    DISPLAY_RESULTS = 14
    IPERF_START = 15
    IPERF_DONE = 16
    ACCESS_DENIED = -1
    SERVER_ERROR = -2


IEDURATION = 5  # iperf_api.h: the one refusal a client can act on by asking for less
# iperf3's i_errno values a server may send with SERVER_ERROR (iperf_api.h), for readable details.
I_ERRNO_NAMES = {
    IEDURATION: "IEDURATION: test duration too long",
    6: "IENUMSTREAMS: number of parallel streams too large",
    7: "IEBLOCKSIZE: block size too large",
    8: "IEBUFSIZE: socket buffer size too large",
    10: "IEMSS: MSS too large",
    12: "IEOMIT: bogus value for --omit",
    13: "IEUNIMP: not implemented",
    20: "IEUDPBLOCKSIZE: block size invalid",
    25: "IEREVERSEBIDIR: cannot be both reverse and bidirectional",
    27: "IETOTALRATE: total required bandwidth is larger than server's limit",
    101: "IEINITTEST: test initialization failed",
    102: "IELISTEN: unable to listen for connections",
    104: "IEACCEPT: unable to accept connection from client",
    106: "IERECVCOOKIE: unable to receive cookie from client",
    109: "IECTRLCLOSE: control socket has closed unexpectedly",
    110: "IEMESSAGE: received an unknown message",
    114: "IERECVPARAMS: unable to receive parameters from client",
    117: "IERECVRESULTS: unable to receive results from client",
    122: "IESETNODELAY: unable to set TCP NODELAY",
    123: "IESETMSS: unable to set TCP MSS",
    124: "IESETBUF: unable to set socket buffer size",
    125: "IESETTOS: unable to set IP TOS",
    131: "IEPROTOCOL: protocol does not exist",
    134: "IESETCONGESTION: unable to set TCP_CONGESTION",
    141: "IESETBUF2: socket buffer size incorrect",
    142: "IEAUTHTEST: test authorization failed",
    204: "IESTREAMACCEPT: unable to accept stream connection",
    208: "IESTREAMID: stream has invalid ID",
}


class Iperf3ProtocolError(ValueError):
    """Bytes or JSON from a peer that break the protocol (or its bounds)."""


class Failure(enum.StrEnum):
    """How a test can fail. Closed: reports and metrics may enumerate it."""

    CONNECTION_FAILED = "connection_failed"  # could not connect / refused
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
    local_cpu_percent: dict | None  # {"total", "user", "system"} of this process over the test
    remote_cpu_percent: dict | None  # the server's figures from its results JSON
    cpu_limited: bool | None  # this host's CPU was the bottleneck (see cpu_limited())
    server_results: dict | None  # the server's results JSON as received (evidence)
    intervals: tuple[tuple[float, int], ...]  # (seconds since start, bytes in the interval ending then)
    # Upload figures of the server refused as inconsistent with ours, beside ours:
    # {"server": {"bytes", "seconds"}, "ours": UploadFigures.evidence()}; None when none were refused.
    disputed: dict | None = None
    i_errno: int | None = None  # with Failure.SERVER_ERROR: the server's iperf3 error number


# ---------------------------------------------------------------------------------------------
# Codec: pure functions over bytes and JSON values, strict and bounded.


def make_cookie() -> bytes:
    return "".join(secrets.choice(COOKIE_ALPHABET) for _ in range(COOKIE_SIZE - 1)).encode() + b"\0"


def check_cookie(raw: bytes) -> bytes:
    """The cookie itself; Iperf3ProtocolError unless it is 36 printable ASCII characters and a NUL."""
    if len(raw) != COOKIE_SIZE or raw[-1] != 0 or not all(0x21 <= b <= 0x7E for b in raw[:-1]):
        raise Iperf3ProtocolError(f"not an iperf3 cookie: {raw[:COOKIE_SIZE]!r}")
    return raw


def encode_state(state: State) -> bytes:
    return struct.pack("b", state)


def decode_state(raw: bytes) -> State:
    if len(raw) != 1:
        raise Iperf3ProtocolError(f"a state is one byte, got {len(raw)}")
    value = struct.unpack("b", raw)[0]
    try:
        return State(value)
    except ValueError:
        raise Iperf3ProtocolError(f"unknown state byte {value}") from None


def encode_json(message: Mapping[str, Any]) -> bytes:
    """Length-prefixed compact JSON, as iperf3's JSON_write (cJSON_PrintUnformatted) sends it."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return struct.pack("!I", len(body)) + body


def decode_json_length(header: bytes, max_bytes: int) -> int:
    if len(header) != 4:
        raise Iperf3ProtocolError(f"a JSON length is 4 bytes, got {len(header)}")
    length = struct.unpack("!I", header)[0]
    if not 0 < length <= max_bytes:
        raise Iperf3ProtocolError(f"JSON length {length} is not 1..{max_bytes}")
    return length


def _reject_constant(name: str) -> Any:
    raise Iperf3ProtocolError(f"JSON constant {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as inf: no NaN or infinity from a peer, however spelled
        raise Iperf3ProtocolError(f"JSON number {text[:40]} is out of range")
    return value


def decode_json(body: bytes) -> dict[str, Any]:
    """A JSON object from a peer; Iperf3ProtocolError for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Iperf3ProtocolError(f"JSON is not UTF-8: {exc}") from None
    if _nesting_depth(text) > _JSON_NESTING_LIMIT:
        raise Iperf3ProtocolError(f"JSON nests deeper than {_JSON_NESTING_LIMIT}")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        if isinstance(exc, Iperf3ProtocolError):
            raise
        raise Iperf3ProtocolError(f"bad JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Iperf3ProtocolError(f"JSON message is a {type(value).__name__}, not an object")
    return value


def _nesting_depth(text: str) -> int:
    """An upper bound of the JSON nesting depth (brackets inside strings count too: harmless)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _number(message: Mapping[str, Any], key: str, *, required: bool = True) -> float | None:
    value = message.get(key)
    if value is None and not required and key not in message:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Iperf3ProtocolError(f"{key!r} is not a number: {value!r:.40}")
    # Python reads any JSON integer exactly; cJSON holds numbers as doubles, so beyond 2**64 is garbage.
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > 2**64:
        raise Iperf3ProtocolError(f"{key!r} is out of range: {value!r:.40}")
    return value


def _integer(message: Mapping[str, Any], key: str, *, required: bool = True) -> int | None:
    """An integer as cJSON's valueint reads it: numbers are truncated (1.5 -> 1)."""
    value = _number(message, key, required=required)
    return None if value is None else int(value)


def _flag(message: Mapping[str, Any], key: str) -> bool:
    value = message.get(key, False)
    if not isinstance(value, bool):
        raise Iperf3ProtocolError(f"{key!r} is not true or false: {value!r}")
    return value


def _text(message: Mapping[str, Any], key: str, max_chars: int = 256) -> str | None:
    value = message.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise Iperf3ProtocolError(f"{key!r} is not a string of at most {max_chars} characters")
    return value


def _cpu_percent(message: Mapping[str, Any], key: str) -> float:
    value: float = _number(message, key)  # type: ignore[assignment]
    if not 0 <= value <= MAX_CPU_PERCENT:
        raise Iperf3ProtocolError(f"{key!r} is not a CPU percentage in 0..{MAX_CPU_PERCENT:g}: {value!r:.40}")
    return value


def _known(value: int | None) -> int | None:
    return None if value is None or value in _UNKNOWN_NUMBERS else value


@dataclass(frozen=True)
class TestParameters:
    """What a client asks for (send_parameters / get_parameters)."""

    __test__ = False

    protocol: str = "tcp"  # "tcp", "udp" or "sctp"
    omit_seconds: int = 0
    duration_seconds: int = 10
    bytes_to_send: int = 0  # -n; 0 = by time
    blocks_to_send: int = 0  # -k; 0 = by time
    parallel: int = 1
    reverse: bool = False
    bidirectional: bool = False
    window_bytes: int | None = None
    block_bytes: int = 128 * 1024
    bandwidth_bits_per_second: int = 0  # 0 = unlimited, the TCP default
    mss: int | None = None
    nodelay: bool = False
    congestion: str | None = None
    get_server_output: bool = False
    client_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Keys in the order iperf 3.12's send_parameters writes them, with its defaults."""
        message: dict[str, Any] = {self.protocol: True, "omit": self.omit_seconds, "time": self.duration_seconds,
                                   "num": self.bytes_to_send, "blockcount": self.blocks_to_send}
        if self.mss:
            message["MSS"] = self.mss
        if self.nodelay:
            message["nodelay"] = True
        message["parallel"] = self.parallel
        if self.reverse:
            message["reverse"] = True
        if self.bidirectional:
            message["bidirectional"] = True
        if self.window_bytes:
            message["window"] = self.window_bytes
        message["len"] = self.block_bytes
        if self.bandwidth_bits_per_second:
            message["bandwidth"] = self.bandwidth_bits_per_second
        message["pacing_timer"] = 1000
        if self.congestion:
            message["congestion"] = self.congestion
        if self.get_server_output:
            message["get_server_output"] = 1
        message["client_version"] = self.client_version or CLIENT_VERSION
        return message

    @classmethod
    def from_json(cls, message: Mapping[str, Any]) -> TestParameters:
        """Parse a client's parameters; Iperf3ProtocolError on wrong types (bounds are policy: the server's)."""
        protocols = [name for name in ("tcp", "udp", "sctp") if _flag(message, name)]
        if len(protocols) > 1:
            raise Iperf3ProtocolError(f"more than one protocol: {protocols}")
        counts = {key: _integer(message, key, required=False) for key in
                  ("omit", "time", "num", "blockcount", "parallel", "window", "len", "bandwidth", "MSS")}
        for key, value in counts.items():
            if value is not None and not 0 <= value < 2**63:
                raise Iperf3ProtocolError(f"{key!r} is out of range: {value}")
        if "get_server_output" in message:
            _integer(message, "get_server_output")
        return cls(
            protocol=protocols[0] if protocols else "tcp",
            omit_seconds=counts["omit"] or 0,
            duration_seconds=counts["time"] if counts["time"] is not None else 10,
            bytes_to_send=counts["num"] or 0,
            blocks_to_send=counts["blockcount"] or 0,
            parallel=counts["parallel"] if counts["parallel"] is not None else 1,
            reverse=_flag(message, "reverse"),
            bidirectional=_flag(message, "bidirectional"),
            window_bytes=counts["window"] or None,
            block_bytes=counts["len"] if counts["len"] is not None else 128 * 1024,
            bandwidth_bits_per_second=counts["bandwidth"] or 0,
            mss=counts["MSS"] or None,
            nodelay=_flag(message, "nodelay"),
            congestion=_text(message, "congestion", 16),
            get_server_output=bool(message.get("get_server_output")),
            client_version=_text(message, "client_version", 64),
        )


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


@dataclass(frozen=True)
class StreamFigures:
    id: int
    bytes: int
    retransmits: int | None  # None: unknown (the receiver's side, or no TCP_INFO)
    start_time: float | None  # None: a pre-3.2 peer that does not send them
    end_time: float | None


@dataclass(frozen=True)
class PeerResults:
    """A results message (send_results / get_results)."""

    cpu_util_total: float
    cpu_util_user: float
    cpu_util_system: float
    sender_has_retransmits: bool | None  # None: this side was the receiver
    congestion_used: str | None
    streams: tuple[StreamFigures, ...]

    @property
    def total_bytes(self) -> int:
        return sum(stream.bytes for stream in self.streams)

    @property
    def measuring_seconds(self) -> float | None:
        """The first stream's time, which iperf3 uses for the sum (iperf_print_results)."""
        if not self.streams or self.streams[0].end_time is None or self.streams[0].start_time is None:
            return None
        return self.streams[0].end_time - self.streams[0].start_time

    @property
    def retransmits(self) -> int | None:
        counts = [stream.retransmits for stream in self.streams]
        if not self.sender_has_retransmits or not counts or None in counts:
            return None
        return sum(counts)  # type: ignore[arg-type]

    @property
    def cpu_percent(self) -> dict[str, float]:
        return {"total": self.cpu_util_total, "user": self.cpu_util_user, "system": self.cpu_util_system}

    @classmethod
    def from_json(cls, message: Mapping[str, Any]) -> PeerResults:
        """Parse a results message; Iperf3ProtocolError where get_results would fail, or worse."""
        raw_streams = message.get("streams")
        if not isinstance(raw_streams, list) or len(raw_streams) > 2 * MAX_STREAMS * 8:
            raise Iperf3ProtocolError("'streams' is missing or not a list of a sane length")
        streams = []
        for raw in raw_streams:
            if not isinstance(raw, dict):
                raise Iperf3ProtocolError(f"a stream is a {type(raw).__name__}, not an object")
            for key in ("jitter", "errors", "packets"):
                _number(raw, key)
            byte_count = _integer(raw, "bytes")
            if not 0 <= byte_count < 2**63:  # type: ignore[operator]
                raise Iperf3ProtocolError(f"stream bytes out of range: {byte_count}")
            start, end = _number(raw, "start_time", required=False), _number(raw, "end_time", required=False)
            if (start is None) != (end is None) or (start is not None and not 0 <= start <= end):  # type: ignore
                raise Iperf3ProtocolError(f"bad stream times: start {start}, end {end}")
            retransmits = _known(_integer(raw, "retransmits"))
            if retransmits is not None and not 0 <= retransmits < 2**63:
                raise Iperf3ProtocolError(f"stream retransmits out of range: {retransmits}")
            streams.append(StreamFigures(
                id=_integer(raw, "id"),  # type: ignore[arg-type]
                bytes=byte_count,  # type: ignore[arg-type]
                retransmits=retransmits,
                start_time=start, end_time=end,
            ))
        has_retransmits = _known(_integer(message, "sender_has_retransmits"))
        if has_retransmits not in (None, 0, 1):
            raise Iperf3ProtocolError(f"'sender_has_retransmits' is not 0, 1 or -1: {has_retransmits}")
        return cls(
            cpu_util_total=_cpu_percent(message, "cpu_util_total"),
            cpu_util_user=_cpu_percent(message, "cpu_util_user"),
            cpu_util_system=_cpu_percent(message, "cpu_util_system"),
            sender_has_retransmits=None if has_retransmits is None else bool(has_retransmits),
            congestion_used=_text(message, "congestion_used", 64),
            streams=tuple(streams),
        )


def decode_results(body: bytes) -> PeerResults:
    return PeerResults.from_json(decode_json(body))


def results_json(*, cpu: Mapping[str, float], sending: bool, has_retransmits: bool, congestion: str | None,
                 streams: Sequence[StreamFigures]) -> dict[str, Any]:
    """Our results message, shaped like 3.12's send_results (unknowns as -1, which every version reads)."""
    message: dict[str, Any] = {
        "cpu_util_total": cpu["total"], "cpu_util_user": cpu["user"], "cpu_util_system": cpu["system"],
        "sender_has_retransmits": (1 if has_retransmits else 0) if sending else -1,
    }
    if congestion:
        message["congestion_used"] = congestion
    message["streams"] = [
        {"id": s.id, "bytes": s.bytes, "retransmits": -1 if s.retransmits is None else s.retransmits,
         "jitter": 0, "errors": 0, "packets": 0, "start_time": s.start_time or 0,
         "end_time": round(s.end_time or 0.0, 6)}
        for s in streams
    ]
    return message


@dataclass(frozen=True)
class UploadFigures:
    """Our side of an upload, to hold the server's receiver figures against."""

    bytes_sent: int  # written over the whole test, the omit period too (the server times its own omit)
    seconds: float  # our measuring time, after the omit period
    # Without TCP_INFO (None) the rules that need these figures are not applied: no proof, no verdict.
    bytes_acknowledged: int | None  # acknowledged by the server's TCP in our measuring time
    round_trip_seconds: float | None  # the longest smoothed RTT of our streams over the test
    slack_bytes: int  # what the kernel may have taken from writes whose count we have not seen yet
    unread_bytes: int  # per-stream allowance for the server's receive buffers (UNREAD_BYTES_PER_STREAM, -w)

    def evidence(self) -> dict[str, Any]:
        return {"bytes_sent": self.bytes_sent, "bytes_acknowledged": self.bytes_acknowledged, "seconds": self.seconds,
                "round_trip_seconds": self.round_trip_seconds}


def unread_allowance_bytes(streams: int, window_bytes: int | None) -> int:
    return streams * (UNREAD_BYTES_PER_STREAM + 2 * (window_bytes or 0))


def implausible_receiver_figures(received: int, seconds: float, ours: UploadFigures) -> str | None:
    """Why a server's receiver figures cannot be true of what we sent, or None when they fit
    (the bounds are explained where MEASURING_TIME_TOLERANCE_SECONDS and UNREAD_SECONDS are set)."""
    problems = []
    if received > ours.bytes_sent + ours.slack_bytes:
        problems.append("more bytes than we wrote")
    if ours.bytes_acknowledged is not None and ours.round_trip_seconds is not None:
        missed_seconds = (MEASURING_TIME_TOLERANCE_SECONDS + MEASURING_TIME_TOLERANCE_FRACTION * ours.seconds
                          + UNREAD_SECONDS + UNREAD_ROUND_TRIPS * ours.round_trip_seconds)
        share = max(0.0, 1 - missed_seconds / ours.seconds) if ours.seconds > 0 else 0.0
        least = math.floor(ours.bytes_acknowledged * share) - ours.unread_bytes
        if received < least:
            problems.append(f"fewer bytes than its TCP acknowledged: at least {least}")
    if seconds < ours.seconds * (1 - MEASURING_TIME_TOLERANCE_FRACTION) - MEASURING_TIME_TOLERANCE_SECONDS:
        problems.append("in less time than the test ran")
    if ours.round_trip_seconds is not None:
        longest = (ours.seconds * (1 + MEASURING_TIME_TOLERANCE_FRACTION) + LATE_STOP_SECONDS
                   + 2 * ours.round_trip_seconds)
        if seconds > longest:
            problems.append(f"in more time than the test ran: at most {longest:.6f} s")
    if not problems:
        return None
    acknowledged = "" if ours.bytes_acknowledged is None else f", {ours.bytes_acknowledged} of them acknowledged"
    return (f"the server's figures do not fit ours: it reports {received} bytes received in {seconds:.6f} s, "
            f"we wrote {ours.bytes_sent} bytes{acknowledged} in {ours.seconds:.6f} s ({'; '.join(problems)})")


def stream_ids(count: int) -> list[int]:
    """iperf_add_stream numbers the first stream 1 and the next ones 3, 4, 5, ... (a quirk since 3.0)."""
    return [1, *range(3, count + 2)][:count]


def describe_server_error(i_errno: int, errno_value: int) -> str:
    name = I_ERRNO_NAMES.get(i_errno, "unknown to xcheck")
    text = f"server error: i_errno {i_errno} ({name})"
    if errno_value:
        text += f", errno {errno_value} ({os.strerror(errno_value)})"
    return text


# ---------------------------------------------------------------------------------------------
# Sockets: TCP_INFO, CPU, data streams (shared with agent/iperf3_server.py).


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


class CpuMeter:
    """This process's CPU use over a span, as iperf3's cpu_util(): percent of one core's wall time."""

    def __init__(self) -> None:
        self._wall = time.monotonic()
        self._usage = resource.getrusage(resource.RUSAGE_SELF)

    def percent(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._wall, 1e-9)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        user = (usage.ru_utime - self._usage.ru_utime) / wall * 100
        system = (usage.ru_stime - self._usage.ru_stime) / wall * 100
        return {"total": user + system, "user": user, "system": system}


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

    def run(self) -> None:
        try:
            if self.sending:
                self._send()
            else:
                self._receive()
        except OSError as exc:
            if not self.stopping:
                self.error = exc

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


# ---------------------------------------------------------------------------------------------
# The client.


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

    def read_json(self, until: float, max_bytes: int) -> tuple[bytes, dict[str, Any]]:
        length = decode_json_length(self.read_exact(4, until), max_bytes)
        body = self.read_exact(length, until)
        return body, decode_json(body)


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
        self.cpu = CpuMeter()
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
            raise _Abort(Failure.CONNECTION_FAILED, f"control connection to {self.spec.host}:{self.spec.port}: "
                                                    f"{exc}") from None
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
            body, message = self.control.read_json(self._until(RESULTS_TIMEOUT_SECONDS), MAX_RESULTS_JSON_BYTES)
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
