"""`xcheck run --redact` in the lab, against `xcheck responder` as gateway and far end: the whole
output of every format is scanned for every address and name the lab used, behind NAT and on a
public address (where a rule quotes the address: "... IPv4 address: 198.51.100.2.")."""

from __future__ import annotations

import json
import re
import socket

import pytest
from conftest import XCHECK, needs_lab, validate_report
from lab import Lab
from test_lab_gateway import GATEWAY, start_responder
from test_lab_throughput import wait_listening

pytestmark = [pytest.mark.lab, needs_lab]


def run(lab: Lab, fmt: str, *extra: str) -> str:
    argv = [XCHECK, "run", "--format", fmt, "--stun", lab.stun_primary, "--stun", f"{lab.stun_alternate}:3479",
            "--gateway", GATEWAY, "--iperf", GATEWAY, "--throughput-seconds", "1", "--timeout", "3",
            "--vpn-device", *extra]
    completed = lab.run(lab.onprem, argv, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def names_on_this_host() -> list[str]:
    # The namespaces share the host's name (and xcheck responder's self-signed certificate carries it).
    names = {socket.gethostname(), socket.getfqdn()}
    return sorted(n for n in names if n and n.lower() not in ("localhost", "localhost.localdomain"))


@pytest.mark.parametrize("nat", ["masquerade", "public"])
def test_no_address_or_name_the_lab_used_survives_redaction(nat):
    with Lab(nat=nat) as lab:
        start_responder(lab)
        wait_listening(lab, 5201)
        addresses = [lab.onprem_address, lab.onprem_gateway, lab.router_wan_address, lab.stun_primary,
                     lab.stun_alternate, GATEWAY]
        plain = run(lab, "json")
        outputs = {fmt: run(lab, fmt, "--redact") for fmt in ("json", "text", "markdown")}
    # Without --redact they are all there: the scan below looks for what really is in a report.
    for secret in [lab.onprem_address, GATEWAY] + ([lab.router_wan_address] if nat != "public" else []):
        assert secret in plain
    report = validate_report(json.loads(outputs["json"]))
    assert report["redacted"] is True
    for fmt, output in outputs.items():
        for address in addresses:
            assert address not in output, (fmt, address)
        for name in names_on_this_host():
            assert not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", output, re.IGNORECASE), (fmt, name)
    kind = "public-ipv4-" if nat == "public" else "rfc1918-ipv4-"
    assert report["facts"]["nat"]["local_address"].startswith(kind)
    if nat == "public":  # the rule that leaked: "This host has an Internet-facing IPv4 address: X."
        reason = next(r for r in report["options"]["s2s"]["reasons"] if r["rule"] == "current.s2s.public-ipv4")
        assert reason["text"].endswith(f"address: {report['facts']['public_ipv4']['addresses'][0]}.")
