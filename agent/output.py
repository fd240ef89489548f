"""Writing a report to a file: all or nothing, and never over something that is not ours to replace."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class ReportWriteError(OSError):
    """The report could not be written; nothing partial was left behind."""


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers see all or nothing."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        handle = tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=directory, prefix=f".{path.name}.", suffix=".tmp", delete=False
        )
    except OSError as exc:
        raise ReportWriteError(f"cannot write report to {path}: {exc.strerror or exc}") from None
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except OSError as exc:
        Path(handle.name).unlink(missing_ok=True)
        raise ReportWriteError(f"cannot write report to {path}: {exc.strerror or exc}") from None
