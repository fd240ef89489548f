"""The IPsec rules: a site's connections (agent/audit/ipsec/model.py) judged against Azure's
parameters (agent/audit/parameters.py, a rule set's `[audit]` table).

Each finding names the connection and the values it judged, says what to write instead, cites the
rule set's source for the parameter and points at the line that set the value (Connection.lines,
keyed by the model's field names; the connection's or child's own line where the value is the
implementation's default). A setting left out (None in the model) is judged by the implementation's
documented default (`DEFAULTS`, the readers' tables in proposals.py), or not at all where that
default is not documented: never guessed. A table the rule set leaves out (the 2015 page has no
custom policy) silences the rules that need it.

The pre-shared key is judged by its length only; the model never holds the key itself.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from agent.audit.findings import Evidence, Finding, Severity
from agent.audit.ipsec.model import Child, Connection, Proposal
from agent.audit.ipsec.proposals import ESP, IKE, STRONGSWAN_DEFAULT, is_aead, libreswan_default
from agent.audit.parameters import (GATEWAY_TYPES, NO_PFS, POLICY_BASED, ROUTE_BASED, AzureParameters,
                                    CustomPolicy, GatewayDefaults, Offer)

OPTION = "s2s"
SWANCTL, STRONGSWAN_IPSEC_CONF, LIBRESWAN = "swanctl", "strongswan-ipsec.conf", "libreswan-ipsec.conf"
DEFAULT_TEXT = "default"  # Proposal.text of the implementation's default proposals (proposals.py)
_ANY_PEER = {"%any", "%any4", "%any6", "0.0.0.0/0", "::/0"}
_HOST_SELECTOR = {"dynamic", "%dynamic"}  # strongSwan's "the host's own address"


@dataclass(frozen=True)
class IpsecContext:
    """What the user declared (and measured) about the Azure side, for judging connections."""

    gateways: tuple[str, ...] = ()  # --gateway: the Azure gateways' public addresses
    gateway_type: str | None = None  # "route-based" | "policy-based"; None: not declared
    policy_based_selectors: bool | None = None  # UsePolicyBasedTrafficSelectors on the Azure connection
    onprem_prefixes: tuple[str, ...] = ()  # --onprem-prefix
    vnet_prefixes: tuple[str, ...] = ()  # --vnet-prefix
    behind_nat: bool | None = None  # facts.nat.detected; None: not measured

    def __post_init__(self) -> None:
        if self.gateway_type not in (*GATEWAY_TYPES, None):
            raise ValueError(f"gateway type {self.gateway_type!r} is not one of {', '.join(GATEWAY_TYPES)}")
        for name in ("onprem_prefixes", "vnet_prefixes"):
            for prefix in getattr(self, name):
                try:
                    ipaddress.ip_network(prefix, strict=False)
                except ValueError:
                    raise ValueError(f"{name}: {prefix!r} is not an address prefix (10.1.0.0/16)") from None


@dataclass(frozen=True)
class _Defaults:
    """What an implementation does with a setting left out, as its documentation states; None where
    it is not documented (then the setting is not judged)."""

    name: str
    document: str
    ike_version: int | None  # the version it initiates with
    ike_lifetime_seconds: int | None
    child_lifetime_seconds: int | None
    ike_proposals: Callable[[int], tuple[Proposal, ...]] | None  # IKE version -> its default proposals
    esp_proposals: Callable[[int], tuple[Proposal, ...]] | None
    pfs_by_default: bool  # an ESP proposal without DH group rekeys with the IKE SA's groups (Libreswan's pfs=yes)


DEFAULTS = {
    # swanctl.conf(5): version 0 "initiates the connection actively with IKEv2"; proposals and
    # esp_proposals "default"; rekey_time 4h (IKE), 1h (CHILD_SA); dpd_delay 0 (off); encap no.
    SWANCTL: _Defaults("strongSwan", "swanctl.conf(5), https://docs.strongswan.org/docs/5.9/swanctl/swanctlConf.html",
                       2, 14_400, 3_600, lambda _: STRONGSWAN_DEFAULT[IKE], lambda _: STRONGSWAN_DEFAULT[ESP],
                       pfs_by_default=False),
    # ipsec.conf(5) of strongSwan: keyexchange=ike "proposes IKEv2 when initiating"; ike= and esp=
    # charon's defaults; ikelifetime 3h, lifetime 1h; dpdaction none (no DPD); forceencaps no.
    STRONGSWAN_IPSEC_CONF: _Defaults(
        "strongSwan", "ipsec.conf(5), https://wiki.strongswan.org/projects/strongswan/wiki/ConnSection",
        2, 10_800, 3_600, lambda _: STRONGSWAN_DEFAULT[IKE], lambda _: STRONGSWAN_DEFAULT[ESP], pfs_by_default=False),
    # Libreswan's ipsec.conf(5) (4.10, as the readers): keyexchange/ikev2 IKEv2; ikelifetime 8h
    # (since 4.2); ipsec-lifetime 8h; pfs=yes, "the default"; no DPD; encapsulation auto.
    LIBRESWAN: _Defaults("Libreswan", "ipsec.conf(5), https://libreswan.org/man/ipsec.conf.5.html",
                         2, 28_800, 28_800, lambda version: libreswan_default(IKE, version),
                         lambda version: libreswan_default(ESP, version), pfs_by_default=True),
}
_UNKNOWN = _Defaults("the implementation", "its documentation", None, None, None, None, None, pfs_by_default=False)

# How each dialect names a setting, for the text and the fix.
_NAMES = {
    "version": {SWANCTL: "version", STRONGSWAN_IPSEC_CONF: "keyexchange", LIBRESWAN: "keyexchange"},
    "remote": {SWANCTL: "remote_addrs", STRONGSWAN_IPSEC_CONF: "right", LIBRESWAN: "right"},
    "ike_proposals": {SWANCTL: "proposals", STRONGSWAN_IPSEC_CONF: "ike", LIBRESWAN: "ike"},
    "esp_proposals": {SWANCTL: "esp_proposals", STRONGSWAN_IPSEC_CONF: "esp", LIBRESWAN: "esp"},
    "ike_lifetime": {SWANCTL: "rekey_time", STRONGSWAN_IPSEC_CONF: "ikelifetime", LIBRESWAN: "ikelifetime"},
    "child_lifetime": {SWANCTL: "rekey_time", STRONGSWAN_IPSEC_CONF: "lifetime", LIBRESWAN: "ipsec-lifetime"},
    "child_bytes": {SWANCTL: "rekey_bytes", STRONGSWAN_IPSEC_CONF: "lifebytes", LIBRESWAN: "ipsec-max-bytes"},
    "dpd_delay": {SWANCTL: "dpd_delay", STRONGSWAN_IPSEC_CONF: "dpddelay", LIBRESWAN: "dpddelay"},
    "dpd_timeout": {SWANCTL: "dpd_timeout", STRONGSWAN_IPSEC_CONF: "dpdtimeout", LIBRESWAN: "dpdtimeout"},
    "encap": {SWANCTL: "encap = yes", STRONGSWAN_IPSEC_CONF: "forceencaps=yes", LIBRESWAN: "encapsulation=yes"},
    "local_ts": {SWANCTL: "local_ts", STRONGSWAN_IPSEC_CONF: "leftsubnet", LIBRESWAN: "leftsubnet"},
    "remote_ts": {SWANCTL: "remote_ts", STRONGSWAN_IPSEC_CONF: "rightsubnet", LIBRESWAN: "rightsubnet"},
}
_VERSION_FIX = {SWANCTL: "version = {v}", STRONGSWAN_IPSEC_CONF: "keyexchange=ikev{v}",
                LIBRESWAN: "keyexchange=ikev{v} (Libreswan 5; ikev2={yes_no} before)"}


def judge_ipsec(connections: Iterable[Connection], parameters: AzureParameters, context: IpsecContext) -> list[Finding]:
    """Every finding about `connections` against Azure's `parameters`, in the connections' order."""
    return [finding for connection in connections for finding in _Judge(connection, parameters, context).findings()]


# -- matching proposals with Azure's offers and tables --------------------------------------------

def _pfs(proposal: Proposal) -> tuple[int, ...]:
    return proposal.dh_groups or (NO_PFS,)


def _ike_takes(proposal: Proposal, offer: Offer) -> bool:
    """Whether a phase 1 proposal accepts one of Azure's offers."""
    if offer.encryption not in proposal.encryption:
        return False
    if offer.integrity is not None and offer.integrity not in proposal.integrity:
        return False
    # Azure names one hash for phase 1; IKEv2 uses it as integrity and PRF.
    prf_ok = not proposal.prf or offer.integrity is None or offer.integrity in proposal.prf
    return prf_ok and offer.group in proposal.dh_groups


