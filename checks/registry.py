"""The one list of checks. CLI help, docs and the runner's order are derived from it."""

from __future__ import annotations

from checks.probes import (
    esp,
    gateway_health,
    ike_natt_udp4500,
    ike_udp500,
    ikev1_udp500,
    interfaces,
    latency,
    nat_behavior,
    path_mtu,
    sstp,
    stun_binding,
    throughput,
    tls_tcp443,
)
from checks.contract import Check

CHECKS: dict[str, Check] = {
    check.name: check
    for check in (interfaces.CHECK, stun_binding.CHECK, nat_behavior.CHECK, ike_udp500.CHECK, ike_natt_udp4500.CHECK,
                  ikev1_udp500.CHECK, esp.CHECK, tls_tcp443.CHECK, sstp.CHECK, gateway_health.CHECK, path_mtu.CHECK,
                  latency.CHECK, throughput.CHECK)
}
