"""Facts: what the checks measured, reduced to the values the verdict rules read.

Three-state throughout: None means "not measured", never "no".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from checks.transport.addressing import AddressClass, is_cgnat
from checks.contract import CheckResult


def _interfaces(results: Mapping[str, CheckResult]) -> list[dict[str, Any]]:
    result = results.get("interfaces")
    return list(result.evidence.get("interfaces", [])) if result else []


def _ipv4_addresses(interfaces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [addr for iface in interfaces for addr in iface["addresses"] if addr["family"] == "ipv4"]


def _answered_servers(results: Mapping[str, CheckResult]) -> list[dict[str, Any]]:
    result = results.get("stun_binding")
    servers = result.evidence.get("servers", []) if result else []
    return [s for s in servers if s["result"] == "answered"]


def public_ipv4(results: Mapping[str, CheckResult]) -> dict[str, Any]:
    interfaces = _interfaces(results)
    addresses = _ipv4_addresses(interfaces)
    public = [a["address"] for a in addresses if a["class"] == AddressClass.PUBLIC]
    local = {a["address"] for a in addresses}
    # An address the STUN server sees unchanged is Internet-facing whatever its class.
    seen_unchanged = [s["mapped_address"] for s in _answered_servers(results) if s["mapped_address"] in local]
    present_on_interfaces = bool(public) or bool(seen_unchanged)
    return {
        "present": present_on_interfaces if interfaces else None,
        "addresses": sorted(set(public) | set(seen_unchanged)),
    }


def nat(results: Mapping[str, CheckResult]) -> dict[str, Any]:
    answered = _answered_servers(results)
    binding = results.get("stun_binding")
    servers = binding.evidence.get("servers", []) if binding else []
    sent = [s for s in servers if s["result"] != "resolve_failed"]
    first = answered[0] if answered else None
    behavior = results.get("nat_behavior")
    behavior_evidence = behavior.evidence if behavior else {}

    # Only addresses on the path count: an overlay such as Tailscale also numbers its
    # interface from 100.64/10 without any carrier NAT. A carrier NAT beyond a home router
    # that shows neither address cannot be seen from here, so False means "not detected".
    on_path = [s["local_address"] for s in sent if s.get("local_address")] + [s["mapped_address"] for s in answered]
    if any(is_cgnat(address) for address in on_path):
        cgnat: bool | None = True
    else:
        cgnat = False if answered else None

    # "Blocked" needs every server we sent to to stay silent; anything that came back, even a bad
    # answer, proves UDP passes. A local send error proves neither.
    results = {s["result"] for s in sent}
    if results and results <= {"no_response"}:
        udp_blocked: bool | None = True
    elif results & {"answered", "invalid_response", "error_response"}:
        udp_blocked = False
    else:
        udp_blocked = None

    return {
        "detected": any(s["nat_detected"] for s in answered) if answered else None,
        "reflexive_address": first["mapped_address"] if first else None,
        "reflexive_port": first["mapped_port"] if first else None,
        "local_address": first["local_address"] if first else None,
        "local_port": first["local_port"] if first else None,
        "mapping": behavior_evidence.get("mapping", {}).get("behavior"),
        "filtering": behavior_evidence.get("filtering", {}).get("behavior"),
        "mapping_varies_by_destination": binding.evidence.get("mapping_varies_by_destination") if binding else None,
        "cgnat": cgnat,
        "udp_blocked": udp_blocked,
        # A second, independent NAT signal: the gateway's NAT_DETECTION hashes (RFC 7296 §2.23).
        "ike_detected": ike_nat_detected(results),
    }


def ike_nat_detected(results: Mapping[str, CheckResult]) -> bool | None:
    seen = [g.get("nat_detected") for name in ("ike_udp500", "ike_natt_udp4500") if name in results
            for g in results[name].evidence.get("gateways", [])]
    if True in seen:
        return True
    return False if False in seen else None


def _stages(results: Mapping[str, CheckResult]) -> list[dict[str, Any]]:
    result = results.get("throughput")
    return list(result.evidence.get("stages", [])) if result else []


def _best(stages: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    complete = [s for s in stages if s["direction"] == direction and s["ok"] and s["bits_per_second"] is not None]
    return max(complete, key=lambda s: s["bits_per_second"], default=None)


def throughput(results: Mapping[str, CheckResult]) -> dict[str, Any]:
    """The best complete stage per direction; a failed stage's partial figures stay in `stages` only."""
    stages = _stages(results)
    upload, download = _best(stages, "upload"), _best(stages, "download")
    measured = [stage for stage in (upload, download) if stage is not None]
    limited = [s["cpu_limited"] for s in stages if s["ok"]]
    headline = upload or download
    return {
        "upload_bits_per_second": upload["bits_per_second"] if upload else None,
        "download_bits_per_second": download["bits_per_second"] if download else None,
        # A link is as fast as its slower direction; one measured direction already bounds it.
        "path_bits_per_second": min(s["bits_per_second"] for s in measured) if measured else None,
        "both_directions": bool(upload and download) if measured else None,
        "streams": headline["streams"] if headline else None,
        "duration_seconds": headline["duration_seconds"] if headline else None,
        "retransmits": headline["retransmits"] if headline else None,
        "cpu_limited": True if True in limited else (False if limited and None not in limited else None),
        "stages": [{key: s[key] for key in ("direction", "streams", "ok", "partial", "failure", "bits_per_second",
                                            "duration_seconds", "retransmits", "cpu_limited")} for s in stages],
    }