def _gcm_with_integrity(proposal: Proposal) -> bool:
    return bool(proposal.integrity) and all(map(is_aead, proposal.encryption))


def _esp_takes(proposal: Proposal, offer: Offer, pfs: bool = True) -> bool:
    """Whether an ESP proposal accepts one of Azure's offers; pfs=False leaves the PFS group aside
    (IKEv2's first CHILD_SA is keyed from the IKE SA: it negotiates none); an unstated group matches."""
    if offer.encryption not in proposal.encryption:
        return False
    if offer.integrity is None:  # GCM: its own integrity, none beside it
        if _gcm_with_integrity(proposal):
            return False
    elif offer.integrity not in proposal.integrity:
        return False
    return not pfs or offer.group is None or offer.group in _pfs(proposal)


def _ike_encryption(custom: CustomPolicy, version: int | None) -> list[str]:
    """The phase 1 ciphers a custom policy may name for `version` (None: either)."""
    return _unique(name for v in ((version,) if version else (2, 1)) for name in custom.ike_encryption[v])


def _custom_takes(proposal: Proposal, custom: CustomPolicy, ike: bool, version: int | None, pfs: bool = True) -> bool:
    """Whether a custom policy can name one combination of `proposal`'s algorithms."""
    encryption = set(_ike_encryption(custom, version) if ike else custom.esp_encryption)
    integrity = set(custom.ike_integrity if ike else custom.esp_integrity)
    for cipher in set(proposal.encryption) & encryption:
        if is_aead(cipher):
            # IKE with GCM: the policy's integrity is the PRF. ESP with GCM: the same GCM, nothing else.
            hashes = proposal.prf or proposal.integrity
            if (ike and not set(hashes) & integrity) or (not ike and _gcm_with_integrity(proposal)):
                continue
        elif not set(proposal.integrity) & integrity or (ike and proposal.prf and not set(proposal.prf) & integrity):
            continue
        if ike:
            return bool(set(proposal.dh_groups) & set(custom.dh_groups))
        return not pfs or bool(set(_pfs(proposal)) & set(custom.pfs_groups))
    return False


