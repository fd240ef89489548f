"""Hostile iperf3 peers on loopback (issue 8: items 4, 5 and 9).

Lying servers run each test honestly up to the results exchange, then send results that contradict
what we sent (a tiny measuring time, more bytes than we wrote; a huge time, fewer bytes than its TCP
acknowledged), numbers that are not finite or out of range, oversized strings or wrong types. The
throughput check must fail with invalid_response, keep the server's figures beside ours when they
contradict each other, and end; an honest server, stock or ours, also behind a bloated queue in the
lab, passes.

Hostile clients of `xcheck responder`'s iperf3 server ask for a test longer than its cap, go silent,
or never end their test: each loses the only test slot, and the next client is served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import XCHECK, needs_lab, run_xcheck
from lab import Lab
from test_iperf3_client import StockServer
from test_iperf3_protocol import _recv_exact, _recv_json, load, parse_exchange
from test_iperf3_server import ServerThread
from test_lab_throughput import checks, iperf3_server, measure

from agent.responder.iperf3_server import DEFAULT_MAX_TEST_SECONDS
from checks.probes import throughput
from checks.protocols import iperf3
from checks.contract import CheckContext, Outcome, Reason, Status, evidence_dict
from checks.targets import Endpoint, Resolver, Targets, ThroughputPlan
from checks.protocols.iperf3 import COOKIE_SIZE, State, StreamFigures
from checks.transport.iperf3_client import Failure, TestResult, TestSpec, run_test

LOOPBACK = "127.0.0.1"
# Bounds that only prove "does not hang": far above what a loaded 2-core machine needs.
GENEROUS_SECONDS = 30.0


# ---------------------------------------------------------------------------------------------
# Lying servers


class LyingServer:
    """An iperf3 server on loopback that runs every test honestly until the results exchange, then,
    for tests in `direction`, sends `lie(honest_results)`: a dict (sent as JSON, where Python writes
    NaN and Infinity literals) or the raw bytes of the results body."""

    def __init__(self, lie, direction: str = "upload", source=None) -> None:
        self.lie, self.direction = lie, direction
        self.source = source or _source  # what feeds a download's streams
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.session: dict | None = None
        self.honest: list[dict] = []  # the honest results of each test, in order
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            cookie = _recv_exact(conn, COOKIE_SIZE)
        except (OSError, ConnectionError):  # the latency check's TCP samples connect and close
            conn.close()
            return
        with self.lock:
            session = self.session
            if session is not None:  # a data stream of the running test, or a client to turn away
                if cookie == session["cookie"] and len(session["streams"]) < session["wanted"]:
                    session["streams"].append(conn)
                    if len(session["streams"]) == session["wanted"]:
                        session["ready"].set()
                else:
                    conn.close()
                return
            self.session = session = {"cookie": cookie, "streams": [], "wanted": 0, "ready": threading.Event()}
        try:
            self._test(conn, session)
        except (OSError, ConnectionError):
            pass  # our client hung up on a lie: that is the point
        finally:
            with self.lock:
                self.session = None
            for sock in (conn, *session["streams"]):
                sock.close()

    def _test(self, control: socket.socket, session: dict) -> None:
        control.sendall(bytes([State.PARAM_EXCHANGE]))
        parameters = json.loads(_recv_json(control)[4:])
        session["wanted"] = parameters["parallel"]
        control.sendall(bytes([State.CREATE_STREAMS]))
        assert session["ready"].wait(10), "the data streams did not come"
        reverse = parameters.get("reverse", False)
        counts = [0] * len(session["streams"])
        stop = threading.Event()
        for index, sock in enumerate(session["streams"]):
            threading.Thread(target=self.source if reverse else _sink, args=(sock, counts, index, stop),
                             daemon=True).start()
        control.sendall(bytes([State.TEST_START, State.TEST_RUNNING]))
        started = time.monotonic()
        _recv_exact(control, 1)  # TEST_END
        seconds, moved = time.monotonic() - started, list(counts)
        stop.set()
        for sock in session["streams"]:
            sock.shutdown(socket.SHUT_RDWR)  # as iperf3 at TEST_END: a downloading client drains to EOF
        control.sendall(bytes([State.EXCHANGE_RESULTS]))
        _recv_json(control)  # the client's results
        honest = iperf3.results_json(
            cpu={"total": 3.0, "user": 1.0, "system": 2.0}, sending=reverse, has_retransmits=True, congestion="cubic",
            streams=[StreamFigures(stream_id, count, 0 if reverse else None, 0, seconds)
                     for stream_id, count in zip(iperf3.stream_ids(len(moved)), moved)])
        self.honest.append(json.loads(json.dumps(honest)))
        results = self.lie(honest) if self.direction == ("download" if reverse else "upload") else honest
        body = results if isinstance(results, bytes) else json.dumps(results).encode()
        control.sendall(struct.pack("!I", len(body)) + body + bytes([State.DISPLAY_RESULTS]))
        _recv_exact(control, 1)  # IPERF_DONE


def _sink(sock: socket.socket, counts: list[int], index: int, stop: threading.Event) -> None:
    try:
        while chunk := sock.recv(1 << 16):
            if not stop.is_set():
                counts[index] += len(chunk)
    except OSError:
        pass


def _source(sock: socket.socket, counts: list[int], index: int, stop: threading.Event) -> None:
    block = os.urandom(1 << 16)
    try:
        while not stop.is_set():
            counts[index] += sock.send(block)
    except OSError:
        pass


def top(**changes):
    def lie(results: dict) -> dict:
        return results | changes
    return lie


def first_stream(**changes):
    def lie(results: dict) -> dict:
        results["streams"][0].update(changes)
        return results
    return lie


def every_stream(**changes):
    def lie(results: dict) -> dict:
        for stream in results["streams"]:
            stream.update(changes)
        return results
    return lie


def raw(replace: str, by: str):
    """The honest results as text, with one piece replaced: for what json.dumps cannot write."""
    def lie(results: dict) -> bytes:
        text = json.dumps(results)
        assert replace in text
        return text.replace(replace, by, 1).encode()
    return lie


def probe(port: int, seconds: float = 0.5) -> Outcome:
    targets = Targets(iperf=Endpoint(LOOPBACK, port), throughput=ThroughputPlan(seconds=seconds, omit_seconds=0,
                                                                                streams=(1,)))

    (target,) = targets.of_scope(throughput.CHECK.scope)

    async def run():
        ctx = CheckContext(targets=targets, target=target, deadline=time.monotonic() + GENEROUS_SECONDS,
                           dependencies={}, resolver=Resolver(), logger=logging.getLogger("test.throughput"))
        return await asyncio.wait_for(throughput.probe(ctx), GENEROUS_SECONDS)

    return asyncio.run(run())


@pytest.fixture
def lying_server():
    servers: list[LyingServer] = []

    def start(lie, direction: str = "upload", source=None) -> LyingServer:
        servers.append(LyingServer(lie, direction, source))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# A 4 s stage: long enough that the bytes the server's TCP acknowledged bind its figure (see UNREAD_SECONDS).
BINDING_SECONDS = 4.0


def _mute(sock: socket.socket, counts: list[int], index: int, stop: threading.Event) -> None:
    stop.wait()  # the stream is open and sends nothing


def test_a_download_that_moved_nothing_is_a_stall_however_short(lying_server):
    """A 1 s stage ends before the watch for a stall (STALL_SECONDS) can see one: the server runs the
    whole exchange, its streams send nothing, and that must not read as a working 0 bit/s path."""
    server = lying_server(lambda honest: honest, "download", source=_mute)
    result = run_test(TestSpec(LOOPBACK, server.port, duration_seconds=1, reverse=True),
                      deadline=time.monotonic() + GENEROUS_SECONDS)
    assert (result.ok, result.failure) == (False, Failure.STALLED), result.detail
    assert "no data moved" in result.detail


@pytest.mark.parametrize("seconds", [0.5, BINDING_SECONDS])
def test_an_honest_server_passes(lying_server, seconds):
    server = lying_server(lambda results: results)
    outcome = probe(server.port, seconds=seconds)
    assert outcome.status == Status.OK, outcome.detail
    upload = outcome.evidence.stages[0]
    claimed = server.honest[0]["streams"][0]
    assert upload.bytes_received == claimed["bytes"] > 0
    assert upload.duration_seconds == pytest.approx(claimed["end_time"], abs=1e-6)
    assert upload.disputed is None


def halve_bytes(results: dict) -> dict:
    results["streams"][0]["bytes"] //= 2
    return results


# The server's figures contradict ours: the stage keeps both.
@pytest.mark.parametrize("lie, contradiction, seconds", [
    (first_stream(end_time=1e-9), "in less time", 0.5),  # "ok, upload inf Mbit/s" before
    (first_stream(end_time=0.01), "in less time", 0.5),
    (first_stream(start_time=0.49, end_time=0.5), "in less time", 0.5),
    (first_stream(bytes=2**62), "more bytes", 0.5),
    # "ok, upload 0.0 Mbit/s" before: a server that deflates our figure.
    (first_stream(bytes=1, end_time=10.0), "in more time", 0.5),
    (first_stream(bytes=1, end_time=1e6), "in more time", 0.5),
    (first_stream(bytes=1), "fewer bytes than its TCP acknowledged", BINDING_SECONDS),
    (halve_bytes, "fewer bytes than its TCP acknowledged", BINDING_SECONDS),
], ids=["tiny-end-time", "short-end-time", "late-start-time", "more-bytes-than-sent", "one-byte-in-10-s",
        "one-byte-in-1e6-s", "one-byte", "half-the-bytes"])
def test_a_server_contradicting_what_we_sent_is_an_invalid_response(lying_server, lie, contradiction, seconds):
    server = lying_server(lie)
    outcome = probe(server.port, seconds=seconds)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.INVALID_RESPONSE), outcome.detail
    stage = outcome.evidence.stages[0]
    assert (stage.direction, stage.ok, stage.partial) == ("upload", False, True)
    disputed = stage.disputed
    claimed = lie(json.loads(json.dumps(server.honest[0])))["streams"][0]
    assert disputed["server"] == {"bytes": claimed["bytes"],
                                  "seconds": pytest.approx(claimed["end_time"] - claimed["start_time"])}
    ours = disputed["ours"]
    # A send() still blocked at TEST_END may have handed part of its block to the kernel (and its TCP
    # had it acknowledged) before its count came back: up to one block per stream, the slack.
    assert ours["bytes_sent"] + ours["slack_bytes"] >= ours["bytes_acknowledged"] > 0 and ours["seconds"] > 0.1
    assert ours["round_trip_seconds"] > 0
    assert contradiction in outcome.detail
    for figure in (disputed["server"]["bytes"], ours["bytes_sent"], ours["bytes_acknowledged"]):
        assert str(figure) in outcome.detail
    json.dumps(evidence_dict(outcome.evidence), allow_nan=False)  # the report stays strict JSON


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3 (apt install iperf3)")
def test_a_stock_iperf3_server_passes_where_acknowledged_bytes_bind(tmp_path):
    """The byte rule against the real thing: stock `iperf3 -s`, four streams, a stage long enough for
    the bytes its TCP acknowledged to bind its figure."""
    server = StockServer(tmp_path)
    try:
        result = run_test(server.spec(duration_seconds=BINDING_SECONDS, streams=4),
                          deadline=time.monotonic() + GENEROUS_SECONDS)
        assert result.ok and result.disputed is None, result.detail
        assert result.bytes_received == server.last_report()["end"]["sum_received"]["bytes"] > 0
    finally:
        server.stop()


def test_our_responder_passes_where_acknowledged_bytes_bind(responder_iperf3):
    result = run_when_free(TestSpec(LOOPBACK, responder_iperf3().port, duration_seconds=BINDING_SECONDS, streams=4,
                                    omit_seconds=1))
    assert result.ok and result.disputed is None and result.bytes_received > 0, result.detail


HUGE = "x" * 100_000


# Numbers that are not finite or not in range, oversized text, wrong types: in what we keep of each direction.
@pytest.mark.parametrize("direction, lie", [
    ("upload", first_stream(bytes=float("nan"))),
    ("upload", first_stream(end_time=float("inf"))),
    ("upload", raw('"bytes": ', '"bytes": 1e400, "x": ')),  # overflows to inf when read as a float
    ("upload", raw('"end_time": ', '"end_time": -Infinity, "x": ')),
    ("upload", first_stream(bytes=-1000)),
    ("upload", first_stream(end_time=-1.0)),
    ("upload", first_stream(bytes="1000000000")),
    ("upload", first_stream(end_time=[1])),
    ("upload", top(streams={"id": 1})),
    ("upload", top(cpu_util_total=1e18)),
    ("upload", top(cpu_util_user=-3.0)),
    ("upload", top(congestion_used=HUGE)),
    ("upload", lambda results: b'{"pad": "' + b"x" * (2 << 20) + b'"}'),  # over the 1 MiB bound
    ("download", first_stream(retransmits=-7)),
    ("download", first_stream(retransmits=2**63 + 5)),
    ("download", top(sender_has_retransmits=7)),
    ("download", top(cpu_util_system=float("nan"))),
    ("download", top(cpu_util_total="100")),
], ids=["bytes-nan", "end-inf", "bytes-1e400", "end-minus-infinity", "bytes-negative", "end-negative",
        "bytes-string", "end-list", "streams-object", "cpu-huge", "cpu-negative", "congestion-100k",
        "results-2mib", "retransmits-negative", "retransmits-2e63", "has-retransmits-7", "cpu-nan",
        "cpu-string"])
def test_a_bad_number_or_type_from_the_server_is_an_invalid_response(lying_server, direction, lie):
    server = lying_server(lie, direction)
    started = time.monotonic()
    outcome = probe(server.port)
    assert time.monotonic() - started < GENEROUS_SECONDS
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.INVALID_RESPONSE), outcome.detail
    stages = outcome.evidence.stages
    assert [(s.direction, s.ok) for s in stages][-1] == (direction, False)
    assert "server results" in outcome.detail and len(outcome.detail) < 400  # peer text stays bounded
    json.dumps(evidence_dict(outcome.evidence), allow_nan=False)


@pytest.mark.parametrize("name", ["upload-1-stream", "upload-4-streams", "upload-omit"])
def test_real_iperf3_figures_pass_the_consistency_rule(name):
    """Stock iperf 3.12 on both ends (the recorded fixtures): the server's receiver figures against
    the client's own sent figures, as our client compares them."""
    fixture = load(name)
    exchange = parse_exchange(fixture)
    server = iperf3.PeerResults.from_json(exchange["server_results"])
    client = iperf3.PeerResults.from_json(exchange["client_results"])
    streams = json.loads(fixture["client_stdout"])["end"]["streams"]
    ours = iperf3.UploadFigures(
        # What the client wrote over the whole test (the omit period too), without the cookies.
        bytes_sent=sum(stream["client_bytes"] - COOKIE_SIZE for stream in fixture["data_streams"]),
        seconds=client.measuring_seconds,
        # What the client counted as sent after omit: at least what its server's TCP acknowledged then.
        bytes_acknowledged=client.total_bytes,
        round_trip_seconds=max(stream["sender"]["max_rtt"] for stream in streams) / 1e6,
        slack_bytes=0, unread_bytes=iperf3.unread_allowance_bytes(len(streams), None))
    assert iperf3.implausible_receiver_figures(server.total_bytes, server.measuring_seconds, ours) is None
    for received, seconds, problem in [
        (ours.bytes_sent + 1, server.measuring_seconds, "more bytes than we wrote"),
        (server.total_bytes, client.measuring_seconds / 2, "in less time"),
        (1, 10.0, "in more time"),  # the reviewer's 0.0 Mbit/s
        (1, 1e6, "in more time"),
    ]:
        assert problem in iperf3.implausible_receiver_figures(received, seconds, ours)


