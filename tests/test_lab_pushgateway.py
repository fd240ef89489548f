"""`xcheck run --push-gateway` against a real Prometheus pushgateway (prometheus-pushgateway).

In the lab, the pushgateway listens in the cloud namespace and `xcheck run` pushes from behind the
NAT: the group {job, instance} holds what the run measured, and the next run's push replaces it
whole. On loopback (no root): basic auth from the URL against the pushgateway's own web config,
and the failures (refused, HTTP error, nothing listening): one line, exit 4, the report written.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import needs_lab, run_xcheck, validate_report
from lab import Lab
from prometheus_client.parser import text_string_to_metric_families

from agent.verdicts import VERDICTS

PUSHGATEWAY = shutil.which("prometheus-pushgateway")
needs_pushgateway = pytest.mark.skipif(PUSHGATEWAY is None, reason="prometheus-pushgateway is not installed")
# Generous: only proves that start-up does not hang, however loaded the machine.
READY_WITHIN_SECONDS = 30.0
LAB_PORT = 9091  # the pushgateway's own port: free in the lab's fresh cloud namespace
INSTANCE = socket.gethostname()

# Fetches a URL and prints the body: runs inside a lab namespace, where the lab's addresses are.
_FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(fetch) -> None:
    deadline = time.monotonic() + READY_WITHIN_SECONDS
    while True:
        try:
            fetch("/-/ready")
            return
        except (OSError, subprocess.CalledProcessError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def pushed(metrics_text: str, job: str) -> dict[str, dict[tuple, float]]:
    """The pushgateway's /metrics, of one job's group: name -> {sorted labels but job/instance: value}.
    Every series of the group must carry this host's name as its instance."""
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if labels.pop("job", None) != job:
                continue
            assert labels.pop("instance") == INSTANCE, sample
            found.setdefault(sample.name, {})[tuple(sorted(labels.items()))] = sample.value
    return found


def verdicts_of(group: dict) -> dict[str, str]:
    return {dict(labels)["option"]: dict(labels)["verdict"]
            for labels, value in group["xcheck_option_verdict"].items() if value == 1}


# ---- in the lab: a real run behind NAT, pushed twice ----

