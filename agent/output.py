"""Writing a report to a file: all or nothing, and never over something that is not ours to replace.

`xcheck run -o PATH` runs as root on gateway hosts, so PATH may be a device, a FIFO or a symlink
(/dev/stdout): renaming a temporary file over those would destroy them and lose the report.
A regular file, or a path that does not exist yet, is replaced atomically (a temporary file beside
it, fsync, rename), after following symlinks to the file they name; a character device or a FIFO
is opened and written as it is; this process's own standard output or error is written through its
descriptor (so `-o /dev/stdout` works on a pipe, a socket or a file opened for appending);
anything else (a directory, a block device, some other socket) is refused.
`check_output` says before measuring whether the report could be written; `write_report` writes it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
import sys
from dataclasses import dataclass
from pathlib import Path


class ReportWriteError(OSError):
    """The report cannot be (or could not be) written; nothing partial was left behind."""


@dataclass(frozen=True)
class Destination:
    """Where a report goes, as decided just now."""

    path: Path  # the file to replace (symlinks followed), or the device/FIFO as named
    replace: bool  # True: temporary file and rename; False: write into what is there
    descriptor: int | None = None  # our own standard output or error, when `path` is that
    found: os.stat_result | None = None  # what is at `path` now (None: nothing yet)


def check_output(path: Path) -> Destination:
    """Where the report for `path` would go; ReportWriteError saying why it cannot be written."""
    try:
        target = os.stat(path)  # follows symlinks, as the kernel would (with its symlink protections)
    except FileNotFoundError:
        target = None
    except OSError as exc:
        raise _error(path, exc) from None
    if target is not None:
        for descriptor in (1, 2):  # the process's, whatever sys.stdout is
            if _same_file(target, descriptor):
                return Destination(path, replace=False, descriptor=descriptor)
    if target is None or stat.S_ISREG(target.st_mode):
        return _file_destination(path, target)
    if stat.S_ISCHR(target.st_mode) or stat.S_ISFIFO(target.st_mode):
        if not os.access(path, os.W_OK):
            raise ReportWriteError(f"cannot write report to {path}: no permission to write to it")
        return Destination(path, replace=False, found=target)
    if stat.S_ISDIR(target.st_mode):
        raise ReportWriteError(f"cannot write report to {path}: it is a directory; name a file in it")
    what = "a block device" if stat.S_ISBLK(target.st_mode) else "a socket" if stat.S_ISSOCK(target.st_mode) \
        else "not a file"
    raise ReportWriteError(f"cannot write report to {path}: it is {what}; name a file, a character device "
                           "or a FIFO")


def write_report(path: Path, text: str) -> None:
    """Write `text` where `path` leads (see the module's docstring); ReportWriteError if it fails.

    The destination is judged again here: the run may have taken minutes since `check_output`.
    """
    destination = check_output(path)
    data = text.encode("utf-8")
    if destination.descriptor is not None:
        sys.stdout.flush()
        _write_all(path, destination.descriptor, data)
    elif destination.replace:
        _replace(path, destination, data)
    else:
        _write_in_place(path, destination, data)


def _file_destination(path: Path, existing: os.stat_result | None) -> Destination:
    final = Path(os.path.realpath(path))  # rename must replace the file a symlink names, not the link
    directory = final.parent
    try:
        directory_stat = os.stat(directory)
    except FileNotFoundError:
        raise ReportWriteError(f"cannot write report to {path}: directory {directory} does not exist") from None
    except OSError as exc:
        raise _error(path, exc) from None
    if not stat.S_ISDIR(directory_stat.st_mode):
        raise ReportWriteError(f"cannot write report to {path}: {directory} is not a directory")
    # The temporary file is created in the directory, and renamed there.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ReportWriteError(f"cannot write report to {path}: cannot create files in {directory}"
                               f"{_read_only(directory)}")
    if existing is not None and not os.access(final, os.W_OK):
        raise ReportWriteError(f"cannot write report to {path}: the file is not writable{_read_only(final)}")
    return Destination(final, replace=True, found=existing)


def _write_in_place(path: Path, destination: Destination, data: bytes) -> None:
    """A device or a FIFO: opened as it is (no O_CREAT, no O_TRUNC: it is not ours to create or
    truncate), never becoming our controlling terminal."""
    try:
        # Non-blocking only to open: a FIFO nobody reads is an error now, not a hang.
        descriptor = os.open(destination.path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO and stat.S_ISFIFO(destination.found.st_mode):
            raise ReportWriteError(f"cannot write report to {path}: no process has the FIFO open for reading") \
                from None
        raise _error(path, exc) from None
    try:
        fcntl.fcntl(descriptor, fcntl.F_SETFL, fcntl.fcntl(descriptor, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        _write_all(path, descriptor, data)
    finally:
        os.close(descriptor)


def _replace(path: Path, destination: Destination, data: bytes) -> None:
    """Temporary file beside the target, fsync, rename: readers see the old report or the new one."""
    final, existing = destination.path, destination.found
    temporary = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
    try:
        # A new report is created as any program creates a file (0666 less the umask), like `> FILE`.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise _error(path, exc) from None
    renamed = False
    try:
        try:
            if existing is not None:
                # Replacing keeps the file as its owner set it up: a report the engineer owns stays
                # theirs (and readable by who could read it) after a `sudo xcheck run -o` over it.
                os.fchmod(descriptor, stat.S_IMODE(existing.st_mode) & 0o777)
                try:
                    os.fchown(descriptor, existing.st_uid, existing.st_gid)
                except PermissionError:  # only root may give a file away; ours it is then
                    pass
            _write_all(path, descriptor, data)
            os.fsync(descriptor)  # a full disk may say so only here: before the rename, not after
        finally:
            os.close(descriptor)
        os.replace(temporary, final)
        renamed = True
    except OSError as exc:
        raise exc if isinstance(exc, ReportWriteError) else _error(path, exc) from None
    finally:
        if not renamed:
            temporary.unlink(missing_ok=True)
    _sync_directory(final.parent)


def _write_all(path: Path, descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(descriptor, view):]
    except OSError as exc:
        raise _error(path, exc) from None


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; a file system that cannot sync a directory still renamed."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _same_file(target: os.stat_result, descriptor: int) -> bool:
    try:
        ours = os.fstat(descriptor)
    except OSError:  # closed
        return False
    return (ours.st_dev, ours.st_ino) == (target.st_dev, target.st_ino)


def _read_only(path: Path) -> str:
    try:
        return " (read-only file system)" if os.statvfs(path).f_flag & os.ST_RDONLY else ""
    except OSError:
        return ""


def _error(path: Path, exc: OSError) -> ReportWriteError:
    return ReportWriteError(f"cannot write report to {path}: {exc.strerror or exc}")
