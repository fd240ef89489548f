"""Writing a report to a file: all or nothing, and never over something that is not ours to replace.

`xcheck run -o PATH` runs as root on gateway hosts, so PATH may be a device, a FIFO or a symlink
(/dev/stdout): renaming a temporary file over those would destroy them and lose the report.
A regular file, or a path that does not exist yet, is replaced atomically (a temporary file beside
it, fsync, rename), after following symlinks to the file they name; a character device or a FIFO
is opened and written as it is; this process's own standard output or error is written through its
descriptor (so `-o /dev/stdout` works on a pipe, a socket or a file opened for appending);
anything else (a directory, a block device, some other socket) is refused.
In a sticky world-writable directory such as /tmp, no symlink that belongs to another user is
followed and no file of another user is replaced: the rules of the kernel's protected_symlinks and
protected_regular, which a rename (unlike open) would otherwise slip past.
`check_output` says before measuring whether the report could be written; `write_report` writes it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
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
    except PermissionError as exc:
        # Where the kernel enforces protected_symlinks, a link of another user in /tmp is refused
        # here: say why, as where it does not (_resolve names the link), else the kernel's reason.
        _resolve(path)
        raise _error(path, exc) from None
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


# As the kernel's limit on symlinks followed in one lookup (ELOOP).
MAX_SYMLINKS = 40


def _untrusted(directory: Path, owner: int) -> bool:
    """A sticky world-writable directory holding something of a user who is neither its owner nor us."""
    try:
        held_in = os.stat(directory)
    except OSError:
        return False
    sticky_and_shared = held_in.st_mode & stat.S_ISVTX and held_in.st_mode & stat.S_IWOTH
    return bool(sticky_and_shared) and owner not in (held_in.st_uid, os.geteuid())


def _resolve(path: Path) -> Path:
    """The file `path` names, symlinks followed one by one (rename must replace the file a link names,
    not the link), refusing a link that the kernel's protected_symlinks would not follow."""
    # Directories are resolved by realpath, which follows links before `..` as the kernel does;
    # collapsing `..` as text first would name another file than `> PATH` writes.
    current = _in_real_directory(Path(path))
    for _ in range(MAX_SYMLINKS):
        try:
            found = os.lstat(current)
        except FileNotFoundError:
            break
        except OSError as exc:
            raise _error(path, exc) from None
        if not stat.S_ISLNK(found.st_mode):
            break
        if _untrusted(current.parent, found.st_uid):
            raise ReportWriteError(f"cannot write report to {path}: {current} is a symlink of another user in a "
                                   "shared sticky directory; name the file itself")
        current = _in_real_directory(current.parent / os.readlink(current))  # an absolute target replaces the parent
    else:
        raise ReportWriteError(f"cannot write report to {path}: too many levels of symbolic links")
    final = current
    if re.fullmatch(r"/proc/(self|\d+)/fd", str(final.parent)):  # /dev/stdout and kin: nothing there
        raise ReportWriteError(f"cannot write report to {path}: file descriptor {final.name} is not open")
    return final


def _in_real_directory(path: Path) -> Path:
    """`path` with its directory resolved (symlinks and `..`, in the kernel's order), its last part kept."""
    return Path(os.path.realpath(path.parent)) / path.name


def _file_destination(path: Path, existing: os.stat_result | None) -> Destination:
    final = _resolve(path)
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
    if existing is not None and _untrusted(directory, existing.st_uid):
        raise ReportWriteError(f"cannot write report to {path}: the file belongs to another user in a shared "
                               "sticky directory; remove it or name another file")
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
    """Temporary file beside the target, fsync, rename: readers see the old report or the new one.

    Everything happens relative to the directory opened once, and what is replaced is looked at
    (never followed) just before: a name swapped for a symlink since `check_output` is refused,
    and the mode and owner copied are those of the file the rename really replaces."""
    final = destination.path
    temporary = f".{final.name}.{secrets.token_hex(6)}.tmp"
    try:
        directory = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _error(path, exc) from None
    renamed = created = False
    try:
        try:
            existing = os.lstat(final.name, dir_fd=directory)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            raise ReportWriteError(f"cannot write report to {path}: {final} changed while measuring and is no "
                                   "longer a regular file")
        # A new report is created as any program creates a file (0666 less the umask), like `> FILE`.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                             dir_fd=directory)
        created = True
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
        os.replace(temporary, final.name, src_dir_fd=directory, dst_dir_fd=directory)
        renamed = True
        try:
            os.fsync(directory)  # the rename itself durable; a file system that cannot still renamed
        except OSError:
            pass
    except OSError as exc:
        raise exc if isinstance(exc, ReportWriteError) else _error(path, exc) from None
    finally:
        if created and not renamed:
            try:
                os.unlink(temporary, dir_fd=directory)
            except OSError:
                pass
        os.close(directory)


def _write_all(path: Path, descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(descriptor, view):]
    except OSError as exc:
        raise _error(path, exc) from None


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
