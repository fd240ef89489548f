"""The daemon's HTTP/1.1 server: one thread per connection, a handler for the routes.

`Server(address, handler, web_config)` calls `handler(Request) -> Response` for every GET and HEAD
that passed the web config's basic auth; it answers everything else itself (405 for other
methods, 401 with WWW-Authenticate, 4xx for malformed or oversized requests, 500 when the handler
raises). TLS, when the web config has it, is negotiated in the connection's own thread, so a slow
or hostile client delays nobody else.

Bounds, all against a client that opens connections and then trickles or withholds bytes:
at most MAX_CONNECTIONS at once (beyond that, an idle keep-alive connection is closed to make room,
else the newcomer gets 503 or, under TLS, is closed at once); a request head within
MAX_HEAD_BYTES and REQUEST_HEAD_SECONDS of its first byte; a TLS handshake within
TLS_HANDSHAKE_SECONDS; a response written within WRITE_SECONDS; a keep-alive connection idle for
KEEP_ALIVE_IDLE_SECONDS is closed. No request has a body: the routes take none.

Requests are not logged (a scrape every 15 s would fill the journal); errors are: a handler's
exception once per occurrence, clients' failures (TLS, malformed requests, refusals at the bound)
at most once a minute per kind, with how many there were.
"""

from __future__ import annotations

import email.utils
import http
import logging
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from agent.daemon.web import TLSSettings, WebConfig
from checks.protocols.http import MAX_HEAD_BYTES, HttpParseError, parse_header_fields, parse_request_head

_log = logging.getLogger("xcheck.daemon.http")

# Prometheus keeps one connection per target; a few browsers and curl besides. 64 is room for a
# dozen scrapers plus people, and bounds the threads an attacker can make us hold.
MAX_CONNECTIONS = 64
# A request head (checks.protocols.http bounds it: MAX_HEAD_BYTES, 16 KiB, and 64 fields) from
# Prometheus is about 300 bytes; /probe takes two query fields.
MAX_QUERY_FIELDS = 32
TLS_HANDSHAKE_SECONDS = 10.0
REQUEST_HEAD_SECONDS = 10.0
# Longer than a 60 s scrape interval, so a scraper keeps its connection (and its TLS session).
KEEP_ALIVE_IDLE_SECONDS = 75.0
WRITE_SECONDS = 30.0
# After a response that closes the connection, unread request bytes are drained this long (at most
# LINGER_BYTES) so that closing does not reset the connection before the client reads the answer.
LINGER_SECONDS = 1.0
LINGER_BYTES = 64 * 1024
STOP_SECONDS = 1.0  # stop() returns within this: the daemon has 5 s from SIGTERM to exit
CLIENT_ERROR_LOG_SECONDS = 60.0
_LISTEN_BACKLOG = 128
_RECV_BYTES = 4096
_SEND_BYTES = 64 * 1024

_DIGITS = re.compile(r"[0-9]+")  # not str.isdigit: "²" is a digit to it
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 32\r\n"
         b"Connection: close\r\n\r\ntoo many connections: try again\n")
TEXT = "text/plain; charset=utf-8"


