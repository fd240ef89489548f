"""Hostile STUN servers: an alternate address xcheck must never send to, a mapped address no host has.

Each is `fail` / `invalid_response` naming the field and its value, never a crash, and nothing is
sent there. The rules are tested with injected server addresses; the probes against a lying server
on loopback for the addresses that stay on this host (tests/hostile_stun_server.py), and in the
lab, `xcheck run` behind NAT against a lying server in `cloud` for all of them, with a listener
wherever a request sent to the address would land: onprem itself, and the router (its LAN address,
and a link-local address put on it). A request that reaches none of them (the limited broadcast,
which the kernel refuses without SO_BROADCAST) is covered by the lying server's own log: every
request it saw came from stun_binding's one socket, so nat_behavior sent nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_lab, run_xcheck
from hostile_stun_server import lying_answer
from lab import Lab

from agent import runner
from checks.probes import nat_behavior, stun_binding
from checks.protocols import stun
from checks.contract import CheckRun, Reason, Status
from checks.targets import Endpoint, Targets
from checks.transport.stun_client import mapped_address_problem

HELPER = str(Path(__file__).with_name("hostile_stun_server.py"))
T = stun.TransportAddress.parse


# --- the rules, with the server's address injected ----------------------------------------------

@pytest.mark.parametrize(("other", "server", "problem"), [
    ("203.0.113.11:0", "203.0.113.10:3478", "port 0"),
    ("0.0.0.0:3479", "203.0.113.10:3478", "unspecified address"),
    ("255.255.255.255:3479", "203.0.113.10:3478", "reserved address"),
    ("240.0.0.1:3479", "203.0.113.10:3478", "reserved address"),
    ("224.0.0.1:3479", "203.0.113.10:3478", "multicast address"),
    ("127.0.0.1:3479", "203.0.113.10:3478", "loopback address, though the server 203.0.113.10 is public"),
    ("169.254.169.254:3479", "203.0.113.10:3478", "link-local address, though"),
    ("169.254.169.254:3479", "10.1.0.4:3478", "link-local address, though"),
    ("10.0.0.1:3479", "203.0.113.10:3478", "rfc1918 address, though the server 203.0.113.10 is public"),
    ("127.0.0.2:3479", "10.1.0.4:3478", "loopback address"),
    ("203.0.113.10:3479", "203.0.113.10:3478", "in both IP and port"),
    ("203.0.113.11:3478", "203.0.113.10:3478", "in both IP and port"),
    ("[2001:db8::1]:3479", "203.0.113.10:3478", "not IPv4"),
])
def test_an_alternate_address_no_request_may_go_to(other, server, problem):
    assert problem in nat_behavior.alternate_address_problem(T(other), T(server))


@pytest.mark.parametrize(("other", "server"), [
    ("203.0.113.11:3479", "203.0.113.10:3478"),  # the lab's coturn
    ("127.0.0.2:40001", "127.0.0.1:40000"),  # a server on loopback
    ("10.1.0.5:3479", "10.1.0.4:3478"),  # xcheck responder in a virtual network, over a VPN
    ("203.0.113.11:3479", "10.1.0.4:3478"),  # an alternate that reaches further than the server
    ("169.254.1.2:3479", "169.254.1.1:3478"),
    ("100.64.9.9:3479", "10.1.0.4:3478"),
])
def test_an_alternate_address_the_tests_may_use(other, server):
    assert nat_behavior.alternate_address_problem(T(other), T(server)) is None


@pytest.mark.parametrize(("mapped", "server", "problem"), [
    ("0.0.0.0:40000", "203.0.113.10", "unspecified address"),
    ("203.0.113.1:0", "203.0.113.10", "port 0"),
    ("224.0.0.1:40000", "203.0.113.10", "multicast address"),
    ("255.255.255.255:40000", "203.0.113.10", "reserved address"),
    ("127.0.0.1:40000", "203.0.113.10", "loopback address, though the server 203.0.113.10 is not on loopback"),
])
def test_a_mapped_address_no_host_can_have(mapped, server, problem):
    assert problem in mapped_address_problem(T(mapped), server)


@pytest.mark.parametrize(("mapped", "server"), [
    ("203.0.113.1:40000", "203.0.113.10"),  # the lab's NAT, a documentation address
    ("127.0.0.1:40000", "127.0.0.1"),
    ("10.0.0.2:40000", "203.0.113.10"),  # a public server inside the same private network
    ("100.64.0.2:40000", "203.0.113.10"),
    ("169.254.7.7:40000", "203.0.113.10"),  # a host with only a link-local address, the server on its link
])
def test_a_mapped_address_a_host_can_have(mapped, server):
    assert mapped_address_problem(T(mapped), server) is None


# --- a lying server on loopback ----------------------------------------------------------------

class LyingServer:
    """tests/hostile_stun_server.py's answers from a socket on 127.0.0.1; every request's source kept."""

    def __init__(self, **lies):
        self.lies = lies
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.sources: list[tuple[str, int]] = []

    def _on_request(self):
        data, source = self.sock.recvfrom(65535)
        self.sources.append(source)
        answer = lying_answer(data, source, self.address, **self.lies)
        if answer is not None:
            self.sock.sendto(answer, source)

    @contextlib.asynccontextmanager
    async def running(self):
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._on_request)
        try:
            yield self
        finally:
            loop.remove_reader(self.sock.fileno())
            self.sock.close()


def run_checks(server: LyingServer, timeout: float) -> list[CheckRun]:
    """stun_binding and nat_behavior through the runner, as `xcheck run` runs them. A valid answer
    ends stun_binding at once; a lying one makes it wait out `timeout` for a better one."""
    async def main():
        async with server.running():
            return await runner.run_checks([stun_binding.CHECK, nat_behavior.CHECK],
                                           Targets(stun=(Endpoint(*server.address),)), timeout=timeout)

    return asyncio.run(main())


def loopback_listener() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    return listener


def received(listener: socket.socket) -> list[tuple[str, int]]:
    sources = []
    with contextlib.suppress(BlockingIOError):
        while True:
            sources.append(listener.recvfrom(65535)[1])
    return sources


@pytest.mark.parametrize(("other", "problem"), [
    ("127.0.0.2:0", "port 0"),  # crashed nat_behavior (exception) before
    ("0.0.0.0:{port}", "unspecified address"),  # was sent to: Linux delivers it to 127.0.0.1
    ("255.255.255.255:{port}", "reserved address"),  # was tried: the kernel refused (network_error)
    ("127.0.0.1:{server}", "in both IP and port"),
])
def test_an_unusable_other_address_on_loopback(other, problem):
    with loopback_listener() as listener:
        server = LyingServer()
        other = other.format(port=listener.getsockname()[1], server=server.address[1])
        server.lies["other"] = T(other)
        binding, behavior = run_checks(server, timeout=30)
        assert binding.status is Status.OK, binding.detail
        assert (behavior.status, behavior.reason) == (Status.FAIL, Reason.INVALID_RESPONSE), behavior.detail
        assert f"OTHER-ADDRESS {other} from 127.0.0.1:{server.address[1]} is refused" in behavior.detail
        assert problem in behavior.detail and behavior.results[0].evidence.other == other
        assert received(listener) == []
        # Every request came from stun_binding's socket: nat_behavior sent none, not even its test I.
        assert {port for _, port in server.sources} == {binding.results[0].evidence.local_port}


@pytest.mark.parametrize(("mapped", "problem"), [
    ("0.0.0.0:40000", "unspecified address"),
    ("127.0.0.1:0", "port 0"),
    ("224.0.0.1:40000", "multicast address"),
])
def test_an_impossible_mapped_address_on_loopback(mapped, problem):
    binding, behavior = run_checks(LyingServer(mapped=T(mapped), other=T("127.0.0.2:40001")), timeout=3)
    assert (binding.status, binding.reason) == (Status.FAIL, Reason.INVALID_RESPONSE)
    assert f"XOR-MAPPED-ADDRESS {mapped} cannot be this host's address: {problem}" in binding.detail
    assert binding.results[0].evidence.result == "invalid_response"
    assert (behavior.status, behavior.reason) == (Status.SKIPPED, Reason.DEPENDENCY_UNAVAILABLE)


# --- the lab: `xcheck run` behind NAT against a lying server ------------------------------------

SERVER = "203.0.113.10:3478"
LANDING_PORT = 3499  # where every lie below points; listened on in onprem and in the router
ROUTER_LINK_LOCAL = "169.254.1.1"


@pytest.fixture(scope="module")
def lab():
    with Lab(nat="masquerade", stun="none") as built:
        built.run(built.router, ["ip", "addr", "add", f"{ROUTER_LINK_LOCAL}/16", "dev", built.router_lan_if],
                  check=True)
        yield built


@contextlib.contextmanager
def helper(lab, namespace: str, *argv: str):
    """tests/hostile_stun_server.py in a lab namespace; yields a list that gets its output lines."""
    process = lab.spawn(namespace, [sys.executable, HELPER, *argv], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready", f"{argv[0]} did not start"
    lines: list[str] = []
    try:
        yield lines
    finally:
        process.terminate()
        lines += process.communicate(timeout=10)[0].splitlines()


def lie(lab, timeout: str, **lies: str) -> tuple[dict, list[dict], dict[str, list[str]]]:
    """`xcheck run` from onprem against the lying server: report, requests it saw, what landed elsewhere."""
    argv = [f"--{name}={value}" for name, value in lies.items()]
    with helper(lab, lab.cloud, "serve", SERVER, *argv) as requests, \
            helper(lab, lab.onprem, "capture", str(LANDING_PORT)) as onprem, \
            helper(lab, lab.router, "capture", str(LANDING_PORT)) as router:
        completed, report = run_xcheck("run", "--format", "json", "--stun", SERVER, "--timeout", timeout, lab=lab)
    assert completed.returncode == 0 and "Traceback" not in completed.stderr, completed.stderr
    landed = {"onprem": json.loads(onprem[0])[str(LANDING_PORT)], "router": json.loads(router[0])[str(LANDING_PORT)]}
    return report, [json.loads(line) for line in requests], landed


def checks_of(report: dict) -> dict[str, dict]:
    return {check["name"]: check for check in report["checks"]}


@pytest.mark.lab
@needs_lab
@pytest.mark.parametrize(("other", "problem"), [
    ("203.0.113.11:0", "port 0"),
    (f"0.0.0.0:{LANDING_PORT}", "unspecified address"),
    (f"255.255.255.255:{LANDING_PORT}", "reserved address"),
    (f"224.0.0.1:{LANDING_PORT}", "multicast address"),
    (f"127.0.0.1:{LANDING_PORT}", "loopback address, though the server 203.0.113.10 is public"),
    (f"{ROUTER_LINK_LOCAL}:{LANDING_PORT}", "link-local address, though the server 203.0.113.10 is public"),
    (f"10.0.0.1:{LANDING_PORT}", "rfc1918 address, though the server 203.0.113.10 is public"),  # our own LAN
    (f"203.0.113.10:{LANDING_PORT}", "in both IP and port"),
])
def test_xcheck_run_sends_nothing_to_an_unusable_other_address(lab, other, problem):
    report, requests, landed = lie(lab, "10", other=other)  # answered at once: the timeout bounds a hang only
    checks = checks_of(report)
    assert checks["stun_binding"]["status"] == "ok"
    behavior = checks["nat_behavior"]
    assert (behavior["status"], behavior["reason"]) == ("fail", "invalid_response"), behavior["detail"]
    assert f"OTHER-ADDRESS {other} from {SERVER} is refused, nothing was sent to it: " in behavior["detail"]
    assert problem in behavior["detail"]
    assert report["facts"]["nat"]["udp_blocked"] is False and report["facts"]["nat"]["mapping"] is None
    assert landed == {"onprem": [], "router": []}
    # The lying server saw stun_binding's socket only (one NAT mapping, one port): nat_behavior sent nothing.
    assert len({request["from"] for request in requests}) == 1
    assert {request["to"] for request in requests} == {SERVER}


@pytest.mark.lab
@needs_lab
def test_the_listeners_see_what_is_sent_to_a_usable_other_address(lab):
    """The control: the same setup sees nat_behavior's requests when the alternate address is a real one."""
    alternate = f"203.0.113.11:{LANDING_PORT}"
    with helper(lab, lab.cloud, "serve", SERVER, f"--other={alternate}", f"--also={alternate}") as requests:
        completed, report = run_xcheck("run", "--format", "json", "--stun", SERVER, "--timeout", "10", lab=lab)
    assert completed.returncode == 0, completed.stderr
    seen = [json.loads(line) for line in requests]
    assert alternate in {request["to"] for request in seen}  # mapping tests II and III
    assert len({request["from"] for request in seen}) >= 2  # stun_binding's socket and nat_behavior's


@pytest.mark.lab
@needs_lab
@pytest.mark.parametrize(("mapped", "problem"), [
    ("0.0.0.0:40000", "unspecified address"),
    ("203.0.113.1:0", "port 0"),
    ("127.0.0.1:40000", "loopback address, though the server 203.0.113.10 is not on loopback"),
])
def test_xcheck_run_refuses_an_impossible_mapped_address(lab, mapped, problem):
    report, _, _ = lie(lab, "3", mapped=mapped, other=f"203.0.113.11:{LANDING_PORT}")  # waited out: a lie ends nothing
    checks = checks_of(report)
    binding = checks["stun_binding"]
    assert (binding["status"], binding["reason"]) == ("fail", "invalid_response")
    assert f"XOR-MAPPED-ADDRESS {mapped} cannot be this host's address: {problem}" in binding["detail"]
    assert checks["nat_behavior"]["reason"] == "dependency_unavailable"
    nat = report["facts"]["nat"]
    assert nat["udp_blocked"] is False  # an answer came: UDP passes, the server lied
    assert nat["reflexive_address"] is None and nat["detected"] is None
