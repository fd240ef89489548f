"""The iperf3 codec against control-channel bytes recorded between stock iperf 3.12 peers
(tests/fixtures/iperf3/README.md), our client against a replay of those bytes, and fuzzing."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checks.protocols import iperf3
from checks.protocols.iperf3 import (
    COOKIE_ALPHABET,
    COOKIE_SIZE,
    Iperf3ProtocolError,
    PeerResults,
    State,
    TestParameters,
)
from checks.transport import iperf3_client, streams
from checks.transport.iperf3_client import Failure, TestSpec

FIXTURES = Path(__file__).parent / "fixtures" / "iperf3"
RECORDED_TESTS = ["upload-1-stream", "reverse-1-stream", "upload-4-streams", "upload-omit"]


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def side(fixture: dict, who: str) -> bytes:
    """Everything one side sent on the control connection, in order."""
    return b"".join(bytes.fromhex(c["hex"]) for c in fixture["control"] if c["from"] == who and "hex" in c)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, size: int) -> bytes:
        chunk = self.data[self.at:self.at + size]
        assert len(chunk) == size, "recording ended early"
        self.at += size
        return chunk

    def state(self) -> State:
        return iperf3.decode_state(self.take(1))

    def json(self) -> tuple[bytes, dict]:
        body = self.take(iperf3.decode_json_length(self.take(4), iperf3.MAX_RESULTS_JSON_BYTES))
        return body, iperf3.decode_json(body)

    @property
    def done(self) -> bool:
        return self.at == len(self.data)


def parse_exchange(fixture: dict) -> dict:
    client, server = Reader(side(fixture, "client")), Reader(side(fixture, "server"))
    exchange = {"cookie": client.take(COOKIE_SIZE)}
    length = struct.unpack("!I", client.data[client.at:client.at + 4])[0]
    exchange["parameters_bytes"] = client.data[client.at:client.at + 4 + length]
    _, exchange["parameters"] = client.json()
    exchange["client_states"] = [client.state()]
    _, exchange["client_results"] = client.json()
    exchange["client_states"].append(client.state())
    exchange["server_states"] = [server.state() for _ in range(5)]
    exchange["server_results_body"], exchange["server_results"] = server.json()
    exchange["server_states"].append(server.state())
    assert client.done and server.done
    return exchange


# ---------------------------------------------------------------------------------------------
# The recorded exchanges, decoded.


@pytest.mark.parametrize("name", RECORDED_TESTS)
def test_recorded_exchange_follows_the_documented_sequence(name):
    fixture = load(name)
    exchange = parse_exchange(fixture)
    assert exchange["server_states"] == [State.PARAM_EXCHANGE, State.CREATE_STREAMS, State.TEST_START,
                                         State.TEST_RUNNING, State.EXCHANGE_RESULTS, State.DISPLAY_RESULTS]
    assert exchange["client_states"] == [State.TEST_END, State.IPERF_DONE]
    assert iperf3.check_cookie(exchange["cookie"]) == exchange["cookie"]
    assert set(exchange["cookie"][:-1].decode()) <= set(COOKIE_ALPHABET)
    # Every data stream opens with the control connection's cookie.
    assert {s["cookie_hex"] for s in fixture["data_streams"]} == {exchange["cookie"].hex()}
    assert len(fixture["data_streams"]) == exchange["parameters"]["parallel"]


@pytest.mark.parametrize("name, spec", [
    ("upload-1-stream", TestSpec("127.0.0.1", duration_seconds=1)),
    ("reverse-1-stream", TestSpec("127.0.0.1", duration_seconds=1, reverse=True)),
    ("upload-4-streams", TestSpec("127.0.0.1", duration_seconds=1, streams=4)),
    ("upload-omit", TestSpec("127.0.0.1", duration_seconds=1, omit_seconds=1)),
])
def test_our_parameters_are_byte_for_byte_iperf_3_12s(name, spec):
    exchange = parse_exchange(load(name))
    assert iperf3.encode_json(iperf3_client.parameters_for(spec).to_json()) == exchange["parameters_bytes"]
    assert TestParameters.from_json(exchange["parameters"]) == iperf3_client.parameters_for(spec)


def test_fractional_duration_is_announced_rounded_up():
    assert iperf3_client.parameters_for(TestSpec("127.0.0.1", duration_seconds=1.2)).duration_seconds == 2


@pytest.mark.parametrize("name", ["upload-1-stream", "upload-4-streams", "upload-omit"])
def test_server_results_give_what_iperf3_c_reports_as_sum_received(name):
    fixture = load(name)
    results = PeerResults.from_json(parse_exchange(fixture)["server_results"])
    sum_received = json.loads(fixture["client_stdout"])["end"]["sum_received"]
    assert results.total_bytes == sum_received["bytes"]
    assert results.measuring_seconds == pytest.approx(sum_received["end"], abs=1e-6)
    assert results.total_bytes * 8 / results.measuring_seconds == pytest.approx(sum_received["bits_per_second"])
    # 3.12 sends "unknown" (-1) as 2**64 - 1: the receiving server has no retransmit count.
    assert results.sender_has_retransmits is None and results.retransmits is None
    assert results.congestion_used == "bbr"


def test_stream_ids_skip_2_as_iperf_add_stream_does():
    results = PeerResults.from_json(parse_exchange(load("upload-4-streams"))["server_results"])
    assert [s.id for s in results.streams] == iperf3.stream_ids(4) == [1, 3, 4, 5]


def test_client_results_carry_the_senders_retransmits():
    fixture = load("upload-1-stream")
    results = PeerResults.from_json(parse_exchange(fixture)["client_results"])
    sum_sent = json.loads(fixture["client_stdout"])["end"]["sum_sent"]
    assert results.sender_has_retransmits is True
    assert results.retransmits == sum_sent["retransmits"]
    assert results.total_bytes == sum_sent["bytes"]


def test_reverse_server_results_are_the_senders():
    fixture = load("reverse-1-stream")
    exchange = parse_exchange(fixture)
    server = PeerResults.from_json(exchange["server_results"])
    client = PeerResults.from_json(exchange["client_results"])
    end = json.loads(fixture["client_stdout"])["end"]
    assert server.retransmits == end["sum_sent"]["retransmits"]
    assert server.total_bytes == end["sum_sent"]["bytes"]
    assert client.total_bytes == end["sum_received"]["bytes"]
    assert client.sender_has_retransmits is None


def test_our_results_message_has_3_12s_shape():
    recorded = parse_exchange(load("upload-4-streams"))["client_results"]
    ours = iperf3.results_json(
        cpu={"total": 1.5, "user": 0.5, "system": 1.0}, sending=True, has_retransmits=True, congestion="bbr",
        streams=[iperf3.StreamFigures(i, 10, 0, 0, 1.0) for i in iperf3.stream_ids(4)])
    assert list(ours) == list(recorded)
    assert [list(s) for s in ours["streams"]] == [list(s) for s in recorded["streams"]]
    assert PeerResults.from_json(ours).retransmits == 0


def test_busy_server_answers_access_denied_and_closes():
    fixture = load("busy")
    assert side(fixture, "server") == b"\xff"
    assert iperf3.decode_state(side(fixture, "server")) == State.ACCESS_DENIED
    assert {"from": "server", "eof": True} in fixture["control"]


def test_server_error_carries_i_errno_and_errno():
    reply = side(load("server-error-mss"), "server")
    assert reply[:1] == b"\t"
    assert iperf3.decode_state(reply[1:2]) == State.SERVER_ERROR
    i_errno, errno_value = struct.unpack("!ii", reply[2:])
    assert (i_errno, errno_value) == (123, 22)
    assert iperf3.describe_server_error(i_errno, errno_value) == \
        "server error: i_errno 123 (IESETMSS: unable to set TCP MSS), errno 22 (Invalid argument)"


# ---------------------------------------------------------------------------------------------
# Our client against a replay of the recorded server.


class ReplayServer:
    """Plays the recorded server's control bytes back at the client's steps; sinks data streams."""

    def __init__(self, fixture: dict, *, overrides: dict[str, bytes] | None = None) -> None:
        exchange = parse_exchange(fixture)
        results = exchange["server_results_body"]
        self.replies = {"cookie": b"\t", "parameters": b"\n", "streams": b"\x01\x02", "test_end": b"\r",
                        "results": struct.pack("!I", len(results)) + results + b"\x0e"}
        self.replies.update(overrides or {})
        self.streams = exchange["parameters"]["parallel"]
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: dict[str, bytes] = {}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        control, _ = self.listener.accept()
        control.settimeout(10)
        try:
            self.received["cookie"] = _recv_exact(control, COOKIE_SIZE)
            control.sendall(self.replies["cookie"])
            self.received["parameters"] = _recv_json(control)
            control.sendall(self.replies["parameters"])
            for _ in range(self.streams):
                stream, _ = self.listener.accept()
                threading.Thread(target=_sink, args=(stream,), daemon=True).start()
            control.sendall(self.replies["streams"])
            self.received["test_end"] = _recv_exact(control, 1)
            control.sendall(self.replies["test_end"])
            self.received["results"] = _recv_json(control)
            if not self.replies["results"]:
                return  # closes instead of answering
            control.sendall(self.replies["results"])
            self.received["done"] = _recv_exact(control, 1)
        except OSError:
            pass
        finally:
            control.close()

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes an accept() waiting for streams that never come
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _recv_json(sock: socket.socket) -> bytes:
    header = _recv_exact(sock, 4)
    return header + _recv_exact(sock, struct.unpack("!I", header)[0])


def _sink(sock: socket.socket) -> None:
    with sock:
        try:
            while sock.recv(1 << 16):
                pass
        except OSError:
            pass


@pytest.fixture
def replay(request):
    servers = []

    def start(name: str, **overrides: bytes) -> ReplayServer:
        server = ReplayServer(load(name), overrides=overrides)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_client_completes_against_the_recorded_server(replay):
    # The recorded server received 1.3 GB; a server claiming more than we wrote is refused, and a loaded
    # machine may write less in this 0.5 s test. Its message with every count cut 10,000-fold fits any machine.
    message = parse_exchange(load("upload-4-streams"))["server_results"]
    for stream in message["streams"]:
        stream["bytes"] //= 10_000
    body = json.dumps(message, separators=(",", ":")).encode()
    server = replay("upload-4-streams", results=struct.pack("!I", len(body)) + body + b"\x0e")
    spec = TestSpec("127.0.0.1", server.port, duration_seconds=0.5, streams=4)
    result = iperf3_client.run_test(spec, deadline=time.monotonic() + 10)
    assert result.ok, result.detail
    recorded = PeerResults.from_json(message)
    assert result.bytes_received == recorded.total_bytes
    assert result.duration_seconds == recorded.measuring_seconds
    assert result.remote_cpu_percent == recorded.cpu_percent
    server.thread.join(5)  # it may still be reading our IPERF_DONE
    assert server.received["test_end"] == b"\x04" and server.received["done"] == b"\x10"
    ours = PeerResults.from_json(json.loads(server.received["results"][4:]))
    assert [s.id for s in ours.streams] == [1, 3, 4, 5]
    assert ours.total_bytes > 0


@pytest.mark.parametrize("step, reply, failure", [
    ("cookie", b"\xff", Failure.ACCESS_DENIED),
    ("parameters", bytes.fromhex(side(load("server-error-mss"), "server").hex()[2:]), Failure.SERVER_ERROR),
    ("cookie", b"\x63", Failure.PROTOCOL_ERROR),  # 99: no such state
    ("parameters", b"\x0d", Failure.PROTOCOL_ERROR),  # EXCHANGE_RESULTS before any test
    ("results", b"\xff\xff\xff\xff{", Failure.PROTOCOL_ERROR),  # 4 GiB of JSON announced
    ("results", b"\x00\x00\x00\x05[1,2]\x0e", Failure.PROTOCOL_ERROR),
    ("results", b"\x00\x00\x00\x0e{\"streams\": 5}\x0e", Failure.PROTOCOL_ERROR),
    ("results", b"", Failure.SERVER_GONE),  # closes instead of answering
])
def test_client_turns_bad_replies_into_failures(replay, step, reply, failure):
    server = replay("upload-1-stream", **{step: reply})
    spec = TestSpec("127.0.0.1", server.port, duration_seconds=0.5)
    result = iperf3_client.run_test(spec, deadline=time.monotonic() + 10)
    assert not result.ok and result.failure == failure, result.detail
    if failure == Failure.SERVER_ERROR:
        assert "i_errno 123" in result.detail


# ---------------------------------------------------------------------------------------------
# Fuzzing: any bytes or JSON give a value or Iperf3ProtocolError, never another exception.

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
RESULT_KEYS = ["cpu_util_total", "cpu_util_user", "cpu_util_system", "sender_has_retransmits", "congestion_used",
               "streams", "id", "bytes", "retransmits", "jitter", "errors", "packets", "start_time", "end_time"]
PARAMETER_KEYS = ["tcp", "udp", "sctp", "omit", "time", "num", "blockcount", "parallel", "reverse", "bidirectional",
                  "window", "len", "bandwidth", "MSS", "nodelay", "congestion", "get_server_output", "client_version"]


@given(st.binary(max_size=300))
def test_decode_json_takes_any_bytes(data):
    try:
        assert isinstance(iperf3.decode_json(data), dict)
    except Iperf3ProtocolError:
        pass


@given(st.integers(iperf3._JSON_NESTING_LIMIT + 1, 100_000))
def test_deep_nesting_is_a_protocol_error(depth):
    with pytest.raises(Iperf3ProtocolError):
        iperf3.decode_json(b"[" * depth + b"]" * depth)


@given(st.binary(min_size=4, max_size=4))
def test_json_length_is_bounded(header):
    try:
        assert 0 < iperf3.decode_json_length(header, 1000) <= 1000
    except Iperf3ProtocolError:
        pass


@given(st.binary(min_size=1, max_size=1))
def test_any_state_byte_decodes_or_is_refused(byte):
    try:
        assert iperf3.decode_state(byte) in State
    except Iperf3ProtocolError:
        pass


@given(st.binary(max_size=40))
def test_cookie_check_takes_any_bytes(data):
    try:
        assert len(iperf3.check_cookie(data)) == COOKIE_SIZE
    except Iperf3ProtocolError:
        pass


def _try(parse, message):
    try:
        parse(message)
    except Iperf3ProtocolError:
        pass


@given(st.dictionaries(st.sampled_from(RESULT_KEYS) | st.text(max_size=4), json_values, max_size=8))
def test_results_parser_takes_any_json_object(message):
    _try(PeerResults.from_json, message)


@settings(max_examples=300)
@given(st.sampled_from(["upload-1-stream", "reverse-1-stream", "upload-4-streams"]), st.sampled_from(RESULT_KEYS),
       json_values, st.booleans())
def test_results_parser_takes_any_mutation_of_a_recorded_message(name, key, value, in_stream):
    message = parse_exchange(load(name))["server_results"]
    target = message["streams"][0] if in_stream else message
    target[key] = value
    _try(PeerResults.from_json, message)


@given(st.dictionaries(st.sampled_from(PARAMETER_KEYS) | st.text(max_size=4), json_values, max_size=8))
def test_parameters_parser_takes_any_json_object(message):
    _try(TestParameters.from_json, message)


def _results_from_body(body: bytes) -> PeerResults:
    """A results message body as the client and the responder decode it."""
    return PeerResults.from_json(iperf3.decode_json(body))


@given(st.binary(max_size=400))
def test_results_decoder_takes_any_bytes(data):
    _try(_results_from_body, data)


@given(st.sampled_from(RECORDED_TESTS), st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_results_decoder_takes_corrupted_recorded_bytes(name, at, junk):
    body = bytearray(parse_exchange(load(name))["server_results_body"])
    at = min(at, len(body))
    body[at:at + len(junk)] = junk
    _try(_results_from_body, bytes(body))


def test_spec_is_checked():
    with pytest.raises(ValueError, match="streams"):
        TestSpec("127.0.0.1", streams=17)
    with pytest.raises(ValueError, match="host"):
        TestSpec("example.com")
    with pytest.raises(ValueError, match="omit_seconds"):
        TestSpec("127.0.0.1", omit_seconds=0.5)


def test_cookie_is_36_characters_of_the_alphabet_and_a_nul():
    cookie = iperf3.make_cookie()
    assert len(cookie) == COOKIE_SIZE and cookie[-1] == 0
    assert set(cookie[:-1].decode()) <= set(COOKIE_ALPHABET)


def test_cpu_limited_means_the_gil_or_every_usable_core():
    import os

    one_core = {"user": 20.0, "system": 75.0, "total": 95.0}
    assert streams.cpu_limited(one_core, streams=1)
    assert streams.cpu_limited({"user": 92.0, "system": 5.0, "total": 97.0}, streams=4)  # Python itself
    if (os.cpu_count() or 1) >= 2:
        assert not streams.cpu_limited(one_core, streams=4)  # the kernel had another core to copy on
