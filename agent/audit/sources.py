"""Reading the files an audit is given, bounded: every byte of them is data, maybe hostile.

One `Sources` serves one configuration and the files it includes: it refuses a file larger than
`MAX_FILE_BYTES` before reading it (a 100 MB file costs one fstat), stops once all files together
pass `MAX_TOTAL_BYTES` or `MAX_FILES`, never opens a FIFO or a device (no read can block), tells
binary junk from text, follows include patterns as strongSwan and Libreswan resolve them (shell
globs, relative to the including file's directory, matches in sorted order), and refuses an include
loop by naming it, and includes nested deeper than `MAX_INCLUDE_DEPTH`. Every refusal is a
`SourceError` whose message is the one-line detail a failed `ParseStatus` carries.

`StatusBook` gathers, per file read, what the readers did not understand (bounded, quoted without
control characters) and turns it into the `ParseStatus` list an audit reports.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from agent.audit.findings import ParseState, ParseStatus, Unrecognized
from agent.text import bounded, visible

MIB = 1024 * 1024
# The largest configurations seen in the wild (thousands of connections) are a few hundred KiB:
# a file above 4 MiB is not a configuration, and reading it would only cost memory.
MAX_FILE_BYTES = 4 * MIB
MAX_TOTAL_BYTES = 16 * MIB  # all the files of one configuration, includes counted
MAX_FILES = 512  # a glob over a huge directory stops here
# Libreswan's own bound (MAX_INCLUDE_DEPTH in lib/libipsecconf/parser.lex); strongSwan has none and
# recurses until it runs out of file descriptors.
MAX_INCLUDE_DEPTH = 10
# A text file has no NUL byte and few control characters; random bytes have a NUL in every 256 on
# average and about 11 % control characters.
MAX_CONTROL_SHARE = 0.05
MAX_QUOTE_CHARS = 160  # an unrecognized line, as quoted in a report
MAX_UNRECOGNIZED = 100  # per file: a file of junk lines is summed up, not listed line by line

_TEXT_CONTROLS = frozenset(b"\t\n\v\f\r")


class SourceError(Exception):
    """A file that cannot be used; str() is the detail of its failed ParseStatus. `missing`,
    `denied` and `not_file` tell apart the cases strongSwan's parsers skip in an include."""

    def __init__(self, detail: str, *, missing: bool = False, denied: bool = False, not_file: bool = False):
        super().__init__(detail)
        self.missing, self.denied, self.not_file = missing, denied, not_file


@dataclass(frozen=True)
class Source:
    """A file's text, split on "\\n" only (what the parsers count as lines): line N is lines[N - 1]."""

    path: str
    lines: tuple[str, ...]
    note: str = ""  # how it was read, when that matters ("not UTF-8: ...")


def quoted(text: str) -> str:
    """A line as a report may quote it: inert (agent/text.py `visible`) and bounded."""
    return bounded(visible(text.strip()), MAX_QUOTE_CHARS)


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n} bytes"


def _decode(data: bytes) -> tuple[str, str]:
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise SourceError(f"binary content, not a configuration file (a NUL byte at line {line})")
    controls = sum(1 for b in data if (b < 0x20 and b not in _TEXT_CONTROLS) or b == 0x7F)
    if data and controls / len(data) > MAX_CONTROL_SHARE:
        raise SourceError(f"binary content, not a configuration file ({controls} control bytes in {len(data)})")
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        # The parsers read bytes: a Latin-1 comment is fine for them, so it is for us, byte for byte.
        line = data.count(b"\n", 0, e.start) + 1
        return data.decode("latin-1"), f"not UTF-8 (line {line}): read byte for byte as Latin-1"


