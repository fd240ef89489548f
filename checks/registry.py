"""The one list of checks, in the order reports show them. The README's table of checks is
checked against it by a test; the runner derives its order from each check's dependencies."""

from __future__ import annotations

from checks.contract import Check
from checks.probes import (esp, gateway_health, ike_handshake, interfaces, latency, nat_behavior, path_mtu, sstp,
                           stun_binding, throughput, tls_tcp443)
from checks.probes.ike_handshake import IkeVariant

# The IKE probe's rows: what is sent where is data, one probe serves all three.
IKE = (
    ike_handshake.check("ike_udp500", IkeVariant(500, 2, False, "IKEv2 IKE_SA_INIT on UDP 500"),
                        "IKEv2 IKE_SA_INIT on UDP 500 to each gateway: answered or why not, and NAT_DETECTION"),
    ike_handshake.check("ike_natt_udp4500", IkeVariant(4500, 2, True, "IKEv2 IKE_SA_INIT on UDP 4500 (NAT-T)"),
                        "IKEv2 NAT-T on UDP 4500 (non-ESP marker) to each gateway: answered or why not, and "
                        "NAT_DETECTION"),
    ike_handshake.check("ikev1_udp500", IkeVariant(500, 1, False, "IKEv1 Main Mode on UDP 500"),
                        "IKEv1 Main Mode on UDP 500 to each gateway (policy-based gateways): answered or why not"),
)

CHECKS: dict[str, Check] = {
    check.name: check
    for check in (interfaces.CHECK, stun_binding.CHECK, nat_behavior.CHECK, *IKE, esp.CHECK, tls_tcp443.CHECK,
                  sstp.CHECK, gateway_health.CHECK, path_mtu.CHECK, latency.CHECK, throughput.CHECK)
}