@pytest.mark.lab
@needs_lab
@needs_pushgateway
def test_a_run_behind_nat_lands_in_a_real_pushgateway_and_the_next_run_replaces_it(tmp_path):
    with Lab(nat="masquerade") as lab:
        address = f"{lab.stun_primary}:{LAB_PORT}"
        lab.spawn(lab.cloud, [PUSHGATEWAY, f"--web.listen-address={address}", "--persistence.file="],
                  cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def fetch(path: str) -> str:
            return lab.run(lab.cloud, [sys.executable, "-c", _FETCH, f"http://{address}{path}"], check=True).stdout

        _wait_ready(fetch)
        push = ("--push-gateway", f"http://{address}", "--push-job", "site-7")
        first, report = run_xcheck("run", "--format", "json", "--timeout", "2", "--stun", lab.stun_primary, *push,
                                   lab=lab)
        group = pushed(fetch("/metrics"), "site-7")
        # Nothing answers STUN there (the port of no server): NAT unknown, so absent.
        second, later = run_xcheck("run", "--format", "json", "--timeout", "2", "--stun",
                                   f"{lab.stun_primary}:3999", *push, lab=lab)
        replaced = pushed(fetch("/metrics"), "site-7")

    assert first.returncode == 0, first.stderr
    assert f"metrics pushed to http://{address} (job site-7)" in first.stderr
    nat = report["facts"]["nat"]
    assert nat["detected"] is True and group["xcheck_nat_detected"] == {(): 1.0}
    assert group["xcheck_nat_info"] == {(("filtering", nat["filtering"]), ("mapping", nat["mapping"])): 1.0}
    assert verdicts_of(group) == {option: entry["verdict"] for option, entry in report["options"].items()}
    assert len(group["xcheck_option_verdict"]) == len(report["options"]) * len(VERDICTS)
    server = f"{lab.stun_primary}:3478"
    assert group["xcheck_check_result"][(("check", "stun_binding"), ("reason", "success"), ("target", server))] == 1.0

    assert second.returncode == 0, second.stderr
    assert later["facts"]["nat"]["detected"] is None
    assert "xcheck_nat_detected" not in replaced and "xcheck_nat_info" not in replaced
    assert not [labels for labels in replaced["xcheck_check_result"] if ("target", server) in labels]
    assert verdicts_of(replaced) == {option: entry["verdict"] for option, entry in later["options"].items()}


# ---- on loopback: credentials and failures ----

@contextmanager
def loopback_pushgateway(directory: Path, web_config: str | None = None):
    """A real pushgateway on a free loopback port, in `directory`; stopped on the way out."""
    port = _free_loopback_port()
    argv = [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]
    if web_config is not None:
        (directory / "web.yml").write_text(web_config)
        argv.append(f"--web.config.file={directory / 'web.yml'}")
    process = subprocess.Popen(argv, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def fetch(path: str) -> str:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read().decode()
            except urllib.error.HTTPError as exc:  # behind basic auth it is up when it says 401
                if exc.code == 401:
                    return ""
                raise

        _wait_ready(fetch)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _silent_stun() -> socket.socket:
    """A loopback port that takes STUN requests and answers nothing: a run of about --timeout."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    return silent


def _run_pushing(tmp_path: Path, url: str, *extra: str):
    report_file = tmp_path / "report.json"
    with _silent_stun() as silent:
        completed, _ = run_xcheck("run", "--stun", "127.0.0.1:%d" % silent.getsockname()[1], "--timeout", "1",
                                  "--format", "json", "--output", str(report_file), "--push-gateway", url, *extra)
    return completed, report_file


@needs_pushgateway
def test_basic_auth_from_the_url_and_a_refusal_that_never_shows_the_password(tmp_path):
    import bcrypt

    hashed = bcrypt.hashpw(b"right-horse-battery", bcrypt.gensalt(rounds=4)).decode()
    with loopback_pushgateway(tmp_path, f"basic_auth_users:\n  ops: '{hashed}'\n") as port:
        accepted, report_file = _run_pushing(tmp_path, f"http://ops:right-horse-battery@127.0.0.1:{port}")
        scrape = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={
            "Authorization": "Basic " + base64.b64encode(b"ops:right-horse-battery").decode()})
        group = pushed(urllib.request.urlopen(scrape, timeout=10).read().decode(), "xcheck")
        refused, refused_report = _run_pushing(tmp_path, f"http://ops:wrong-staple-4711@127.0.0.1:{port}")
    assert accepted.returncode == 0, accepted.stderr
    assert f"metrics pushed to http://127.0.0.1:{port} (job xcheck)" in accepted.stderr
    assert group["xcheck_udp_blocked"] == {(): 1.0}  # the silent STUN server, as the report says
    assert validate_report(json.loads(report_file.read_text()))["facts"]["nat"]["udp_blocked"] is True
    assert refused.returncode == 4
    assert f"xcheck: cannot push metrics to http://127.0.0.1:{port}: HTTP 401 Unauthorized" in refused.stderr
    assert "right-horse-battery" not in accepted.stderr and "wrong-staple-4711" not in refused.stderr
    assert "Traceback" not in refused.stderr
    validate_report(json.loads(refused_report.read_text()))  # written before the push was tried


@needs_pushgateway
def test_an_http_error_is_exit_4_with_what_the_pushgateway_said(tmp_path):
    with loopback_pushgateway(tmp_path) as port:
        completed, report_file = _run_pushing(tmp_path, f"http://127.0.0.1:{port}/not-the-pushgateway")
    assert completed.returncode == 4
    assert f"cannot push metrics to http://127.0.0.1:{port}/not-the-pushgateway: HTTP 404 Not Found" \
        in completed.stderr
    assert "report written to" in completed.stderr and "Traceback" not in completed.stderr
    validate_report(json.loads(report_file.read_text()))


def test_a_pushgateway_that_is_down_is_exit_4_after_the_report(tmp_path):
    port = _free_loopback_port()  # nothing listens there: the kernel answers a reset
    completed, report_file = _run_pushing(tmp_path, f"http://ops:hunter2secret@127.0.0.1:{port}")
    assert completed.returncode == 4
    lines = completed.stderr.splitlines()
    failure = f"xcheck: cannot push metrics to http://127.0.0.1:{port}: Connection refused"
    assert lines.index(f"xcheck: report written to {report_file}") < lines.index(failure)
    assert "hunter2secret" not in completed.stderr and "Traceback" not in completed.stderr
    validate_report(json.loads(report_file.read_text()))


def test_a_pushgateway_that_never_answers_is_given_up_at_the_deadline(monkeypatch):
    """A listener that takes the connection (the kernel's backlog) and never answers: each read
    would wait its own timeout; the whole push gives up at its deadline (shortened here)."""
    import agent.metrics
    from test_metrics import recorded

    monkeypatch.setattr(agent.metrics, "PUSH_DEADLINE_SECONDS", 1.0)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        gateway = agent.metrics.PushGateway.parse("http://127.0.0.1:%d" % mute.getsockname()[1])
        with pytest.raises(agent.metrics.PushError, match="no complete answer within 1 s"):
            agent.metrics.push(gateway, "xcheck", recorded("nat-strongswan")[1])
