"""Facts: what the checks measured, reduced to the values the verdict rules read.

Derived here and only here, from the checks' typed evidence (one `CheckRun` per check). Three
states throughout: None means "not measured", never "no".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from checks.contract import CheckRun, Reason, Target, TargetResult, evidence_dict, telling_rank
from checks.probes.ike_handshake import IkeEvidence
from checks.probes.interfaces import InterfacesEvidence
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
    answered = _answered(runs)
    # An address the STUN server sees unchanged is Internet-facing whatever its class.
    seen_unchanged = [s.mapped_address for s in answered if s.mapped_address in local]
    # The address a gateway on the Internet sees this site as, which its side must be configured
    # with: what a STUN server saw, else this host's one public address.
    own = public[0] if len(set(public)) == 1 else None
    return {
        "present": (bool(public) or bool(seen_unchanged)) if interfaces and interfaces.interfaces else None,
        "addresses": sorted(set(public) | set(seen_unchanged)),
        "site_address": answered[0].mapped_address if answered else own,
        "site_address_source": "stun" if answered else ("interface" if own else None),
    }


# Any of these came back from the server's side: UDP reaches it.
_UDP_PASSES = {Reason.SUCCESS, Reason.INVALID_RESPONSE, Reason.PEER_ERROR}
# Every server silent, or a filter on the way said no: UDP does not get out.
_UDP_STOPPED = {Reason.NO_RESPONSE, Reason.PROHIBITED}


def _host(address: str) -> str:
    """The IP of an "ip:port" the checks wrote (IPv4 only: config refuses IPv6)."""
    return address.rsplit(":", 1)[0]


def _udp_kind(server: BindingEvidence) -> Reason:
    """ICMP port unreachable from the server's own host proves the datagram got there (nothing
    listened); from anyone else (a router's REJECT) it is a filter's refusal."""
    if server.result is Reason.PORT_UNREACHABLE:
        reached = server.address is not None and server.icmp_from == _host(server.address)
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
    seen = {_host(s.address): (s.mapped_address, s.mapped_port) for s in answered if s.address}
    if len(seen) < 2:
        return None
    return len(set(seen.values())) > 1


def _behaviour(runs: Runs, part: str) -> str | None:
    """The first server's decided mapping or filtering behaviour (servers in the order given)."""
    for evidence in _evidence(runs, "nat_behavior"):
        discovery = getattr(evidence, part)
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


# IKE listens on both ports (RFC 7296 §2.23): silence on one while the same gateway answers IKE
# on the other is a filter on the way, not a gateway that ignores us.
_OTHER_IKE_PORT = {"ike_udp500": "ike_natt_udp4500", "ike_natt_udp4500": "ike_udp500"}
# IKEv1 on 500 is filtered where IKEv2 on 500 is (silent while 4500 answers); silent while IKEv2 got
# through on 500, the port passes and the gateway ignores IKEv1.
_SAME_PORT = {"ikev1_udp500": "ike_udp500"}
_PORTS = {"ike_udp500": "UDP 500", "ike_natt_udp4500": "UDP 4500", "ikev1_udp500": "UDP 500"}


def _responders(runs: Runs) -> set[str]:
    """Gateways that are `xcheck responder`: only it echoes xcheck's ESP probes, and it answers every
    peer on every port xcheck probes, so its silence anywhere is a filter on the way."""
    return {r.target.name for r in _results(runs, "esp") if r.evidence is not None and r.evidence.reachable}


def _of(runs: Runs, name: str, target: Target) -> TargetResult | None:
    return next((r for r in _results(runs, name) if r.target == target), None)


def _answers(result: TargetResult | None) -> bool:
    return result is not None and result.evidence is not None and result.evidence.reachable is True


def _silent(result: TargetResult | None) -> bool:
    """Bare silence: no answer, no refusal, nothing else known (every probe leaves `reachable` None then)."""
    return result is not None and result.reason is Reason.NO_RESPONSE


def _filtered_by_contrast(runs: Runs, name: str, target: Target) -> str | None:
    """Which answer of the same gateway proves its silence on `name` a filter; None when none does."""
    if name in _SAME_PORT:
        same = _of(runs, _SAME_PORT[name], target)
        return _filtered_by_contrast(runs, _SAME_PORT[name], target) if _silent(same) else None
    other = _OTHER_IKE_PORT.get(name)
    return REACHABILITY_CHECKS[other] if other and _answers(_of(runs, other, target)) else None


def _gateway_entry(runs: Runs, name: str, result: TargetResult, responders: set[str]) -> dict[str, Any]:
    """One gateway's reachability by one check. False only with proof: the probe's own (an ICMP
    refusal, a TCP reset, a refusing answer), or silence shown to be a filter by contrast. Bare
    silence stays None: a gateway may ignore a peer it has no connection for."""
    entry = {"gateway": result.target.name, "reachable": result.evidence.reachable if result.evidence else None,
             "reason": str(result.reason), "detail": result.detail}
    # Through an HTTP proxy, silence is the proxy's (a SYN to it, its CONNECT): nothing to contrast.
    if not _silent(result) or getattr(result.evidence, "path", None) == "proxy":
        return entry
    answering = _filtered_by_contrast(runs, name, result.target)
    if answering:
        entry.update(reachable=False, detail=f"filtered: no answer on {_PORTS[name]} while the same gateway "
                                             f"answers {answering}")
    elif result.target.name in responders:
        entry.update(reachable=False, detail="filtered: no answer, while the gateway is `xcheck responder` (it "
                                             "echoed our ESP), which answers every peer")
    return entry


def _summary(run: CheckRun | None, gateways: Sequence[Mapping[str, Any]]) -> tuple[bool | None, str | None, str]:
    """Over every gateway: False if one is proven unreachable, True if all answered, else not known;
    with the reason and detail of the gateway(s) that decide it (the check's own when none was probed)."""
    if not gateways:
        return (None, str(run.reason), run.detail) if run else (None, None, "not run")
    refused = [g for g in gateways if g["reachable"] is False]
    unknown = [g for g in gateways if g["reachable"] is None]
    deciding = refused or unknown or list(gateways)
    state = False if refused else (None if unknown else True)
    many = len(gateways) > 1
    detail = "; ".join(f"{g['gateway']}: {g['detail']}" if many else g["detail"] for g in deciding)
    # Not the first given but the most telling (checks/contract.py), so --gateway's order changes nothing.
    reason = min((g["reason"] for g in deciding), key=lambda reason: telling_rank(Reason(reason)))
    return state, reason, detail


def reachability(runs: Runs) -> dict[str, Any]:
    responders = _responders(runs)
    facts: dict[str, Any] = {}
    for name in REACHABILITY_CHECKS:
        gateways = [_gateway_entry(runs, name, r, responders) for r in _results(runs, name)]
        reachable, reason, detail = _summary(runs.get(name), gateways)
        facts[name] = {"reachable": reachable, "reason": reason, "detail": detail, "gateways": gateways}
    return facts


def tls_interception(runs: Runs) -> bool | None:
    """A middlebox re-signing TLS toward any gateway (it breaks SSTP); None when not measured."""
    return _any_true(e.exchange.interception_suspected for e in _evidence(runs, "tls_tcp443") if e.exchange)


def path_mtu(runs: Runs) -> dict[str, Any]:
    """The narrowest path toward the gateways decides what a tunnel can carry."""
    sizes = [e.path_mtu_bytes for e in _evidence(runs, "path_mtu") if e.path_mtu_bytes is not None]
    narrowest = min(sizes) if sizes else None
    run = runs.get("path_mtu")
    return {"bytes": narrowest,
            "tcp_mss_bytes": narrowest - IPV4_TCP_HEADERS_BYTES if narrowest is not None else None,
            # Why, beside the figure: a target that answers no probe (no_response) leaves it unknown, never small.
            "reason": str(run.reason) if run else None, "detail": run.detail if run else "not run"}


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
