"""Packet size on the way into the tunnel: the tunnel interface's MTU (Azure's alternative to an MSS
clamp), and the measured path MTU to the gateway against what Azure's 1,400 bytes assume.

Azure carries packets of at most `limits.max_packet_bytes` (1,400) through a VPN and asks for an
MSS clamp at `limits.mss_bytes` (1,350) or a tunnel MTU of 1,400. Those figures leave 100 bytes of
a 1,500-byte Internet path to the tunnel's own headers (ESP, NAT-T); that reading is xcheck's, and
where the measured path is smaller, the clamp must be smaller by as much.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

from agent.audit.findings import Evidence, Finding, Severity

ETHERNET_MTU_BYTES = 1500  # the path Azure's 1,400 bytes are sized for
# Interfaces a route-based IPsec tunnel runs through on Linux: XFRM interfaces, VTI (and its
# strongSwan/Libreswan names).
TUNNEL_INTERFACE = re.compile(r"(xfrm|vti|ip_vti|ipsec)\d*")


def judge_mtu(findings: Sequence[Finding], interface_mtus: Mapping[str, int], path_mtu_bytes: int | None,
              limits: Mapping[str, float]) -> list[Finding]:
    """`findings` (the firewall's) with the MSS clamp finding settled by a tunnel MTU when one is low
    enough, and a finding when the measured path is too small for Azure's figures."""
    max_packet, mss = int(limits["max_packet_bytes"]), int(limits["mss_bytes"])
    tunnels = {name: mtu for name, mtu in sorted(interface_mtus.items()) if TUNNEL_INTERFACE.fullmatch(name)}
    small = {name: mtu for name, mtu in tunnels.items() if mtu <= max_packet}
    out = list(findings)
    if small:
        # Azure's alternative to the clamp is in place: the kernel derives the MSS from the tunnel's MTU.
        named = ", ".join(f"{name} (MTU {mtu})" for name, mtu in small.items())
        out = [f for f in out if f.id != "mtu.mss-clamp"]
        out.append(Finding("mtu.tunnel-mtu", Severity.INFO, "s2s",
                           f"the tunnel interface {named} keeps packets into the tunnel within Azure's {max_packet} "
                           "bytes: TCP's MSS follows from it, no clamp is needed for traffic routed through it",
                           "nothing to do", "vpn-devices", Evidence("ip link")))
    elif tunnels:
        for finding in out:
            if finding.id == "mtu.mss-clamp":
                named = ", ".join(f"{name} (MTU {mtu})" for name, mtu in tunnels.items())
                out[out.index(finding)] = replace(finding, text=f"{finding.text} The tunnel interface {named} is "
                                                                f"above {max_packet} bytes, so it does not stand in for it.")
    if path_mtu_bytes is not None and path_mtu_bytes < ETHERNET_MTU_BYTES:
        short = ETHERNET_MTU_BYTES - path_mtu_bytes
        out.append(Finding(
            "mtu.path-mtu", Severity.WARNING, "s2s",
            f"the path to the gateway carries packets of {path_mtu_bytes} bytes (measured), {short} fewer than the "
            f"{ETHERNET_MTU_BYTES} Azure's {max_packet}-byte tunnel packets and MSS {mss} are sized for: a "
            f"full-size tunnel packet would be fragmented or dropped",
            f"clamp the MSS at {mss - short} (or set the tunnel MTU to {max_packet - short})", "vpn-devices",
            Evidence("path_mtu check")))
    return out


def interface_mtus() -> dict[str, int]:
    """This host's interfaces and their MTU (psutil reads them from the kernel)."""
    import psutil

    return {name: stats.mtu for name, stats in psutil.net_if_stats().items()}
