"""Address classes as xcheck counts them, and the source address the kernel picks.

Python's `is_private`/`is_global` answer a different question (IANA special-purpose
registries: they call the RFC 5737 documentation ranges private and 100.64/10 neither),
so the classes here are explicit. Anything not listed counts as public: in a lab, the
documentation ranges stand for the Internet.
"""

from __future__ import annotations

import enum
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressClass(enum.StrEnum):
    PUBLIC = "public"
    RFC1918 = "rfc1918"
    CGNAT = "cgnat"  # RFC 6598 shared address space
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    RESERVED = "reserved"  # 240.0.0.0/4
    UNIQUE_LOCAL = "unique-local"  # IPv6 fc00::/7, the RFC 1918 of IPv6


_IPV4_CLASSES: tuple[tuple[ipaddress.IPv4Network, AddressClass], ...] = tuple(
    (ipaddress.IPv4Network(net), cls)
    for net, cls in (
        ("0.0.0.0/32", AddressClass.UNSPECIFIED),
        ("10.0.0.0/8", AddressClass.RFC1918),
        ("172.16.0.0/12", AddressClass.RFC1918),
        ("192.168.0.0/16", AddressClass.RFC1918),
        ("100.64.0.0/10", AddressClass.CGNAT),
        ("127.0.0.0/8", AddressClass.LOOPBACK),
        ("169.254.0.0/16", AddressClass.LINK_LOCAL),
        ("224.0.0.0/4", AddressClass.MULTICAST),
        ("240.0.0.0/4", AddressClass.RESERVED),
    )
)

_IPV6_CLASSES: tuple[tuple[ipaddress.IPv6Network, AddressClass], ...] = tuple(
    (ipaddress.IPv6Network(net), cls)
    for net, cls in (
        ("::/128", AddressClass.UNSPECIFIED),
        ("::1/128", AddressClass.LOOPBACK),
        ("fe80::/10", AddressClass.LINK_LOCAL),
        ("fc00::/7", AddressClass.UNIQUE_LOCAL),
        ("ff00::/8", AddressClass.MULTICAST),
    )
)

def classify(address: str | IPAddress) -> AddressClass:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    table = _IPV4_CLASSES if ip.version == 4 else _IPV6_CLASSES
    for network, cls in table:
        if ip in network:
            return cls
    return AddressClass.PUBLIC


def is_cgnat(address: str | IPAddress) -> bool:
    return classify(address) is AddressClass.CGNAT


def is_ip_literal(text: str) -> bool:
    """Whether `text` is an IPv4 or IPv6 address as written, not a name."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_ipv4_literal(text: str) -> bool:
    """Whether `text` is an IPv4 address as written, not a name (nor IPv6)."""
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def source_address_toward(ip: str, port: int) -> str | None:
    """The local IPv4 address the kernel would send from toward ip:port.

    connect() on a UDP socket only consults the routing table: nothing is sent.
    None when there is no route.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((ip, port))
        except OSError:
            return None
        return probe.getsockname()[0]
