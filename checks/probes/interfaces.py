"""Addresses of every interface that is up, classified, and the source address toward each target."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from checks.contract import Check, CheckContext, Outcome, Reason, Scope
from checks.targets import Endpoint
from checks.transport.addressing import AddressClass, classify, source_address_toward

_FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}


@dataclass(frozen=True)
class InterfaceAddress:
    address: str
    family: str  # ipv4 or ipv6
    prefix_length: int | None
    address_class: AddressClass = field(metadata={"key": "class"})


@dataclass(frozen=True)
class Interface:
    name: str
    mtu: int
    addresses: tuple[InterfaceAddress, ...]


@dataclass(frozen=True)
class Route:
    """How this host reaches one target: the source address the kernel picks."""

    target: str
    address: str | None
    source_address: str | None = None
    source_class: AddressClass | None = None
    error: str | None = None


@dataclass(frozen=True)
class InterfacesEvidence:
    interfaces: tuple[Interface, ...]
    routes: tuple[Route, ...]


def _prefix_length(netmask: str | None, family: int) -> int | None:
    if not netmask:
        return None
    if family == socket.AF_INET6:
        # psutil gives IPv6 masks as "ffff:ffff::"; count the set bits.
        return sum(bin(int(group or "0", 16)).count("1") for group in netmask.split(":"))
    return sum(bin(int(octet)).count("1") for octet in netmask.split("."))


def up_interfaces() -> list[Interface]:
    import psutil  # a compiled extension: loaded only when the check runs

    stats = psutil.net_if_stats()
    interfaces = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        if name not in stats or not stats[name].isup:
            continue
        addresses = tuple(
            InterfaceAddress(
                address=addr.address.split("%")[0],  # drop an IPv6 zone id
                family=_FAMILIES[addr.family],
                prefix_length=_prefix_length(addr.netmask, addr.family),
                address_class=classify(addr.address.split("%")[0]),
            )
            for addr in addrs
            if addr.family in _FAMILIES
        )
        interfaces.append(Interface(name, stats[name].mtu, addresses))
    return interfaces


async def _route(ctx: CheckContext, endpoint: Endpoint) -> Route:
    try:
        ip = await ctx.resolver.resolve(endpoint.host, ctx.remaining())
    except OSError as exc:
        return Route(str(endpoint), None, error=str(exc))
    source = source_address_toward(ip, endpoint.port)
    return Route(str(endpoint), ip, source, classify(source) if source else None, None if source else "no route")


async def probe(ctx: CheckContext) -> Outcome:
    interfaces = await asyncio.to_thread(up_interfaces)
    # The host's own view toward every target, looked up at once: a name that hangs holds up no other.
    routes = list(await asyncio.gather(*(_route(ctx, endpoint) for endpoint in ctx.targets.all())))
    evidence = InterfacesEvidence(tuple(interfaces), tuple(routes))
    if not any(iface.addresses for iface in interfaces):
        return Outcome.fail(Reason.NO_INTERFACES, "no interface that is up has an address", evidence)
    count = sum(len(iface.addresses) for iface in interfaces)
    return Outcome.ok(evidence, f"{count} addresses on {len(interfaces)} interfaces that are up")


CHECK = Check(
    name="interfaces",
    summary="addresses of every interface that is up, classified; source address toward each target",
    scope=Scope.HOST,
    evidence=InterfacesEvidence,
    probe=probe,
)
