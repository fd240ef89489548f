"""The routing side of a site: forwarding on the VPN device, its BGP speaker (ASN and peer
address, declared or read from FRR or BIRD), prefixes that overlap the virtual network or the
ExpressRoute peering subnets, and the plan of options against the rule set's coexistence rules."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.audit.findings import Evidence, Finding, ParseState, ParseStatus, Severity, Unrecognized
from agent.audit.parameters import AzureParameters
from agent.audit.sources import SourceError, Sources
from checks.transport.addressing import is_ipv4_literal

Network = ipaddress.IPv4Network
_LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")  # APIPA
BGP_SOURCE = "bgp-faq"


@dataclass(frozen=True)
class BgpSpeaker:
    """What a BGP daemon's configuration says about the session to Azure."""

    file: str
    asns: tuple[tuple[int, int], ...]  # every instance's ASN (FRR: one per `router bgp`, VRFs too), with its line
    # Addresses the speaker uses toward its neighbours (FRR `update-source`, BIRD `local ADDRESS`), with lines.
    peer_addresses: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class RoutingContext:
    """What the user declared and what this host says (None: not known, then nothing is judged)."""

    needs_forwarding: bool = False  # this host routes the site's traffic into or toward the tunnel
    ip_forward: bool | None = None  # net.ipv4.ip_forward of this host
    ip_forward_source: str = "/proc/sys/net/ipv4/ip_forward"
    asn: int | None = None  # --asn
    bgp_peer_address: str | None = None  # --bgp-peer-address
    speakers: tuple[BgpSpeaker, ...] = ()
    public_address: str | None = None  # facts.public_ipv4.site_address
    onprem_prefixes: tuple[tuple[Network, Evidence], ...] = ()  # each with where it came from
    vnet_prefixes: tuple[Network, ...] = ()
    expressroute_subnets: tuple[Network, ...] = ()
    plan: tuple[str, ...] = ()  # p2s, s2s, expressroute
    gateway_type: str | None = None  # route-based, policy-based
    gateway_sku: str | None = None  # Basic, VpnGw1, ...


def read_ip_forward(path: Path = Path("/proc/sys/net/ipv4/ip_forward")) -> bool | None:
    try:
        return path.read_text().strip() == "1"
    except OSError:
        return None


# ---------------------------------------------------------------- FRR and BIRD

# `router bgp ASN [vrf NAME]`, ASN plain or asdot (FRR's `as-notation dot`: HIGH.LOW).
_FRR_ROUTER = re.compile(r"^\s*router\s+bgp\s+(\d+)(?:\.(\d+))?(?:\s|$)")
_FRR_SOURCE = re.compile(r"^\s*neighbor\s+\S+\s+update-source\s+(\d+\.\d+\.\d+\.\d+)\s*$")
_BIRD_LOCAL = re.compile(r"^\s*local\s+(?:(\d+\.\d+\.\d+\.\d+)\s+)?as\s+(\d+)\s*;")


def read_bgp_speaker(path: Path, kind: str) -> tuple[BgpSpeaker | None, ParseStatus]:
    """The ASN and source addresses of an FRR (`frr.conf`) or BIRD (`bird.conf`) configuration.
    Only the lines that name them are read: the rest of a routing daemon's configuration is not
    ours to judge, so nothing else is reported as unrecognized."""
    try:
        source = Sources().read(str(path))
    except SourceError as exc:
        return None, ParseStatus(str(path), kind, ParseState.FAILED, str(exc))
    status = ParseStatus(str(path), kind, ParseState.PARSED, source.note)
    text = "\n".join(source.lines)
    asns: list[tuple[int, int]] = []
    addresses: list[tuple[str, int]] = []
    unrecognized: list[Unrecognized] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("!" if kind == "frr" else "#", 1)[0]
        if kind == "frr":
            if match := _FRR_ROUTER.match(line):
                high, low = match.groups()
                asn = int(high) * 65536 + int(low) if low is not None else int(high)
                if (low is not None and (int(high) > 65535 or int(low) > 65535)) or not 0 <= asn < 2**32:
                    unrecognized.append(Unrecognized(number, line.strip()))
                else:
                    asns.append((asn, number))
            elif match := _FRR_SOURCE.match(line):
                addresses.append((match.group(1), number))
        elif match := _BIRD_LOCAL.match(line):
            if 0 <= int(match.group(2)) < 2**32:
                asns.append((int(match.group(2)), number))
            if match.group(1):
                addresses.append((match.group(1), number))
    # FRR takes a word that is no address as an interface name: only addresses are peer addresses.
    addresses = [(address, number) for address, number in addresses if is_ipv4_literal(address)]
    if unrecognized:
        status = ParseStatus(str(path), kind, ParseState.PARTIALLY_UNRECOGNIZED, "an AS number out of range",
                             tuple(unrecognized))
    return BgpSpeaker(str(path), tuple(asns), tuple(addresses)), status



