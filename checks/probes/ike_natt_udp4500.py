"""IKEv2 NAT traversal on UDP 4500 to each gateway: the same IKE_SA_INIT behind the non-ESP marker.

Behind a NAT, IKE moves to UDP 4500 after its first exchange and ESP rides inside UDP 4500
too (RFC 3948), so a path that passes 500 but not 4500 sets up nothing. An initiator may
start on 4500 directly, with IKE messages prefixed by four zero bytes (the non-ESP marker,
RFC 7296 §2.23): that is what is sent here, and answers must carry the marker as well.
Otherwise this is checks/ike_udp500.py, evidence and all.
"""

from __future__ import annotations

from checks.contract import Check, CheckContext, Outcome
from checks.probes.ike_udp500 import IkeVariant, prepare, probe_gateways

IKEV2_NATT_UDP4500 = IkeVariant(4500, 2, True, "IKEv2 IKE_SA_INIT on UDP 4500 (NAT-T)")


async def probe(ctx: CheckContext) -> Outcome:
    return await probe_gateways(ctx, IKEV2_NATT_UDP4500)


CHECK = Check(
    name="ike_natt_udp4500",
    summary="IKEv2 NAT-T on UDP 4500 (non-ESP marker) to each gateway: answered or why not, and NAT_DETECTION",
    probe=probe,
    prepare=prepare,
)
