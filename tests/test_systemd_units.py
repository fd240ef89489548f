"""The unit files in systemd/: valid for systemd, tightly confined, and sufficient: the responder and
the daemon, run as an unprivileged user with exactly their unit's capabilities, do all their work
(the responder answers every probe of xcheck; no check of the daemon lacks a privilege, and it
speaks the notify protocol the unit expects). And the sample config the daemon's unit reads."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import XCHECK, needs_lab
from lab import Lab
from test_daemon import running_daemon, sample
from test_lab_gateway import GATEWAY, probe, reachable, start_responder

from agent.config import FIELDS, build_settings, load_file

UNITS = Path(__file__).parent.parent / "systemd"
RESPONDER_UNIT = UNITS / "xcheck-responder.service"
DAEMON_UNIT = UNITS / "xcheck.service"
SAMPLE_CONFIG = UNITS / "xcheck.toml"
INSTALLED_CONFIG = "/etc/xcheck/xcheck.toml"  # where the unit reads the sample (ConfigurationDirectory=xcheck)
# Config sections the daemon does not read: `xcheck audit`'s (the site's own configuration files).
NOT_READ_BY_THE_DAEMON = ("audit.fail_on",)  # `xcheck audit`'s exit code only
# systemd-analyze's scale: 0 is fully confined, 10 is a service with no sandboxing at all. Below 2
# is what systemd calls "OK"; our units stay there.
MAX_EXPOSURE = 2.0


def _settings(unit: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith(f"{key}=")]


def _seconds(value: str) -> float:
    """A systemd time span as the units here write it: `30s`, `2min`."""
    number, unit = re.fullmatch(r"(\d+)(s|min)", value).groups()
    return float(number) * (60 if unit == "min" else 1)


def _as_unit_user(unit: Path) -> tuple[str, ...]:
    """What systemd does for DynamicUser= and AmbientCapabilities=: another uid, these capabilities only."""
    (ambient,) = _settings(unit, "AmbientCapabilities")
    caps = ",".join("+" + cap.removeprefix("CAP_").lower() for cap in ambient.split())
    return ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs",
            f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{caps}")


def _installed_copy(unit: Path, directory: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's xcheck, as an install would have it."""
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={XCHECK}", unit.read_text(), flags=re.M)
    copy = directory / unit.name
    copy.write_text(text)
    return copy


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not installed (Debian: apt-get install systemd)")
    return path