# ---------------------------------------------------------------- judging

def judge_routing(context: RoutingContext, parameters: AzureParameters) -> list[Finding]:
    findings: list[Finding] = []
    findings += _forwarding(context)
    findings += _bgp(context, parameters)
    findings += _overlaps(context)
    findings += _plan(context, parameters)
    return findings


def _forwarding(context: RoutingContext) -> list[Finding]:
    if not context.needs_forwarding or context.ip_forward is not False:
        return []
    return [Finding("routing.ip-forward", Severity.ERROR, "s2s",
                    "this host carries the site's traffic (its tunnels' local side is a network, or it is declared "
                    "to route for the VPN device: --routes-vpn-device) but does not forward IPv4 "
                    "(net.ipv4.ip_forward = 0): the tunnel would come up and carry nothing for the site",
                    "set net.ipv4.ip_forward = 1 (in /etc/sysctl.d/, then `sysctl --system`)",
                    "vpn-devices", Evidence(context.ip_forward_source))]


def _asns(context: RoutingContext) -> list[tuple[int, Evidence]]:
    found = [(context.asn, Evidence("--asn"))] if context.asn is not None else []
    found += [(asn, Evidence(s.file, line)) for s in context.speakers for asn, line in s.asns]
    return found


def _bgp(context: RoutingContext, parameters: AzureParameters) -> list[Finding]:
    findings = []
    for asn, evidence in _asns(context):
        reserved = parameters.reserved_asn(asn)
        if reserved is not None:
            span = str(reserved.first) if reserved.first == reserved.last else f"{reserved.first}-{reserved.last}"
            findings.append(Finding(
                "bgp.asn-reserved", Severity.ERROR, "s2s",
                f"the site's BGP ASN {asn} is reserved ({span}): Azure refuses it for a local network gateway",
                "use a private ASN that Azure does not reserve (64512-65514 or 65521-65534, or a 4-byte private one)",
                reserved.source, evidence))
    peers = [(context.bgp_peer_address, Evidence("--bgp-peer-address"))] if context.bgp_peer_address else []
    peers += [(address, Evidence(s.file, line)) for s in context.speakers for address, line in s.peer_addresses]
    for address, evidence in peers:
        apipa = parameters.bgp_apipa
        if context.public_address and address == context.public_address:
            findings.append(Finding(
                "bgp.peer-address", Severity.ERROR, "s2s",
                f"the BGP peer address {address} is the device's public address: Azure needs a different one",
                "give the BGP speaker an address of its own (a loopback or tunnel address) and enter it, as a /32, in "
                "the local network gateway", BGP_SOURCE, evidence))
        elif apipa and ipaddress.IPv4Address(address) in _LINK_LOCAL and ipaddress.IPv4Address(address) not in apipa:
            span = f"{apipa.first}-{apipa.last}"
            findings.append(Finding(
                "bgp.peer-address", Severity.ERROR, "s2s",
                f"the BGP peer address {address} is an APIPA address outside the range Azure accepts ({span})",
                f"pick an address in {span}", apipa.source, evidence))
    return findings


