"""The unit files in systemd/: valid for systemd, tightly confined, and sufficient: the responder,
run as an unprivileged user with exactly the unit's capabilities, answers every probe of xcheck."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import XCHECK, needs_lab
from lab import Lab
from test_lab_gateway import GATEWAY, probe, reachable, start_responder

UNITS = Path(__file__).parent.parent / "systemd"
RESPONDER_UNIT = UNITS / "xcheck-responder.service"
# systemd-analyze's scale: 0 is fully confined, 10 is a service with no sandboxing at all. Below 2
# is what systemd calls "OK"; our units stay there.
MAX_EXPOSURE = 2.0


def _settings(unit: Path, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith(f"{key}=")]


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
    (ambient,) = _settings(RESPONDER_UNIT, "AmbientCapabilities")
    caps = ",".join("+" + cap.removeprefix("CAP_").lower() for cap in ambient.split())
    # What systemd does for DynamicUser= and AmbientCapabilities=: another uid, these capabilities only.
    setpriv = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs",
               f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{caps}")
    with Lab(nat="masquerade") as lab:
        start_responder(lab, prefix=setpriv)
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
