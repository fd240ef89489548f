"""The IKE offer: the suites xcheck's IKE first messages propose, as plain data.

A rule set's `[ike]` table fills it (agent/verdicts.py builds `RuleSet.ike_offer`), so the proposals
an Azure gateway accepts are data beside the rules, with their source. The names are those a rule
set writes; the maps below give what checks/protocols/ike.py puts on the wire for each, so a name
outside them (a suite the codec cannot encode) is a ValueError when the offer is made, not a
malformed request later. No scapy here: the verdict engine builds an offer at start-up, and
checks/protocols/ike.py (scapy, about 0.6 s) is imported only when an IKE probe runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

# Encryption is AES-CBC with a Key Length attribute, in both versions (IKEv2 transform ID 12, IKEv1 AES-CBC).
AES_CBC_KEY_BITS = {"aes128": 128, "aes192": 192, "aes256": 256}
# IKEv2 transform IDs (RFC 7296 §3.3.2, IANA "IKEv2 Parameters").
IKEV2_PRF = {"sha1": 2, "sha256": 5, "sha384": 6}  # PRF_HMAC_SHA1, PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384
IKEV2_INTEGRITY = {"sha1": 2, "sha256": 12, "sha384": 13}  # AUTH_HMAC_SHA1_96, _SHA2_256_128, _SHA2_384_192
# IKEv1 Main Mode hash attribute (RFC 2409 App. A), as scapy names its values.
IKEV1_HASH = {"sha1": "SHA", "sha256": "SHA2-256", "sha384": "SHA2-384"}
# MODP groups (RFC 2409 §6.2, RFC 3526 §3) an IKEv2 KE can be made for: the prime's name in
# scapy.layers.tls.crypto.groups, and the group's IKEv1 name as scapy spells it.
MODP_GROUP_NAMES = {2: ("modp1024", "1024MODPgr"), 14: ("modp2048", "2048MODPgr")}
# Sixteen suites of either version keep a request under 1280 bytes (no path fragments it) and far
# beyond what a gateway accepts: Azure's defaults are four.
MAX_SUITES = 16
MAX_LIFETIME_SECONDS = 0xFFFF_FFFF  # IKEv1's LifeDuration as sent: at most four bytes


def _known(what: str, value: Any, names: Mapping[Any, Any]) -> None:
    # A bool is an int to Python, never a DH group; anything unhashable is no name either.
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value not in names:
        raise ValueError(f"{what} {value!r} is not one xcheck can send (known: {', '.join(map(str, names))})")


@dataclass(frozen=True)
class Ikev2Suite:
    """One IKE_SA_INIT proposal: encryption, integrity, PRF and DH group, by name."""

    encryption: str
    integrity: str
    prf: str
    dh_group: int

    def __post_init__(self) -> None:
        _known("encryption", self.encryption, AES_CBC_KEY_BITS)
        _known("integrity", self.integrity, IKEV2_INTEGRITY)
        _known("prf", self.prf, IKEV2_PRF)
        _known("dh_group", self.dh_group, MODP_GROUP_NAMES)


@dataclass(frozen=True)
class Ikev1Suite:
    """One Main Mode transform (pre-shared key): encryption, hash and DH group, by name."""

    encryption: str
    hash: str
    dh_group: int

    def __post_init__(self) -> None:
        _known("encryption", self.encryption, AES_CBC_KEY_BITS)
        _known("hash", self.hash, IKEV1_HASH)
        _known("dh_group", self.dh_group, MODP_GROUP_NAMES)


@dataclass(frozen=True)
class IkeOffer:
    """What the IKE probes propose, in order of preference: IKEv2 proposals, IKEv1 transforms, and
    the phase 1 lifetime IKEv1 sends in every transform (IKEv2 negotiates none)."""

    ikev2: tuple[Ikev2Suite, ...]
    ikev1: tuple[Ikev1Suite, ...]
    lifetime_seconds: int

    def __post_init__(self) -> None:
        for version, suites in (("ikev2", self.ikev2), ("ikev1", self.ikev1)):
            if not 1 <= len(suites) <= MAX_SUITES:
                raise ValueError(f"{version}: {len(suites)} suites, 1 to {MAX_SUITES} allowed")
        if isinstance(self.lifetime_seconds, bool) or not isinstance(self.lifetime_seconds, int) \
                or not 1 <= self.lifetime_seconds <= MAX_LIFETIME_SECONDS:
            raise ValueError(f"lifetime_seconds {self.lifetime_seconds!r} is not a whole number of seconds "
                             f"from 1 to {MAX_LIFETIME_SECONDS}")

    @property
    def ikev2_groups(self) -> tuple[int, ...]:
        """The DH groups the IKEv2 proposals name, first offered first: the KE is for the first."""
        return tuple(dict.fromkeys(suite.dh_group for suite in self.ikev2))

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> IkeOffer:
        """An offer from a rule set's `[ike]` table (its `source` taken out); ValueError naming the entry."""
        unknown = set(table) - {"ikev2", "ikev1", "lifetime_seconds"}
        missing = {"ikev2", "ikev1", "lifetime_seconds"} - set(table)
        if unknown or missing:
            raise ValueError(f"keys {sorted(unknown)} unknown, {sorted(missing)} missing "
                             "(an [ike] table holds ikev2, ikev1, lifetime_seconds and source)")
        return cls(_suites(table["ikev2"], "ikev2", Ikev2Suite), _suites(table["ikev1"], "ikev1", Ikev1Suite),
                   table["lifetime_seconds"])


def _suites(entries: Any, version: str, suite: type[Ikev2Suite] | type[Ikev1Suite]) -> tuple[Any, ...]:
    if not isinstance(entries, list):
        raise ValueError(f"{version} is not a list of suites")
    keys = [field.name for field in fields(suite)]
    suites = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, Mapping) or set(entry) != set(keys):
            raise ValueError(f"{version} entry {number}: not a table of {', '.join(keys)}")
        try:
            suites.append(suite(**entry))
        except ValueError as exc:
            raise ValueError(f"{version} entry {number}: {exc}") from None
    return tuple(suites)