def _overlaps(context: RoutingContext) -> list[Finding]:
    findings = []
    for onprem, where in context.onprem_prefixes:
        for vnet in context.vnet_prefixes:
            if onprem.overlaps(vnet):
                findings.append(Finding(
                    "overlap.vnet", Severity.ERROR, "site",
                    f"the on-premises prefix {onprem} ({_shown(where)}) overlaps the virtual network's {vnet}: "
                    f"traffic for the overlap cannot be routed to both sides",
                    "renumber one side, or leave the overlapping range out of the virtual network's address space",
                    "vpn-devices", where))
    for subnet in context.expressroute_subnets:
        if subnet.prefixlen not in (29, 30):
            findings.append(Finding(
                "overlap.expressroute", Severity.ERROR, "expressroute_nsp",
                f"the ExpressRoute peering subnet {subnet} is a /{subnet.prefixlen}: a peering takes a /29 or two /30s",
                "give a /29 (or two /30s, one per BGP session)", "er-routing", Evidence("--er-peering-subnet")))
        for other, where in [*context.onprem_prefixes, *((v, Evidence("--vnet-prefix")) for v in context.vnet_prefixes)]:
            if subnet.overlaps(other):
                findings.append(Finding(
                    "overlap.expressroute", Severity.ERROR, "expressroute_nsp",
                    f"the ExpressRoute peering subnet {subnet} overlaps {other} ({_shown(where)})",
                    "take the peering subnets from space used nowhere else", "er-routing",
                    Evidence("--er-peering-subnet")))
    return findings


def _plan(context: RoutingContext, parameters: AzureParameters) -> list[Finding]:
    rules, plan = parameters.coexistence, set(context.plan)
    if rules is None:
        return []
    findings = []
    if {"p2s", "expressroute"} <= plan and not rules.p2s_with_expressroute:
        findings.append(Finding(
            "plan.coexistence", Severity.ERROR, "p2s",
            "the plan puts Point-to-Site beside ExpressRoute on one virtual network, which this rule set forbids",
            "drop one of them from the plan, or judge it with the current rule set (--ruleset azure-current), under "
            "which they coexist", rules.source, Evidence("--plan")))
    if {"s2s", "expressroute"} <= plan:
        types, excluded = rules.s2s_with_expressroute_gateway_types or (), rules.s2s_with_expressroute_excluded_skus or ()
        problems = []
        if types and context.gateway_type and context.gateway_type not in types:
            problems.append(f"the gateway is {context.gateway_type}")
        if context.gateway_sku in excluded:
            problems.append(f"the gateway SKU is {context.gateway_sku}")
        if problems:
            findings.append(Finding(
                "plan.coexistence", Severity.ERROR, "s2s",
                f"Site-to-Site beside ExpressRoute needs a {' or '.join(types)} gateway, not "
                f"{' or '.join(excluded)}, but {' and '.join(problems)}",
                "plan a route-based gateway of VpnGw1 or larger (and a GatewaySubnet of /27 or larger)",
                rules.source, Evidence("--plan")))
    return findings


def _shown(evidence: Evidence) -> str:
    return evidence.file + (f":{evidence.line}" if evidence.line is not None else "")


def onprem_prefixes(declared: Iterable[Network],
                    selectors: Sequence[tuple[str, Evidence]] = ()) -> tuple[tuple[Network, Evidence], ...]:
    """The site's prefixes with where each came from: --onprem-prefix, then the IPsec connections'
    local traffic selectors, any-to-any left out (0.0.0.0/0 overlaps everything)."""
    found: dict[Network, Evidence] = {network: Evidence("--onprem-prefix") for network in declared}
    for text, where in selectors:
        try:
            network = ipaddress.IPv4Network(text, strict=False)
        except ValueError:
            continue  # IPv6 or a name: not an IPv4 prefix to compare
        if network.prefixlen and network not in found:
            found[network] = where
    return tuple(found.items())

