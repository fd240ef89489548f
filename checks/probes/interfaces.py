"""Addresses of every interface that is up, classified, and the source address toward each target."""

from __future__ import annotations

import asyncio
import socket

from checks.transport.addressing import classify, source_address_toward
from checks.contract import Check, CheckContext, Outcome, Reason

_FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}


def _prefix_length(netmask: str | None, family: int) -> int | None:
    if not netmask:
        return None
    if family == socket.AF_INET6:
        # psutil gives IPv6 masks as "ffff:ffff::"; count the set bits.
        return sum(bin(int(group or "0", 16)).count("1") for group in netmask.split(":"))
    return sum(bin(int(octet)).count("1") for octet in netmask.split("."))


def up_interfaces() -> list[dict]:
    import psutil  # a compiled extension: loaded only when the check runs

    stats = psutil.net_if_stats()
    interfaces = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        if name not in stats or not stats[name].isup:
            continue
        addresses = [
            {
                "address": addr.address.split("%")[0],  # drop an IPv6 zone id
                "family": _FAMILIES[addr.family],
                "prefix_length": _prefix_length(addr.netmask, addr.family),
                "class": str(classify(addr.address.split("%")[0])),
            }
            for addr in addrs
            if addr.family in _FAMILIES
        ]
        interfaces.append({"name": name, "mtu": stats[name].mtu, "addresses": addresses})
    return interfaces


async def probe(ctx: CheckContext) -> Outcome:
    interfaces = await asyncio.to_thread(up_interfaces)
    routes = []
    for target in ctx.targets.all():
        try:
            ip = await ctx.resolver.resolve(target.host, ctx.remaining())
        except OSError as exc:
            routes.append({"target": str(target), "address": None, "source_address": None, "error": str(exc)})
            continue
        source = source_address_toward(ip, target.port)
        routes.append(
            {
                "target": str(target),
                "address": ip,
                "source_address": source,
                "source_class": str(classify(source)) if source else None,
                "error": None if source else "no route",
            }
        )
    evidence = {"interfaces": interfaces, "routes": routes}
    if not any(iface["addresses"] for iface in interfaces):
        return Outcome.fail(Reason.NO_INTERFACES, "no interface that is up has an address", evidence)
    count = sum(len(iface["addresses"]) for iface in interfaces)
    return Outcome.ok(evidence, f"{count} addresses on {len(interfaces)} interfaces that are up")


CHECK = Check(
    name="interfaces",
    summary="addresses of every interface that is up, classified; source address toward each target",
    probe=probe,
)
