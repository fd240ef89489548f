"""The Dockerfile and systemd/xcheck.service, run as users run them. tests/container/build.sh builds
the image with buildah on a debootstrapped Debian base (no image registry is reachable), runs the
daemon in it with podman, then runs the unit under a real systemd (a container standing in for a
host); nothing but each container's own loopback is probed. The script checks each step and prints
one line for it; these tests run it once and read those lines."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import needs_lab

BUILD = Path(__file__).parent / "container" / "build.sh"
TOOLS = ("buildah", "podman", "runc", "debootstrap")
# A first run debootstraps and installs packages (about 2 minutes here); later ones use the cache.
# Only a bound that proves "does not hang".
BUILD_TIMEOUT_SECONDS = 1800

pytestmark = [pytest.mark.lab, needs_lab]


@pytest.fixture(scope="module")
def build() -> tuple[list[str], str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {' '.join(missing)} (Debian: apt-get install -y {' '.join(TOOLS)})")
    completed = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert completed.stdout.splitlines()[-1].endswith("passed"), output
    return completed.stdout.splitlines(), output


def _missing(steps: list[str], expected: tuple[str, ...]) -> list[str]:
    """The expected step lines (parts of them) that the script did not print."""
    return [text for text in expected if not any(text in step for step in steps)]


def test_image_runs_the_daemon_unprivileged_with_net_raw_its_only_capability(build):
    steps, output = build
    assert not _missing(steps, (
        "healthz: 200 (the image's HEALTHCHECK)",
        'metrics: xcheck_build_info{version="',
        "effective capabilities: 0000000000002000 (NET_RAW)",
        "with NET_RAW: no check is not_permitted",
        "without any capability: the daemon runs, esp: not_permitted",
    )), output


def test_unit_runs_the_daemon_under_systemd(build):
    steps, output = build
    assert not _missing(steps, (
        "systemd: xcheck.service active, STATUS=udp=",
        "effective capabilities: 0000000000002000 (NET_RAW), no check not_permitted",
        "reload with a broken config: still active, xcheck_config_last_reload_successful 0",
        "stop: Result=success, exit status 0",
    )), output