class _Judge:
    def __init__(self, connection: Connection, parameters: AzureParameters, context: IpsecContext):
        self.connection = connection
        self.parameters = parameters
        self.context = context
        self.defaults = DEFAULTS.get(connection.dialect, _UNKNOWN)
        self.out: list[Finding] = []

    # -- plumbing ------------------------------------------------------------------------------

    def name(self, what: str) -> str:
        return _NAMES[what].get(self.connection.dialect, what)

    def child_line(self, child: Child, field: str) -> int:
        return dict(self.connection.lines).get(f"children.{child.name}.{field}", child.line)

    def add(self, finding_id: str, severity: Severity, text: str, fix: str, source: str, line: int) -> None:
        self.out.append(Finding(finding_id, severity, OPTION, f"Connection {self.connection.name!r}: {text}", fix,
                                source, Evidence(self.connection.file, line)))

    def default_note(self, setting: str) -> str:
        return f" ({setting} not set: {self.defaults.name}'s default, {self.defaults.document})"

    def shown(self, what: str, configured: Sequence[Proposal] | None) -> str:
        setting = self.name(what)
        if configured is None:
            return f"{setting} not set, so {self.defaults.name}'s default proposals apply ({self.defaults.document})"
        return f"{setting} = {', '.join(p.text for p in _written(configured)) or DEFAULT_TEXT}"

    @property
    def version(self) -> int | None:
        return self.connection.ike_version or self.defaults.ike_version

    def gateways(self) -> list[GatewayDefaults]:
        """The Azure gateway types this connection may face: the declared one, else those speaking its version."""
        every = self.parameters.gateways
        if self.context.gateway_type:
            return [every[self.context.gateway_type]]
        return [g for g in every.values() if self.version is None or self.version in g.ike_versions] \
            or list(every.values())

    def custom(self, gateway: GatewayDefaults) -> CustomPolicy | None:
        """The custom policy tables, where a custom policy exists for `gateway`'s type."""
        custom = self.parameters.custom_policy
        return custom if custom and gateway.kind in custom.gateway_types else None

    def custom_for(self, gateways: Sequence[GatewayDefaults]) -> CustomPolicy | None:
        return next((custom for gateway in gateways if (custom := self.custom(gateway))), None)

    def ike_proposals_in_effect(self) -> tuple[Proposal, ...] | None:
        if self.connection.ike_proposals is not None or self.defaults.ike_proposals is None:
            return self.connection.ike_proposals
        return self.defaults.ike_proposals(self.version or 2)

    def esp_proposals_in_effect(self, child: Child) -> tuple[Proposal, ...] | None:
        if child.esp_proposals is not None or self.defaults.esp_proposals is None:
            return child.esp_proposals
        esp = self.defaults.esp_proposals(self.version or 2)
        if not self.defaults.pfs_by_default:
            return esp
        # The readers fold a written pfs= into the proposals; left out, it rekeys with the IKE SA's groups.
        groups = tuple(dict.fromkeys(g for p in self.ike_proposals_in_effect() or () for g in p.dh_groups))
        return tuple(p if p.dh_groups else replace(p, dh_groups=groups) for p in esp)

    # -- the rules -----------------------------------------------------------------------------

    def findings(self) -> list[Finding]:
        if not self.remote_address():
            return self.out  # a connection to another peer: not Azure's to judge
        self.ike_version()
        self.ike_proposals()
        self.ike_lifetime()
        self.dpd()
        self.nat()
        self.psk()
        for child in self.connection.children:
            self.esp_proposals(child)
            self.child_lifetime(child)
        self.traffic_selectors()
        return self.out

    def remote_address(self) -> bool:
        """ipsec.remote-address; False when the connection points at a peer that is not a declared gateway."""
        declared = self.context.gateways
        if not declared:
            return True
        remote = self.connection.remote_addrs
        key = self.name("remote")
        source = self.gateways()[0].source
        line = self.connection.line_of("remote_addrs")
        if remote is None or _ANY_PEER & set(remote):
            written = "not set (any peer)" if remote is None else ", ".join(remote)
            self.add("ipsec.remote-address", Severity.WARNING,
                     f"{key} is {written}: it answers any peer but cannot initiate toward the Azure gateway "
                     f"{', '.join(declared)}, and behind a NAT Azure takes the tunnel only from a site that initiates.",
                     f"Set {key} to the gateway's public address: {', '.join(declared)}.", source, line)
            return True
        try:
            addresses = {ipaddress.ip_address(written) for written in remote}
        except ValueError:
            return True  # a DNS name: not resolved here, not judged
        if not addresses & {_address_or_text(gateway) for gateway in declared}:
            self.add("ipsec.remote-address", Severity.WARNING,
                     f"{key} = {', '.join(remote)} is not a declared Azure gateway ({', '.join(declared)}); "
                     "its other settings are not judged against Azure's parameters.",
                     f"If this connection is meant for Azure, set {key} to {', '.join(declared)}; "
                     "otherwise leave it (or declare its gateway with --gateway).", source, line)
            return False
        return True

    def ike_version(self) -> None:
        version = self.version
        if version is None:
            return
        note = self.default_note(self.name("version")) if self.connection.ike_version is None else ""
        fix = _VERSION_FIX.get(self.connection.dialect, "IKEv{v}")
        line = self.connection.line_of("ike_version")
        for gateway in self.gateways():
            if version not in gateway.ike_versions:
                wanted = gateway.ike_versions[-1]
                self.add("ipsec.ike-version", Severity.ERROR,
                         f"IKEv{version}{note}, but an Azure {gateway.kind} gateway speaks only "
                         f"{' and '.join(f'IKEv{v}' for v in gateway.ike_versions)}: the tunnel never comes up.",
                         f"Use IKEv{wanted}: {fix.format(v=wanted, yes_no='yes' if wanted == 2 else 'no')}.",
                         gateway.source, line)
                return
        advice = self.parameters.ike_version_advice
        if advice and self.context.gateway_type == ROUTE_BASED and version != advice.preferred:
            self.add("ipsec.ike-version", Severity.WARNING,
                     f"IKEv{version}{note} with a route-based gateway, which speaks IKEv{advice.preferred} too: an "
                     "IKEv1 tunnel disconnects for up to 5 s at every Main Mode rekey (IKEv1 has no in-place rekey).",
                     f"Use IKEv{advice.preferred}: "
                     f"{fix.format(v=advice.preferred, yes_no='yes' if advice.preferred == 2 else 'no')}.",
                     advice.source, line)

    def ike_proposals(self) -> None:
        proposals = self.ike_proposals_in_effect()
        if proposals is None:
            return
        shown = self.shown("ike_proposals", self.connection.ike_proposals)
        line = self.connection.line_of("ike_proposals")
        gateways = self.gateways()
        offers = _unique(offer for gateway in gateways for offer in gateway.ike_offers)
        custom = self.custom_for(gateways)
        by_default = any(_ike_takes(p, o) for p in proposals for o in offers)
        by_custom = bool(custom) and any(_custom_takes(p, custom, ike=True, version=self.version) for p in proposals)
        source = custom.source if custom else gateways[0].source
        if not by_default and not by_custom:
            self.add("ipsec.ike-proposal", Severity.ERROR,
                     f"{shown}: no phase 1 proposal Azure accepts, so IKE fails with NO_PROPOSAL_CHOSEN. Azure's "
                     f"default offers: {_offers(offers, ike=True)}" + (
                         f"; a custom policy may name encryption {_listed(_ike_encryption(custom, self.version))}, "
                         f"integrity {_listed(custom.ike_integrity)}, DH groups {_listed(custom.dh_groups)}"
                         if custom else "") + ".",
                     f"Add a proposal Azure offers, e.g. {self.keywords(offers[0], ike=True)}.", source, line)
            return
        self.unaccepted("ipsec.ike-proposal", _written(self.connection.ike_proposals or ()), shown, line, source,
                        offers, custom, ike=True)
        if custom and not by_default:
            self.add("ipsec.ike-proposal", Severity.INFO,
                     f"{shown}: none of Azure's documented default phase 1 offers "
                     f"({_offers(offers, ike=True)}), which use DH group 2 only: it works if the Azure connection has a custom IPsec/IKE policy naming one of its "
                     "combinations.",
                     f"Set such a custom IPsec/IKE policy on the Azure connection, or add "
                     f"{self.keywords(offers[0], ike=True)}.", gateways[0].source, line)

    def keywords(self, offer: Offer, ike: bool) -> str:
        """An Azure offer as this connection's dialect writes it."""
        if self.connection.dialect == LIBRESWAN:
            return libreswan_keywords(offer, ike)
        return strongswan_keywords(offer, ike)

    def unaccepted(self, finding_id: str, written: Sequence[Proposal], shown: str, line: int, source: str,
                   offers: Sequence[Offer], custom: CustomPolicy | None, ike: bool) -> None:
        """The algorithms the user wrote that no Azure offer nor custom policy table names."""
        known = [{o.encryption for o in offers}, {o.integrity for o in offers if o.integrity},
                 {o.group for o in offers if o.group is not None}]
        if custom:
            known[0] |= set(_ike_encryption(custom, self.version)) if ike else set(custom.esp_encryption)
            known[1] |= set(custom.ike_integrity if ike else custom.esp_integrity)
            known[2] |= set(custom.dh_groups if ike else custom.pfs_groups)
        never = _unique([*(n for p in written for n in p.encryption if n not in known[0]),
                         *(n for p in written for n in (*p.integrity, *p.prf) if n not in known[1]),
                         *(f"DH group {g}" for p in written for g in p.dh_groups if g not in known[2])])
        paired = [] if ike else [p.text for p in written if _gcm_with_integrity(p)]
        parts = ([f"Azure accepts none of {_listed(never)}: those parts are never chosen"] if never else []) + (
            [f"{_listed(paired)} pairs GCM with a separate integrity algorithm, and Azure pairs GCM encryption only "
             "with the same GCM as integrity"] if paired else [])
        if parts:
            self.add(finding_id, Severity.WARNING, f"{shown}: {'; '.join(parts)}.",
                     f"Keep to algorithms Azure accepts, e.g. {self.keywords(offers[0], ike=ike)}.", source, line)

    def ike_lifetime(self) -> None:
        phase1 = self.parameters.phase1
        lifetime = self.connection.ike_lifetime_seconds or self.defaults.ike_lifetime_seconds
        if not lifetime or lifetime == phase1.lifetime_seconds:
            return
        key = self.name("ike_lifetime")
        note = self.default_note(key) if not self.connection.ike_lifetime_seconds else ""
        line = self.connection.line_of("ike_lifetime_seconds")
        if lifetime > phase1.lifetime_seconds:
            self.add("ipsec.ike-lifetime", Severity.ERROR,
                     f"phase 1 lifetime {lifetime} s{note} is above Azure's fixed {phase1.lifetime_seconds} s: sites "
                     "set longer saw the tunnel drop at random (MicrosoftDocs/azure-docs#73889).",
                     f"Set {key} to {phase1.lifetime_seconds}s (8 h) or less.", phase1.source, line)
        else:
            # SA lifetimes are local and need not match (the requirements include): a shorter one rekeys sooner.
            self.add("ipsec.ike-lifetime", Severity.INFO,
                     f"phase 1 lifetime {lifetime} s{note} is below Azure's fixed {phase1.lifetime_seconds} s: this "
                     "side renews the IKE SA first, which works (SA lifetimes are local and need not match).",
                     f"Nothing needs changing; {key} = {phase1.lifetime_seconds}s matches Azure.", phase1.source, line)

    def dpd(self) -> None:
        delay, timeout = self.connection.dpd_delay_seconds, self.connection.dpd_timeout_seconds
        if not delay and not timeout:
            return  # off: nothing sent
        custom = self.parameters.custom_policy
        if custom:
            low, high = custom.dpd_timeout_min_seconds, custom.dpd_timeout_max_seconds
            for what, field, value in (("dpd_delay", "dpd_delay_seconds", delay),
                                       ("dpd_timeout", "dpd_timeout_seconds", timeout)):
                if value and not low <= value <= high:
                    key = self.name(what)
                    self.add("ipsec.dpd", Severity.WARNING,
                             f"{key} = {value} s is outside Azure's {low}-{high} s DPD range: shorter makes the tunnel "
                             "look dead on a lossy or distant path, longer leaves a dead peer undetected.",
                             f"Set {key} between 30s and 45s, Azure's advice (its default is 45 s).", custom.source,
                             self.connection.line_of(field))
        gateway = self.parameters.gateways[POLICY_BASED]
        if delay and self.context.gateway_type == POLICY_BASED and not gateway.dpd:
            self.add("ipsec.dpd", Severity.INFO,
                     f"dead peer detection is on ({self.name('dpd_delay')} = {delay} s), but Azure's policy-based "
                     "gateways do not support DPD: it gets no answer from them.",
                     "Nothing is gained by it; turn DPD off for this connection.", gateway.source,
                     self.connection.line_of("dpd_delay_seconds"))

    def nat(self) -> None:
        if self.context.behind_nat is not True:
            return  # not measured, or no NAT: nothing to say
        nat, encapsulation = self.parameters.nat, self.parameters.nat_encapsulation
        if not nat.supported:
            self.add("ipsec.nat-t", Severity.ERROR,
                     "this site is behind a NAT (measured), and the VPN device may not be: it needs an "
                     "Internet-facing IPv4 address.", "Give the VPN device a public IPv4 address, without NAT.",
                     nat.source, self.connection.line)
        elif encapsulation and encapsulation.forced and self.connection.encap is not True:
            self.add("ipsec.nat-t", Severity.WARNING,
                     f"this site is behind a NAT (measured) and forced UDP encapsulation is "
                     f"{'not set' if self.connection.encap is None else 'off'}: IKE's NAT detection normally moves ESP "
                     "into UDP 4500, but plain ESP (IP protocol 50) is not routed inside Azure, so a path where "
                     "detection fails leaves the tunnel dead (MicrosoftDocs/azure-docs#31240). Azure takes NAT-T only "
                     "from a site that initiates.",
                     f"Set {self.name('encap')}, and let this side initiate the connection.", encapsulation.source,
                     self.connection.line_of("encap"))

    def psk(self) -> None:
        strength, length = self.parameters.psk_strength, self.connection.psk_length
        if not strength or length is None or self.connection.auth not in (None, "psk") \
                or length >= strength.min_length:
            return
        charset = self.parameters.psk_charset
        allowed = "printable ASCII" + (" except " + ", ".join("space" if c == " " else c for c in charset.forbidden)
                                       if charset else "")
        self.add("ipsec.psk-weak", Severity.WARNING,
                 f"its pre-shared key is {length} characters long, under {strength.min_length}: it cannot carry the "
                 "128 bits of unpredictability of an AES-128 key, and pre-shared key authentication does not stop "
                 "offline guessing of a weak key.",
                 f"Use a random key of at least {strength.min_length} characters ({allowed}) on both sides, e.g. "
                 "the output of `openssl rand -base64 24`.", strength.source, self.connection.line_of("psk_length"))

    def esp_proposals(self, child: Child) -> None:
        """ipsec.esp-proposal (does the CHILD_SA come up) and ipsec.rekey-proposal (does it survive
        the rekey Azure initiates, which offers no PFS: libreswan/libreswan#765)."""
        proposals = self.esp_proposals_in_effect(child)
        if proposals is None:
            return
        shown = f"child {child.name!r}: {self.shown('esp_proposals', child.esp_proposals)}"
        line = self.child_line(child, "esp_proposals")
        gateways = self.gateways()
        # IKEv2's first CHILD_SA is keyed from the IKE SA: its PFS group only matters at a rekey.
        first_pfs = self.version != 2
        offers = _unique(offer for gateway in gateways for offer in gateway.child_offers)
        custom = self.custom_for(gateways)
        source = custom.source if custom else gateways[0].source

        def up_by_default(gateway: GatewayDefaults) -> bool:
            return any(_esp_takes(p, o, pfs=first_pfs) for p in proposals for o in gateway.child_offers)

        def comes_up(gateway: GatewayDefaults) -> bool:
            custom = self.custom(gateway)
            return up_by_default(gateway) or bool(custom) and any(
                _custom_takes(p, custom, ike=False, version=self.version, pfs=first_pfs) for p in proposals)

        if not any(map(comes_up, gateways)):
            paired = [p.text for p in proposals if _gcm_with_integrity(p)]
            self.add("ipsec.esp-proposal", Severity.ERROR,
                     f"{shown}: no ESP proposal Azure accepts, so the CHILD_SA (quick mode) is refused with "
                     "NO_PROPOSAL_CHOSEN" + (f" ({_listed(paired)} pairs GCM with a separate integrity algorithm; "
                                             "Azure pairs GCM encryption only with the same GCM as integrity)"
                                             if paired else "") + f". Azure's default offers: {_offers(offers)}" + (
                         f"; a custom policy may name encryption {_listed(custom.esp_encryption)}, integrity "
                         f"{_listed(custom.esp_integrity)} (with GCM, the same GCM), PFS groups "
                         f"{_listed(custom.pfs_groups)} (0: none)" if custom else "") + ".",
                     f"Add a proposal Azure offers, e.g. {self.keywords(offers[0], ike=False)}.", source, line)
            return
        self.unaccepted("ipsec.esp-proposal", _written(child.esp_proposals or ()), shown, line, source, offers,
                        custom, ike=False)
        if custom and not any(map(up_by_default, gateways)):
            self.add("ipsec.esp-proposal", Severity.INFO,
                     f"{shown}: none of Azure's documented default ESP offers ({_offers(offers)}): it works if the "
                     "Azure connection has a custom IPsec/IKE policy naming one of its combinations.",
                     f"Set such a custom IPsec/IKE policy on the Azure connection, or add "
                     f"{self.keywords(offers[0], ike=False)}.", gateways[0].source, line)
        # Only a CHILD_SA Azure's default policy takes meets its default rekey offers: with a custom
        # policy, Azure rekeys with the policy's own combination, the one this side accepted.
        failing = [g for g in gateways if up_by_default(g) and not any(
            _esp_takes(p, o) for p, o in itertools.product(proposals, g.child_initiator_offers))]
        if not failing:
            return
        gateway, every = failing[0], len(failing) == len(gateways)
        self.add("ipsec.rekey-proposal", Severity.ERROR if every else Severity.WARNING,
                 f"{shown} accepts none of the offers an Azure {gateway.kind} gateway makes when it initiates a "
                 f"rekey ({_offers(gateway.child_initiator_offers)}): the tunnel comes up and drops at Azure's first "
                 "rekey with NO_PROPOSAL_CHOSEN (libreswan/libreswan#765)"
                 + ("." if every else f", if the gateway is {gateway.kind}."),
                 "Also accept a proposal without PFS that Azure offers, e.g. "
                 f"{self.keywords(gateway.child_initiator_offers[0], ike=False)} (or give the Azure connection a "
                 "custom IPsec/IKE policy naming exactly this side's proposal).", gateway.source, line)

    def child_lifetime(self, child: Child) -> None:
        custom = self.parameters.custom_policy
        if not custom:
            return
        seconds = child.lifetime_seconds or self.defaults.child_lifetime_seconds
        if seconds and seconds < custom.child_lifetime_min_seconds:
            key = self.name("child_lifetime")
            note = self.default_note(key) if not child.lifetime_seconds else ""
            self.add("ipsec.child-lifetime", Severity.WARNING,
                     f"child {child.name!r}: quick mode (CHILD_SA) lifetime {seconds} s{note} is below Azure's minimum "
                     f"of {custom.child_lifetime_min_seconds} s.",
                     f"Set {key} to at least {custom.child_lifetime_min_seconds}s (Azure's default is 27000s).",
                     custom.source, self.child_line(child, "lifetime_seconds"))
        # 0 is "no volume limit" in every dialect.
        if child.life_bytes and child.life_bytes < custom.child_lifetime_min_bytes:
            key = self.name("child_bytes")
            self.add("ipsec.child-lifetime", Severity.WARNING,
                     f"child {child.name!r}: quick mode (CHILD_SA) volume lifetime {child.life_bytes} bytes is below "
                     f"Azure's minimum of {custom.child_lifetime_min_bytes} bytes (1,024 KB).",
                     f"Set {key} to at least {custom.child_lifetime_min_bytes} bytes, or leave it unset.",
                     custom.source, self.child_line(child, "life_bytes"))

    def traffic_selectors(self) -> None:
        selectors = self.parameters.traffic_selectors
        onprem, vnet = _networks(self.context.onprem_prefixes), _networks(self.context.vnet_prefixes)
        if not selectors or not onprem or not vnet or self.context.gateway_type is None:
            return  # any-to-any or every pair depends on what was not declared
        children = [(child, local, remote) for child in self.connection.children
                    if (local := _selectors(child.local_ts)) is not _UNJUDGED
                    and (remote := _selectors(child.remote_ts)) is not _UNJUDGED]
        if self.context.gateway_type == POLICY_BASED or self.context.policy_based_selectors is True:
            self.selector_pairs(children, onprem, vnet, selectors.source)
        else:
            self.route_based_selectors(children, onprem, vnet, selectors.source)

    def selector_pairs(self, children, onprem, vnet, source: str) -> None:
        why = "a policy-based gateway" if self.context.gateway_type == POLICY_BASED else \
            "UsePolicyBasedTrafficSelectors on the Azure connection"
        local_key, remote_key = self.name("local_ts"), self.name("remote_ts")
        needed = list(itertools.product(onprem, vnet))
        configured, seen = [], []
        for child, local, remote in children:
            line = self.child_line(child, "local_ts")
            if local is None or remote is None:
                self.add("ipsec.traffic-selectors", Severity.ERROR,
                         f"child {child.name!r}: {local_key}/{remote_key} not set, so it proposes this host's own "
                         f"address, but {why} needs every on-prem x VNet prefix pair.",
                         f"Configure one child per pair: {_pairs(needed)}.", source, line)
            elif len(local) > 1 or len(remote) > 1:
                self.add("ipsec.traffic-selectors", Severity.ERROR,
                         f"child {child.name!r}: {local_key} = {_listed(local)} and {remote_key} = "
                         f"{_listed(remote)} put several prefixes in one selector; with {why} Azure takes one prefix pair per selector and "
                         "refuses the rest with TS_UNACCEPTABLE (libreswan/libreswan#349).",
                         f"Split it into one child per pair: {_pairs(itertools.product(local, remote))}.", source, line)
                seen.extend(itertools.product(local, remote))  # said above: not missing as well
            else:
                configured.append((local[0], remote[0]))
        missing = [pair for pair in needed if pair not in configured and pair not in seen]
        broader = [pair for pair in missing if any(_covers(c, pair) for c in configured)]
        absent = [pair for pair in missing if pair not in broader]
        if absent:
            self.add("ipsec.traffic-selectors", Severity.ERROR,
                     f"with {why} every on-prem x VNet prefix pair needs its own selector, and {_pairs(absent)} "
                     f"{'has' if len(absent) == 1 else 'have'} none: that traffic does not pass "
                     "(MicrosoftDocs/azure-docs#17516).",
                     f"Add one child per missing pair ({local_key}/{remote_key}).", source, self.connection.line)
        if broader:
            # Azure proposes the exact pairs when it initiates: strongSwan narrows to them, Libreswan
            # (narrowing=no, its default) refuses them.
            narrows = self.connection.dialect != LIBRESWAN
            self.add("ipsec.traffic-selectors", Severity.WARNING if narrows else Severity.ERROR,
                     f"{_pairs(broader)} {'is' if len(broader) == 1 else 'are'} covered only by a broader selector, "
                     f"but with {why} Azure proposes each exact pair when it initiates, which "
                     + ("this side must narrow to." if narrows else "Libreswan refuses (narrowing=no, its default)."),
                     f"Configure each exact pair as its own selector: {_pairs(broader)}.", source,
                     self.connection.line)
        extra = [c for c in configured if c not in needed and not any(_covers(c, pair) for pair in needed)]
        if extra:
            self.add("ipsec.traffic-selectors", Severity.WARNING,
                     f"{_pairs(extra)} {'is' if len(extra) == 1 else 'are'} not among the declared on-prem "
                     f"({_listed(onprem)}) x VNet ({_listed(vnet)}) prefixes: Azure has no such pair.",
                     "Remove it, or declare the prefixes it carries (--onprem-prefix, --vnet-prefix) on both sides.",
                     source, self.connection.line)

    def route_based_selectors(self, children, onprem, vnet, source: str) -> None:
        local_key, remote_key = self.name("local_ts"), self.name("remote_ts")
        covered_local, covered_remote, unset = [], [], False
        for child, local, remote in children:
            line = self.child_line(child, "local_ts")
            if local is None or remote is None:
                unset = True
                self.add("ipsec.traffic-selectors", Severity.WARNING,
                         f"child {child.name!r}: {local_key}/{remote_key} not set, so it carries only traffic between "
                         f"the two gateways' own addresses, not {_listed(onprem)} <-> {_listed(vnet)}.",
                         f"Set {local_key} and {remote_key} to 0.0.0.0/0 (a route-based connection is any-to-any), or "
                         "to the exact prefixes.", source, line)
                continue
            if all(n.prefixlen == 0 for n in (*local, *remote)):
                covered_local.extend(onprem)
                covered_remote.extend(vnet)
                continue
            outside = [n for n in local if not _within(n, onprem)] + [n for n in remote if not _within(n, vnet)]
            if outside:
                self.add("ipsec.traffic-selectors", Severity.WARNING,
                         f"child {child.name!r}: {_listed(outside)} in its selectors lies outside the declared on-prem "
                         f"({_listed(onprem)}) and VNet ({_listed(vnet)}) prefixes: traffic there has no way back "
                         "through Azure.", "Use any-to-any (0.0.0.0/0 both ways) or the exact prefixes.", source, line)
            covered_local.extend(local)
            covered_remote.extend(remote)
        missing = [n for n in onprem if not _within(n, covered_local)] + \
            [n for n in vnet if not _within(n, covered_remote)]
        if children and missing and not unset:  # an unset selector said it already
            self.add("ipsec.traffic-selectors", Severity.WARNING,
                     f"no selector carries {_listed(missing)}: its traffic does not enter the tunnel.",
                     f"Use any-to-any ({local_key} and {remote_key} 0.0.0.0/0), which a route-based connection takes, "
                     "or add the prefixes.", source, self.connection.line)


