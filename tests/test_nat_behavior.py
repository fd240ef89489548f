"""RFC 5780 decision tables against a scripted four-address server on loopback.

The server plays a NAT as well: it reports mappings that vary with the address a request
reached (mapping behaviour) and drops CHANGE-REQUEST answers a NAT would filter (filtering).
The lab tests check the same against real Linux NAT and coturn.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time

import pytest

from checks.contract import CheckContext, CheckRun, Reason, Status, TargetResult
from checks.targets import Endpoint, Resolver, Targets
from checks.probes import nat_behavior, stun_binding
from checks.probes.stun_binding import BindingEvidence
from checks.protocols import stun
from checks.transport.stun_client import cached_rto

PRIMARY_IP, OTHER_IP = "127.0.0.1", "127.0.0.2"
RTT_SECONDS = 0.0001  # what stun_binding measured to the fake server: nat_behavior takes its RTO from it
BEHAVIORS = (nat_behavior.ENDPOINT_INDEPENDENT, nat_behavior.ADDRESS_DEPENDENT, nat_behavior.ADDRESS_AND_PORT_DEPENDENT)


class FakeRfc5780Server:
    def __init__(self, mapping: str, filtering: str, honour_change_request: bool = True):
        self.mapping, self.filtering, self.honour = mapping, filtering, honour_change_request
        first = self._bind(PRIMARY_IP, 0)
        self.ports = (first.getsockname()[1], self._free_port())
        self.sockets = {(PRIMARY_IP, self.ports[0]): first}
        for address in ((PRIMARY_IP, self.ports[1]), (OTHER_IP, self.ports[0]), (OTHER_IP, self.ports[1])):
            self.sockets[address] = self._bind(*address)

    @staticmethod
    def _bind(ip, port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((ip, port))
        sock.setblocking(False)
        return sock

    def _free_port(self):
        while True:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind((PRIMARY_IP, 0))
            port = probe.getsockname()[1]
            probe.close()
            try:
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind((OTHER_IP, port))
                return port
            except OSError:
                continue

    def start(self):
        for address, sock in self.sockets.items():
            asyncio.get_running_loop().add_reader(sock.fileno(), self._answer, address, sock)
        return self

    def close(self):
        for sock in self.sockets.values():
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _mapped(self, client, reached):
        offset = {"endpoint-independent": 0,
                  "address-dependent": 0 if reached[0] == PRIMARY_IP else 1000,
                  "address-and-port-dependent": list(self.sockets).index(reached) * 1000}[self.mapping]
        return stun.TransportAddress(ipaddress.ip_address(client[0]), client[1] + offset)

    def _answer(self, reached, sock):
        data, client = sock.recvfrom(2048)
        request = stun.parse_message(data)
        flags = next((int.from_bytes(v, "big") for t, v in request.attributes if t == stun.Attribute.CHANGE_REQUEST), 0)
        change_ip, change_port = bool(flags & stun.CHANGE_IP), bool(flags & stun.CHANGE_PORT)
        if (change_ip or change_port) and self.honour:
            # A NAT in front of the client would drop what its filter does not allow.
            if self.filtering == "address-and-port-dependent" or (self.filtering == "address-dependent" and change_ip):
                return
            reached = (OTHER_IP if change_ip else reached[0], self.ports[1] if change_port else reached[1])
        tid = request.transaction_id
        attrs = [(stun.Attribute.XOR_MAPPED_ADDRESS, stun.encode_address(self._mapped(client, reached), xor_transaction_id=tid))]
        reply = stun.encode_message(stun.BINDING, stun.MessageClass.SUCCESS_RESPONSE, tid, attrs)
        self.sockets[reached].sendto(reply, client)


def targets_of(server: FakeRfc5780Server) -> Targets:
    return Targets(stun=(Endpoint(PRIMARY_IP, server.ports[0]),))


def binding_run(server: FakeRfc5780Server, other_address: str | None = None) -> CheckRun:
    """What stun_binding found for the fake server: an answer naming its OTHER-ADDRESS."""
    (target,) = targets_of(server).of_scope(stun_binding.CHECK.scope)
    evidence = BindingEvidence(
        address=f"{PRIMARY_IP}:{server.ports[0]}", result=Reason.SUCCESS, attempts=1, rtt_seconds=RTT_SECONDS,
        other_address=other_address or f"{OTHER_IP}:{server.ports[1]}", other_address_attribute="OTHER-ADDRESS")
    result = TargetResult("stun_binding", target, Status.OK, Reason.SUCCESS, "", 0.0, evidence, time.time())
    return CheckRun.of(stun_binding.CHECK, [result])


def probe_context(server: FakeRfc5780Server, binding: CheckRun, timeout: float) -> CheckContext:
    targets = targets_of(server)
    (target,) = targets.of_scope(nat_behavior.CHECK.scope)
    return CheckContext(targets=targets, target=target, deadline=time.monotonic() + timeout,
                        dependencies={"stun_binding": binding}, resolver=Resolver(), logger=logging.getLogger("test"))


def discover(server: FakeRfc5780Server, timeout: float = 10.0):  # a bound on a hang: it ends in ~0.3 s
    async def main():
        server.start()
        try:
            return await nat_behavior.probe(probe_context(server, binding_run(server), timeout))
        finally:
            server.close()

    return asyncio.run(main())


@pytest.mark.parametrize("mapping", BEHAVIORS)
@pytest.mark.parametrize("filtering", BEHAVIORS)
def test_every_mapping_and_filtering_behaviour_is_told_apart(mapping, filtering):
    outcome = discover(FakeRfc5780Server(mapping, filtering))
    assert outcome.status is Status.OK, outcome.detail
    assert outcome.evidence.mapping.behavior == mapping
    assert outcome.evidence.filtering.behavior == filtering
    if filtering != "endpoint-independent":
        # Silence was waited for over a window with room for several requests one RTO apart, not
        # concluded from one lost packet. How many of them went out depends on how busy the machine is.
        filtering_tests = outcome.evidence.filtering
        assert filtering_tests.wait_seconds >= nat_behavior.FILTERING_SENDS * cached_rto(RTT_SECONDS) - 1e-9
        test2 = filtering_tests.tests["test2"]
        assert test2.attempts >= 1 and test2.result == "no_response"


def test_a_server_that_ignores_change_request_is_caught_by_the_source_address():
    outcome = discover(FakeRfc5780Server("endpoint-independent", "endpoint-independent", honour_change_request=False))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.INVALID_RESPONSE)
    assert "test II" in outcome.detail and f"expected {OTHER_IP}" in outcome.detail


def test_an_other_address_equal_to_the_primary_is_refused():
    server = FakeRfc5780Server("endpoint-independent", "endpoint-independent")
    binding = binding_run(server, other_address=f"{OTHER_IP}:{server.ports[0]}")
    try:
        async def main():
            return await nat_behavior.probe(probe_context(server, binding, 1))

        outcome = asyncio.run(main())
    finally:
        for sock in server.sockets.values():
            sock.close()
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.INVALID_RESPONSE)
    assert "in both IP and port" in outcome.detail and outcome.evidence.other == f"{OTHER_IP}:{server.ports[0]}"


def test_schema_names_exactly_these_behaviours():
    from agent.report import schema

    assert schema()["$defs"]["nat_behavior"]["enum"] == [*BEHAVIORS, None]