@pytest.mark.lab
@needs_lab
def test_an_honest_server_behind_a_bloated_queue_passes():
    """TEST_END waits behind a second of queued upload data, so the server's time is ours and that
    second: the bound on its time grows with the round trip our streams measured."""
    with Lab(nat="masquerade") as lab:
        lab.run(lab.router, ["tc", "qdisc", "add", "dev", lab.router_wan_if, "root", "tbf", "rate", "5mbit",
                             "burst", "64kb", "latency", "1000ms"], check=True)
        iperf3_server(lab)
        completed, report = measure(lab, seconds="3")
    assert completed.returncode == 0, completed.stderr
    result = checks(report)["throughput"]
    assert result["status"] == "ok", result["detail"]
    (far_end,) = result["results"]
    upload = far_end["evidence"]["stages"][0]
    assert upload["direction"] == "upload" and upload["duration_seconds"] > 3 + 0.5  # the queue did delay TEST_END


@pytest.mark.parametrize("lie", [first_stream(end_time=1e-9), every_stream(bytes=1, end_time=10.0)],
                         ids=["inflating", "deflating"])
def test_a_lying_server_gives_a_complete_strict_report(lying_server, lie):
    """The whole run as a user runs it: exit 0, strict JSON, the throughput check failed, no figure kept,
    and the needed bandwidth judged on no figure of the liar's."""
    server = lying_server(lie)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:  # a STUN server that never answers
        unused.bind((LOOPBACK, 0))
        completed, report = run_xcheck("run", "--format", "json", "--stun", f"{LOOPBACK}:{unused.getsockname()[1]}",
                                       "--iperf", f"{LOOPBACK}:{server.port}", "--throughput-seconds", "1",
                                       "--bandwidth-mbps", "1", "--timeout", "1", timeout=120)
    assert completed.returncode == 0, completed.stderr
    json.loads(completed.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the report"))
    result = next(c for c in report["checks"] if c["name"] == "throughput")
    assert (result["status"], result["reason"]) == ("fail", "invalid_response"), result["detail"]
    assert report["facts"]["throughput"]["upload_bits_per_second"] is None
    fired = [reason["rule"] for option in report["options"].values() for reason in option["reasons"]]
    assert fired and not [rule for rule in fired if "path-below-need" in rule]


# ---------------------------------------------------------------------------------------------
# Hostile clients of the responder's iperf3 server


@pytest.fixture
def responder_iperf3():
    servers: list[ServerThread] = []

    def start(**options) -> ServerThread:
        servers.append(ServerThread(**options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def run_when_free(spec: TestSpec) -> TestResult:
    """A test, retried while the server reports busy (it frees its slot a moment after a session ends)."""
    until = time.monotonic() + GENEROUS_SECONDS
    while True:
        result = run_test(spec, deadline=time.monotonic() + GENEROUS_SECONDS)
        if result.failure != Failure.ACCESS_DENIED or time.monotonic() > until:
            return result
        time.sleep(0.2)


def _served(port: int) -> TestResult:
    return run_when_free(TestSpec(LOOPBACK, port, duration_seconds=0.5))


def test_a_test_longer_than_the_cap_is_refused_and_our_client_says_why(responder_iperf3):
    server = responder_iperf3()  # the responder's default cap
    assert DEFAULT_MAX_TEST_SECONDS == 60
    for seconds, omit in ((300, 0), (DEFAULT_MAX_TEST_SECONDS, 1)):  # the warm-up counts too
        result = run_when_free(TestSpec(LOOPBACK, server.port, duration_seconds=seconds, omit_seconds=omit))
        assert result.failure == Failure.SERVER_ERROR and result.i_errno == iperf3.IEDURATION, result.detail
        assert not result.partial and f"(IEDURATION: test duration too long); it refuses a {seconds + omit} s test" \
            in result.detail
    # The throughput check turns it into a readable fail, at once.
    started = time.monotonic()
    outcome = probe(server.port, seconds=300)
    assert time.monotonic() - started < GENEROUS_SECONDS
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.PEER_ERROR)
    for words in ("refuses a 300 s test", "shorter --throughput-seconds", "xcheck responder --max-test-seconds"):
        assert words in outcome.detail, outcome.detail
    # xcheck's own stages (and a stock client's) within the cap are served.
    assert probe(server.port, seconds=1).status == Status.OK
    if shutil.which("iperf3"):
        completed = subprocess.run(["iperf3", "-c", LOOPBACK, "-p", str(server.port), "-t", "300"],
                                   capture_output=True, text=True, timeout=GENEROUS_SECONDS)
        assert completed.returncode != 0 and "test duration too long" in completed.stdout + completed.stderr


def _start_test(port: int, *, seconds: int, reverse: bool = False) -> tuple[socket.socket, socket.socket]:
    """A raw client through set-up to TEST_RUNNING; returns (control, data stream)."""
    cookie = iperf3.make_cookie()
    control = socket.create_connection((LOOPBACK, port), timeout=GENEROUS_SECONDS)
    control.sendall(cookie)
    assert iperf3.decode_state(_recv_exact(control, 1)) == State.PARAM_EXCHANGE
    parameters = iperf3.TestParameters(duration_seconds=seconds, reverse=reverse)
    control.sendall(iperf3.encode_json(parameters.to_json()))
    assert iperf3.decode_state(_recv_exact(control, 1)) == State.CREATE_STREAMS
    stream = socket.create_connection((LOOPBACK, port), timeout=GENEROUS_SECONDS)
    stream.sendall(cookie)
    assert _recv_exact(control, 2) == bytes([State.TEST_START, State.TEST_RUNNING])
    return control, stream


def _wait_dropped(control: socket.socket) -> None:
    """The server closes our control connection (whatever it sent before)."""
    control.settimeout(GENEROUS_SECONDS)
    try:
        while control.recv(1024):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server still holds the client after {GENEROUS_SECONDS:g} s")


@pytest.mark.parametrize("silent_after", ["connect", "cookie", "test-start-upload", "test-start-download"])
def test_a_silent_client_loses_the_slot_and_the_next_is_served(responder_iperf3, silent_after):
    # Once set up, the silent client has asked for a 50 s test: the slot must not stay its for that long.
    server = responder_iperf3(idle_timeout_seconds=0.5)
    opened = []
    try:
        if silent_after in ("connect", "cookie"):
            control = socket.create_connection((LOOPBACK, server.port), timeout=GENEROUS_SECONDS)
            if silent_after == "cookie":
                control.sendall(iperf3.make_cookie())
            opened.append(control)
        else:
            # Upload: no data comes. Download: we never read, so the server's sends stop moving.
            control, stream = _start_test(server.port, seconds=50, reverse=silent_after.endswith("download"))
            opened += [control, stream]
        _wait_dropped(control)
        result = _served(server.port)
        assert result.ok, result.detail
    finally:
        for sock in opened:
            sock.close()


def test_a_client_that_never_ends_its_test_is_dropped_at_the_bound(responder_iperf3):
    """Data keeps flowing, so the idle timeout never fires; the session's hard bound ends it."""
    server = responder_iperf3(idle_timeout_seconds=0.5)
    control, stream = _start_test(server.port, seconds=1)
    stop = threading.Event()

    def send() -> None:
        block = os.urandom(1 << 14)
        try:
            while not stop.is_set():
                stream.sendall(block)
                time.sleep(0.01)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        _wait_dropped(control)  # no TEST_END from us, ever
        result = _served(server.port)
        assert result.ok, result.detail
    finally:
        stop.set()
        sender.join(5)
        control.close()
        stream.close()


def test_responder_documents_and_checks_max_test_seconds():
    help_text = subprocess.run([XCHECK, "responder", "--help"], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "200"}, timeout=60).stdout
    assert "--max-test-seconds" in help_text and f"[default: {DEFAULT_MAX_TEST_SECONDS}]" in help_text
    for bad in ("0", "nan", "-5", "100000"):
        completed = subprocess.run([XCHECK, "responder", "--listen", LOOPBACK, "--max-test-seconds", bad],
                                   capture_output=True, text=True, timeout=60)
        assert completed.returncode == 2, (bad, completed.stderr)
        assert "--max-test-seconds" in completed.stderr
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "--max-test-seconds" in readme
