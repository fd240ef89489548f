"""`xcheck` as a user runs it: help, version, settings errors, exit codes, reports to files."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from conftest import XCHECK, needs_lab, run_xcheck, validate_report
from typer.testing import CliRunner

from agent import __version__
from agent.cli import app

# A loopback port that is bound and never read: the kernel takes the datagrams and answers nothing
# (a port with nothing bound would answer ICMP port unreachable, which is no silence).
_SILENT = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_SILENT.bind(("127.0.0.1", 0))
SILENT_STUN = f"127.0.0.1:{_SILENT.getsockname()[1]}"


def test_version():
    completed, _ = run_xcheck("version")
    assert completed.returncode == 0 and completed.stdout.strip() == __version__


def test_help_lists_the_commands_and_flags():
    top, _ = run_xcheck("--help")
    assert top.returncode == 0 and "run" in top.stdout and "version" in top.stdout
    run_help, _ = run_xcheck("run", "--help")
    for flag in ("--stun", "--bandwidth-mbps", "--clients", "--private-only", "--vpn-device", "--colocation",
                 "--nsp-wan", "--config", "--timeout", "--ruleset", "--expect", "--format", "--output", "--redact"):
        assert flag in run_help.stdout


@pytest.mark.parametrize("argv", [["version"], ["--help"], ["run", "--help"]])
def test_help_and_version_do_not_import_heavy_modules(argv):
    probe = ("import sys; from agent.cli import app\n"
             f"try:\n    app({argv!r})\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('scapy', 'prometheus_client', 'psutil', 'checks', 'agent.assessment') if m in sys.modules]\n"
             "print('HEAVY', heavy)")
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "HEAVY []" in completed.stdout


def test_config_errors_exit_2_with_field_paths(tmp_path):
    config = tmp_path / "site.toml"
    config.write_text('timeout_seconds = "soon"\n[requirements]\nclients = -3\nbogus = 1\n')
    completed, _ = run_xcheck("run", "--stun", SILENT_STUN, "--config", str(config))
    assert completed.returncode == 2
    for expected in ("timeout_seconds: expected a number", "requirements.clients: expected a whole number",
                     "requirements.bogus: unknown key"):
        assert expected in completed.stderr
    assert completed.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "0"], "--timeout: must be at least 1"),
        (["--expect", "carrier-pigeon"], "--expect: [0] expected one of p2s"),
        (["--stun", "host:70000"], "--stun: [1] 'host:70000': port must be"),
        (["--ruleset", "azure-1999"], "--ruleset: expected one of azure-2015, azure-current"),
        (["--format", "yaml"], "Invalid value for '--format'"),
        (["--clients", "many"], "Invalid value for '--clients'"),
    ],
)
def test_bad_flags_exit_2(args, message):
    completed, _ = run_xcheck("run", "--stun", SILENT_STUN, *args)
    assert completed.returncode == 2
    assert message in completed.stderr


def test_report_to_a_file(tmp_path):
    target = tmp_path / "report.json"
    completed, _ = run_xcheck("run", "--stun", SILENT_STUN, "--timeout", "1.5", "--format", "json",
                              "--output", str(target), "--bandwidth-mbps", "80", "--no-vpn-device")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "" and f"report written to {target}" in completed.stderr
    report = validate_report(json.loads(target.read_text()))
    assert report["facts"]["nat"]["udp_blocked"] is True
    assert report["requirements"]["bandwidth_bits_per_second"] == 80e6
    assert report["options"]["s2s"]["verdict"] == "infeasible"


def test_an_internal_error_exits_3_with_a_hint(monkeypatch):
    import agent.assessment

    async def broken(settings, progress):
        raise RuntimeError("the rule engine fell over")

    monkeypatch.setattr(agent.assessment, "assess", broken)
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--stun", SILENT_STUN])
    assert result.exit_code == 3
    assert "internal error: RuntimeError: the rule engine fell over" in result.output
    assert "--traceback" in result.output
    with_traceback = runner.invoke(app, ["run", "--stun", SILENT_STUN, "--traceback"])
    assert isinstance(with_traceback.exception, RuntimeError)


@needs_lab
def test_a_full_disk_leaves_no_half_written_report(tmp_path):
    """A real full filesystem (a 16 KiB tmpfs): exit 3, a clear message, the old report intact."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], check=True)
    try:
        target = mount / "report.json"
        target.write_text("previous report\n")
        (mount / "filler").write_bytes(b"\0" * 8192)
        completed, _ = run_xcheck("run", "--stun", SILENT_STUN, "--timeout", "1", "--format", "json",
                                  "--output", str(target))
        assert completed.returncode == 3
        assert "No space left on device" in completed.stderr and "Traceback" not in completed.stderr
        assert target.read_text() == "previous report\n"
        assert sorted(p.name for p in mount.iterdir()) == ["filler", "report.json"]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "::"], "--listen: expected an IPv4 address of this host, got '::'"),
    (["--listen", "vm.example.net"], "--listen: expected an IPv4 address"),
    (["--alternate", "198.51.100.5"], "--alternate needs --listen with this host's primary address"),
    (["--listen", "198.51.100.5", "--alternate", "198.51.100.5"], "--alternate must be another address"),
])
def test_responder_addresses_are_refused_before_listening(args, message):
    completed = subprocess.run([XCHECK, "responder", *args], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and message in completed.stderr
