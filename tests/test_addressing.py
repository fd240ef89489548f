"""Address classes as xcheck defines them (not Python's is_private/is_global)."""

from __future__ import annotations

import pytest

from checks.transport.addressing import AddressClass, classify, is_cgnat, source_address_toward


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.1.2.3", AddressClass.RFC1918),
        ("172.16.0.1", AddressClass.RFC1918),
        ("172.31.255.255", AddressClass.RFC1918),
        ("172.32.0.1", AddressClass.PUBLIC),
        ("192.168.1.1", AddressClass.RFC1918),
        ("100.64.0.1", AddressClass.CGNAT),
        ("100.127.255.254", AddressClass.CGNAT),
        ("100.128.0.1", AddressClass.PUBLIC),
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("169.254.10.10", AddressClass.LINK_LOCAL),
        ("0.0.0.0", AddressClass.UNSPECIFIED),
        ("224.0.0.251", AddressClass.MULTICAST),
        ("240.0.0.1", AddressClass.RESERVED),
        ("255.255.255.255", AddressClass.RESERVED),
        # Documentation ranges stand for the Internet in labs: Python calls them private.
        ("192.0.2.1", AddressClass.PUBLIC),
        ("198.51.100.2", AddressClass.PUBLIC),
        ("203.0.113.10", AddressClass.PUBLIC),
        ("8.8.8.8", AddressClass.PUBLIC),
        ("::1", AddressClass.LOOPBACK),
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("fd00::2", AddressClass.UNIQUE_LOCAL),
        ("ff02::1", AddressClass.MULTICAST),
        ("::", AddressClass.UNSPECIFIED),
        ("2001:db8::1", AddressClass.PUBLIC),
        ("::ffff:10.0.0.1", AddressClass.RFC1918),
    ],
)
def test_classify(address, expected):
    assert classify(address) is expected


def test_differs_from_python_where_it_must():
    import ipaddress

    assert ipaddress.ip_address("203.0.113.10").is_private and classify("203.0.113.10") is AddressClass.PUBLIC
    assert not ipaddress.ip_address("100.64.0.1").is_private and is_cgnat("100.64.0.1")


def test_source_address_toward_asks_the_routing_table():
    assert source_address_toward("127.0.0.1", 9) == "127.0.0.1"
    # Limited broadcast without SO_BROADCAST: connect() refuses, so there is no source address.
    assert source_address_toward("255.255.255.255", 9) is None


@pytest.mark.parametrize("text, expected", [("203.0.113.10", True), ("0.0.0.0", True), ("::1", False),
                                            ("vpngw.example.net", False), ("203.0.113.256", False), ("", False)])
def test_is_ipv4_literal(text, expected):
    from checks.transport.addressing import is_ipv4_literal

    assert is_ipv4_literal(text) is expected