# -- small helpers ------------------------------------------------------------------------------

_UNJUDGED = object()  # a selector this module does not read (a range, a port restriction)


def _written(proposals: Iterable[Proposal]) -> list[Proposal]:
    """The proposals the user wrote, without the implementation's defaults the readers add."""
    return [proposal for proposal in proposals if proposal.text != DEFAULT_TEXT]


def _offers(offers: Iterable[Offer], ike: bool = False) -> str:
    """Azure's offers, each encryption/integrity once with its groups: "aes256/sha1 (PFS none, 1, 14)"."""
    groups: dict[str, list[str]] = {}
    for offer in offers:
        suite = offer.encryption if offer.integrity is None else f"{offer.encryption}/{offer.integrity}"
        groups.setdefault(suite, [])
        if offer.group is not None:
            groups[suite].append("none" if offer.group == NO_PFS else str(offer.group))
    label = "DH" if ike else "PFS"
    return ", ".join(f"{suite} ({label} {', '.join(named)})" if named else suite for suite, named in groups.items())


def _listed(items: Iterable[object]) -> str:
    return ", ".join(map(str, items))


def _unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))


def _address_or_text(written: str) -> object:
    try:
        return ipaddress.ip_address(written)
    except ValueError:
        return written


def _networks(prefixes: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(prefix, strict=False) for prefix in prefixes]


