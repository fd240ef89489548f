"""iperf3's TCP test protocol, spoken natively (no libiperf): the wire codec that the client
(checks/transport/iperf3_client.py) and the responder's server (agent/responder/iperf3_server.py) share.
No I/O: states, the cookie, length-prefixed JSON, parameters and results messages, iperf3's error
numbers, and the pure rule that holds a server's receiver figures against what the client saw.
(About 500 lines: the whole protocol as one codec, so client and server cannot drift apart.)

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
import json
import math
import os
import secrets
import struct
from collections.abc import Mapping, Sequence
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
                "round_trip_seconds": self.round_trip_seconds, "slack_bytes": self.slack_bytes}


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