class Headers(Mapping[str, str]):
    """A request's header fields by case-insensitive name; a repeated field's values joined with ", "."""

    def __init__(self, fields: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._values: dict[str, str] = {}
        for name, value in fields.items() if isinstance(fields, Mapping) else fields:
            key = name.lower()
            self._values[key] = f"{self._values[key]}, {value}" if key in self._values else value

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        # Names only: a repr that reaches a log line must not carry the Authorization header.
        return f"Headers({sorted(self._values)})"


@dataclass(frozen=True)
class Request:
    """A GET or HEAD request: `path` percent-decoded, `query` as urllib's parse_qs gives it."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Headers
    client: str = ""  # the peer's address, for log lines


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


class _Refusal(Exception):
    """A request answered by the server itself, after which the connection closes."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.response = Response(status, f"{message}\n".encode(), TEXT, headers or {})


class _Connection:
    def __init__(self, sock: socket.socket, client: str) -> None:
        self.sock = sock
        self.client = client
        self.buffer = bytearray()
        self.idle = False  # between two requests of a keep-alive connection: the first to close when full
        self.closing = False  # stop() or eviction shut it down


class _ClientErrors:
    """Client-caused failures, logged at most once per CLIENT_ERROR_LOG_SECONDS per kind: a scanner
    or a misconfigured scraper must not fill the journal, and an operator still sees that it happens."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._folded: dict[str, int] = {}

    def note(self, kind: str, message: str, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -CLIENT_ERROR_LOG_SECONDS) < CLIENT_ERROR_LOG_SECONDS:
                self._folded[kind] = self._folded.get(kind, 0) + 1
                return
            self._last[kind] = now
            folded = self._folded.pop(kind, 0)
        _log.warning(message, extra={"fields": {"client": client, "similar_since_last_line": folded}})


class Server:
    """The HTTP server. `web_config` may be replaced while serving (a reload): each new connection
    takes its TLS from the current one, each request its basic auth and headers."""

    def __init__(self, address: tuple[str, int], handler: Handler, web_config: WebConfig | None = None) -> None:
        self.address = address
        self.handler = handler
        self.web_config = web_config
        self._lock = threading.Lock()
        self._connections: dict[_Connection, threading.Thread] = {}
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._acceptor: threading.Thread | None = None
        self._client_errors = _ClientErrors()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> int:
        """Listen and serve in background threads; the bound port (port 0 picks a free one)."""
        self._listener = _listen(*self.address)
        self._listener.setblocking(False)
        self._wake = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept_loop, name="xcheck-http-accept", daemon=True)
        self._acceptor.start()
        return self._listener.getsockname()[1]

    def stop(self) -> None:
        """Stop listening and close every connection; returns within STOP_SECONDS. A handler still
        running finds its connection closed when it answers."""
        deadline = time.monotonic() + STOP_SECONDS
        self._stopping.set()
        if self._wake is not None:
            try:
                self._wake[1].send(b"\0")
            except OSError:
                pass
        if self._acceptor is not None:
            self._acceptor.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for connection in self._connections:
                _shut(connection)
            threads = list(self._connections.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        if self._wake is not None:
            for end in self._wake:
                end.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake[0], selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._wake[0]:
                        return
                    try:
                        sock, peer = self._listener.accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue
                    except OSError as exc:  # out of file descriptors: wait instead of spinning
                        _log.error("cannot accept a connection", extra={"fields": {"error": exc.strerror or exc}})
                        self._stopping.wait(0.1)
                        continue
                    host = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
                    self._admit(sock, f"{host}:{peer[1]}")

    def _admit(self, sock: socket.socket, client: str) -> None:
        sock.setblocking(True)
        connection = _Connection(sock, client)
        thread = threading.Thread(target=self._serve, args=(connection,), name="xcheck-http", daemon=True)
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                return
            active = [known for known in self._connections if not known.closing]
            idle = next((known for known in active if known.idle), None)
            full = len(active) >= MAX_CONNECTIONS and idle is None
            if not full:
                if len(active) >= MAX_CONNECTIONS:
                    _shut(idle)
                self._connections[connection] = thread
        if full:
            self._turn_away(sock, client)
            return
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: as full
            with self._lock:
                del self._connections[connection]
            self._turn_away(sock, client)

    def _turn_away(self, sock: socket.socket, client: str) -> None:
        web = self.web_config
        if web is None or web.tls is None:  # under TLS a 503 would cost a handshake: just close
            try:
                sock.setblocking(False)
                sock.send(_BUSY)
            except OSError:
                pass
        sock.close()
        self._client_errors.note("capacity", f"connection refused: {MAX_CONNECTIONS} connections open", client)

    # ------------------------------------------------------------------ one connection

    def _serve(self, connection: _Connection) -> None:
        try:
            web = self.web_config
            if web is not None and web.tls is not None and not self._handshake(connection, web.tls):
                return
            first = True
            while not connection.closing:
                try:
                    head = self._read_head(connection, first)
                    if head is None:
                        return
                    request, version, keep_alive, has_body = _parse(head, connection.client)
                except _Refusal as refusal:
                    self._client_errors.note("request", f"bad request: {refusal}", connection.client)
                    self._write(connection, refusal.response, head_only=False, closing=True, keep_alive_header=False)
                    _linger(connection)
                    return
                first = False
                response = self._respond(request, has_body)
                closing = not keep_alive or has_body or connection.closing
                self._write(connection, response, head_only=request.method == "HEAD", closing=closing,
                            keep_alive_header=version == (1, 0) and not closing)
                if closing:
                    _linger(connection)
                    return
        except OSError:
            # The client went away, timed out while we wrote, or stop() shut the socket: nothing to answer.
            return
        except Exception:  # a bug of ours: one line, not a thread's traceback on stderr
            _log.error("connection failed", exc_info=True, extra={"fields": {"client": connection.client}})
        finally:
            with self._lock:
                del self._connections[connection]
            connection.sock.close()

    def _handshake(self, connection: _Connection, tls: TLSSettings) -> bool:
        with self._lock:  # stop() must find the wrapped socket, never the one it replaces
            if connection.closing:
                return False
            connection.sock = tls.context.wrap_socket(connection.sock, server_side=True,
                                                      do_handshake_on_connect=False)
        connection.sock.settimeout(TLS_HANDSHAKE_SECONDS)
        try:
            connection.sock.do_handshake()
        except TimeoutError:
            self._client_errors.note("tls", "TLS handshake timed out", connection.client)
            return False
        except ssl.SSLError as exc:
            self._client_errors.note("tls", f"TLS handshake failed: {exc.reason or exc.strerror or exc}",
                                     connection.client)
            return False
        if not tls.client_allowed(connection.sock.getpeercert()):
            self._client_errors.note("tls", "client certificate refused: it names none of client_allowed_sans",
                                     connection.client)
            return False
        return True

    def _read_head(self, connection: _Connection, first: bool) -> bytes | None:
        """The next request's head (request line and headers), or None when the client closed or stayed
        silent; _Refusal when it is too large or too slow."""
        buffer = connection.buffer
        deadline = time.monotonic() + (REQUEST_HEAD_SECONDS if first else KEEP_ALIVE_IDLE_SECONDS)
        while True:
            # Empty lines before a request are ignored (RFC 9112 2.2).
            while buffer[:1] in (b"\r", b"\n"):
                del buffer[:1]
            if buffer:
                break
            connection.idle = not first
            try:
                if not _receive(connection, deadline):
                    return None
            except TimeoutError:
                return None
            finally:
                connection.idle = False
        deadline = time.monotonic() + REQUEST_HEAD_SECONDS
        while True:
            end = buffer.find(b"\r\n\r\n")
            if -1 < end <= MAX_HEAD_BYTES - 4:
                head = bytes(buffer[:end + 4])
                del buffer[:end + 4]
                return head
            if len(buffer) > MAX_HEAD_BYTES:
                raise _Refusal(431, f"request head longer than {MAX_HEAD_BYTES} bytes")
            try:
                if not _receive(connection, deadline):
                    return None
            except TimeoutError:
                raise _Refusal(408, f"request head not received within {REQUEST_HEAD_SECONDS:.0f} s") from None

    def _respond(self, request: Request, has_body: bool) -> Response:
        web = self.web_config
        if web is not None and web.basic_auth is not None and not web.basic_auth.check(
                request.headers.get("Authorization")):
            return Response(401, b"Unauthorized\n", TEXT, {"WWW-Authenticate": 'Basic realm="xcheck", charset="UTF-8"'})
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"Method Not Allowed: GET or HEAD\n", TEXT, {"Allow": "GET, HEAD"})
        if has_body:
            return Response(400, b"a request body is not accepted\n", TEXT)
        try:
            response = self.handler(request)
            _check_response(response)
        except Exception:  # a bug in a route: the client learns nothing of it, the log one line
            _log.error("request handler failed", exc_info=True,
                       extra={"fields": {"method": request.method, "path": request.path[:200]}})
            return Response(500, b"Internal Server Error: see the daemon's log\n", TEXT)
        return response

    def _write(self, connection: _Connection, response: Response, head_only: bool, closing: bool,
               keep_alive_header: bool) -> None:
        web = self.web_config
        status = response.status
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {status} {phrase}", f"Date: {email.utils.formatdate(usegmt=True)}",
                 f"Content-Type: {response.content_type}", f"Content-Length: {len(response.body)}"]
        if closing:
            lines.append("Connection: close")
        elif keep_alive_header:
            lines.append("Connection: keep-alive")
        lines += [f"{name}: {value}" for name, value in (web.headers if web is not None else ())]
        lines += [f"{name}: {value}" for name, value in response.headers.items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else response.body)
        deadline = time.monotonic() + WRITE_SECONDS
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("response not taken within WRITE_SECONDS")
            connection.sock.settimeout(remaining)
            view = view[connection.sock.send(view[:_SEND_BYTES]):]


# ---------------------------------------------------------------------- helpers


def _listen(host: str, port: int) -> socket.socket:
    if host in ("", "::") and socket.has_dualstack_ipv6():
        return socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True,
                                    backlog=_LISTEN_BACKLOG)
    family, _, _, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]
    return socket.create_server(address, family=family, backlog=_LISTEN_BACKLOG)


def _shut(connection: _Connection) -> None:
    """Wake the connection's thread (caller holds the server's lock): shutdown, not close, so the
    descriptor stays the thread's to close and cannot be reused under it."""
    connection.closing = True
    try:
        # socket.socket's own shutdown: SSLSocket's would also drop its TLS state under the reading thread.
        socket.socket.shutdown(connection.sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _receive(connection: _Connection, deadline: float) -> bool:
    """More bytes into the buffer by `deadline` (TimeoutError if none); False when the client closed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    connection.sock.settimeout(remaining)
    data = connection.sock.recv(_RECV_BYTES)
    connection.buffer += data
    return bool(data)


def _linger(connection: _Connection) -> None:
    """Read and drop what the client still sends, briefly, before the close: closing a socket with
    unread bytes resets the connection, and the client could lose the answer it was sent."""
    deadline = time.monotonic() + LINGER_SECONDS
    try:
        socket.socket.shutdown(connection.sock, socket.SHUT_WR)
        drained = 0
        while drained < LINGER_BYTES and not connection.closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            connection.sock.settimeout(remaining)
            data = connection.sock.recv(_RECV_BYTES)
            if not data:
                return
            drained += len(data)
    except OSError:
        return


def _parse(head: bytes, client: str) -> tuple[Request, tuple[int, int], bool, bool]:
    """(request, HTTP version, keep-alive wanted, has a body) from a request head; _Refusal if malformed."""
    try:
        parsed = parse_request_head(head)
    except HttpParseError as exc:
        raise _Refusal(400, f"malformed request: {exc}") from None
    # parse_request_head took HTTP/1.0 or HTTP/1.1 at the end of the request line.
    http_version = (1, 0) if head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.0") else (1, 1)
    if not parsed.target.startswith("/"):
        raise _Refusal(400, "the request target must be a path (origin form)")
    headers = Headers(parsed.headers)
    hosts = sum(name.lower() == "host" for name, _ in parsed.headers)
    if hosts > 1 or (hosts == 0 and http_version == (1, 1)):
        raise _Refusal(400, "an HTTP/1.1 request needs exactly one Host header")

    lengths = {length.strip() for length in headers.get("Content-Length", "").split(",") if length.strip()}
    if len(lengths) > 1 or any(not _DIGITS.fullmatch(length) for length in lengths):
        raise _Refusal(400, "malformed Content-Length")
    has_body = "transfer-encoding" in headers or any(int(length) > 0 for length in lengths)

    connection_options = {option.strip().lower() for option in headers.get("Connection", "").split(",")}
    keep_alive = ("close" not in connection_options if http_version == (1, 1)
                  else "keep-alive" in connection_options)

    raw_path, _, raw_query = parsed.target.partition("?")
    try:
        path = unquote(raw_path, errors="strict")
        query = parse_qs(raw_query, keep_blank_values=True, errors="strict", max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:  # not UTF-8 once decoded, or too many fields
        raise _Refusal(400, f"malformed path or query (at most {MAX_QUERY_FIELDS} query fields)") from None
    return Request(parsed.method, path, query, headers, client), http_version, keep_alive, has_body


def _check_response(response: object) -> None:
    """A handler's response must be one this server can write without forging anything."""
    if not isinstance(response, Response):
        raise TypeError(f"the handler returned {type(response).__name__}, not a Response")
    if not 200 <= response.status <= 599 or not isinstance(response.body, bytes):
        raise ValueError(f"bad status {response.status} or body type {type(response.body).__name__}")
    # The request's own rules (a token, then visible characters), and ASCII: no header can forge another.
    parse_header_fields([f"{name}: {value}".encode("ascii")
                         for name, value in (("Content-Type", response.content_type), *response.headers.items())])
