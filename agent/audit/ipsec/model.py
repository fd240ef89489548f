"""One model of an IPsec connection, whatever configuration it was read from (strongSwan's
swanctl.conf or legacy ipsec.conf, Libreswan's ipsec.conf), so that the rules judge one shape.

Algorithms are named in one vocabulary, the readers' job to map to:
- encryption: "aes128", "aes192", "aes256" (CBC), "aes128gcm16", "aes256gcm16" (and gcm8/gcm12
  variants as "aes128gcm8" ...), "aes128ctr"..., "3des", "des", "null", "chacha20poly1305";
- integrity and prf: "md5", "sha1", "sha256", "sha384", "sha512", "aesxcbc" (prf "prfsha256" is "sha256");
- DH groups by IANA number (modp1024 = 2, modp2048 = 14, ecp256 = 19, ecp384 = 20, modp2048s256 = 24, ...).
None always means "not set here: the implementation's default applies", never "none"; an empty
tuple of dh_groups on an ESP proposal means "no PFS".
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Proposal:
    """One proposal (strongSwan) or one ike=/esp= entry (Libreswan), normalized."""

    text: str  # as written, for messages
    encryption: tuple[str, ...]
    integrity: tuple[str, ...]  # () for an AEAD cipher (GCM) with no separate integrity
    prf: tuple[str, ...]  # IKE only; () where not given (derived from integrity)
    dh_groups: tuple[int, ...]  # () on ESP: no PFS


@dataclass(frozen=True)
class Child:
    """A CHILD_SA / phase 2 (strongSwan children.NAME; a Libreswan conn is one connection and one child)."""

    name: str
    line: int
    local_ts: tuple[str, ...] | None  # prefixes as written ("10.1.0.0/16"; "0.0.0.0/0"); None: default
    remote_ts: tuple[str, ...] | None
    esp_proposals: tuple[Proposal, ...] | None  # None: the implementation's default
    lifetime_seconds: int | None  # rekey_time / lifetime / salifetime
    life_bytes: int | None
    mode: str | None  # "tunnel", "transport"
    start_action: str | None  # "start", "trap", "none" (swanctl); auto= (ipsec.conf) mapped likewise
    dpd_action: str | None  # "clear", "trap", "restart"


@dataclass(frozen=True)
class Connection:
    name: str
    file: str
    line: int  # where the connection starts
    dialect: str  # "swanctl", "strongswan-ipsec.conf", "libreswan-ipsec.conf"
    ike_version: int | None  # 1 or 2; None: either (strongSwan's 0, Libreswan's default)
    local_addrs: tuple[str, ...] | None
    remote_addrs: tuple[str, ...] | None  # the Azure gateway's public address, or %any
    ike_proposals: tuple[Proposal, ...] | None
    ike_lifetime_seconds: int | None  # rekey_time/over_time (swanctl), ikelifetime (ipsec.conf)
    dpd_delay_seconds: int | None
    dpd_timeout_seconds: int | None
    encap: bool | None  # UDP encapsulation forced (swanctl encap=yes, forceencaps=yes, encapsulation=yes)
    auth: str | None  # "psk", "pubkey", "eap", ...
    psk_length: int | None  # the secret's length in characters, when found; the secret itself is never kept
    children: tuple[Child, ...] = field(default=())
    # key -> line, for evidence: where each setting of this connection was read ("proposals", "rekey_time"...)
    lines: tuple[tuple[str, int], ...] = field(default=())

    def line_of(self, key: str) -> int:
        """The line where `key` was set for this connection, or the connection's own line."""
        return dict(self.lines).get(key, self.line)
