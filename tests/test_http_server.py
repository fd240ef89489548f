"""The daemon's HTTP server on 127.0.0.1: routes plugged in, TLS and basic auth from a web config,
bounds against slow and hostile clients, stop() with connections open; and the same web-config
files served by the installed blackbox_exporter (exporter-toolkit), which must agree with us.

Time bounds here only prove "does not hang": they are many times what the work takes.
"""

from __future__ import annotations

import http.client
import logging
import queue
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.daemon import http as server_module
from agent.daemon.http import Request, Response, Server
from agent.daemon.web import WebConfig, WebConfigError
from test_web_config import HASH, PASSWORD, TLS, Pki, basic, load, make_pki, with_pki

BLACKBOX = shutil.which("prometheus-blackbox-exporter")
NO_HANG = 30.0  # seconds: far beyond what any step here takes, even on two loaded cores


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def config_dir(pki, tmp_path) -> Path:
    return with_pki(pki, tmp_path)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Holds `holding`'s handler at /slow until set (at the latest when the test ends)."""
    event = threading.Event()
    yield event
    event.set()


def holding(release: threading.Event):
    def handler(request: Request) -> Response:
        if request.path == "/slow":
            release.wait(NO_HANG)
        return Response(200, b"ok\n")

    return handler


def answer(request: Request) -> Response:
    return Response(200, f"{request.method} {request.path}\n".encode())


@contextmanager
def serving(handler=answer, web_config: WebConfig | None = None) -> Iterator[tuple[Server, int]]:
    server = Server(("127.0.0.1", 0), handler, web_config)
    port = server.start()
    try:
        yield server, port
    finally:
        server.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=NO_HANG)


def exchange(port: int, data: bytes, method: str = "GET") -> http.client.HTTPResponse:
    """Send raw bytes, read one response (body read)."""
    sock = connect(port)
    sock.sendall(data)
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    response.read()
    sock.close()
    return response


def client(port: int, context: ssl.SSLContext | None) -> http.client.HTTPConnection:
    return (http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=NO_HANG) if context
            else http.client.HTTPConnection("127.0.0.1", port, timeout=NO_HANG))


