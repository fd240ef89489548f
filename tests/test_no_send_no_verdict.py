"""No silence verdict without a send: a deadline that passes before the first datagram went out (a
loaded host spent the time on imports or scheduling), or less than one RTO after it, is a timeout,
and the facts say "not known" (null), never "unreachable" or "UDP blocked".

Deterministic whatever the machine's load: the deadline is already past when the probe is called,
or it is measured from the probe's own first clock reading and is far shorter than the RTO.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import pytest

from agent.facts import derive_facts
from agent.verdicts import load_ruleset
from checks.contract import Check, CheckContext, CheckRun, Outcome, Reason, Status, TargetResult
from checks.targets import Endpoint, Resolver, Targets
from checks.probes import esp, path_mtu, stun_binding
from checks.registry import CHECKS
from checks.transport.stun_client import Deadline, StunClient
from checks.transport.udp_probe import UdpProbe

# Far longer than any test here waits: silence is cut off by the deadline well within one RTO,
# however late a busy machine runs the event loop.
LONG_RTO_SECONDS = 30.0


class FromFirstReading:
    """A clock that reads 0 at its first reading, then runs as time.monotonic: deadlines on it are
    measured from the moment the probe starts, not from when the test computed them."""

    def __init__(self) -> None:
        self._origin: float | None = None

    def __call__(self) -> float:
        now = time.monotonic()
        if self._origin is None:
            self._origin = now
        return now - self._origin


def silent_peer() -> socket.socket:
    """A UDP socket on loopback that never answers; it counts what reached it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def received(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(65535)
        except BlockingIOError:
            return count
        count += 1


def past_deadline_context(check: Check, targets: Targets) -> CheckContext:
    (target,) = targets.of_scope(check.scope)
    return CheckContext(targets=targets, target=target, deadline=time.monotonic() - 1.0, dependencies={},
                        resolver=Resolver(), logger=logging.getLogger(f"test_no_send_no_verdict.{check.name}"))


def as_run(check: Check, ctx: CheckContext, outcome: Outcome) -> CheckRun:
    """The probe's outcome for ctx.target as the runner would record it, for derive_facts."""
    result = TargetResult(check.name, ctx.target, outcome.status, outcome.reason, outcome.detail, 0.0,
                          outcome.evidence, time.time())
    return CheckRun.of(check, [result])


# -- one transaction: the UDP exchange under the IKE probes, and a STUN Binding -------------------------


def udp_exchange(peer: socket.socket, deadline: float, clock=time.monotonic, **schedule) -> tuple[str, int, str, Reason]:
    async def main():
        with UdpProbe.open(peer.getsockname(), clock) as udp:
            return await udp.exchange(b"request", lambda data: data, deadline=deadline, **schedule)

    result = asyncio.run(main())
    return result.result, result.attempts, result.detail, result.result


def stun_transaction(peer: socket.socket, deadline: float, clock=time.monotonic, **schedule) -> tuple[str, int, str, Reason]:
    async def main():
        with StunClient.open(clock) as client:
            return await client.binding(peer.getsockname(), deadline=Deadline(deadline), **schedule)

    answer = asyncio.run(main())
    return answer.kind, answer.attempts, answer.detail, answer.kind


BOTH_CLIENTS = pytest.mark.parametrize("transact", [udp_exchange, stun_transaction], ids=["udp_probe", "stun_client"])


@BOTH_CLIENTS
def test_a_deadline_that_passed_before_the_first_send_is_a_timeout(transact):
    with silent_peer() as peer:
        kind, attempts, detail, reason = transact(peer, time.monotonic() - 1.0)
        assert received(peer) == 0
    assert (kind, attempts, reason) == ("timeout", 0, Reason.TIMEOUT)
    assert "the deadline passed before the first datagram was sent" in detail


@BOTH_CLIENTS
def test_a_deadline_within_one_rto_of_the_send_is_a_timeout(transact):
    with silent_peer() as peer:
        kind, attempts, detail, reason = transact(peer, 0.01, FromFirstReading(), rto=LONG_RTO_SECONDS)
    # One datagram, or none if the machine stalled 10 ms before sending: either way not silence.
    assert (kind, reason) == ("timeout", Reason.TIMEOUT) and attempts <= 1
    assert "the deadline" in detail


@BOTH_CLIENTS
def test_a_silent_peer_with_time_to_answer_is_still_no_response(transact):
    with silent_peer() as peer:
        kind, attempts, _, reason = transact(peer, 1.0, FromFirstReading(), rto=0.1)
        arrivals = received(peer)
    assert (kind, reason) == ("no_response", Reason.NO_RESPONSE)
    assert attempts >= 1 and arrivals == attempts


def test_ike_facts_stay_unknown_when_nothing_was_sent():
    # A gateway on loopback's UDP 500: with the deadline past, nothing is sent to it at all.
    check = CHECKS["ike_udp500"]
    ctx = past_deadline_context(check, Targets(gateways=("127.0.0.1",),
                                               ike_offer=load_ruleset("azure-current").ike_offer))
    outcome = asyncio.run(check.probe(ctx))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    gateway = outcome.evidence
    assert (gateway.result, gateway.attempts, gateway.reachable) == ("timeout", 0, None)
    facts = derive_facts([as_run(check, ctx, outcome)])
    assert facts["reachability"]["ike_udp500"]["reachable"] is None


# -- STUN facts ----------------------------------------------------------------------------------------


def stun_check(peer: socket.socket, ctx_deadline: float, clock) -> CheckRun:
    """stun_binding's result for the one server `peer`, in its own session as the runner opens it."""
    host, port = peer.getsockname()
    targets = Targets(stun=(Endpoint(host, port),))
    (target,) = targets.of_scope(stun_binding.CHECK.scope)

    async def main() -> CheckRun:
        async with stun_binding.CHECK.session(targets, clock) as session:
            ctx = CheckContext(targets=targets, target=target, deadline=ctx_deadline, dependencies={},
                               resolver=Resolver(), logger=logging.getLogger("test_no_send_no_verdict.stun"),
                               clock=clock, session=session)
            return as_run(stun_binding.CHECK, ctx, await stun_binding.probe(ctx))

    return asyncio.run(main())


def test_udp_is_not_called_blocked_when_nothing_was_sent():
    with silent_peer() as peer:
        run = stun_check(peer, time.monotonic() - 1.0, time.monotonic)
        assert received(peer) == 0
    assert (run.status, run.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert [r.evidence.result for r in run.results] == ["timeout"]
    assert derive_facts([run])["nat"]["udp_blocked"] is None


def test_udp_is_called_blocked_when_the_same_server_stays_silent_with_time_to_answer():
    # The contrast to the test above: only the missing send made the fact unknown.
    with silent_peer() as peer:
        run = stun_check(peer, 1.0, FromFirstReading())
    assert (run.status, run.reason) == (Status.FAIL, Reason.NO_RESPONSE)
    assert derive_facts([run])["nat"]["udp_blocked"] is True


# -- ESP and path MTU: the same rule for their own probes -------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="ESP needs a raw socket (CAP_NET_RAW)")
def test_esp_with_no_time_to_send_is_a_timeout_not_silence():
    ctx = past_deadline_context(esp.CHECK, Targets(gateways=("127.0.0.1",)))
    outcome = asyncio.run(esp.probe(ctx))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    gateway = outcome.evidence
    assert (gateway.result, gateway.sent, gateway.reachable) == (Reason.TIMEOUT, 0, None)
    assert derive_facts([as_run(esp.CHECK, ctx, outcome)])["reachability"]["esp"]["reachable"] is None


def test_path_mtu_with_no_time_to_send_is_a_timeout_not_silence():
    ctx = past_deadline_context(path_mtu.CHECK, Targets(gateways=("127.0.0.1",)))
    outcome = asyncio.run(path_mtu.probe(ctx))
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert outcome.evidence.probes_sent == 0 and "the deadline passed before the first" in outcome.detail
    assert derive_facts([as_run(path_mtu.CHECK, ctx, outcome)])["path_mtu"]["bytes"] is None