@pytest.mark.parametrize("unit", sorted(UNITS.glob("*.service")), ids=lambda p: p.name)
def test_unit_verifies_and_is_confined(unit, tmp_path, systemd_analyze):
    copy = _installed_copy(unit, tmp_path)
    verify = subprocess.run([systemd_analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and copy.name not in verify.stderr, verify.stderr
    security = subprocess.run([systemd_analyze, "security", "--offline=yes", str(copy)],
                              capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert level, security.stdout + security.stderr
    assert float(level.group(1)) <= MAX_EXPOSURE, security.stdout


def test_responder_unit_runs_the_xcheck_command():
    (exec_start,) = _settings(RESPONDER_UNIT, "ExecStart")
    assert exec_start.split()[0].endswith("/xcheck") and exec_start.split()[1] == "responder"
    assert _settings(RESPONDER_UNIT, "DynamicUser") == ["yes"]


@pytest.mark.lab
@needs_lab
def test_responder_answers_every_probe_with_only_the_units_capabilities():
    with Lab(nat="masquerade") as lab:
        start_responder(lab, prefix=_as_unit_user(RESPONDER_UNIT))
        listener = lab.run(lab.cloud, ["ss", "-tlnpH", "sport = :443"]).stdout
        pid = re.search(r"pid=(\d+)", listener)
        assert pid, listener
        uids = re.search(r"^Uid:\s+(.*)$", Path(f"/proc/{pid.group(1)}/status").read_text(), re.M).group(1).split()
        completed, report = probe(lab)
    assert completed.returncode == 0, completed.stderr
    assert set(uids) == {"65534"}, uids  # real, effective, saved and filesystem uid: not root
    state = reachable(report)
    assert all(state.values()), state  # ports 443, 500, 4500 bound and ESP echoed without root
    assert report["facts"]["nat"]["udp_blocked"] is False
    assert GATEWAY in report["targets"]["gateways"]


def test_daemon_unit_runs_the_daemon_on_the_sample_config():
    (exec_start,) = _settings(DAEMON_UNIT, "ExecStart")
    assert shlex.split(exec_start)[0].endswith("/xcheck")
    assert shlex.split(exec_start)[1:] == ["daemon", "--config", INSTALLED_CONFIG]
    assert _settings(DAEMON_UNIT, "ConfigurationDirectory") == [Path(INSTALLED_CONFIG).parent.name]
    assert _settings(DAEMON_UNIT, "Type") == ["notify"]
    assert _settings(DAEMON_UNIT, "ExecReload") == ["/bin/kill -HUP $MAINPID"]  # SIGHUP: the daemon's reload
    assert _settings(DAEMON_UNIT, "DynamicUser") == ["yes"]
    assert _settings(DAEMON_UNIT, "AmbientCapabilities") == _settings(DAEMON_UNIT, "CapabilityBoundingSet")


def test_sample_config_documents_every_key_of_the_daemon_and_each_is_valid(tmp_path):
    text = SAMPLE_CONFIG.read_text()
    active = load_file(SAMPLE_CONFIG)
    # As installed, it serves on loopback only: beyond, the operator chooses TLS or auth first.
    assert active["daemon.listen"][0] == "127.0.0.1"
    # Every commented `# key = value` line is meant to be uncommented as it stands: all at once must load.
    uncommented = tmp_path / "xcheck.toml"
    uncommented.write_text(re.sub(r"(?m)^# (?=[a-z_]+ = )", "", text))
    values = load_file(uncommented)
    build_settings(values)  # and the keys agree with each other (no `streams` beside a profile that sets them)
    sections = {"": ""} | {name: f"{name}." for name in re.findall(r"(?m)^\[([a-z_]+)\]$", text)}
    shown, section = set(), ""
    for line in uncommented.read_text().splitlines():
        header = re.fullmatch(r"\[([a-z_]+)\]", line)
        section = sections[header.group(1)] if header else section
        key = re.match(r"([a-z_]+) = ", line)
        if key:
            shown.add(section + key.group(1))
    daemons = {key for key in FIELDS if not key.startswith(NOT_READ_BY_THE_DAEMON)}
    assert shown == daemons, daemons ^ shown  # every key the daemon reads, and no other


@pytest.mark.lab
@needs_lab
def test_daemon_does_all_its_work_with_only_the_units_capabilities(tmp_path, stun_recorder):
    """As the unit runs it (another uid, its one capability, its config, NOTIFY_SOCKET and
    WATCHDOG_USEC from WatchdogSec=): ready, watchdog pings in time, and no check lacks a privilege:
    the ESP probe's raw socket and path_mtu's raw ICMP socket (ping sockets are closed to it) work."""
    (exec_start,) = _settings(DAEMON_UNIT, "ExecStart")
    args = [SAMPLE_CONFIG.as_posix() if arg == INSTALLED_CONFIG else arg for arg in shlex.split(exec_start)[2:]]
    (watchdog,) = _settings(DAEMON_UNIT, "WatchdogSec")
    watchdog_seconds = _seconds(watchdog)
    (stop_timeout,) = _settings(DAEMON_UNIT, "TimeoutStopSec")
    tmp_path.chmod(0o777)
    name = f"xcheck-unit-test-{os.getpid()}"  # abstract: no directory the daemon's user must reach
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(f"\0{name}")
        notify.settimeout(watchdog_seconds)
        env = {"NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": str(int(watchdog_seconds * 1e6))}
        with running_daemon(tmp_path, *args, "--stun", stun_recorder.address, "--gateway", "127.0.0.1",
                            "--interval", "5", "--timeout", "1", env=env, prefix=_as_unit_user(DAEMON_UNIT)) as daemon:
            ready_at = None
            while True:  # READY=1 first; then a watchdog ping before WatchdogSec= passes
                message = notify.recv(4096)
                ready_at = ready_at or (time.monotonic() if message.startswith(b"READY=1") else None)
                if message == b"WATCHDOG=1":
                    break
            assert ready_at is not None and time.monotonic() - ready_at < watchdog_seconds
            for check in ("esp", "path_mtu"):
                daemon.wait_for(lambda: sample(daemon.metrics(), "xcheck_check_last_run_timestamp_seconds", check=check,
                                               target="127.0.0.1"), f"a result of {check}")
            results = daemon.metrics()["xcheck_check_result"]
            assert [s.labels for s in results if s.labels["reason"] == "not_permitted"] == []
            assert {s.labels["check"] for s in results} >= {"esp", "path_mtu", "stun_binding"}
            stopping = time.monotonic()
        took = time.monotonic() - stopping
    # Stopped by itself on SIGTERM, before systemd would kill it (TimeoutStopSec=).
    assert daemon.process.returncode == 0 and took < _seconds(stop_timeout), (daemon.process.returncode, took)