def fetch(port: int, path: str = "/metrics", *, context: ssl.SSLContext | None = None,
          auth: tuple[str, str] | None = None, method: str = "GET") -> tuple[int, http.client.HTTPMessage, bytes] | str:
    """One request on a new connection: (status, headers, body), or "refused" when TLS or the
    connection failed."""
    connection = client(port, context)
    try:
        connection.request(method, path, headers={"Authorization": basic(*auth)} if auth else {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    except (ssl.SSLError, ConnectionError):
        return "refused"
    finally:
        connection.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed `sock` (EOF or reset), reading what it still sent."""
    sock.settimeout(NO_HANG)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


# ---------------------------------------------------------------------------------------
# The handler's side: requests in, responses out

def test_get_and_head_reach_the_handler_with_path_query_and_headers():
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, b"# metrics\n", "text/plain; version=0.0.4", {"Cache-Control": "no-store"})

    with serving(handler) as (_, port):
        response = exchange(port, b"GET /pr%6Fbe?target=192.0.2.1&module=ike&target=b HTTP/1.1\r\nHost: x\r\n"
                                  b"x-prometheus-scrape-timeout-seconds: 9.5\r\n\r\n")
        assert response.status == 200 and response.getheader("Content-Type") == "text/plain; version=0.0.4"
        assert response.getheader("Cache-Control") == "no-store"
        head = exchange(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", method="HEAD")
        assert head.status == 200 and head.getheader("Content-Length") == "10"
    request = seen[0]
    assert (request.method, request.path) == ("GET", "/probe")
    assert request.query == {"target": ["192.0.2.1", "b"], "module": ["ike"]}
    assert request.headers.get("X-Prometheus-Scrape-Timeout-Seconds") == "9.5"
    assert request.client.startswith("127.0.0.1:")
    assert seen[1].method == "HEAD"


def test_other_methods_get_405_and_never_reach_the_handler():
    calls = []
    with serving(lambda request: calls.append(request) or Response(200, b"")) as (_, port):
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
            status, headers, _ = fetch(port, method=method)
            assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert calls == []


def test_a_handler_exception_is_a_500_with_one_log_line_and_nothing_for_the_client(caplog):
    def handler(request: Request) -> Response:
        if request.path == "/bug":
            raise RuntimeError("secret-detail-of-the-bug")
        return Response(200, b"fine\n")

    with serving(handler) as (_, port), caplog.at_level(logging.INFO, logger="xcheck.daemon.http"):
        status, _, body = fetch(port, "/bug")
        assert status == 500 and b"secret-detail" not in body and b"Traceback" not in body
        assert fetch(port, "/after")[0] == 200  # and the server goes on
    records = [record for record in caplog.records if record.name == "xcheck.daemon.http"]
    assert [(record.levelno, record.getMessage()) for record in records] == [(logging.ERROR, "request handler failed")]
    assert records[0].exc_info[0] is RuntimeError and records[0].fields["path"] == "/bug"


@pytest.mark.parametrize("bad", [
    Response(200, b"", "text/plain\r\nSet-Cookie: forged=1"),
    Response(200, b"", headers={"X-Evil": "a\r\nSet-Cookie: forged=1"}),
    Response(200, "not bytes"),  # type: ignore[arg-type]
    Response(99, b""),
    "not a Response",
])
def test_a_response_the_server_cannot_write_safely_is_a_500(bad):
    with serving(lambda request: bad) as (_, port):
        status, headers, _ = fetch(port)
        assert status == 500 and "Set-Cookie" not in headers


def test_requests_are_not_logged(caplog):
    with serving() as (_, port), caplog.at_level(logging.DEBUG):
        for _ in range(3):
            assert fetch(port)[0] == 200
    assert [record for record in caplog.records if record.name.startswith("xcheck")] == []


@pytest.mark.parametrize("data, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET http://192.0.2.1/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # absolute form: a proxy request
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
    (b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /?" + b"&".join(b"k%d=v" % i for i in range(100)) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
])
def test_a_malformed_or_oversized_request_is_answered_and_closed(data, status):
    with serving() as (_, port):
        sock = connect(port)
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        assert response.status == status and response.getheader("Connection") == "close"
        assert closed_by_server(sock)


def test_keep_alive_for_http11_and_close_when_asked():
    with serving() as (_, port):
        connection = client(port, None)
        connection.request("GET", "/a")
        connection.getresponse().read()
        first_socket = connection.sock
        connection.request("GET", "/b")
        response = connection.getresponse()
        assert response.read() == b"GET /b\n" and connection.sock is first_socket  # the same connection
        connection.close()
        for data in (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"):
            sock = connect(port)
            sock.sendall(data)
            assert closed_by_server(sock)
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.getheader("Connection") == "keep-alive"


def test_pipelined_requests_are_answered_in_order():
    with serving() as (_, port):
        sock = connect(port)
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        assert received.count(b"HTTP/1.1 200 OK") == 2
        assert received.index(b"GET /one") < received.index(b"GET /two")


# ---------------------------------------------------------------------------------------
# Web config: TLS, basic auth, headers

def test_basic_auth_runs_before_the_handler(config_dir):
    calls = []

    def handler(request: Request) -> Response:
        calls.append(request)
        return Response(200, b"ok\n")

    with serving(handler, load(config_dir, f"basic_auth_users:\n  alice: {HASH}\n")) as (_, port):
        for auth in (None, ("alice", "wrong"), ("mallory", PASSWORD)):
            status, headers, _ = fetch(port, auth=auth)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")
        assert calls == []
        assert fetch(port, auth=("alice", PASSWORD))[0] == 200
        assert fetch(port, auth=("alice", PASSWORD), method="HEAD")[0] == 200
    assert [request.method for request in calls] == ["GET", "HEAD"]


def test_the_web_configs_headers_are_on_every_response(config_dir):
    config = load(config_dir, "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
                              f"    Strict-Transport-Security: max-age=31536000\nbasic_auth_users:\n  alice: {HASH}\n")
    with serving(lambda request: Response(404, b"no\n"), config) as (_, port):
        for auth, method, status in ((None, "GET", 401), (("alice", PASSWORD), "GET", 404),
                                     (("alice", PASSWORD), "POST", 405)):
            got, headers, _ = fetch(port, auth=auth, method=method)
            assert got == status
            assert headers["X-Frame-Options"] == "deny" and headers["Strict-Transport-Security"] == "max-age=31536000"
        assert exchange(port, b"NOT HTTP\r\n\r\n").getheader("X-Frame-Options") == "deny"


def test_a_new_web_config_applies_to_the_next_request(config_dir):
    with serving() as (server, port):
        assert fetch(port)[0] == 200
        server.web_config = load(config_dir, f"basic_auth_users:\n  alice: {HASH}\n")  # a reload
        assert fetch(port)[0] == 401


def test_tls_with_client_certificates_and_allowed_names(config_dir, pki):
    config = load(config_dir, TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
                                    "  client_allowed_sans: [prometheus.example]\n")
    with serving(web_config=config) as (_, port):
        assert fetch(port, context=pki.client_context("client"))[0] == 200
        assert fetch(port, context=pki.client_context("other_client")) == "refused"  # CA's, other name
        assert fetch(port, context=pki.client_context("stranger")) == "refused"  # the name, another CA
        assert fetch(port, context=pki.client_context()) == "refused"
        assert fetch(port) == "refused"  # plain HTTP to the TLS port


def test_a_large_response_arrives_whole_over_tls(config_dir, pki):
    body = bytes(range(256)) * 12_000  # 3 MB: many TLS records and partial sends
    with serving(lambda request: Response(200, body, "application/octet-stream"), load(config_dir, TLS)) as (_, port):
        status, _, received = fetch(port, context=pki.client_context())
        assert status == 200 and received == body


# ---------------------------------------------------------------------------------------
# Slow and hostile clients

def test_a_slow_client_does_not_block_others(config_dir, pki, release):
    for config in (None, load(config_dir, TLS)):
        context = pki.client_context() if config else None
        with serving(holding(release), config) as (_, port):
            silent = connect(port)  # connected, says nothing (under TLS: never starts the handshake)
            trickling = connect(port)
            trickling.sendall(b"GET / HTT")
            slow = threading.Thread(target=fetch, args=(port, "/slow"), kwargs={"context": context})
            slow.start()
            try:
                assert fetch(port, context=context)[0] == 200
            finally:
                release.set()
                slow.join(NO_HANG)
                release.clear()
            silent.close()
            trickling.close()


def test_a_trickled_request_head_is_cut_off(monkeypatch):
    monkeypatch.setattr(server_module, "REQUEST_HEAD_SECONDS", 0.5)
    with serving() as (_, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.2)
        received = b""
        deadline = time.monotonic() + NO_HANG
        while not received and time.monotonic() < deadline:
            try:
                sock.sendall(b"X-Slow: 1\r\n")  # one header line at a time, the head never ends
                received = sock.recv(65536)
            except TimeoutError:
                continue
        assert received.startswith(b"HTTP/1.1 408 ")
        assert closed_by_server(sock)


def test_a_silent_tls_client_is_dropped_after_the_handshake_timeout(monkeypatch, config_dir):
    monkeypatch.setattr(server_module, "TLS_HANDSHAKE_SECONDS", 0.5)
    with serving(web_config=load(config_dir, TLS)) as (_, port):
        sock = connect(port)
        assert sock.recv(1) == b""  # closed by the server, well within NO_HANG


def test_beyond_the_connection_bound_a_newcomer_gets_503(monkeypatch):
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 2)
    with serving() as (_, port):
        busy = [connect(port) for _ in range(2)]
        for sock in busy:
            sock.sendall(b"GET / HTTP/1.1\r\n")  # mid-request: not idle, not to be closed for others
        third = connect(port)
        third.settimeout(NO_HANG)
        assert third.recv(65536).startswith(b"HTTP/1.1 503 ")
        for sock in busy:  # still theirs: they complete
            sock.sendall(b"Host: x\r\n\r\n")
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert response.status == 200


def test_at_the_bound_an_idle_keep_alive_connection_makes_room(monkeypatch):
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 2)
    with serving() as (_, port):
        idle = []
        for _ in range(2):
            connection = client(port, None)
            connection.request("GET", "/")
            connection.getresponse().read()
            idle.append(connection)
        # The server marks a connection idle once it waits for the next request, just after answering:
        # a newcomer may come first and be turned away, so it tries again.
        deadline = time.monotonic() + NO_HANG
        while (result := fetch(port)) == "refused" or result[0] == 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert result[0] == 200
        evicted = []
        for connection in idle:
            connection.sock.setblocking(False)
            try:
                evicted.append(connection.sock.recv(1) == b"")
            except BlockingIOError:
                evicted.append(False)
        assert evicted.count(True) >= 1


def test_stop_closes_everything_at_once(config_dir, pki, release):
    for config in (None, load(config_dir, TLS)):
        context = pki.client_context() if config else None
        server = Server(("127.0.0.1", 0), holding(release), config)
        port = server.start()
        keep_alive = []
        for _ in range(3):
            connection = client(port, context)
            connection.request("GET", "/")
            connection.getresponse().read()
            keep_alive.append(connection.sock)
        half = connect(port)
        half.sendall(b"GET / HTTP/1.1\r\n")
        in_handler = threading.Thread(target=fetch, args=(port, "/slow"), kwargs={"context": context})
        in_handler.start()
        try:
            started = time.monotonic()
            server.stop()
            # It returns within STOP_SECONDS by construction (joins with a deadline); the bound
            # asserted is the daemon's budget from SIGTERM to exit.
            assert time.monotonic() - started < 5.0
            for sock in (*keep_alive, half):
                assert closed_by_server(sock)
            with pytest.raises(ConnectionRefusedError):
                connect(port)
        finally:
            release.set()
            in_handler.join(NO_HANG)
            release.clear()


# ---------------------------------------------------------------------------------------
# The same web-config files in a real exporter-toolkit program: blackbox_exporter

@dataclass(frozen=True)
class Probe:
    client: str | None = None  # "client" (the client CA's), "stranger" (another CA's), or no certificate
    auth: tuple[str, str] | None = None
    tls12: bool = False  # the client offers TLS 1.2 at most


PROBES = {
    "anonymous": Probe(),
    "wrong password": Probe(auth=("alice", "wrong")),
    "unknown user": Probe(auth=("mallory", PASSWORD)),
    "right password": Probe(auth=("alice", PASSWORD)),
    "client certificate": Probe(client="client"),
    "another CA's certificate": Probe(client="stranger"),
    "TLS 1.2 client": Probe(tls12=True),
}
USERS = f"basic_auth_users:\n  alice: {HASH}\n"
CLIENT_CA = "  client_ca_file: ca.pem\n"

SERVED = {  # file -> what each probe gets
    "basic auth, plain HTTP": (USERS, {"anonymous": 401, "wrong password": 401, "unknown user": 401,
                                       "right password": 200}),
    "client certificates required": (TLS + "  client_auth_type: RequireAndVerifyClientCert\n" + CLIENT_CA, {
        "anonymous": "refused", "another CA's certificate": "refused", "client certificate": 200}),
    "client certificates verified if given": (TLS + "  client_auth_type: VerifyClientCertIfGiven\n" + CLIENT_CA, {
        "anonymous": 200, "another CA's certificate": "refused", "client certificate": 200}),
    "TLS 1.3 only": (TLS + "  min_version: TLS13\n", {"TLS 1.2 client": "refused", "anonymous": 200}),
    "TLS 1.2 only": (TLS + "  max_version: TLS12\n", {"TLS 1.2 client": 200, "anonymous": 200}),
    "TLS and basic auth": (TLS + USERS, {"anonymous": 401, "wrong password": 401, "right password": 200}),
    "headers": ("http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: sameorigin\n"
                "    X-Content-Type-Options: nosniff\n" + USERS, {"anonymous": 401, "right password": 200}),
}
REFUSED = {
    "unknown key": "tls_server_config:\n  cert_filse: server.pem\n",
    "not a bcrypt hash": "basic_auth_users:\n  alice: hunter2\n",
    "missing certificate file": "tls_server_config:\n  cert_file: nothere.pem\n  key_file: server.key\n",
    "key of another certificate": "tls_server_config:\n  cert_file: server.pem\n  key_file: client.key\n",
    "certificate without key": "tls_server_config:\n  cert_file: server.pem\n",
    "client CA without a policy": TLS + CLIENT_CA,
    "invalid client_auth_type": TLS + "  client_auth_type: Sometimes\n" + CLIENT_CA,
    "unknown TLS version": TLS + "  min_version: TLS14\n",
    "unknown cipher suite": TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
    "unknown curve": TLS + "  curve_preferences: [CurveP999]\n",
    "header that cannot be set": "http_server_config:\n  headers:\n    Server: xcheck\n",
    "invalid X-Frame-Options": "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
    "duplicate key": USERS + USERS,
    "not YAML": "basic_auth_users: [\n",
}
CASES = {**SERVED, **{name: (text, "refused to start") for name, text in REFUSED.items()}}


def observe(port: int, text: str, probes: dict[str, object], pki) -> dict[str, object]:
    """What each probe gets: a status, or "refused"; with the extra headers when `text` sets them
    (Go's http.Error adds X-Content-Type-Options to its errors by itself: not the file's doing)."""
    is_tls = "tls_server_config" in text
    extra_headers = ("X-Frame-Options", "X-Content-Type-Options") if "headers:" in text else ()
    seen: dict[str, object] = {}
    for name in probes:
        probe = PROBES[name]
        context = None
        if is_tls:
            context = pki.client_context(probe.client, **({"maximum_version": ssl.TLSVersion.TLSv1_2}
                                                           if probe.tls12 else {}))
        result = fetch(port, context=context, auth=probe.auth)
        if result == "refused":
            seen[name] = result
        else:
            status, headers, _ = result
            extra = {header: headers[header] for header in extra_headers if header in headers}
            seen[name] = (status, extra) if extra else status
    return seen


def expected_outcome(text: str, expected: object) -> object:
    if "headers:" in text and isinstance(expected, dict):
        extra = {"X-Frame-Options": "sameorigin", "X-Content-Type-Options": "nosniff"}
        return {name: (status, extra) for name, status in expected.items()}
    return expected


def xcheck_outcome(path: Path, expected: object, pki) -> object:
    try:
        config = WebConfig.load(path)
    except WebConfigError:
        return "refused to start"
    with serving(web_config=config) as (_, port):
        return observe(port, path.read_text(), expected, pki)


@contextmanager
def blackbox_exporter(web_config: Path, cwd: Path) -> Iterator[int | None]:
    """blackbox_exporter with `web_config`, run from `cwd`: its port once it says it serves, None if it
    exited (refused the file)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (cwd / "blackbox.yml").write_text("modules:\n  http_2xx:\n    prober: http\n")
    process = subprocess.Popen([BLACKBOX, "--config.file=blackbox.yml", f"--web.config.file={web_config}",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + NO_HANG
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                yield None
                break
            # The toolkit logs this after it has read and checked the web config, before serving.
            if "TLS is enabled" in line or "TLS is disabled" in line:
                yield port
                break
    finally:
        process.terminate()
        try:
            process.wait(NO_HANG)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def blackbox_outcome(path: Path, expected: object, pki, cwd: Path) -> object:
    with blackbox_exporter(path, cwd) as port:
        if port is None:
            return "refused to start"
        return observe(port, path.read_text(), expected, pki)


@pytest.mark.parametrize("case", CASES)
def test_xcheck_serves_each_web_config_as_expected(case, config_dir, pki):
    text, expected = CASES[case]
    (config_dir / "web.yml").write_text(text)
    assert xcheck_outcome(config_dir / "web.yml", expected, pki) == expected_outcome(text, expected)


@pytest.mark.skipif(BLACKBOX is None, reason="prometheus-blackbox-exporter is not installed (Debian package)")
@pytest.mark.parametrize("case", CASES)
def test_blackbox_exporter_serves_each_web_config_the_same(case, config_dir, pki, tmp_path_factory):
    text, expected = CASES[case]
    (config_dir / "web.yml").write_text(text)
    # Run from elsewhere: both read relative paths against the file's directory.
    outcome = blackbox_outcome(config_dir / "web.yml", expected, pki, tmp_path_factory.mktemp("cwd"))
    assert outcome == expected_outcome(text, expected)
