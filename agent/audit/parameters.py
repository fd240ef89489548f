"""Azure's IPsec/IKE and BGP parameters, as a rule set's `[audit]` table states them.

A rule set (agent/rules/*.toml) carries the parameters the configuration audit judges a site
against, each table with the key of the document it comes from (`source`, a key of the rule set's
`[sources]`) and the field reports of what breaks when a site strays from it (`reports`). This module
reads that table strictly: an unknown key, a name outside the model's vocabulary
(agent/audit/ipsec/model.py) or a source the rule set does not cite is a ValueError naming the key,
so a typo in a rule file is a packaging error, not a silent gap in the audit. A table a rule set
leaves out (the 2015 page names no custom policy, no DPD range) is None here, and the rules that
need it do not fire under that rule set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.audit.ipsec.proposals import is_aead

ROUTE_BASED, POLICY_BASED = "route-based", "policy-based"
GATEWAY_TYPES = (ROUTE_BASED, POLICY_BASED)
SKUS = frozenset({"Basic", "VpnGw1", "VpnGw2", "VpnGw3", "VpnGw4", "VpnGw5"})
NO_PFS = 0  # IANA's Transform Type 4 ID 0, NONE: an ESP offer without PFS

# The model's vocabulary (agent/audit/ipsec/model.py), as far as Azure's documents need it.
ENCRYPTION = frozenset({"aes128", "aes192", "aes256", "aes128gcm16", "aes192gcm16", "aes256gcm16",
                        "3des", "des", "null"})
INTEGRITY = frozenset({"md5", "sha1", "sha256", "sha384", "sha512"})
# IANA "IKEv2 Parameters", Transform Type 4 (key exchange methods) 0-32: a group outside is a typo.
GROUPS = frozenset({0, 1, 2, 5, *range(14, 33)})
ASN_MAX = 0xFFFF_FFFF


@dataclass(frozen=True)
class Offer:
    """One suite Azure offers or accepts. `integrity` None: an AEAD cipher, its own integrity.
    `group`: IKE's DH group, or ESP's PFS group (NO_PFS: none); None where the document does not say."""

    encryption: str
    integrity: str | None
    group: int | None

    def __str__(self) -> str:
        parts = [self.encryption] if self.integrity is None else [self.encryption, self.integrity]
        if self.group is not None:
            parts.append("no PFS" if self.group == NO_PFS else f"group {self.group}")
        return "/".join(parts)


@dataclass(frozen=True)
class GatewayDefaults:
    """A gateway type's default policy: what it speaks, offers and accepts without a custom policy."""

    kind: str  # ROUTE_BASED or POLICY_BASED
    source: str
    ike_versions: tuple[int, ...]
    ike_offers: tuple[Offer, ...]  # phase 1 (Main Mode, IKE_SA_INIT), in Azure's order
    child_offers: tuple[Offer, ...]  # Quick Mode / CHILD_SA offers it accepts as responder
    child_initiator_offers: tuple[Offer, ...]  # what it proposes when it initiates one (a rekey)
    child_lifetime_seconds: int | None
    child_lifetime_bytes: int | None
    dpd: bool


@dataclass(frozen=True)
class CustomPolicy:
    """What a custom IPsec/IKE policy on a connection may name, and on which gateway types. With GCM
    for ESP the integrity is the same GCM: an AEAD cipher here pairs with no integrity of `esp_integrity`."""

    source: str
    gateway_types: tuple[str, ...]
    ike_encryption: Mapping[int, tuple[str, ...]]  # IKE version -> encryption
    ike_integrity: tuple[str, ...]
    dh_groups: tuple[int, ...]
    esp_encryption: tuple[str, ...]
    esp_integrity: tuple[str, ...]
    pfs_groups: tuple[int, ...]  # NO_PFS among them: "None"
    child_lifetime_min_seconds: int
    child_lifetime_min_bytes: int
    dpd_timeout_min_seconds: int
    dpd_timeout_max_seconds: int


@dataclass(frozen=True)
class Phase1:
    source: str
    lifetime_seconds: int  # fixed on Azure's side


@dataclass(frozen=True)
class IkeVersionAdvice:
    source: str
    preferred: int  # the version to use where a gateway speaks both


@dataclass(frozen=True)
class Nat:
    source: str
    supported: bool  # may the site's device sit behind a NAT at all


@dataclass(frozen=True)
class NatEncapsulation:
    source: str
    forced: bool  # behind a NAT, force UDP encapsulation of ESP


@dataclass(frozen=True)
class TrafficSelectors:
    """Present: route-based connections take any-to-any or the declared prefixes; with
    UsePolicyBasedTrafficSelectors (and on policy-based gateways) every on-prem x VNet prefix pair,
    one pair per selector."""

    source: str