@dataclass
class Sources:
    """The files of one configuration, read within one budget."""

    max_file_bytes: int = MAX_FILE_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES
    max_files: int = MAX_FILES
    max_include_depth: int = MAX_INCLUDE_DEPTH
    bytes_read: int = 0
    files_read: int = 0
    # the include chain being read: (real path, path as named, line of the include in it)
    _chain: list[tuple[str, str, int]] = field(default_factory=list)

    def read(self, path: str) -> Source:
        """The whole text of `path`, or SourceError saying why not."""
        if self.files_read >= self.max_files:
            raise SourceError(f"more than {self.max_files} files in one configuration: not read")
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except PermissionError:
            raise SourceError("permission denied: cannot read it (run as a user who can, e.g. root)",
                              denied=True) from None
        except FileNotFoundError:
            raise SourceError("no such file", missing=True) from None
        except OSError as e:
            raise SourceError(f"cannot open: {e.strerror or e}") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise SourceError("a directory, not a file", not_file=True)
            if not stat.S_ISREG(st.st_mode):
                raise SourceError("not a regular file (a FIFO, socket or device): not read", not_file=True)
            self._check_size(st.st_size)
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as f:
            try:
                # one byte more than allowed: a file that grew since fstat is still caught
                data = f.read(self.max_file_bytes + 1)
            except OSError as e:
                raise SourceError(f"cannot read: {e.strerror or e}") from None
        self._check_size(len(data))
        self.bytes_read += len(data)
        self.files_read += 1
        text, note = _decode(data)
        return Source(path, tuple(text.split("\n")), note)

    def _check_size(self, size: int) -> None:
        if size > self.max_file_bytes:
            raise SourceError(f"{size} bytes, more than the {_size(self.max_file_bytes)} a configuration file "
                              "may have: not read")
        if self.bytes_read + size > self.max_total_bytes:
            raise SourceError(f"the files of this configuration pass {_size(self.max_total_bytes)} together: not read")

    def include(self, pattern: str, including: str) -> list[str]:
        """The files an include pattern names: a shell glob, relative to the directory of the
        including file unless absolute, matches sorted (glob(3)'s order, which both parsers use).
        A pattern without wildcards names its file even when it does not exist, so that the caller
        can say so; a glob matching nothing is no error (strongSwan's and Libreswan's reading)."""
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.path.dirname(including), pattern)
        if not glob.has_magic(pattern):
            return [pattern]
        matches = []
        for match in glob.iglob(pattern):
            if len(matches) >= self.max_files:
                raise SourceError(f"include {pattern} matches more than {self.max_files} files: not read")
            matches.append(match)
        return sorted(matches)

    @contextmanager
    def nested(self, path: str, line: int = 0) -> Iterator[None]:
        """Reading `path`, included at `line` of the file being read (the first file: none): refuses
        a file already in the chain of includes (a loop, named) and a chain deeper than the bound."""
        real = os.path.realpath(path)
        if self._chain:
            self._chain[-1] = (*self._chain[-1][:2], line)
        for i, (seen, _, _) in enumerate(self._chain):
            if seen == real:
                steps = [f"{name}:{at} includes" for _, name, at in self._chain[i:]]
                raise SourceError(f"include loop: {' '.join(steps)} {path} again")
        if len(self._chain) > self.max_include_depth:
            raise SourceError(f"includes nested deeper than {self.max_include_depth} levels: not read")
        self._chain.append((real, path, 0))
        try:
            yield
        finally:
            self._chain.pop()


@dataclass
class _FileEntry:
    kind: str
    detail: str = ""
    failed: bool = False
    unrecognized: list[Unrecognized] = field(default_factory=list)
    more: int = 0  # unrecognized lines beyond MAX_UNRECOGNIZED


class StatusBook:
    """What each file read gave: failed (why), or the lines not understood; in order of reading."""

    def __init__(self) -> None:
        self._files: dict[str, _FileEntry] = {}

    def opened(self, path: str, kind: str, note: str = "") -> None:
        entry = self._files.setdefault(path, _FileEntry(kind))
        if note and not entry.detail:
            entry.detail = note

    def note(self, path: str, detail: str) -> None:
        """A remark on a file that is not a failure (how its dialect was guessed, its encoding)."""
        entry = self._files[path]
        entry.detail = bounded(visible(f"{entry.detail}; {detail}" if entry.detail else detail))

    def failed(self, path: str, kind: str, detail: str) -> None:
        """`detail` may quote the file (a keyword, a path): it is kept inert and bounded."""
        entry = self._files.setdefault(path, _FileEntry(kind))
        if not entry.failed:  # the first cause is the one to fix
            entry.failed, entry.detail = True, bounded(visible(detail))

    def unrecognized(self, path: str, line: int | None, text: str) -> None:
        entry = self._files[path]
        if len(entry.unrecognized) < MAX_UNRECOGNIZED:
            entry.unrecognized.append(Unrecognized(line, quoted(text)))
        else:
            entry.more += 1

    def is_failed(self, path: str) -> bool:
        return path in self._files and self._files[path].failed

    def statuses(self) -> list[ParseStatus]:
        out = []
        for path, entry in self._files.items():
            unrecognized = list(entry.unrecognized)
            if entry.more:
                unrecognized.append(Unrecognized(None, f"... and {entry.more} more lines not understood"))
            state = (ParseState.FAILED if entry.failed
                     else ParseState.PARTIALLY_UNRECOGNIZED if unrecognized else ParseState.PARSED)
            out.append(ParseStatus(path, entry.kind, state, entry.detail, tuple(unrecognized)))
        return out
