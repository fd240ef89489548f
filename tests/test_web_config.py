"""--web-config: exporter-toolkit's web configuration file, read as strictly as the toolkit reads it.

Certificates come from a test CA made with `cryptography` (tests/test_tls.py's `_issue`) in a tmp
directory. What a real exporter-toolkit program (the installed blackbox_exporter) makes of the same
files is compared in tests/test_http_server.py.
"""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
from cryptography.hazmat.primitives import serialization

from agent.daemon import web
from agent.daemon.web import MAX_CONFIG_BYTES, BasicAuth, WebConfig, WebConfigError, exposure_warning
from test_tls import Issued, _issue

PASSWORD = "correct horse"
# Cost 4, bcrypt's least: the tests check logic, not bcrypt's slowness (Go accepts 4 too).
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------------------------------
# A test PKI on disk: a server certificate for 127.0.0.1, clients of the CA and of another CA

@dataclass(frozen=True)
class Pki:
    directory: Path  # ca.pem, server.pem/server.key, client.pem/client.key, stranger.pem/stranger.key
    ca: Issued

    def client_context(self, client: str | None = None, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        """A client trusting the test CA, showing `client`'s certificate ("client", "stranger") if named."""
        context = ssl.create_default_context(cafile=self.directory / "ca.pem")
        if client:
            context.load_cert_chain(self.directory / f"{client}.pem", self.directory / f"{client}.key")
        for key, version in versions.items():
            setattr(context, key, version)
        return context


def _write(directory: Path, name: str, issued: Issued) -> None:
    (directory / f"{name}.pem").write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def make_pki(directory: Path) -> Pki:
    ca = _issue("xcheck web test CA", None, ca=True)
    other_ca = _issue("someone else's CA", None, ca=True)
    (directory / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    _write(directory, "server", _issue("xcheck daemon", ca, dns=("localhost",), ips=("127.0.0.1",)))
    _write(directory, "client", _issue("prometheus", ca, dns=("prometheus.example",)))
    _write(directory, "stranger", _issue("prometheus", other_ca, dns=("prometheus.example",)))
    _write(directory, "other_client", _issue("grafana", ca, dns=("grafana.example",)))
    return Pki(directory, ca)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def with_pki(pki: Pki, directory: Path) -> Path:
    """`directory`, holding the PKI's files, where a web.yml names them by relative paths."""
    for path in pki.directory.iterdir():
        shutil.copy(path, directory / path.name)
    return directory


@pytest.fixture
def config_dir(pki, tmp_path) -> Path:
    return with_pki(pki, tmp_path)


def load(directory: Path, text: str) -> WebConfig:
    (directory / "web.yml").write_text(text)
    return WebConfig.load(directory / "web.yml")


def problems(directory: Path, text: str) -> str:
    with pytest.raises(WebConfigError) as caught:
        load(directory, text)
    return str(caught.value)


TLS = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"


# ---------------------------------------------------------------------------------------
# What a good file gives

def test_a_full_file_loads_with_paths_relative_to_its_directory(config_dir, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # relative to the file, not to the cwd
    config = load(config_dir, TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
                  "  min_version: TLS13\n  client_allowed_sans: [prometheus.example]\n"
                  "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n"
                  "    X-XSS-Protection: 0\n    Content-Security-Policy: ''\n"
                  f"basic_auth_users:\n  alice: {HASH}\n  1234: {HASH}\n")
    assert config.tls is not None
    assert config.tls.cert_file == config_dir / "server.pem" and config.tls.key_file == config_dir / "server.key"
    assert config.tls.requires_client_certificate
    context = config.tls.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.cert_store_stats()["x509_ca"] == 1
    # `0` is the text "0", as Go reads it into a string; a blank header is unset, as the toolkit documents.
    assert config.headers == (("X-Frame-Options", "deny"), ("X-XSS-Protection", "0"))
    assert config.basic_auth is not None and config.basic_auth.users == {"alice", "1234"}


def test_an_empty_file_is_plain_http_without_auth(config_dir):
    config = load(config_dir, "")
    assert config.tls is None and config.basic_auth is None and config.headers == ()


def test_nothing_secret_shows_in_a_repr(config_dir):
    config = load(config_dir, f"basic_auth_users:\n  alice: {HASH}\n")
    assert HASH not in repr(config) and HASH[7:] not in repr(config)


def test_the_supported_tls_settings_are_applied(config_dir):
    context = load(config_dir, TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n"
                   "  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n"
                   "  prefer_server_cipher_suites: false\n  curve_preferences: [CurveP384]\n").tls.context
    assert context.verify_mode == ssl.CERT_OPTIONAL and context.maximum_version == ssl.TLSVersion.TLSv1_2
    tls12 = {cipher["name"] for cipher in context.get_ciphers() if cipher["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-ECDSA-AES256-GCM-SHA384"}
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_an_inline_client_ca_is_used(config_dir):
    ca = (config_dir / "ca.pem").read_text().replace("\n", "\n    ")
    context = load(config_dir, TLS + f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca: |\n    {ca}\n"
                   ).tls.context
    assert context.cert_store_stats()["x509_ca"] == 1


# ---------------------------------------------------------------------------------------
# Refusals: each names its key path, all are listed at once

@pytest.mark.parametrize("text, expected", [
    ("tls_server_config:\n  cert_filse: server.pem\n", "tls_server_config: unknown key 'cert_filse'"),
    ("basic_auth_user:\n  alice: x\n", "unknown key 'basic_auth_user'"),
    ("http_server_config:\n  header: {}\n", "http_server_config: unknown key 'header'"),
    ("http_server_config:\n  headers:\n    Content-Type: text/html\n",
     "HTTP header 'Content-Type' can not be configured"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow-from\n", "headers.X-Frame-Options: invalid value"),
    ("http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
     "invalid value for X-Content-Type-Options"),
    ("http_server_config:\n  http2: maybe\n", "http_server_config.http2: must be true or false"),
    ("http_server_config:\n  http2: true\n", "http_server_config.http2: xcheck serves HTTP/1.1 only"),
    ("rate_limit:\n  interval: 1s\n  burst: 5\n", "rate_limit: not supported"),
    ("- tls_server_config\n", "must be a mapping"),
    ("basic_auth_users:\n  alice: x\n  alice: y\n", "basic_auth_users.alice: duplicate key"),
    ("tls_server_config: {}\ntls_server_config: {}\n", "tls_server_config: duplicate key"),
    (TLS + "  cert: inline\n", "tls_server_config.cert: inline PEM is not supported"),
    ("tls_server_config:\n  cert_file: server.pem\n", "missing one of key or key_file"),
    ("tls_server_config:\n  key_file: server.key\n", "missing one of cert or cert_file"),
    ("tls_server_config:\n  min_version: TLS13\n", "min_version set but TLS is off"),
    (TLS + "  min_version: TLS111\n", "tls_server_config.min_version: unknown TLS version 'TLS111'"),
    (TLS + "  min_version: TLS10\n", "tls_server_config.min_version: TLS10 is not served"),
    (TLS + "  max_version: TLS11\n", "tls_server_config.max_version: TLS11 is not served"),
    (TLS + "  min_version: TLS13\n  max_version: TLS12\n", "min_version is above max_version"),
    (TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n", "cipher_suites[0]: unknown cipher"),
    (TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
     "cipher_suites[0]: TLS_AES_128_GCM_SHA256 is a TLS 1.3 suite"),
    (TLS + "  min_version: TLS13\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n",
     "cipher_suites: apply to TLS 1.2 only"),
    (TLS + "  curve_preferences: [CurveP999]\n", "unknown curve 'CurveP999'"),
    (TLS + "  curve_preferences: [X25519, CurveP256]\n", "name exactly one"),
    (TLS + "  client_auth_type: Sometimes\n", "invalid ClientAuth 'Sometimes'"),
    (TLS + "  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.pem\n", "RequireAnyClientCert accepts any"),
    (TLS + "  client_auth_type: RequireClientCert\n", "RequireClientCert accepts any"),
    (TLS + "  client_ca_file: ca.pem\n", "client CA's have been configured without a Client Auth Policy"),
    (TLS + "  client_auth_type: RequireAndVerifyClientCert\n", "RequireAndVerifyClientCert needs client_ca_file"),
    (TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.key\n",
     "client_ca_file: contains no PEM certificate"),
    (TLS + "  client_allowed_sans: [prometheus.example]\n", "client_allowed_sans: needs client_auth_type"),
    ("tls_server_config:\n  cert_file: nothere.pem\n  key_file: server.key\n",
     "tls_server_config.cert_file: cannot read"),
    ("tls_server_config:\n  cert_file: server.pem\n  key_file: client.key\n", "cannot load cert_file and key_file"),
    ("tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n", "cannot load cert_file and key_file"),
])
def test_a_bad_file_is_refused_naming_the_key(config_dir, text, expected):
    message = problems(config_dir, text)
    assert expected in message
    assert str(config_dir / "web.yml") in message


def test_every_problem_is_listed_at_once(config_dir):
    message = problems(config_dir, TLS + "  min_version: TLS9\n  max_version: TLS8\n"
                                         "http_server_config:\n  http2: true\n")
    assert [line.split(": ")[1] for line in message.splitlines()] == [
        "tls_server_config.min_version", "tls_server_config.max_version", "http_server_config.http2"]


def test_an_encrypted_key_is_refused_without_prompting(config_dir, pki):
    key = _issue("xcheck daemon", pki.ca, ips=("127.0.0.1",))
    (config_dir / "server.pem").write_bytes(key.cert.public_bytes(serialization.Encoding.PEM))
    (config_dir / "server.key").write_bytes(key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    # A prompt would wait on this test's stdin (pytest's is closed: a prompt fails with another message).
    assert "tls_server_config.key_file: the private key is encrypted" in problems(config_dir, TLS)


@pytest.mark.parametrize("hashed", [
    "hunter2",  # a password pasted where its hash belongs
    "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV",  # cut short
    "$2y$03$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi",  # cost below 4
    "$2y$32$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi",  # cost above 31
    "$1$QOauhQNb$BCuQDKes6eFzPeMqBSjb7M",  # md5-crypt, not bcrypt
    "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeS!",  # not bcrypt's alphabet
])
def test_a_bad_hash_is_refused_and_never_shown(config_dir, hashed):
    message = problems(config_dir, f"basic_auth_users:\n  alice: '{hashed}'\n")
    assert "basic_auth_users.alice: not a bcrypt hash" in message
    assert hashed not in message


def test_a_user_name_that_basic_auth_cannot_carry_is_refused(config_dir):
    assert "user 'a:b'" in problems(config_dir, f"basic_auth_users:\n  'a:b': {HASH}\n")


def test_a_yaml_error_never_quotes_the_line_it_is_on(config_dir):
    message = problems(config_dir, f"basic_auth_users:\n  alice: \"{HASH}\n  bob: x\n")
    assert "not valid YAML" in message and "line " in message
    assert HASH[7:30] not in message


# ---------------------------------------------------------------------------------------
# Files that are not web configs: clear errors, never a hang or a blow-up

def test_a_missing_file(tmp_path):
    with pytest.raises(WebConfigError, match=r"nothere.yml: cannot read it: No such file or directory"):
        WebConfig.load(tmp_path / "nothere.yml")


@pytest.mark.parametrize("make, expected", [("directory", "cannot read it: Is a directory"),
                                            ("fifo", "not a regular file")])
def test_a_path_that_is_not_a_regular_file_fails_at_once(tmp_path, make, expected):
    path = tmp_path / "web.yml"
    path.mkdir() if make == "directory" else os.mkfifo(path)  # a FIFO without writer would block a plain open
    with pytest.raises(WebConfigError, match=expected):
        WebConfig.load(path)


def test_an_unreadable_file(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: {HASH}\n")
    path.chmod(0)
    command = [sys.executable, "-c", "import sys\nfrom agent.daemon.web import WebConfig\n"
               "try: WebConfig.load(sys.argv[1])\nexcept ValueError as e: print(e)", str(path)]
    if os.geteuid() == 0:  # root reads any file: drop the capabilities that let it
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all", *command]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert completed.stdout.strip() == f"web config {path}: cannot read it: Permission denied", completed.stderr


def test_a_huge_file_is_refused_unread(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(WebConfigError, match=f"larger than {MAX_CONFIG_BYTES} bytes"):
        WebConfig.load(path)


def test_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "web.yml"
    path.write_bytes(b"basic_auth_users:\n  \xff\xfe: x\n")
    with pytest.raises(WebConfigError, match=r"not UTF-8 text \(byte 20\)"):
        WebConfig.load(path)


def test_billion_laughs_is_refused_before_it_expands(config_dir):
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    message = problems(config_dir, "\n".join(levels) + "\nbasic_auth_users: *i\n")
    assert "line 2, column 8: YAML aliases (*name) are not accepted" in message


def test_deep_nesting_is_refused(config_dir):
    assert f"nested deeper than {web.MAX_YAML_DEPTH} levels" in problems(config_dir, "[" * 30_000 + "]" * 30_000)


def test_several_documents_are_refused(config_dir):
    assert "not valid YAML" in problems(config_dir, "basic_auth_users: {}\n---\nbasic_auth_users: {}\n")


def test_an_unknown_yaml_tag_is_not_a_value(config_dir):
    assert "tls_server_config.cert_file: must be a single value" in problems(
        config_dir, "tls_server_config:\n  cert_file: !!python/name:os.system server.pem\n  key_file: server.key\n")


# ---------------------------------------------------------------------------------------
# Basic auth

@pytest.fixture
def counted_bcrypt(monkeypatch) -> list[bytes]:
    """Every hash bcrypt.checkpw is called with, in order."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(web.bcrypt, "checkpw", checkpw)
    return calls


def test_the_right_password_passes_and_others_do_not():
    auth = BasicAuth({"alice": HASH})
    assert auth.check(basic("alice", PASSWORD))
    assert not auth.check(basic("alice", PASSWORD + "!"))
    assert not auth.check(basic("alice", ""))
    assert not auth.check(basic("mallory", PASSWORD))
    assert auth.check("basic " + basic("alice", PASSWORD).split()[1])  # the scheme in any case, as Go reads it


@pytest.mark.parametrize("header", [None, "", "Bearer abc", "Basic", "Basic !!!!", "Basic " +
                                    base64.b64encode(b"alice-without-colon").decode()])
def test_a_malformed_authorization_header_fails(header):
    assert not BasicAuth({"alice": HASH}).check(header)


def test_a_password_bcrypt_would_truncate_fails():
    long = "x" * 80
    auth = BasicAuth({"alice": bcrypt.hashpw(long[:72].encode(), bcrypt.gensalt(4)).decode()})
    assert auth.check(basic("alice", long[:72]))
    assert not auth.check(basic("alice", long))


def test_a_success_is_remembered_without_the_password(counted_bcrypt):
    auth = BasicAuth({"alice": HASH})
    for _ in range(3):
        assert auth.check(basic("alice", PASSWORD))
    assert len(counted_bcrypt) == 1  # bcrypt once; the next scrapes from memory
    assert PASSWORD.encode() not in repr(vars(auth)).encode()
    assert not auth.check(basic("alice", "wrong"))  # a wrong password is never taken from memory
    assert len(counted_bcrypt) == 2


def test_an_unknown_user_costs_a_bcrypt_check_as_a_known_one_does(counted_bcrypt):
    costly = bcrypt.hashpw(b"other", bcrypt.gensalt(5)).decode()
    auth = BasicAuth({"alice": HASH, "bob": costly})
    assert not auth.check(basic("mallory", PASSWORD))
    # Against the costliest configured hash: an unknown user is never the quicker answer.
    assert counted_bcrypt == [costly.encode()]


# ---------------------------------------------------------------------------------------
# The start-up warning

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "localhost"])
def test_no_warning_on_loopback(host):
    assert exposure_warning(host, None) is None


def test_the_warning_names_what_is_missing(config_dir):
    no_tls = exposure_warning("0.0.0.0", load(config_dir, f"basic_auth_users:\n  alice: {HASH}\n"))
    assert "without TLS:" in no_tls and "passwords and metrics cross the network in clear" in no_tls
    no_auth = exposure_warning("192.0.2.10", load(config_dir, TLS))
    assert "without authentication:" in no_auth and "anyone who can reach it" in no_auth
    neither = exposure_warning("", None)
    assert "every address beyond loopback without TLS or authentication" in neither
    assert "--web-config" in neither
    assert exposure_warning("daemon.example", None) is not None  # a name may reach anywhere


def test_no_warning_with_tls_and_authentication(config_dir):
    assert exposure_warning("::", load(config_dir, TLS + f"basic_auth_users:\n  alice: {HASH}\n")) is None
    client_certificates = TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
    assert exposure_warning("0.0.0.0", load(config_dir, client_certificates)) is None
    # Optional client certificates authenticate nobody.
    optional = TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n"
    assert "without authentication" in exposure_warning("0.0.0.0", load(config_dir, optional))
