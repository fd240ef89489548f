"""The endpoint's security: the web configuration file every Prometheus exporter reads.

`--web-config FILE` takes prometheus/exporter-toolkit's format (its docs/web-configuration.md), so
an operator reuses the file their Go exporters already have: `tls_server_config`,
`http_server_config` and `basic_auth_users` (bcrypt hashes). The file is read as strictly as the
toolkit reads it (unknown and duplicate keys refused, relative paths against the file's directory),
and every key is either honoured or refused with a message that says why: a setting that silently
did nothing would leave the operator believing in a protection they do not have. Where xcheck
differs from the toolkit, README ("Securing the endpoint") lists it.

No password or hash ever reaches an error message, a log line or a repr.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import re
import secrets
import ssl
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

import bcrypt
import yaml

from agent.config import ConfigError

# A web config is a few lines (a handful of users, three paths): 64 KiB is hundreds of users.
MAX_CONFIG_BYTES = 64 * 1024
# A certificate chain, key or CA bundle; a system CA bundle is about 200 KiB.
MAX_PEM_BYTES = 1024 * 1024
# The format nests three levels; anything deeper is not a web config (and would recurse the composer).
MAX_YAML_DEPTH = 8
# bcrypt reads at most 72 bytes of a password: a longer one is refused, never silently truncated.
MAX_PASSWORD_BYTES = 72

_SECTIONS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "client_ca", "client_allowed_sans",
             "min_version", "max_version", "cipher_suites", "prefer_server_cipher_suites", "curve_preferences",
             "cert", "key")
_HTTP_KEYS = ("headers", "http2")

# Go's names (crypto/tls ClientAuthType) -> OpenSSL's verify mode. RequestClientCert asks for a
# certificate and never verifies it: every client gets in, with or without one, which is what
# CERT_NONE admits. RequireAnyClientCert (and its old name RequireClientCert) demands a certificate
# without verifying it, which OpenSSL through Python's ssl cannot do: refused with that reason.
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_NONE,
                "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_UNVERIFIED_CLIENT_AUTH = ("RequireAnyClientCert", "RequireClientCert")

_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_OLD_TLS_VERSIONS = ("TLS10", "TLS11")

# Go's names (tls.CipherSuites(), the suites the toolkit accepts) -> OpenSSL's.
_CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_CIPHER_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}

# The toolkit's closed set of extra response headers, and the values it accepts for two of them.
_HEADERS = {"Strict-Transport-Security": None, "X-Content-Type-Options": ("nosniff",),
            "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": None, "Content-Security-Policy": None}
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")

# What Go's bcrypt.Cost accepts, read strictly: version 2a/2b/2y, a two-digit cost, 53 characters
# of bcrypt's base64 (22 of salt, 31 of hash).
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_BCRYPT_COSTS = range(4, 32)

_YAML_TAG = "tag:yaml.org,2002:"
# The scalars YAML resolves by itself; an explicit tag beyond them (!!python/..., !custom) is no value of ours.
_SCALAR_TAGS = {_YAML_TAG + kind for kind in ("str", "int", "float", "bool", "null", "timestamp")}


class WebConfigError(ConfigError):
    """A web config that cannot be used; every problem names the file and its key path."""


class _Problems(list):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


def _shown(name: str) -> str:
    """A user name or key from the file, bounded and quoted for a message."""
    return repr(name if len(name) <= 64 else name[:64] + "...")


# ----------------------------------------------------------------------------------------- reading


def _read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; OSError or ValueError saying why not.
    Opened non-blocking so that a FIFO or a device named by mistake fails at once instead of hanging."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


class _Composer(yaml.SafeLoader):
    """YAML to nodes without constructing anything: no aliases (a billion-laughs file would
    otherwise expand for whoever walks it), a bounded depth, and the scalars' own text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(problem="YAML aliases (*name) are not accepted in a web config",
                                       problem_mark=mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.MarkedYAMLError(problem=f"nested deeper than {MAX_YAML_DEPTH} levels",
                                           problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str) -> yaml.Node | None:
    loader = _Composer(text)
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: PyYAML's full message quotes the line, which may hold a hash.
        where = f"line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}: " if exc.problem_mark else ""
        raise ValueError(f"not valid YAML: {where}{exc.problem}") from None
    except yaml.YAMLError as exc:  # a ReaderError: an unacceptable character, located but not quoted
        raise ValueError(f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


# ----------------------------------------------------------------------------------------- nodes


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _YAML_TAG + "null"


def _mapping(node: yaml.Node, where: str, known: tuple[str, ...] | None, problems: _Problems) -> dict[str, yaml.Node]:
    """A mapping's entries by key text (a key is its text, as Go's map[string] reads it); unknown and
    duplicate keys are problems. An empty value (`key:`) is an empty mapping, as in Go."""
    if _is_null(node):
        return {}
    if not isinstance(node, yaml.MappingNode):
        problems.add(where or "the file", "must be a mapping of keys to values")
        return {}
    entries: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            problems.add(where or "the file", f"line {key_node.start_mark.line + 1}: a key must be text")
            continue
        key = key_node.value
        path = f"{where}.{key}" if where else key
        if key in entries:
            problems.add(path, "duplicate key")
        elif known is not None and key not in known:
            problems.add(where or "the file", f"unknown key {_shown(key)} (known: {', '.join(known)})")
        else:
            entries[key] = value_node
    return entries


def _text(node: yaml.Node, where: str, problems: _Problems) -> str | None:
    """A scalar's text as written (`X-XSS-Protection: 0` is "0", as Go reads it into a string)."""
    if _is_null(node):
        return ""
    if not isinstance(node, yaml.ScalarNode) or node.tag not in _SCALAR_TAGS:
        problems.add(where, "must be a single value")
        return None
    return node.value


def _boolean(node: yaml.Node, where: str, problems: _Problems) -> bool | None:
    if not isinstance(node, yaml.ScalarNode) or node.tag != _YAML_TAG + "bool":
        problems.add(where, "must be true or false")
        return None
    return yaml.SafeLoader.bool_values[node.value.lower()]


def _texts(node: yaml.Node, where: str, problems: _Problems) -> list[str]:
    if _is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        problems.add(where, "must be a list")
        return []
    values = [_text(item, f"{where}[{index}]", problems) for index, item in enumerate(node.value)]
    return [value for value in values if value is not None]


# ----------------------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TLSSettings:
    """tls_server_config as it is served; `context` is built and loaded (certificate, key, client CAs)."""

    cert_file: Path
    key_file: Path
    client_auth_type: str
    client_allowed_sans: frozenset[str]
    context: ssl.SSLContext = field(repr=False, compare=False)

    @property
    def requires_client_certificate(self) -> bool:
        """Every client must show a certificate from the client CA: that authenticates it."""
        return self.client_auth_type == "RequireAndVerifyClientCert"

    def client_allowed(self, peer_certificate: dict | None) -> bool:
        """client_allowed_sans: the verified client certificate (`SSLSocket.getpeercert()`) names one
        of them (DNS, IP, e-mail or URI, exactly, as the toolkit compares). No list: every client."""
        if not self.client_allowed_sans:
            return True
        names = {_canonical_san(value) for kind, value in (peer_certificate or {}).get("subjectAltName", ())
                 if kind in ("DNS", "IP Address", "email", "URI")}
        return not names.isdisjoint(self.client_allowed_sans)


def _canonical_san(value: str) -> str:
    # Python writes an IPv6 SAN as 2001:DB8:0:0:0:0:0:1, Go as 2001:db8::1: compare addresses as addresses.
    try:
        return ipaddress.ip_address(value.strip()).compressed
    except ValueError:
        return value


def _no_key_password() -> str:
    # Without this callback OpenSSL would prompt on the terminal for an encrypted key's passphrase.
    raise ValueError("the private key is encrypted: xcheck needs it unencrypted, as Go exporters do")


def _file(value: str, base: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def _pem(path: Path, where: str, problems: _Problems) -> bytes | None:
    try:
        return _read_bounded(path, MAX_PEM_BYTES)
    except OSError as exc:
        problems.add(where, f"cannot read {path}: {exc.strerror or exc}")
    except ValueError as exc:
        problems.add(where, f"cannot read {path}: {exc}")
    return None


def _tls(entries: dict[str, yaml.Node], base: Path, problems: _Problems) -> TLSSettings | None:
    where = "tls_server_config"
    values = {key: _text(node, f"{where}.{key}", problems) for key, node in entries.items()
              if key in ("cert_file", "key_file", "client_auth_type", "client_ca_file", "client_ca", "min_version",
                         "max_version")}
    for inline, instead in (("cert", "cert_file"), ("key", "key_file")):
        if inline in entries:
            problems.add(f"{where}.{inline}", f"inline PEM is not supported: Python's ssl loads a certificate and "
                                              f"key only from files; put it in a file and name it in {instead}")
    cert_file, key_file = values.get("cert_file") or "", values.get("key_file") or ""
    client_auth = values.get("client_auth_type") or ""
    client_ca_file, client_ca_text = values.get("client_ca_file") or "", values.get("client_ca") or ""
    enabled = any((cert_file, key_file, client_auth, client_ca_file, client_ca_text))
    if not enabled:
        # The toolkit would serve plain HTTP and ignore these; say so instead.
        rest = [key for key in entries if key not in ("cert", "key")]
        if rest:
            problems.add(where, f"{', '.join(rest)} set but TLS is off (no cert_file and key_file): "
                                "add them, or remove the section")
        return None
    if not cert_file:
        problems.add(where, "missing one of cert or cert_file")
    if not key_file:
        problems.add(where, "missing one of key or key_file")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Renegotiation is a client-driven CPU cost on the server and nothing here needs it.
    context.options |= ssl.OP_NO_RENEGOTIATION
    # HTTP/1.1 only: an HTTP/2 client negotiates down instead of failing.
    context.set_alpn_protocols(["http/1.1"])

    versions = {}
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        name = values.get(key) or default
        if name in _OLD_TLS_VERSIONS:
            problems.add(f"{where}.{key}", f"{name} is not served: TLS 1.0 and 1.1 are deprecated (RFC 8996) and "
                                           "this system's OpenSSL refuses them; use TLS12 or TLS13")
        elif name not in _TLS_VERSIONS:
            problems.add(f"{where}.{key}", f"unknown TLS version {_shown(name)} (known: TLS12, TLS13)")
        else:
            versions[key] = _TLS_VERSIONS[name]
    if len(versions) == 2:
        if versions["min_version"] > versions["max_version"]:
            problems.add(where, "min_version is above max_version: no client could connect")
        else:
            context.minimum_version, context.maximum_version = versions["min_version"], versions["max_version"]

    if "cipher_suites" in entries:
        _cipher_suites(context, _texts(entries["cipher_suites"], f"{where}.cipher_suites", problems), problems)
        if versions.get("min_version") == ssl.TLSVersion.TLSv1_3:
            problems.add(f"{where}.cipher_suites", "apply to TLS 1.2 only, and min_version is TLS13: remove them")
    if "prefer_server_cipher_suites" in entries:
        prefer = _boolean(entries["prefer_server_cipher_suites"], f"{where}.prefer_server_cipher_suites", problems)
        if prefer is False:
            context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        # True is the toolkit's default and OpenSSL's here (set by Python's server context).
    if "curve_preferences" in entries:
        curves = _texts(entries["curve_preferences"], f"{where}.curve_preferences", problems)
        unknown = [curve for curve in curves if curve not in _CURVES]
        if unknown:
            problems.add(f"{where}.curve_preferences", f"unknown curve {_shown(unknown[0])} "
                                                       f"(known: {', '.join(_CURVES)})")
        elif len(curves) > 1:
            problems.add(f"{where}.curve_preferences", "Python's ssl sets one curve, not a preference list: "
                                                       "name exactly one")
        elif curves:
            context.set_ecdh_curve(_CURVES[curves[0]])

    has_client_ca = bool(client_ca_file or client_ca_text)
    if client_ca_file and client_ca_text:
        problems.add(where, "client_ca and client_ca_file both set: name one")
    client_auth = client_auth or "NoClientCert"
    sans: frozenset[str] = frozenset()
    if client_auth in _UNVERIFIED_CLIENT_AUTH:
        problems.add(f"{where}.client_auth_type", f"{client_auth} accepts any certificate without verifying it, "
                                                  "which Python's ssl cannot do (and which proves nothing): use "
                                                  "RequireAndVerifyClientCert with client_ca_file")
    elif client_auth not in _CLIENT_AUTH:
        problems.add(f"{where}.client_auth_type", f"invalid ClientAuth {_shown(client_auth)} (known: "
                                                  f"{', '.join(_CLIENT_AUTH)}, RequireAnyClientCert)")
    else:
        context.verify_mode = _CLIENT_AUTH[client_auth]
        if has_client_ca and client_auth == "NoClientCert":
            problems.add(where, "client CA's have been configured without a Client Auth Policy (client_auth_type)")
        if context.verify_mode != ssl.CERT_NONE:
            if has_client_ca:
                _client_ca(context, client_ca_file, client_ca_text, base, problems)
            else:
                # Go would verify against the system's public CAs: anyone with a public certificate would get in.
                problems.add(f"{where}.client_auth_type", f"{client_auth} needs client_ca_file: the CA that "
                                                          "issues the clients' certificates")
        if "client_allowed_sans" in entries:
            sans = frozenset(_canonical_san(value) for value in
                             _texts(entries["client_allowed_sans"], f"{where}.client_allowed_sans", problems))
            if sans and context.verify_mode == ssl.CERT_NONE:
                problems.add(f"{where}.client_allowed_sans", "needs client_auth_type RequireAndVerifyClientCert "
                                                             "(or VerifyClientCertIfGiven): an unverified "
                                                             "certificate's names prove nothing")

    cert_path, key_path = _file(cert_file, base), _file(key_file, base)
    if cert_file and key_file:
        readable = [_pem(path, f"{where}.{key}", problems) for key, path in (("cert_file", cert_path),
                                                                              ("key_file", key_path))]
        if None not in readable:
            try:
                context.load_cert_chain(cert_path, key_path, password=_no_key_password)
            except ValueError as exc:
                problems.add(f"{where}.key_file", str(exc))
            except ssl.SSLError as exc:
                problems.add(where, "cannot load cert_file and key_file: they must be a PEM certificate and its "
                                    f"matching PEM private key (OpenSSL: {exc.reason or exc.strerror or exc})")
    return TLSSettings(cert_path, key_path, client_auth, sans, context)


def _client_ca(context: ssl.SSLContext, client_ca_file: str, client_ca_text: str, base: Path,
               problems: _Problems) -> None:
    where = "tls_server_config.client_ca_file" if client_ca_file else "tls_server_config.client_ca"
    pem = _pem(_file(client_ca_file, base), where, problems) if client_ca_file else client_ca_text.encode()
    if pem is None:
        return
    try:
        context.load_verify_locations(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError):  # UnicodeDecodeError is a ValueError
        problems.add(where, "contains no PEM certificate")


def _cipher_suites(context: ssl.SSLContext, names: list[str], problems: _Problems) -> None:
    where = "tls_server_config.cipher_suites"
    for index, name in enumerate(names):
        if name in _TLS13_CIPHER_SUITES:
            problems.add(f"{where}[{index}]", f"{name} is a TLS 1.3 suite, and TLS 1.3 suites cannot be chosen "
                                              "(Go ignores them too): cipher_suites applies to TLS 1.2; remove it")
        elif name not in _CIPHER_SUITES:
            problems.add(f"{where}[{index}]", f"unknown cipher {_shown(name)}")
    wanted = [_CIPHER_SUITES[name] for name in names if name in _CIPHER_SUITES]
    if not wanted or len(wanted) != len(names):
        return
    try:
        context.set_ciphers(":".join(wanted))
    except ssl.SSLError:
        pass  # none available: reported below with the others
    # OpenSSL drops the names it lacks without a word; a suite asked for must be a suite served.
    available = {cipher["name"] for cipher in context.get_ciphers()}
    missing = [name for name in names if _CIPHER_SUITES[name] not in available]
    if missing:
        problems.add(where, f"not available in this system's OpenSSL: {', '.join(missing)}")


# ----------------------------------------------------------------------------------------- basic auth


class BasicAuth:
    """basic_auth_users: user name -> bcrypt hash, checked against an `Authorization: Basic` header.

    bcrypt costs 0.1-0.3 s a check, so a scrape every 15 s would pay it every time: a user's last
    successful password is remembered, as a keyed MAC (the key random per process), never in clear,
    and compared in constant time. Only the right password succeeds, so the memory holds at most one
    entry per configured user whatever clients send. An unknown user costs a bcrypt check against a
    configured hash all the same, so timing does not tell which users exist. Checks that miss run one
    at a time, as the toolkit's do, so a flood of guesses takes one core, not all.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._hashes = {user.encode(): hashed.encode("ascii") for user, hashed in users.items()}
        # The costliest configured hash: the decoy for unknown users costs at least what a real user does.
        self._decoy = max(self._hashes.values(), key=lambda hashed: int(hashed[4:6]))
        self._mac_key = secrets.token_bytes(32)
        self._verified: dict[bytes, bytes] = {}  # user -> MAC of the password that last passed
        self._bcrypt_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BasicAuth({len(self._hashes)} users)"

    @property
    def users(self) -> frozenset[str]:
        return frozenset(user.decode() for user in self._hashes)

    def check(self, authorization: str | None) -> bool:
        """True when `authorization` (the header's value) names a configured user and their password."""
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        if len(password) > MAX_PASSWORD_BYTES:
            return False
        hashed = self._hashes.get(user)
        mac = hmac.new(self._mac_key, password, sha256).digest()
        if hashed is not None and hmac.compare_digest(self._verified.get(user, b""), mac):
            return True
        with self._bcrypt_lock:
            matches = bcrypt.checkpw(password, hashed if hashed is not None else self._decoy)
        if hashed is None or not matches:
            return False
        self._verified[user] = mac  # one assignment: atomic for the other connections' threads
        return True


def _basic_credentials(authorization: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) from `Basic base64(user:password)`, as Go's Request.BasicAuth reads it."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def _users(node: yaml.Node, problems: _Problems) -> BasicAuth | None:
    users = {}
    for user, value in _mapping(node, "basic_auth_users", None, problems).items():
        where = f"basic_auth_users.{user}"
        if ":" in user or not user.isprintable():
            problems.add("basic_auth_users", f"user {_shown(user)}: a user name cannot hold ':' (basic auth splits "
                                             "user and password at the first one) or control characters")
            continue
        hashed = value.value if isinstance(value, yaml.ScalarNode) else ""
        match = _BCRYPT_HASH.fullmatch(hashed)
        if match is None or int(match.group(1)) not in _BCRYPT_COSTS:
            # The value is not shown: it may be a password pasted where its hash belongs.
            problems.add(where, "not a bcrypt hash ($2y$, $2b$ or $2a$, a cost of 04-31, 60 characters in all; "
                                "make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`); the value is not shown")
            continue
        users[user] = hashed
    return BasicAuth(users) if users else None


# ----------------------------------------------------------------------------------------- the file


def _headers(node: yaml.Node, problems: _Problems) -> tuple[tuple[str, str], ...]:
    headers = []
    for name, value_node in _mapping(node, "http_server_config.headers", None, problems).items():
        where = f"http_server_config.headers.{name}"
        if name not in _HEADERS:
            problems.add("http_server_config.headers", f"HTTP header {_shown(name)} can not be configured "
                                                       f"(known: {', '.join(_HEADERS)})")
            continue
        value = _text(value_node, where, problems)
        if value is None:
            continue
        allowed = _HEADERS[name]
        if value and allowed is not None and value not in allowed:
            problems.add(where, f"invalid value for {name}: expected one of {', '.join(allowed)}")
        elif not _HEADER_VALUE.fullmatch(value):
            problems.add(where, "must be printable ASCII on one line")
        elif value:  # blank means unset, as the toolkit documents
            headers.append((name, value))
    return tuple(headers)


@dataclass(frozen=True)
class WebConfig:
    """A web config file as served: TLS (None: plain HTTP), extra response headers, basic auth
    (None: none required)."""

    path: Path
    tls: TLSSettings | None
    headers: tuple[tuple[str, str], ...]
    basic_auth: BasicAuth | None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WebConfig:
        """Read and check `path`; WebConfigError naming every problem (with its key path)."""
        path = Path(path)
        try:
            text = _read_bounded(path, MAX_CONFIG_BYTES).decode("utf-8")
            root = _compose(text)
        except OSError as exc:
            raise WebConfigError([f"web config {path}: cannot read it: {exc.strerror or exc}"]) from None
        except UnicodeDecodeError as exc:
            raise WebConfigError([f"web config {path}: not UTF-8 text (byte {exc.start})"]) from None
        except ValueError as exc:
            raise WebConfigError([f"web config {path}: {exc}"]) from None
        problems = _Problems()
        sections = _mapping(root, "", _SECTIONS, problems) if root is not None else {}
        if "rate_limit" in sections:
            problems.add("rate_limit", "not supported by xcheck: remove it (the server bounds its connections "
                                       "instead; see README)")
        tls = None
        if "tls_server_config" in sections:
            tls = _tls(_mapping(sections["tls_server_config"], "tls_server_config", _TLS_KEYS, problems),
                       path.parent, problems)
        headers: tuple[tuple[str, str], ...] = ()
        if "http_server_config" in sections:
            http = _mapping(sections["http_server_config"], "http_server_config", _HTTP_KEYS, problems)
            if "http2" in http and _boolean(http["http2"], "http_server_config.http2", problems):
                problems.add("http_server_config.http2", "xcheck serves HTTP/1.1 only: set it to false or remove it")
            if "headers" in http:
                headers = _headers(http["headers"], problems)
        basic_auth = _users(sections["basic_auth_users"], problems) if "basic_auth_users" in sections else None
        if problems:
            raise WebConfigError([f"web config {path}: {problem}" for problem in problems])
        return cls(path, tls, headers, basic_auth)


# ----------------------------------------------------------------------------------------- exposure


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name (or "" for every interface): assume it reaches beyond this host


def exposure_warning(host: str, config: WebConfig | None) -> str | None:
    """The start-up warning when `host` (the listen address) reaches beyond loopback without TLS or
    without authentication (basic auth, or client certificates required and verified); None if fine."""
    if _is_loopback(host):
        return None
    tls = config.tls if config is not None else None
    authenticated = config is not None and (config.basic_auth is not None
                                            or (tls is not None and tls.requires_client_certificate))
    missing = ([] if tls else ["TLS"]) + ([] if authenticated else ["authentication"])
    if not missing:
        return None
    consequence = "anyone who can reach it can read the site's metrics and start probes"
    if authenticated:
        consequence = "passwords and metrics cross the network in clear"
    return (f"listening on {host or 'every address'} beyond loopback without {' or '.join(missing)}: "
            f"{consequence}; see --web-config (tls_server_config, basic_auth_users) in README")
