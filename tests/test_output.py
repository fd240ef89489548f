"""`xcheck run --output`: a file is replaced atomically, a device, FIFO or symlink is never replaced,
and an output that cannot be written stops the run before anything is measured (exit 2).

Runs as root, as an engineer on a gateway host does: replacing /dev/null or /dev/stdout there
would break the host, which is why these tests check that both are still what they were.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import XCHECK, run_xcheck, validate_report

from agent.output import ReportWriteError, check_output, write_report

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod, chown and mount need root (CI runs as root)")


def xcheck_to(target, recorder, *extra: str) -> subprocess.CompletedProcess:
    completed, _ = run_xcheck("run", "--stun", recorder.address, "--timeout", "1", "--format", "json",
                              "--output", str(target), *extra)
    return completed


def report_in(text: str) -> dict:
    return validate_report(json.loads(text))


# ---- what is there stays what it was ----

def test_dev_null_stays_the_null_device(stun_recorder):
    before = os.lstat("/dev/null")
    completed = xcheck_to("/dev/null", stun_recorder)
    assert completed.returncode == 0, completed.stderr
    assert "report written to /dev/null" in completed.stderr
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_rdev, after.st_ino) == (before.st_rdev, before.st_ino)
    assert stun_recorder.received()  # it measured: the refusals below that see nothing prove something


def test_dev_stdout_is_standard_output_and_stays_a_symlink(stun_recorder):
    link = os.readlink("/dev/stdout")
    completed = xcheck_to("/dev/stdout", stun_recorder)
    assert completed.returncode == 0, completed.stderr
    assert report_in(completed.stdout)["tool"]["name"] == "xcheck"
    assert "report written to /dev/stdout" in completed.stderr
    assert os.path.islink("/dev/stdout") and os.readlink("/dev/stdout") == link


def test_dev_stdout_reaches_a_socket_as_standard_output(stun_recorder):
    """Under systemd standard output is a socket, which open() cannot reopen: it is written as fd 1."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        process = subprocess.Popen([XCHECK, "run", "--stun", stun_recorder.address, "--timeout", "1",
                                    "--format", "json", "-o", "/dev/stdout"], stdout=theirs, stderr=subprocess.PIPE)
        theirs.close()
        ours.settimeout(60)
        chunks = []
        while chunk := ours.recv(65536):
            chunks.append(chunk)
        assert process.wait(timeout=60) == 0, process.stderr.read()
        process.stderr.close()
    assert report_in(b"".join(chunks).decode())["schema_version"] == 2