@dataclass(frozen=True)
class PskCharset:
    source: str
    forbidden: str  # printable ASCII except these characters


@dataclass(frozen=True)
class PskStrength:
    source: str
    min_length: int  # characters below which the key is judged weak


@dataclass(frozen=True)
class Coexistence:
    """Which options may share one virtual network: a declared plan is judged against it."""

    source: str
    p2s_with_expressroute: bool
    # S2S beside ExpressRoute: the gateway types that may carry it and the SKUs that may not
    # (empty: the rule set's source says nothing, and nothing is judged).
    s2s_with_expressroute_gateway_types: tuple[str, ...] = ()
    s2s_with_expressroute_excluded_skus: tuple[str, ...] = ()


@dataclass(frozen=True)
class AsnRange:
    first: int
    last: int
    source: str

    def __contains__(self, asn: object) -> bool:
        return isinstance(asn, int) and self.first <= asn <= self.last


@dataclass(frozen=True)
class AddressRange:
    source: str
    first: ipaddress.IPv4Address
    last: ipaddress.IPv4Address

    def __contains__(self, address: object) -> bool:
        return isinstance(address, ipaddress.IPv4Address) and self.first <= address <= self.last


@dataclass(frozen=True)
class AzureParameters:
    gateways: Mapping[str, GatewayDefaults]  # gateway type -> its default policy
    phase1: Phase1
    nat: Nat
    custom_policy: CustomPolicy | None
    ike_version_advice: IkeVersionAdvice | None
    nat_encapsulation: NatEncapsulation | None
    traffic_selectors: TrafficSelectors | None
    psk_charset: PskCharset | None
    psk_strength: PskStrength | None
    reserved_asns: tuple[AsnRange, ...]
    bgp_apipa: AddressRange | None
    coexistence: Coexistence | None
    reports: Mapping[str, tuple[str, ...]]  # table -> the [sources] keys of its field reports
    # MSS 1350 and the 1400-byte MTU are the rule set's [limits] (`mss_bytes`, `max_packet_bytes`).

    @property
    def source_keys(self) -> frozenset[str]:
        """Every [sources] key the parameters cite: the rule set must keep them all."""
        tables = [*self.gateways.values(), self.phase1, self.nat, self.custom_policy, self.ike_version_advice,
                  self.nat_encapsulation, self.traffic_selectors, self.psk_charset, self.psk_strength,
                  *self.reserved_asns, self.bgp_apipa, self.coexistence]
        cited = {table.source for table in tables if table is not None}
        return frozenset(cited.union(*self.reports.values()))

    def reserved_asn(self, asn: int) -> AsnRange | None:
        """The reserved range `asn` falls in, or None."""
        return next((reserved for reserved in self.reserved_asns if asn in reserved), None)

    @classmethod
    def from_table(cls, table: Any, sources: Mapping[str, str]) -> AzureParameters:
        """The parameters of a rule set's `[audit]` table; ValueError naming the key on bad data."""
        reader = _Reader(sources)
        audit = reader.table("audit", table, required={"phase1", "route_based", "policy_based", "nat"},
                             optional={"custom_policy", "ike_version", "nat_encapsulation", "traffic_selectors",
                                       "psk_charset", "psk_strength", "reserved_asns", "bgp_apipa", "coexistence"})
        gateways = {kind: reader.gateway(f"audit.{kind.replace('-', '_')}", audit[kind.replace("-", "_")], kind)
                    for kind in GATEWAY_TYPES}
        phase1 = reader.sourced("audit.phase1", audit["phase1"], {"lifetime_seconds": reader.seconds})
        nat = reader.sourced("audit.nat", audit["nat"], {"supported": reader.boolean})
        optional = {
            "custom_policy": reader.custom_policy,
            "ike_version": lambda key, value: IkeVersionAdvice(
                **reader.sourced(key, value, {"preferred": reader.ike_version})),
            "nat_encapsulation": lambda key, value: NatEncapsulation(
                **reader.sourced(key, value, {"forced": reader.boolean})),
            "traffic_selectors": lambda key, value: TrafficSelectors(**reader.sourced(key, value, {})),
            "psk_charset": lambda key, value: PskCharset(
                **reader.sourced(key, value, {"forbidden": reader.characters})),
            "psk_strength": lambda key, value: PskStrength(
                **reader.sourced(key, value, {"min_length": reader.positive})),
            "bgp_apipa": reader.address_range,
            "coexistence": lambda key, value: Coexistence(**reader.sourced(
                key, value, {"p2s_with_expressroute": reader.boolean},
                {"s2s_with_expressroute_gateway_types": lambda k, v: reader.names(k, v, frozenset(GATEWAY_TYPES)),
                 "s2s_with_expressroute_excluded_skus": lambda k, v: reader.names(k, v, SKUS)})),
        }
        made = {name: make(f"audit.{name}", audit[name]) if name in audit else None for name, make in optional.items()}
        reserved = reader.reserved_asns(audit.get("reserved_asns", []))
        return cls(gateways=gateways, phase1=Phase1(**phase1), nat=Nat(**nat), custom_policy=made["custom_policy"],
                   ike_version_advice=made["ike_version"], nat_encapsulation=made["nat_encapsulation"],
                   traffic_selectors=made["traffic_selectors"], psk_charset=made["psk_charset"],
                   psk_strength=made["psk_strength"], reserved_asns=reserved, bgp_apipa=made["bgp_apipa"],
                   coexistence=made["coexistence"], reports=dict(reader.reports))


