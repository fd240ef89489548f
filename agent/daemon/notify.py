"""systemd's notify protocol (sd_notify(3)), without libsystemd: one datagram per state change to
the socket named by NOTIFY_SOCKET. A unit with Type=notify waits for READY=1; WatchdogSec= expects
WATCHDOG=1 at least every WATCHDOG_USEC microseconds (we send twice as often, as the man page
advises); STATUS= is the one line `systemctl status` shows. Without NOTIFY_SOCKET (not run by
systemd) every call does nothing."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

_log = logging.getLogger("xcheck.daemon")


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        path = environ.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: its name starts with a NUL byte.
        self._address = ("\0" + path[1:]) if path.startswith("@") else path
        self._watchdog_seconds = self._watchdog(environ)

    @staticmethod
    def _watchdog(environ: Mapping[str, str]) -> float | None:
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    @property
    def watchdog_interval_seconds(self) -> float | None:
        """How often to send WATCHDOG=1 (half the unit's WatchdogSec), or None when not asked."""
        return None if self._watchdog_seconds is None or not self.enabled else self._watchdog_seconds / 2

    def send(self, **fields: str) -> None:
        """notify(ready="1", status="...") sends READY=1 and STATUS=...; a failure is logged, never raised."""
        if not self.enabled:
            return
        message = "\n".join(f"{key.upper()}={value.replace(chr(10), ' ')}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never wait on the event loop: a full queue (systemd not reading) loses one message.
                sock.sendto(message.encode(), socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            _log.warning("cannot notify systemd", extra={"fields": {"error": exc.strerror or str(exc)}})
