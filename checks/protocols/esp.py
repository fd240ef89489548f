"""xcheck's ESP probe packet (no I/O but opening the raw socket): shared by the ESP probe
(checks/probes/esp.py) and the responder's echo (agent/responder/esp_echo.py).

A probe is an ESP packet (RFC 4303: SPI, sequence number, then what would be ciphertext)
whose SPI is PROBE_SPI and whose payload is MAGIC, a kind (request or echo) and a random
token; the echo is the same packet with the kind changed, so it is never larger. Parsing is
strict: anything but exactly one of xcheck's probes, in an unfragmented IPv4 datagram as a
raw socket reads it, gives `EspParseError`. Sending and receiving ESP takes a raw socket
(`open_esp_socket`), and so CAP_NET_RAW.
"""

from __future__ import annotations

import enum
import socket
import struct
from dataclasses import dataclass

PROBE_SPI = 0x78636B31  # "xck1": fixed, so a responder knows xcheck's probes by their first 4 bytes
MAGIC = b"xcheck-esp-probe"
TOKEN_BYTES = 16
PROBE_BYTES = 8 + len(MAGIC) + 4 + TOKEN_BYTES  # SPI, sequence, magic, kind + 3 reserved, token
_PROBE = struct.Struct(f"!II{len(MAGIC)}sB3x{TOKEN_BYTES}s")
IPV4_HEADER_MIN_BYTES = 20
_IP_MF, _IP_OFFSET = 0x2000, 0x1FFF


class EspParseError(ValueError):
    """The bytes are not an IPv4 datagram carrying one of xcheck's ESP probes."""


class Kind(enum.IntEnum):
    REQUEST = 1
    ECHO = 2


@dataclass(frozen=True)
class EspProbe:
    kind: Kind
    sequence: int
    token: bytes

    def encode(self) -> bytes:
        return _PROBE.pack(PROBE_SPI, self.sequence, MAGIC, self.kind, self.token)

    @classmethod
    def parse(cls, esp: bytes) -> EspProbe:
        """An ESP packet (no IP header) that must be exactly one of xcheck's probes."""
        if len(esp) != PROBE_BYTES:
            raise EspParseError(f"{len(esp)} bytes, a probe has {PROBE_BYTES}")
        spi, sequence, magic, kind, token = _PROBE.unpack(esp)
        if spi != PROBE_SPI or magic != MAGIC:
            raise EspParseError(f"SPI {spi:#010x} is not an xcheck probe")
        try:
            return cls(Kind(kind), sequence, token)
        except ValueError:
            raise EspParseError(f"unknown probe kind {kind}") from None


def esp_of_ipv4(datagram: bytes) -> bytes:
    """The ESP packet inside an IPv4 datagram as a raw socket reads it (header included)."""
    if len(datagram) < IPV4_HEADER_MIN_BYTES or datagram[0] >> 4 != 4:
        raise EspParseError("not an IPv4 datagram")
    header_bytes = (datagram[0] & 0x0F) * 4
    total_length, flags_offset = struct.unpack_from("!H2xH", datagram, 2)
    if header_bytes < IPV4_HEADER_MIN_BYTES or total_length != len(datagram) or total_length < header_bytes:
        raise EspParseError("IPv4 header and datagram length disagree")
    if datagram[9] != socket.IPPROTO_ESP:
        raise EspParseError(f"IP protocol {datagram[9]}, not ESP")
    if flags_offset & (_IP_MF | _IP_OFFSET):
        raise EspParseError("a fragment")
    return datagram[header_bytes:]


def open_esp_socket() -> socket.socket:
    """A raw ESP socket; PermissionError without CAP_NET_RAW."""
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)