class _Reader:
    """Checks each value as it reads it; every error names the dotted key."""

    def __init__(self, sources: Mapping[str, str]):
        self.sources = sources
        self.reports: dict[str, tuple[str, ...]] = {}

    @staticmethod
    def table(key: str, value: Any, required: set[str], optional: set[str] = frozenset()) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise ValueError(f"[{key}] is not a table")
        missing, unknown = required - set(value), set(value) - required - optional
        if missing or unknown:
            raise ValueError(f"[{key}]: " + "; ".join(
                part for part in (missing and f"missing {', '.join(sorted(missing))}",
                                  unknown and f"unknown {', '.join(sorted(unknown))}") if part)
                             + f" (it holds {', '.join(sorted(required | optional))})")
        return value

    def sourced(self, key: str, value: Any, fields: Mapping[str, Any],
                optional: Mapping[str, Any] | None = None) -> dict:
        """A table of `source`, optional `reports` and `fields` (name -> checker), checked."""
        optional = optional or {}
        table = self.table(key, value, {"source", *fields}, {"reports", *optional})
        source = table["source"]
        if not isinstance(source, str) or source not in self.sources:
            raise ValueError(f"{key}.source = {source!r} is not a key of [sources]")
        reports = table.get("reports", [])
        if not isinstance(reports, list) or not all(isinstance(r, str) and r in self.sources for r in reports):
            raise ValueError(f"{key}.reports = {reports!r}: a list of keys of [sources]")
        if reports:
            self.reports[key] = tuple(reports)
        checked = {name: check(f"{key}.{name}", table[name]) for name, check in fields.items()}
        checked |= {name: check(f"{key}.{name}", table[name]) if name in table else None
                    for name, check in optional.items()}
        return {"source": source, **checked}

    @staticmethod
    def integer(key: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{key} = {value!r} is not a whole number from {low} to {high}")
        return value

    def seconds(self, key: str, value: Any) -> int:
        return self.integer(key, value, 1, 365 * 86_400)

    def positive(self, key: str, value: Any) -> int:
        return self.integer(key, value, 1, 2**63 - 1)

    def ike_version(self, key: str, value: Any) -> int:
        return self.integer(key, value, 1, 2)

    def ike_versions(self, key: str, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list) or not value or len(set(map(str, value))) != len(value):
            raise ValueError(f"{key} = {value!r}: a list of distinct IKE versions (1, 2)")
        return tuple(self.ike_version(f"{key}[{number}]", version) for number, version in enumerate(value))

    @staticmethod
    def boolean(key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} = {value!r} is not true or false")
        return value

    @staticmethod
    def characters(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value or not all(" " <= c <= "~" for c in value):
            raise ValueError(f"{key} = {value!r} is not a string of printable ASCII characters")
        return value

    @staticmethod
    def names(key: str, value: Any, known: frozenset[str]) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or len(set(map(str, value))) != len(value) \
                or not all(isinstance(name, str) and name in known for name in value):
            raise ValueError(f"{key} = {value!r}: a list of distinct names from {', '.join(sorted(known))}")
        return tuple(value)

    def groups(self, key: str, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list) or not value or len(set(value)) != len(value):
            raise ValueError(f"{key} = {value!r}: a list of distinct group numbers")
        return tuple(self.group(f"{key}[{number}]", group) for number, group in enumerate(value))

    def group(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or value not in GROUPS:
            raise ValueError(f"{key} = {value!r} is not a group of IANA's Transform Type 4 (0, 1, 2, 5, 14-32)")
        return value

    def offers(self, key: str, value: Any, esp: bool) -> tuple[Offer, ...]:
        if not isinstance(value, list) or not value:
            raise ValueError(f"{key}: a list of offers {{encryption, integrity, group}}")
        offers = []
        for number, entry in enumerate(value):
            where = f"{key}[{number}]"
            # An AEAD cipher names no integrity (it is its own); the 2015 page gives some groups no value.
            table = self.table(where, entry, {"encryption"}, {"integrity", "group"})
            encryption = table["encryption"]
            if encryption not in ENCRYPTION or (not esp and encryption == "null"):
                raise ValueError(f"{where}.encryption = {encryption!r} is not one of {', '.join(sorted(ENCRYPTION))}")
            integrity = table.get("integrity")
            if is_aead(encryption) != (integrity is None):
                raise ValueError(f"{where}: an AEAD cipher (GCM) names no integrity, any other cipher names one")
            if integrity is not None and integrity not in INTEGRITY:
                raise ValueError(f"{where}.integrity = {integrity!r} is not one of {', '.join(sorted(INTEGRITY))}")
            group = self.group(f"{where}.group", table["group"]) if "group" in table else None
            if not esp and group in (None, NO_PFS):
                raise ValueError(f"{where}: a phase 1 offer names its DH group")
            offers.append(Offer(encryption, integrity, group))
        if len(set(offers)) != len(offers):
            raise ValueError(f"{key}: the same offer twice")
        return tuple(offers)

    def gateway(self, key: str, value: Any, kind: str) -> GatewayDefaults:
        table = self.sourced(key, value, {
            "ike_versions": self.ike_versions,
            "ike_offers": lambda k, v: self.offers(k, v, esp=False),
            "child_offers": lambda k, v: self.offers(k, v, esp=True),
            "dpd": self.boolean,
        }, optional={
            # Absent: the document gives one list for both roles.
            "child_initiator_offers": lambda k, v: self.offers(k, v, esp=True),
            "child_lifetime_seconds": self.seconds,
            "child_lifetime_bytes": self.positive,
        })
        table["child_initiator_offers"] = table["child_initiator_offers"] or table["child_offers"]
        return GatewayDefaults(kind=kind, **table)

    def custom_policy(self, key: str, value: Any) -> CustomPolicy:
        def names(known: frozenset[str]):
            return lambda k, v: self.names(k, v, known)

        table = self.sourced(key, value, {
            "gateway_types": names(frozenset(GATEWAY_TYPES)),
            "ikev2_encryption": names(ENCRYPTION - {"null"}),
            "ikev1_encryption": names(frozenset(name for name in ENCRYPTION - {"null"} if not is_aead(name))),
            "ike_integrity": names(INTEGRITY),
            "dh_groups": self.groups,
            "esp_encryption": names(ENCRYPTION),
            "esp_integrity": names(INTEGRITY),
            "pfs_groups": self.groups,
            "child_lifetime_min_seconds": self.seconds,
            "child_lifetime_min_bytes": self.positive,
            "dpd_timeout_min_seconds": self.seconds,
            "dpd_timeout_max_seconds": self.seconds,
        })
        if NO_PFS in table["dh_groups"]:
            raise ValueError(f"{key}.dh_groups: phase 1 always has a DH group ({NO_PFS}, none, is for PFS only)")
        if table["dpd_timeout_min_seconds"] > table["dpd_timeout_max_seconds"]:
            raise ValueError(f"{key}: dpd_timeout_min_seconds is above dpd_timeout_max_seconds")
        ike_encryption = {2: table.pop("ikev2_encryption"), 1: table.pop("ikev1_encryption")}
        return CustomPolicy(ike_encryption=ike_encryption, **table)

    def address_range(self, key: str, value: Any) -> AddressRange:
        def address(k: str, v: Any) -> ipaddress.IPv4Address:
            try:
                return ipaddress.IPv4Address(v)
            except (ipaddress.AddressValueError, ValueError, TypeError):
                raise ValueError(f"{k} = {v!r} is not an IPv4 address") from None

        table = self.sourced(key, value, {"first": address, "last": address})
        if table["first"] > table["last"]:
            raise ValueError(f"{key}: first is above last")
        return AddressRange(**table)

    def reserved_asns(self, value: Any) -> tuple[AsnRange, ...]:
        """[[audit.reserved_asns]]: each {source, asns = [n, {first, last}, ...]}."""
        if not isinstance(value, list):
            raise ValueError("audit.reserved_asns: [[audit.reserved_asns]] tables of source and asns")
        ranges = []
        for number, entry in enumerate(value):
            key = f"audit.reserved_asns[{number}]"
            table = self.sourced(key, entry, {"asns": lambda k, v: v})
            if not isinstance(table["asns"], list) or not table["asns"]:
                raise ValueError(f"{key}.asns: a list of ASNs and {{first, last}} ranges")
            for index, asn in enumerate(table["asns"]):
                where = f"{key}.asns[{index}]"
                if isinstance(asn, Mapping):
                    bounds = self.table(where, asn, {"first", "last"})
                    first, last = (self.integer(f"{where}.{end}", bounds[end], 0, ASN_MAX) for end in ("first", "last"))
                    if first > last:
                        raise ValueError(f"{where}: first is above last")
                else:
                    first = last = self.integer(where, asn, 0, ASN_MAX)
                ranges.append(AsnRange(first, last, table["source"]))
        return tuple(ranges)
