"""One audit: read the site's IPsec, firewall and BGP configuration (the files named, else the
host's own), judge each against the rule set's Azure parameters, and return the findings with a
parse status per input. The measured facts of a run, when there are some, sharpen the judgement
(NAT detected, what the probes saw): an audit without them judges what the files say alone."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.audit.findings import Evidence, Finding, ParseState, ParseStatus, Severity
from agent.audit.firewall import judge_firewall, read_host_firewall, read_iptables_save, read_nft_json
from agent.audit.ipsec.ipsec_conf import read_host_ipsec, read_ipsec_conf
from agent.audit.ipsec.model import Connection
from agent.audit.ipsec.rules import IpsecContext, judge_ipsec
from agent.audit.ipsec.swanctl import read_swanctl
from agent.audit.mtu import interface_mtus, judge_mtu
from agent.audit.routing import RoutingContext, judge_routing, onprem_prefixes, read_bgp_speaker, read_ip_forward
from agent.config import AuditSettings, Settings
from agent.verdicts import RuleSet
from checks.transport.addressing import is_ipv4_literal, source_address_toward
from agent.text import bounded

# Where a host keeps the BGP daemons' configuration (Debian's packages).
BGP_CONFIGS = ((Path("/etc/frr/frr.conf"), "frr"), (Path("/etc/bird/bird.conf"), "bird"))
SEVERITY_ORDER = (Severity.ERROR, Severity.WARNING, Severity.INFO)
MAX_FIREWALL_BYTES = 32 << 20  # the readers bound what they parse; this bounds what is read for them


@dataclass(frozen=True)
class AuditReport:
    findings: tuple[Finding, ...]
    inputs: tuple[ParseStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"findings": [finding.to_dict() for finding in self.findings],
                "inputs": [status.to_dict() for status in self.inputs]}

    def worst(self) -> Severity | None:
        return next((severity for severity in SEVERITY_ORDER if any(f.severity is severity for f in self.findings)),
                    None)


def audit(settings: Settings, ruleset: RuleSet, facts: Mapping[str, Any] | None = None) -> AuditReport:
    """Findings cite their source as the rule set does (its [sources] entry, not its key).

    What this host says (its addresses, interfaces, forwarding, its route toward the gateways) is
    used only for the host's own configuration: files named with --firewall may come from another
    machine, and rules that depend on what is not known of it are then judged unknown."""
    parameters, declared = ruleset.audit, settings.audit
    facts = facts or {}
    statuses: list[ParseStatus] = []
    connections, read = _ipsec(declared)
    statuses += read
    rulesets, read = _firewalls(declared)
    statuses += read
    speakers = []
    for path, kind in BGP_CONFIGS:
        if path.exists():
            speaker, status = read_bgp_speaker(path, kind)
            statuses.append(status)
            speakers += [speaker] if speaker else []

    nat, public = facts.get("nat") or {}, facts.get("public_ipv4") or {}
    own_host = not declared.firewall
    ip_forward = read_ip_forward() if own_host else None
    # The gateways: as declared (names resolved, as the probes resolve them), else the remote
    # addresses the IPsec connections name.
    gateways = _resolved(settings.gateway) or _remote_addresses(connections)
    context = IpsecContext(gateways=gateways, gateway_type=declared.gateway_type,
                           policy_based_selectors=declared.policy_based_selectors,
                           onprem_prefixes=tuple(map(str, declared.onprem_prefixes)),
                           vnet_prefixes=tuple(map(str, declared.vnet_prefixes)), behind_nat=nat.get("detected"))
    findings = _parse_findings(statuses)
    findings += judge_ipsec(connections, parameters, context)
    source = (nat.get("local_address") or _source_toward(gateways)) if own_host else None
    firewall = judge_firewall(rulesets, gateways, source, facts.get("reachability"),
                              forwards=declared.routes_vpn_device is True, wan_interface=_interface_of(source))
    if not gateways and rulesets:
        firewall.append(Finding("firewall.no-gateway", Severity.INFO, "s2s",
                                "the firewall was read but not judged: no gateway was given (--gateway), and no IPsec "
                                "connection names one", "name the Azure gateway's public address with --gateway",
                                "vpn-devices", Evidence(rulesets[0].file)))
    findings += judge_mtu(firewall, interface_mtus() if own_host else {}, (facts.get("path_mtu") or {}).get("bytes"),
                          ruleset.limits)
    # This host must forward if it is told it routes for the device, or if its own tunnels carry a subnet.
    needs_forwarding = declared.routes_vpn_device is True or (
        own_host and not declared.ipsec_config and any(_carries_subnet(c) for c in connections))
    selectors = [(prefix, Evidence(c.file, c.line_of(f"children.{child.name}.local_ts")))
                 for c in connections for child in c.children for prefix in (child.local_ts or ())]
    findings += judge_routing(RoutingContext(
        needs_forwarding=needs_forwarding, ip_forward=ip_forward, asn=declared.asn,
        bgp_peer_address=declared.bgp_peer_address, speakers=tuple(speakers),
        public_address=public.get("site_address"), onprem_prefixes=onprem_prefixes(declared.onprem_prefixes, selectors),
        vnet_prefixes=declared.vnet_prefixes, expressroute_subnets=declared.expressroute_peering_subnets,
        plan=declared.plan, gateway_type=declared.gateway_type, gateway_sku=declared.gateway_sku), parameters)
    findings.sort(key=lambda f: (SEVERITY_ORDER.index(f.severity), f.option, f.id))
    cited = tuple(dataclasses.replace(f, source=_citation(ruleset, f)) for f in findings)
    return AuditReport(cited, tuple(statuses))


def _carries_subnet(connection: Connection) -> bool:
    """A tunnel whose local side is a network, not this host alone: its packets are forwarded."""
    for child in connection.children:
        for prefix in child.local_ts or ():
            try:
                if ipaddress.IPv4Network(prefix, strict=False).prefixlen < 32:
                    return True
            except ValueError:
                continue
    return False


def _remote_addresses(connections: list[Connection]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for connection in connections:
        for address in connection.remote_addrs or ():
            try:
                found[str(ipaddress.IPv4Address(address))] = None
            except ValueError:
                continue  # %any, a name, a range: not one gateway's address
    return tuple(found)


# A name that does not resolve within this leaves the connection judged against the name alone.
RESOLVE_SECONDS = 3.0


def _resolved(gateways: tuple[str, ...]) -> tuple[str, ...]:
    """Each gateway as an address, a name replaced by its IPv4 addresses (kept as given when it does
    not resolve in time): connections name their peer by address."""
    import concurrent.futures

    out: dict[str, None] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        lookups = {gateway: pool.submit(socket.getaddrinfo, gateway, None, socket.AF_INET, socket.SOCK_DGRAM)
                   for gateway in gateways if not is_ipv4_literal(gateway)}
        for gateway in gateways:
            if gateway not in lookups:
                out[gateway] = None
                continue
            try:
                out.update(dict.fromkeys(info[4][0] for info in lookups[gateway].result(timeout=RESOLVE_SECONDS)))
            except (OSError, UnicodeError, concurrent.futures.TimeoutError):
                out[gateway] = None
    return tuple(out)


def _citation(ruleset: RuleSet, finding: Finding) -> str:
    if finding.source not in ruleset.sources:  # a packaging bug: tests/test_audit.py runs every finding
        raise KeyError(f"finding {finding.id} cites {finding.source!r}, which rule set {ruleset.name} does not list")
    return ruleset.sources[finding.source]


def _ipsec(declared: AuditSettings):
    if not declared.ipsec_config:
        return read_host_ipsec()
    connections, statuses = [], []
    for path in declared.ipsec_config:
        found, read = (read_swanctl if _is_swanctl(path) else read_ipsec_conf)(str(path))
        connections += found
        statuses += read
    return connections, statuses


def _is_swanctl(path: Path) -> bool:
    """swanctl.conf by name, or by its `connections {` section; anything else is an ipsec.conf."""
    if path.name.endswith("swanctl.conf") or "swanctl" in path.parts:
        return True
    if not path.is_file():
        return False  # the reader says what it is; reading a FIFO here would wait for a writer
    try:
        with path.open("rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return False  # the reader says why it cannot read it
    return any(line.strip().startswith(b"connections") and b"{" in line for line in head.splitlines())


def _firewalls(declared: AuditSettings):
    if not declared.firewall:
        return read_host_firewall()
    rulesets, statuses = [], []
    for path in declared.firewall:
        if path.exists() and not path.is_file():  # a FIFO would be read without end
            statuses.append(ParseStatus(str(path), "firewall", ParseState.FAILED, "not a regular file"))
            continue
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_FIREWALL_BYTES + 1)
        except OSError as exc:
            statuses.append(ParseStatus(str(path), "firewall", ParseState.FAILED, f"cannot read: {exc.strerror or exc}"))
            continue
        reader = read_nft_json if data.lstrip()[:1] in (b"{", b"[") else read_iptables_save
        ruleset, status = reader(data, str(path))
        statuses.append(status)
        rulesets += [ruleset] if ruleset is not None else []
    return rulesets, statuses


def _parse_findings(statuses: list[ParseStatus]) -> list[Finding]:
    """A file not (fully) understood is a finding too: what it holds is then judged as unknown."""
    findings = []
    for status in statuses:
        if status.status is ParseState.FAILED:
            findings.append(Finding("parse.failed", Severity.WARNING, "site",
                                    f"{status.kind} {status.file} could not be read: {bounded(status.detail, 300)}; "
                                    "nothing in it was judged", "fix the file, or name the right one",
                                    "reading-parse", Evidence(status.file)))
        elif status.status is ParseState.PARTIALLY_UNRECOGNIZED:
            first = status.unrecognized[0] if status.unrecognized else None
            findings.append(Finding("parse.partial", Severity.INFO, "site",
                                    f"{status.kind} {status.file}: {len(status.unrecognized)} statement(s) not understood "
                                    "(listed in the inputs); what they decide is judged unknown",
                                    "check those lines by hand", "reading-parse",
                                    Evidence(status.file, first.line if first else None)))
    return findings


def _interface_of(address: str | None) -> str | None:
    """The interface that holds `address` (the source toward the gateways is the route's): rules that
    match on the output interface are then judged, not left unknown."""
    if address is None:
        return None
    import psutil

    return next((name for name, addresses in psutil.net_if_addrs().items()
                 if any(a.family == socket.AF_INET and a.address == address for a in addresses)), None)


def _source_toward(gateways: tuple[str, ...]) -> str | None:
    """This host's address toward the first gateway given as an address, as the kernel's routing
    picks it; None when there is no route or no address."""
    first = next((gateway for gateway in gateways if is_ipv4_literal(gateway)), None)
    return source_address_toward(first, 500) if first else None
