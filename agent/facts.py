"""Facts: what the checks measured, reduced to the values the verdict rules read.

Derived here and only here, from the checks' typed evidence (one `CheckRun` per check). Three
states throughout: None means "not measured", never "no".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from checks.contract import CheckRun, Reason, TargetResult, evidence_dict
from checks.probes.ike_handshake import IkeEvidence
from checks.probes.interfaces import InterfacesEvidence
from checks.probes.nat_behavior import NatBehaviorEvidence
from checks.probes.stun_binding import BindingEvidence
from checks.transport.addressing import AddressClass, is_cgnat
from checks.transport.rtt import PathRoundTrips, RoundTrips

Runs = Mapping[str, CheckRun]

# Checks that probe the gateways, each reduced to {reachable, reason, gateways} in facts.reachability,
# with what each probes as a person would name it.
REACHABILITY_CHECKS = {"ike_udp500": "IKEv2 on UDP 500", "ike_natt_udp4500": "IKEv2 NAT-T on UDP 4500",
                       "ikev1_udp500": "IKEv1 on UDP 500", "esp": "ESP (IP protocol 50)", "tls_tcp443": "TLS on TCP 443",
                       "sstp": "SSTP on TCP 443", "gateway_health": "health probe on TCP 8081"}
IPV4_TCP_HEADERS_BYTES = 40  # MSS = packet size - IPv4 header (20) - TCP header (20)


def _results(runs: Runs, name: str) -> list[TargetResult]:
    run = runs.get(name)
    return list(run.results) if run else []


def _evidence(runs: Runs, name: str) -> list[Any]:
    """The evidence of every target of `name` that has some, in target order."""
    return [result.evidence for result in _results(runs, name) if result.evidence is not None]


def _interfaces(runs: Runs) -> InterfacesEvidence | None:
    found = _evidence(runs, "interfaces")
    return found[0] if found else None


def _answered(runs: Runs) -> list[BindingEvidence]:
    return [e for e in _evidence(runs, "stun_binding") if e.result is Reason.SUCCESS]


def public_ipv4(runs: Runs) -> dict[str, Any]:
    interfaces = _interfaces(runs)
    addresses = [a for iface in (interfaces.interfaces if interfaces else ()) for a in iface.addresses
                 if a.family == "ipv4"]
    public = [a.address for a in addresses if a.address_class is AddressClass.PUBLIC]
    local = {a.address for a in addresses}
    # An address the STUN server sees unchanged is Internet-facing whatever its class.
    seen_unchanged = [s.mapped_address for s in _answered(runs) if s.mapped_address in local]
    return {
        "present": (bool(public) or bool(seen_unchanged)) if interfaces and interfaces.interfaces else None,
        "addresses": sorted(set(public) | set(seen_unchanged)),
    }


# Any of these came back from the server's side: UDP reaches it.
_UDP_PASSES = {Reason.SUCCESS, Reason.INVALID_RESPONSE, Reason.PEER_ERROR}
# Every server silent, or a filter on the way said no: UDP does not get out.
_UDP_STOPPED = {Reason.NO_RESPONSE, Reason.PROHIBITED}


def _udp_kind(server: BindingEvidence) -> Reason:
    """ICMP port unreachable from the server's own host proves the datagram got there (nothing
    listened); from anyone else (a router's REJECT) it is a filter's refusal."""
    if server.result is Reason.PORT_UNREACHABLE:
        reached = server.address is not None and server.icmp_from == server.address.rsplit(":", 1)[0]
        return Reason.SUCCESS if reached else Reason.PROHIBITED
    return server.result


def _udp_blocked(sent: Sequence[BindingEvidence]) -> bool | None:
    """Blocked needs every server we sent to to stay silent (or a filter to refuse); anything that
    came back from a server's side, even a bad answer, proves UDP passes. A local send error
    proves neither."""
    kinds = {_udp_kind(s) for s in sent}
    if kinds & _UDP_PASSES:
        return False
    if kinds and kinds <= _UDP_STOPPED:
        return True
    return None


def mapping_varies(answered: Sequence[BindingEvidence]) -> bool | None:
    """Whether servers at different IP addresses saw different mappings of one local port (RFC 4787
    §4.1); None with fewer than two."""
    seen = {s.address.rsplit(":", 1)[0]: (s.mapped_address, s.mapped_port) for s in answered if s.address}
    if len(seen) < 2:
        return None
    return len(set(seen.values())) > 1


def _behaviour(runs: Runs, part: str) -> str | None:
    """The first server's decided mapping or filtering behaviour (servers in the order given)."""
    for evidence in _evidence(runs, "nat_behavior"):
        discovery = getattr(evidence, part) if isinstance(evidence, NatBehaviorEvidence) else None
        if discovery is not None and discovery.behavior is not None:
            return discovery.behavior
    return None


def nat(runs: Runs) -> dict[str, Any]:
    answered = _answered(runs)
    sent = [s for s in _evidence(runs, "stun_binding") if s.result is not Reason.RESOLVE_FAILED]
    first = answered[0] if answered else None
    # Only addresses on the path count: an overlay such as Tailscale also numbers its
    # interface from 100.64/10 without any carrier NAT. A carrier NAT beyond a home router
    # that shows neither address cannot be seen from here, so False means "not detected".
    on_path = [s.local_address for s in sent if s.local_address] + [s.mapped_address for s in answered]
    if any(is_cgnat(address) for address in on_path):
        cgnat: bool | None = True
    else:
        cgnat = False if answered else None
    return {
        "detected": any(s.nat_detected for s in answered) if answered else None,
        "reflexive_address": first.mapped_address if first else None,
        "reflexive_port": first.mapped_port if first else None,
        "local_address": first.local_address if first else None,
        "local_port": first.local_port if first else None,
        "mapping": _behaviour(runs, "mapping"),
        "filtering": _behaviour(runs, "filtering"),
        "mapping_varies_by_destination": mapping_varies(answered),
        "cgnat": cgnat,
        "udp_blocked": _udp_blocked(sent),
        # A second, independent NAT signal: the gateway's NAT_DETECTION hashes (RFC 7296 §2.23).
        "ike_detected": ike_nat_detected(runs),
    }


def _any_true(values: Iterable[bool | None]) -> bool | None:
    """True if one is True, False if none is but one is False, else not known."""
    seen = list(values)
    if True in seen:
        return True
    return False if False in seen else None


def ike_nat_detected(runs: Runs) -> bool | None:
    evidence: list[IkeEvidence] = _evidence(runs, "ike_udp500") + _evidence(runs, "ike_natt_udp4500")
    return _any_true(e.nat_detected for e in evidence)


def _stages(runs: Runs) -> list[Any]:
    return [stage for evidence in _evidence(runs, "throughput") for stage in evidence.stages]


def throughput(runs: Runs) -> dict[str, Any]:
    """The best complete stage per direction; a failed stage's partial figures stay in `stages` only."""
    stages = _stages(runs)

    def best(direction: str) -> Any:
        complete = [s for s in stages if s.direction == direction and s.ok and s.bits_per_second is not None]
        return max(complete, key=lambda s: s.bits_per_second, default=None)

    upload, download = best("upload"), best("download")
    measured = [stage for stage in (upload, download) if stage is not None]
    limited = [s.cpu_limited for s in stages if s.ok]
    headline = upload or download
    return {
        "upload_bits_per_second": upload.bits_per_second if upload else None,
        "download_bits_per_second": download.bits_per_second if download else None,
        # A link is as fast as its slower direction; one measured direction already bounds it.
        "path_bits_per_second": min(s.bits_per_second for s in measured) if measured else None,
        "both_directions": bool(upload and download) if measured else None,
        "streams": headline.streams if headline else None,
        "duration_seconds": headline.duration_seconds if headline else None,
        "retransmits": headline.retransmits if headline else None,
        "cpu_limited": True if True in limited else (False if limited and None not in limited else None),
        "stages": [{key: getattr(s, key) for key in ("direction", "streams", "ok", "partial", "bits_per_second",
                                                     "duration_seconds", "retransmits", "cpu_limited")}
                   | {"failure": evidence_dict(s.failure)} for s in stages],
    }


_RTT_KEYS = ("rtt_p50_seconds", "rtt_p90_seconds", "rtt_p99_seconds", "jitter_seconds", "loss_ratio")


def _figures(measured: PathRoundTrips | None) -> dict[str, Any]:
    def of(trips: RoundTrips | None) -> dict[str, Any]:
        return {key: getattr(trips, key) if trips else None for key in _RTT_KEYS}

    return of(measured.tcp if measured else None) | {"udp": of(measured.udp if measured else None)}


def latency(runs: Runs) -> dict[str, Any]:
    """TCP connect round trips (AzureCT's measure) idle and under the heaviest upload; UDP beside them."""
    idle = next((r.evidence for r in _results(runs, "latency") if r.succeeded), None)
    uploads = [s for s in _stages(runs) if s.direction == "upload" and s.ok]
    loaded = max(uploads, key=lambda s: s.streams).latency_under_load if uploads else None
    return _figures(idle) | {"under_load": _figures(loaded)}


def _reachable(states: Sequence[bool | None]) -> bool | None:
    """Over every gateway: False if one is unreachable, True if all are, else not known."""
    if False in states:
        return False
    if states and all(state is True for state in states):
        return True
    return None


def reachability(runs: Runs) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for name in REACHABILITY_CHECKS:
        run = runs.get(name)
        gateways = [{"gateway": r.target.name, "reachable": r.evidence.reachable if r.evidence else None,
                     "reason": str(r.reason), "detail": r.detail} for r in _results(runs, name)]
        facts[name] = {
            "reachable": _reachable([g["reachable"] for g in gateways]),
            "reason": f"{run.reason}: {run.detail}" if run else "not run",
            "gateways": gateways,
        }
    return facts


def tls_interception(runs: Runs) -> bool | None:
    """A middlebox re-signing TLS toward any gateway (it breaks SSTP); None when not measured."""
    return _any_true(e.exchange.interception_suspected for e in _evidence(runs, "tls_tcp443") if e.exchange)


def path_mtu(runs: Runs) -> dict[str, Any]:
    """The narrowest path toward the gateways decides what a tunnel can carry."""
    sizes = [e.path_mtu_bytes for e in _evidence(runs, "path_mtu") if e.path_mtu_bytes is not None]
    narrowest = min(sizes) if sizes else None
    return {"bytes": narrowest,
            "tcp_mss_bytes": narrowest - IPV4_TCP_HEADERS_BYTES if narrowest is not None else None}


def derive_facts(runs: Iterable[CheckRun]) -> dict[str, Any]:
    by_name = {run.name: run for run in runs}
    interfaces = _interfaces(by_name)
    return {
        "interfaces": evidence_dict(interfaces.interfaces) if interfaces else [],
        "public_ipv4": public_ipv4(by_name),
        "nat": nat(by_name),
        "throughput": throughput(by_name),
        "latency": latency(by_name),
        "reachability": reachability(by_name),
        "tls_interception": tls_interception(by_name),
        "path_mtu": path_mtu(by_name),
    }