_RTT_KEYS = ("rtt_p50_seconds", "rtt_p90_seconds", "rtt_p99_seconds", "jitter_seconds", "loss_ratio")


def latency(results: Mapping[str, CheckResult]) -> dict[str, Any]:
    """TCP connect round trips (AzureCT's measure) idle and under the heaviest upload; UDP beside them."""
    result = results.get("latency")
    idle = result.evidence if result and result.succeeded else {}
    uploads = [s for s in _stages(results) if s["direction"] == "upload" and s["ok"]]
    loaded = max(uploads, key=lambda s: s["streams"])["latency_under_load"] if uploads else {}

    def figures(measured: Mapping[str, Any]) -> dict[str, Any]:
        tcp = measured.get("tcp", {})
        return {key: tcp.get(key) for key in _RTT_KEYS} | {"udp": {key: measured.get("udp", {}).get(key) for key in _RTT_KEYS}}

    return figures(idle) | {"under_load": figures(loaded)}


# Checks that probe the gateways, each reduced to {reachable, reason, evidence} in facts.reachability.
REACHABILITY_CHECKS = ("ike_udp500", "ike_natt_udp4500", "ikev1_udp500", "esp", "tls_tcp443", "sstp", "gateway_health")


def _reachable(gateways: list[dict[str, Any]]) -> bool | None:
    """Over every gateway: False if one is unreachable, True if all are, else not known."""
    states = [g.get("reachable") for g in gateways]
    if False in states:
        return False
    if states and all(state is True for state in states):
        return True
    return None


def reachability(results: Mapping[str, CheckResult]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for name in REACHABILITY_CHECKS:
        result = results.get(name)
        gateways = list(result.evidence.get("gateways", [])) if result else []
        facts[name] = {
            "reachable": _reachable(gateways),
            "reason": f"{result.reason}: {result.detail}" if result else "not run",
            "evidence": {"gateways": gateways},
        }
    return facts


def tls_interception(results: Mapping[str, CheckResult]) -> bool | None:
    """A middlebox re-signing TLS toward any gateway (it breaks SSTP); None when not measured."""
    result = results.get("tls_tcp443")
    seen = [g.get("interception_suspected") for g in (result.evidence.get("gateways", []) if result else [])]
    if True in seen:
        return True
    return False if False in seen else None


def path_mtu(results: Mapping[str, CheckResult]) -> dict[str, Any]:
    result = results.get("path_mtu")
    sizes = [g["path_mtu_bytes"] for g in (result.evidence.get("gateways", []) if result else [])
             if g.get("path_mtu_bytes") is not None]
    return {"bytes": min(sizes) if sizes else None}


def derive_facts(results: Sequence[CheckResult]) -> dict[str, Any]:
    by_name = {result.name: result for result in results}
    return {
        "interfaces": _interfaces(by_name),
        "public_ipv4": public_ipv4(by_name),
        "nat": nat(by_name),
        "throughput": throughput(by_name),
        "latency": latency(by_name),
        "reachability": reachability(by_name),
        "tls_interception": tls_interception(by_name),
        "path_mtu": path_mtu(by_name),
    }