def test_dev_stdout_appended_to_a_file_appends(tmp_path, stun_recorder):
    """`-o /dev/stdout >> log` adds to the log, as the shell was told: the file is not replaced."""
    log = tmp_path / "runs.log"
    log.write_text("previous run\n")
    with log.open("a") as appending:
        completed = subprocess.run([XCHECK, "run", "--stun", stun_recorder.address, "--timeout", "1",
                                    "--format", "json", "-o", "/dev/stdout"], stdout=appending,
                                   stderr=subprocess.PIPE, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    previous, report = log.read_text().split("\n", 1)
    assert previous == "previous run" and report_in(report)["schema_version"] == 2


def test_a_symlink_is_followed_to_its_file_which_keeps_its_mode_and_owner(tmp_path, stun_recorder):
    real = tmp_path / "real.json"
    real.write_text("previous report\n")
    real.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(real, 65534, 65534)
    link = tmp_path / "report.json"
    link.symlink_to(real.name)
    completed = xcheck_to(link, stun_recorder)
    assert completed.returncode == 0, completed.stderr
    assert link.is_symlink() and os.readlink(link) == real.name
    assert report_in(real.read_text())["schema_version"] == 2
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    if os.geteuid() == 0:
        assert (real.stat().st_uid, real.stat().st_gid) == (65534, 65534)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.json", "report.json"]  # no temporary left


def test_a_dangling_symlink_creates_the_file_it_names(tmp_path, stun_recorder):
    (tmp_path / "reports").mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to("reports/today.json")
    umask = os.umask(0o027)
    try:
        completed = xcheck_to(link, stun_recorder)
    finally:
        os.umask(umask)
    assert completed.returncode == 0, completed.stderr
    created = tmp_path / "reports" / "today.json"
    assert link.is_symlink() and report_in(created.read_text())["schema_version"] == 2
    assert stat.S_IMODE(created.stat().st_mode) == 0o640  # as any new file: 0666 less the umask


@needs_root
def test_a_character_device_is_written_not_replaced(tmp_path, stun_recorder):
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a second /dev/null, in a throwaway place
    completed = xcheck_to(device, stun_recorder)
    assert completed.returncode == 0, completed.stderr
    assert stat.S_ISCHR(device.lstat().st_mode) and device.lstat().st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_fifo_with_a_reader_gets_the_report(tmp_path, stun_recorder):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as reader:  # opens once xcheck opens the other end
            received.append(reader.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        completed = xcheck_to(fifo, stun_recorder)
        reader.join(timeout=60)
    finally:
        if reader.is_alive():  # xcheck never opened it: let the reader go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(timeout=5)
    assert completed.returncode == 0, completed.stderr
    assert report_in(received[0].decode())["schema_version"] == 2
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_fifo_nobody_reads_is_an_error_not_a_hang(tmp_path, stun_recorder):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    completed = xcheck_to(fifo, stun_recorder)
    assert completed.returncode == 3
    assert "no process has the FIFO open for reading" in completed.stderr
    assert "report written" not in completed.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


# ---- refused before anything is measured ----

def _unix_socket(path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.close()  # the socket file stays


@pytest.mark.parametrize(
    ("make", "name", "message"),
    [
        (lambda d: None, "absent/report.json", "absent does not exist"),
        (lambda d: (d / "reports").mkdir(), "reports", "it is a directory"),
        (lambda d: (d / "file").write_text("x"), "file/report.json", "Not a directory"),
        (lambda d: _unix_socket(d / "sock"), "sock", "it is a socket"),
        (lambda d: [(d / "a").symlink_to("b"), (d / "b").symlink_to("a")], "a", "Too many levels of symbolic links"),
        (lambda d: (d / "to-dir").symlink_to(d), "to-dir", "it is a directory"),
    ],
    ids=["missing-directory", "directory", "parent-is-a-file", "socket", "symlink-loop", "symlink-to-directory"],
)
def test_an_unwritable_output_exits_2_before_measuring(tmp_path, stun_recorder, make, name, message):
    make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    completed = xcheck_to(tmp_path / name, stun_recorder)
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr and "Traceback" not in completed.stderr
    assert "report written" not in completed.stderr and completed.stdout == ""
    assert not stun_recorder.received(), "xcheck measured before finding it could not write the report"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@needs_root
def test_a_block_device_is_refused(tmp_path, stun_recorder):
    device = tmp_path / "disk"
    os.mknod(device, 0o600 | stat.S_IFBLK, os.makedev(7, 250))  # an unattached loop device's number
    completed = xcheck_to(device, stun_recorder)
    assert completed.returncode == 2 and "it is a block device" in completed.stderr
    assert stat.S_ISBLK(device.lstat().st_mode) and not stun_recorder.received()


@needs_root
def test_a_read_only_file_system_is_refused_before_measuring(tmp_path, stun_recorder):
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], check=True)
    try:
        (mount / "report.json").write_text("previous report\n")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        for target in (mount / "report.json", mount / "new.json"):
            completed = xcheck_to(target, stun_recorder)
            assert completed.returncode == 2, completed.stderr
            assert f"cannot create files in {mount} (read-only file system)" in completed.stderr
            assert not stun_recorder.received()
        assert (mount / "report.json").read_text() == "previous report\n"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# ---- the writer itself ----

def test_the_destination_is_judged_again_at_write_time(tmp_path):
    """Minutes pass between the check and the write: a directory that appeared meanwhile is refused."""
    target = tmp_path / "report.json"
    assert check_output(target).replace
    target.mkdir()
    with pytest.raises(ReportWriteError, match="it is a directory"):
        write_report(target, "report\n")


def test_replacing_a_file_never_follows_a_planted_temporary_name(tmp_path, monkeypatch):
    """The temporary file is created exclusively: a symlink waiting under its name is not written through."""
    import agent.output

    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    monkeypatch.setattr(agent.output.secrets, "token_hex", lambda n: "fixed")
    (tmp_path / ".report.json.fixed.tmp").symlink_to(victim)
    with pytest.raises(ReportWriteError, match="File exists"):
        write_report(tmp_path / "report.json", "report\n")
    assert victim.read_text() == "keep\n"


def test_dev_stdout_when_standard_output_is_closed_exits_2_before_measuring(stun_recorder):
    completed = subprocess.run(f"exec >&-; {XCHECK} run --stun {stun_recorder.address} --timeout 1 -o /dev/stdout",
                               shell=True, capture_output=False, stderr=subprocess.PIPE, text=True, timeout=60)
    assert completed.returncode == 2, completed.stderr
    assert "file descriptor 1 is not open" in completed.stderr
    assert not stun_recorder.received()


@needs_root
def test_a_symlink_planted_by_another_user_in_tmp_is_not_followed(tmp_path, stun_recorder):
    """protected_symlinks, also where the kernel is set not to enforce it (a rename slips past it)."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)  # sticky and world-writable, like /tmp
    victim = tmp_path / "profile.sh"
    victim.write_text("root's file\n")
    link = shared / "report.json"
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)  # planted by nobody
    completed = xcheck_to(link, stun_recorder)
    assert completed.returncode == 2 and "symlink of another user" in completed.stderr
    assert victim.read_text() == "root's file\n" and victim.stat().st_uid == 0
    assert not stun_recorder.received()


@needs_root
def test_a_file_of_another_user_in_tmp_is_not_taken_over(tmp_path, stun_recorder):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    planted = shared / "report.json"
    planted.write_text("bait\n")
    os.chown(planted, 65534, 65534)
    completed = xcheck_to(planted, stun_recorder)
    assert completed.returncode == 2 and "belongs to another user" in completed.stderr
    assert planted.read_text() == "bait\n"


def test_a_name_swapped_for_a_symlink_while_measuring_is_refused(tmp_path, monkeypatch):
    """The look before the rename is at the name itself, in the directory opened once: a regular file
    replaced by a symlink after check_output is refused, and the link's target is untouched."""
    import agent.output as output

    target, victim = tmp_path / "report.json", tmp_path / "victim"
    target.write_text("old\n")
    victim.write_text("victim\n")
    destination = check_output(target)

    def swapped(path):
        target.unlink()
        target.symlink_to(victim)
        return destination

    monkeypatch.setattr(output, "check_output", swapped)
    with pytest.raises(ReportWriteError, match="changed while measuring"):
        write_report(target, "new\n")
    assert victim.read_text() == "victim\n" and target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "victim"]


def test_dot_dot_after_a_symlinked_directory_is_where_the_kernel_says(tmp_path):
    """`link/../r.json` is r.json beside the directory `link` names, as `> link/../r.json` writes it."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "sub")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "r.json").symlink_to("../link/../target.json")  # a relative link through it
    write_report(tmp_path / "link" / ".." / "out.json", "one\n")
    write_report(tmp_path / "other" / "r.json", "two\n")
    assert (tmp_path / "real" / "out.json").read_text() == "one\n"
    assert (tmp_path / "real" / "target.json").read_text() == "two\n"
    assert not (tmp_path / "out.json").exists() and (tmp_path / "other" / "r.json").is_symlink()
