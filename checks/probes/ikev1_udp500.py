"""IKEv1 Main Mode on UDP 500 to each gateway: policy-based gateways speak nothing else.

A first Main Mode message offering Azure's IKEv1 suites (AES-256/SHA-256, AES-256/SHA-1,
AES-128/SHA-1; PSK, DH group 2, 28,800 s) goes out as checks/ike_udp500.py sends IKEv2;
a second Main Mode message or an informational notification for our cookie proves an IKEv1
responder answers. IKEv1 exchanges NAT detection only in its third and fourth messages, so
`nat_detected` stays None here.
"""

from __future__ import annotations

from checks.contract import Check, CheckContext, Outcome
from checks.probes.ike_udp500 import IkeVariant, prepare, probe_gateways

IKEV1_UDP500 = IkeVariant(500, 1, False, "IKEv1 Main Mode on UDP 500")


async def probe(ctx: CheckContext) -> Outcome:
    return await probe_gateways(ctx, IKEV1_UDP500)


CHECK = Check(
    name="ikev1_udp500",
    summary="IKEv1 Main Mode on UDP 500 to each gateway (policy-based gateways): answered or why not",
    probe=probe,
    prepare=prepare,
)