def _selectors(written: tuple[str, ...] | None):
    """Networks of a selector list; None: the host's own address (the default, or `dynamic`)."""
    if written is None or set(written) <= _HOST_SELECTOR:
        return None
    try:
        return _networks(written)
    except ValueError:
        return _UNJUDGED


def _within(network, prefixes) -> bool:
    return any(network.version == prefix.version and network.subnet_of(prefix) for prefix in prefixes)


def _covers(broad: tuple, pair: tuple) -> bool:
    return all(a.version == b.version and a.subnet_of(b) for a, b in zip(pair, broad))


def _pairs(pairs: Iterable[tuple]) -> str:
    return ", ".join(f"{local} <-> {remote}" for local, remote in pairs)


# The model's group numbers as strongSwan names them, for fixes ("aes256-sha256-modp1024").
_GROUP_KEYWORDS = {1: "modp768", 2: "modp1024", 5: "modp1536", 14: "modp2048", 15: "modp3072", 16: "modp4096",
                   19: "ecp256", 20: "ecp384", 21: "ecp521", 24: "modp2048s256", 31: "curve25519"}


def strongswan_keywords(offer: Offer, ike: bool) -> str:
    """An Azure offer as a strongSwan proposal ("aes256-sha1-modp1024", "aes256gcm16")."""
    parts = [offer.encryption] + ([offer.integrity] if offer.integrity else ["prfsha256"] if ike else [])
    if offer.group not in (None, NO_PFS):
        parts.append(_GROUP_KEYWORDS[offer.group])
    return "-".join(parts)


