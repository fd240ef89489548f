"""Shared test fixtures: running `xcheck` as a user would, and validating its reports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from lab import lab_unavailable_reason  # noqa: E402

from agent.report import schema  # noqa: E402

# The console script installed beside this interpreter: the command a user types.
XCHECK = str(Path(sys.executable).with_name("xcheck"))
LAB_UNAVAILABLE = lab_unavailable_reason()


def pytest_configure(config):
    # CI installs every peer the lab needs (see .ci/run): a skipped lab test there hides a missing step.
    if os.environ.get("CI") and LAB_UNAVAILABLE:
        raise pytest.UsageError(f"CI must run the lab tests, but: {LAB_UNAVAILABLE}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # In CI nothing is skipped: a skip there hides a missing install step in .ci/run.
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which must run everything: {report.longrepr}"


needs_lab = pytest.mark.skipif(LAB_UNAVAILABLE is not None, reason=LAB_UNAVAILABLE or "")


def validate_report(report: dict) -> dict:
    jsonschema.Draft202012Validator(schema()).validate(report)
    return report


def run_xcheck(*args: str, lab=None, timeout: float = 60) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Run `xcheck ARGS` (in the lab's onprem namespace when given); parse and validate JSON output."""
    # The built-in STUN servers are public: a test must always name its own.
    if args[:1] == ("run",) and "--help" not in args:
        assert "--stun" in args, "a test must not let xcheck contact the default public STUN servers"
    argv = [XCHECK, *args]
    if lab is not None:
        completed = lab.run(lab.onprem, argv, timeout=timeout)
    else:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    report = None
    if "json" in args and completed.stdout.strip():
        report = validate_report(json.loads(completed.stdout))
    return completed, report


class StunRecorder:
    """A silent 'STUN server' on loopback that keeps what it is sent: proof of whether xcheck measured."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.address = "127.0.0.1:%d" % self.socket.getsockname()[1]

    def received(self) -> bool:
        try:
            self.socket.recv(2048)
        except BlockingIOError:
            return False
        return True


@pytest.fixture
def stun_recorder():
    recorder = StunRecorder()
    with recorder.socket:
        yield recorder


def free_port() -> int:
    """A TCP port on loopback nothing listens on (a connection to it is refused until someone binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
