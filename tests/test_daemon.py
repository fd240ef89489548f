"""`xcheck daemon` as a process, on loopback: its routes, its reload on SIGHUP, its stop on SIGTERM,
systemd's notify protocol, and running without root. Every target is on 127.0.0.1 (conftest's
StunRecorder, a UDP socket that never answers, stands in for a STUN server gone quiet); the lab tests
(tests/test_lab_daemon.py) put it behind a real NAT with Prometheus scraping it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import XCHECK, free_port, validate_report
from prometheus_client.parser import text_string_to_metric_families

# Generous bounds that prove "does not hang", never "is fast".
START_SECONDS = 30.0
STOP_SECONDS = 5.0  # the bound for SIGTERM, measured by the test with margin for a loaded host


class Daemon:
    """An `xcheck daemon` process and its log."""

    def __init__(self, process: subprocess.Popen, port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes, dict]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def metrics(self) -> dict[str, list]:
        status, body, _ = self.get("/metrics")
        assert status == 200
        return {family.name: family.samples for family in text_string_to_metric_families(body.decode())}

    def wait_for(self, predicate, what: str, timeout: float = START_SECONDS):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}) waiting for {what}:\n{self.log.read_text()}")
            try:
                value = predicate()
            except (OSError, urllib.error.URLError):
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running_daemon(tmp_path: Path, *args: str, env: dict | None = None, prefix: tuple[str, ...] = ()):
    port = free_port()
    log = tmp_path / "daemon.log"
    with log.open("wb") as handle:
        process = subprocess.Popen([*prefix, XCHECK, "daemon", "--listen", f"127.0.0.1:{port}", *args],
                                   stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    daemon = Daemon(process, port, log)
    try:
        daemon.wait_for(lambda: daemon.get("/healthz", timeout=2)[0] == 200, "/healthz")
        yield daemon
    finally:
        daemon.stop()


def sample(metrics: dict, name: str, **labels) -> float | None:
    for found in metrics.get(name.removesuffix("_total"), []):
        if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
            return found.value
    return None


def test_routes_serve_the_latest_results(tmp_path, stun_recorder):
    stun = stun_recorder.address
    with running_daemon(tmp_path, "--stun", stun, "--gateway", "127.0.0.1",
                                                      "--interval", "5", "--timeout", "1") as daemon:
        # Before the first cycle ends: metrics answer (build info), the report says to wait.
        report = daemon.wait_for(lambda: daemon.get("/report")[0] == 200 and daemon.get("/report")[1], "a report")
        validate_report(json.loads(report))
        metrics = daemon.metrics()
        assert sample(metrics, "xcheck_build_info") == 1
        assert sample(metrics, "xcheck_config_last_reload_successful") == 1
        # The silent server: bare silence, so success 0 with the reason; never an invented NAT fact.
        daemon.wait_for(lambda: sample(daemon.metrics(), "xcheck_check_success", check="stun_binding", target=stun) == 0,
                        "stun_binding to fail")
        metrics = daemon.metrics()
        assert sample(metrics, "xcheck_check_result", check="stun_binding", target=stun, reason="no_response") == 1
        assert sample(metrics, "xcheck_nat_detected") is None  # unknown is absent, never 0
        assert sample(metrics, "xcheck_check_success", check="interfaces", target="local") == 1
        status, page, headers = daemon.get("/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b"stun_binding" in page and b"no_response" in page and b'href="/metrics"' in page
        assert daemon.get("/nope")[0] == 404
        # A target nobody configured is refused: the daemon probes for no one else.
        status, body, _ = daemon.get("/probe?module=gateway&target=127.0.0.2")
        assert status == 403 and b"not allowed" in body
        assert daemon.get("/probe?module=bogus&target=127.0.0.1")[0] == 400


def test_probe_answers_blackbox_style_and_honours_the_scrape_timeout(tmp_path, stun_recorder):
    stun = stun_recorder.address
    with running_daemon(tmp_path, "--stun", stun, "--gateway", "127.0.0.1",
                                                      "--interval", "300", "--timeout", "10") as daemon:
        started = time.monotonic()
        status, body, headers = daemon.get(f"/probe?module=stun&target={stun}",
                                           headers={"X-Prometheus-Scrape-Timeout-Seconds": "2.5"})
        took = time.monotonic() - started
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {family.name: family.samples for family in text_string_to_metric_families(body.decode())}
        assert sample(families, "probe_success") == 0
        assert sample(families, "xcheck_check_result", check="stun_binding", target=stun, reason="no_response") == 1
        duration = sample(families, "probe_duration_seconds")
        # The config says 10 s per check; the scrape allows 2.5 s: the probe ended inside the scrape's.
        assert duration < 2.5 and took < 10


def test_sighup_keeps_the_last_good_config_and_says_why(tmp_path, stun_recorder):
    stun = stun_recorder.address
    config = tmp_path / "xcheck.toml"
    config.write_text(f'stun = ["{stun}"]\ntimeout_seconds = 1\n[daemon]\ninterval_seconds = 5\n')
    with running_daemon(tmp_path, "--config", str(config)) as daemon:
        first = sample(daemon.metrics(), "xcheck_config_last_reload_success_timestamp_seconds")
        config.write_text('stun = ["not a host!"]\n[daemon]\ninterval_seconds = "often"\n')
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: sample(daemon.metrics(), "xcheck_config_last_reload_successful") == 0, "reload to fail")
        metrics = daemon.metrics()
        assert sample(metrics, "xcheck_config_last_reload_success_timestamp_seconds") == first
        assert daemon.get("/healthz")[0] == 200  # still serving, with the last good config
        daemon.wait_for(lambda: sample(daemon.metrics(), "xcheck_check_result", check="stun_binding", target=stun,
                                       reason="no_response") == 1, "the old config's checks to go on")
        failures = [line for line in daemon.log.read_text().splitlines() if "reload failed" in line]
        assert len(failures) == 1, daemon.log.read_text()  # one clear line, naming both problems
        assert "stun" in failures[0] and "interval_seconds" in failures[0]

        config.write_text(f'stun = ["{stun}"]\ntimeout_seconds = 1\n[daemon]\ninterval_seconds = 6\n')
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: sample(daemon.metrics(), "xcheck_config_last_reload_successful") == 1, "reload")
        assert sample(daemon.metrics(), "xcheck_config_last_reload_success_timestamp_seconds") > first


def test_sigterm_stops_within_five_seconds_while_a_probe_waits(tmp_path, stun_recorder):
    stun = stun_recorder.address
    with running_daemon(tmp_path, "--stun", stun, "--interval", "5",
                                                      "--timeout", "60") as daemon:
        # A cycle is waiting on the silent server for up to 60 s, and a /probe of it as well.
        def probe_in_flight() -> None:
            try:
                daemon.get(f"/probe?module=stun&target={stun}", timeout=70)
            except OSError:
                pass  # the daemon stops under it: that is the point

        threading.Thread(target=probe_in_flight, daemon=True).start()
        time.sleep(FIRST_CYCLE_WAIT)
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        daemon.process.wait(30)
        took = time.monotonic() - started
        assert daemon.process.returncode == 0, daemon.log.read_text()
        assert took < STOP_SECONDS + 2, f"stopping took {took:.1f} s"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", daemon.port), timeout=2).close()
        assert re.search(r'msg=stopped', daemon.log.read_text())


# The first cycle starts within scheduler.FIRST_CYCLE_SPREAD (10 s) of the start; the stop test
# wants one in flight, and the /probe is in flight at once.
FIRST_CYCLE_WAIT = 1.0


def test_systemd_notify_ready_status_and_watchdog(tmp_path, stun_recorder):
    stun = stun_recorder.address
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(30)
        with running_daemon(tmp_path, "--stun", stun, "--interval", "5", "--timeout", "1",
                            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}):
            messages = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                    any(m.startswith(b"READY=1") for m in messages)
                    and sum(m == b"WATCHDOG=1" for m in messages) >= 2
                    and any(m.startswith(b"STATUS=udp=") for m in messages)):
                messages.append(listener.recv(4096))
        stopping = listener.recv(4096)
    assert any(m.startswith(b"READY=1\nSTATUS=") for m in messages), messages
    status = next(m for m in messages if m.startswith(b"STATUS=udp="))
    assert b"\n" not in status and b"s2s=" in status  # the summary line and the verdicts, one line
    assert stopping.startswith(b"STOPPING=1")


def test_a_broken_start_is_a_usage_error_not_a_traceback(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[daemon]\nlisten = 'everywhere'\n")
    completed = subprocess.run([XCHECK, "daemon", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "daemon.listen" in completed.stderr and "Traceback" not in completed.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run([XCHECK, "daemon", "--stun", "127.0.0.1:9", "--listen", f"127.0.0.1:{port}"],
                                   capture_output=True, text=True, timeout=60)
    assert completed.returncode == 3 and f"cannot listen on 127.0.0.1:{port}" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_without_root_checks_needing_a_capability_say_so(tmp_path, stun_recorder):
    stun = stun_recorder.address
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user (setpriv)")
    tmp_path.chmod(0o777)
    with running_daemon(
            tmp_path, "--stun", stun, "--gateway", "127.0.0.1", "--interval", "5", "--timeout", "1",
            prefix=("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all")) as daemon:
        daemon.wait_for(lambda: sample(daemon.metrics(), "xcheck_check_result", check="esp", target="127.0.0.1",
                                       reason="not_permitted") == 1, "esp to say not_permitted")
        metrics = daemon.metrics()
        assert sample(metrics, "xcheck_check_success", check="esp", target="127.0.0.1") is None  # skipped: not measured


def _self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xcheck test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    cert, private = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, private


def test_web_config_tls_and_basic_auth_and_no_secret_in_the_log(tmp_path, stun_recorder):
    stun = stun_recorder.address
    import base64
    import ssl

    import bcrypt

    password = "correct horse battery staple"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    cert, key = _self_signed(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert.name}\n  key_file: {key.name}\n"
                   f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    port = free_port()
    log = tmp_path / "daemon.log"
    with log.open("wb") as handle:
        process = subprocess.Popen([XCHECK, "daemon", "--listen", f"0.0.0.0:{port}", "--web-config", str(web),
                                    "--stun", stun, "--interval", "5", "--timeout", "1", "-v"],
                                   stdout=handle, stderr=subprocess.STDOUT)
        daemon = Daemon(process, port, log)
        context = ssl.create_default_context(cafile=str(cert))

        def get(credentials: str | None) -> int:
            headers = {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()} if credentials else {}
            request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30, context=context) as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        try:
            daemon.wait_for(lambda: get(f"prometheus:{password}") == 200, "TLS with basic auth")
            assert get(None) == 401 and get("prometheus:wrong") == 401 and get(f"nobody:{password}") == 401
            with pytest.raises(OSError):  # plain HTTP on a TLS port gets no answer it could read
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
            time.sleep(FIRST_CYCLE_WAIT)
        finally:
            daemon.stop()
    text = log.read_text()
    # TLS and auth in place, so no warning about listening beyond loopback; no secret anywhere.
    assert "without" not in text and password not in text and hashed not in text and hashed[7:29] not in text


def test_listening_beyond_loopback_in_clear_warns(tmp_path, stun_recorder):
    stun = stun_recorder.address
    port = free_port()
    log = tmp_path / "daemon.log"
    with log.open("wb") as handle:
        process = subprocess.Popen([XCHECK, "daemon", "--listen", f"0.0.0.0:{port}", "--stun", stun,
                                    "--log-format", "json"], stdout=handle, stderr=subprocess.STDOUT)
        daemon = Daemon(process, port, log)
        try:
            daemon.wait_for(lambda: daemon.get("/healthz", timeout=2)[0] == 200, "/healthz")
        finally:
            daemon.stop()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    warnings = [event for event in events if event["level"] == "warning"]
    assert len(warnings) == 1 and "without TLS or authentication" in warnings[0]["msg"], events
    assert [event["msg"] for event in events][:1] == ["listening"] and events[-1]["msg"] == "stopped"