# Libreswan's names (ipsec.conf(5), algparse): AES-GCM is aes_gcm, SHA-2 is sha2_N, groups are dhN/modpN.
_LIBRESWAN_ENCRYPTION = {"aes128gcm16": "aes_gcm128", "aes192gcm16": "aes_gcm192", "aes256gcm16": "aes_gcm256"}
_LIBRESWAN_INTEGRITY = {"sha256": "sha2_256", "sha384": "sha2_384", "sha512": "sha2_512"}
# Libreswan 4 is built without DH groups 1, 2 and 5 (algparse: "IKE DH algorithm 'modp1024' is not supported").
_LIBRESWAN_NO_GROUPS = {1, 2, 5}


def libreswan_keywords(offer: Offer, ike: bool) -> str:
    """An Azure offer as a Libreswan ike= or esp= line ("ike=aes256-sha2_256;modp2048", "esp=aes_gcm256-null
    with pfs=no"); where Libreswan lacks the offer's group, what to do instead."""
    encryption = _LIBRESWAN_ENCRYPTION.get(offer.encryption, offer.encryption)
    integrity = _LIBRESWAN_INTEGRITY.get(offer.integrity or "", offer.integrity) or ("null" if not ike else "sha2_256")
    if not ike:
        pfs = "pfs=no" if offer.group in (None, NO_PFS) else f"pfs=yes with the IKE SA's {_GROUP_KEYWORDS[offer.group]}"
        return f"esp={encryption}-{integrity} with {pfs}"
    if offer.group in _LIBRESWAN_NO_GROUPS:
        return (f"ike={encryption}-{integrity};modp2048 with a custom IPsec/IKE policy on the Azure connection "
                f"naming DHGroup14 (Libreswan has no DH group {offer.group}, Azure's default)")
    return f"ike={encryption}-{integrity};{_GROUP_KEYWORDS[offer.group]}" if offer.group not in (None, NO_PFS) \
        else f"ike={encryption}-{integrity}"
