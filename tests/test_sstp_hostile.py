"""SSTP needs SSTP: HTTPS servers on loopback that answer SSTP_DUPLEX_POST with a 200 that is no
SSTP server's answer (a web page, chunked, no length), with heads that break HTTP, or byte by
byte; the facts and verdicts that follow; and sstpc (sstp-client) refusing the same servers
that xcheck calls invalid.

An SSTP server answers `HTTP/1.1 200` with Content-Length 18446744073709551615 (MS-SSTP §4.1,
whose example answer is SSTP_ANSWER below); sstpc refuses a 200 with any other Content-Length
(sstp-http.c, sstp_recv_hello_complete).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import shutil
import ssl
import time

import pytest
from test_lab_sstp import _pki, _sstpc
from test_tls import LOCALHOST, _run, _start, check_against, pki, trust_test_ca  # noqa: F401 (fixtures)
from test_verdicts import req

from agent.facts import derive_facts
from agent.runner import run_checks
from agent.verdicts import OPTIONS, evaluate, load_ruleset
from checks.probes import sstp, tls_tcp443
from checks.contract import Outcome, Reason, Status
from checks.targets import Targets
from checks.protocols.http import MAX_HEAD_BYTES, MAX_HEADER_FIELDS

SSTP_ANSWER = (b"HTTP/1.1 200\r\nContent-Length: 18446744073709551615\r\nServer: Microsoft-HTTPAPI/2.0\r\n"
               b"Date: Thu, 09 Nov 2006 00:51:09 GMT\r\n\r\n")
PAGE = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>"
EMPTY_PAGE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
SSTPC_REFUSED = "HTTP handshake with server failed"  # what sstpc logs when it judged the answer and refused it
KEEP_OPEN_SECONDS = 15.0  # a web server keeps the connection for the next request; the client ends it first
TRICKLE_SECONDS = 0.05
# A check ends as soon as it has its answer: a long deadline costs nothing, and holds on a loaded machine.
CHECK_TIMEOUT = 30.0
SLOW_LORIS_TIMEOUT = 2.0  # what ends a slow loris is the deadline: a short one keeps the test short
# A check must end near its deadline; this much more only proves that it does not hang.
HANG_BOUND_SECONDS = 20.0


def web_server(answer: bytes):
    """Read one request head, send `answer`, keep the connection as a keep-alive server does."""
    async def handle(reader, writer):
        try:
            async with asyncio.timeout(KEEP_OPEN_SECONDS):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
                while await reader.read(4096):
                    pass
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.transport.abort()
    return handle


def trickler(first: bytes):
    """After the request head, `first` and then one byte of an endless header at a time: a slow loris."""
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(first)
        while True:
            await asyncio.sleep(TRICKLE_SECONDS)
            writer.write(b"a")
            await writer.drain()
    return handle


# ---------------------------------------------------------------------------------------
# What xcheck makes of each answer

def test_the_answer_ms_sstp_gives_is_an_sstp_server(pki, trust_test_ca):
    outcome = check_against(sstp, web_server(SSTP_ANSWER), pki.context(pki.good), timeout=CHECK_TIMEOUT)
    gateway = outcome.evidence
    assert (outcome.status, outcome.reason) == (Status.OK, Reason.SUCCESS)
    assert gateway.reachable is True and gateway.exchange.sstp_content_length is True
    assert outcome.detail == "SSTP server: 'HTTP/1.1 200'"


@pytest.mark.parametrize(("answer", "why"), [
    (PAGE, "Content-Length '13', where an SSTP server announces 18446744073709551615"),
    (EMPTY_PAGE, "Content-Length '0'"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "a body framed by Transfer-Encoding 'chunked'"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html></html>", "no Content-Length"),
    (b"HTTP/1.1 200\r\nContent-Length: 18446744073709551615\r\nContent-Length: 0\r\n\r\n", "2 Content-Length fields"),
    # What C's strtoull reads as 2^64 - 1 too: not the decimal number MS-SSTP sends.
    (b"HTTP/1.1 200\r\nContent-Length: -1\r\n\r\n", "Content-Length '-1'"),
    (b"HTTP/1.1 200\r\nContent-Length: 18446744073709551616\r\n\r\n", "Content-Length '18446744073709551616'"),
    (b"HTTP/1.1 200\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "Content-Length '" + "9" * 40 + "'"),
])
def test_a_200_that_is_not_sstp_is_an_invalid_response(pki, trust_test_ca, answer, why):
    outcome = check_against(sstp, web_server(answer), pki.context(pki.good), timeout=CHECK_TIMEOUT)
    gateway = outcome.evidence
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.INVALID_RESPONSE)
    assert gateway.result == "invalid_response" and gateway.reachable is False
    assert gateway.exchange.answer["status"] == 200
    assert gateway.exchange.answer["status_line"] == answer.split(b"\r\n")[0].decode()
    assert outcome.detail.startswith("HTTP 200 but not SSTP: ") and why in outcome.detail
    assert len(outcome.detail) < 200  # the peer's value is cut, not copied whole


@pytest.mark.parametrize(("answer", "why"), [
    (b"HTTP/1.1 200\r\nContent-Length: 18446744073709551615\r\nX-Pad: " + b"a" * (2 * MAX_HEAD_BYTES) + b"\r\n\r\n",
     f"answer head longer than {MAX_HEAD_BYTES} bytes"),
    (b"HTTP/1.1 200\r\nContent-Length: 18446744073709551615\r\n"
     + b"".join(b"X-%d: a\r\n" % i for i in range(MAX_HEADER_FIELDS + 1)) + b"\r\n",
     f"more than {MAX_HEADER_FIELDS} header fields"),
    (b"HTTP/1.1 200 OK\x1b]0;owned\x07\r\nContent-Length: 18446744073709551615\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 2000 OK\r\nContent-Length: 18446744073709551615\r\n\r\n", "not an HTTP/1.x status line"),
    (b"\x00\xff\xfe\xfd\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200\r\nContent-Length: 18446744073709551615\r\nX: a\x00b\r\n\r\n", "control bytes in header field"),
])
def test_a_head_that_breaks_http_is_an_invalid_response(pki, trust_test_ca, answer, why):
    outcome = check_against(sstp, web_server(answer), pki.context(pki.good), timeout=CHECK_TIMEOUT)
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.INVALID_RESPONSE)
    assert outcome.evidence.reachable is False and why in outcome.detail
    assert len(outcome.detail) < 300 and "\x1b" not in outcome.detail and "\x00" not in outcome.detail


@pytest.mark.parametrize("first", [b"", b"HTTP/1.1 200\r\nContent-Length: 18446744073709551615\r\nX-Slow: "])
def test_a_slow_loris_ends_at_the_deadline_as_stalled(pki, trust_test_ca, first):
    started = time.monotonic()
    outcome = check_against(sstp, trickler(first), pki.context(pki.good), timeout=SLOW_LORIS_TIMEOUT)
    took = time.monotonic() - started
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.STALLED)
    assert outcome.evidence.reachable is None and "before the deadline" in outcome.detail
    assert took < SLOW_LORIS_TIMEOUT + HANG_BOUND_SECONDS


# ---------------------------------------------------------------------------------------
# The facts and verdicts that follow

def _facts_against(handler, context: ssl.SSLContext) -> dict:
    """tls_tcp443 and sstp run by the runner against one loopback server, reduced to facts."""
    async def run():
        server, port = await _start(handler, context)
        async with server:
            checks = [dataclasses.replace(module.CHECK, probe=functools.partial(module.probe, port=port))
                      for module in (tls_tcp443, sstp)]
            return await run_checks(checks, Targets(gateways=(LOCALHOST,)), timeout=CHECK_TIMEOUT)
    return derive_facts(asyncio.run(run()))


def _fired(result: dict, option: str) -> set[str]:
    return {reason["rule"] for reason in result["options"][option]["reasons"]}


def test_a_web_server_on_443_is_tls_without_sstp_and_p2s_says_so(pki, trust_test_ca):
    facts = _facts_against(web_server(PAGE), pki.context(pki.good))
    reach = facts["reachability"]
    assert reach["tls_tcp443"]["reachable"] is True  # TCP 443 is open and speaks TLS
    assert reach["sstp"]["reachable"] is False
    assert reach["sstp"]["reason"] == "invalid_response"
    assert reach["sstp"]["detail"].startswith("HTTP 200 but not SSTP: Content-Length '13'")
    [gateway] = reach["sstp"]["gateways"]  # the fact names the gateway that said so
    assert (gateway["gateway"], gateway["reachable"], gateway["reason"]) == (LOCALHOST, False, "invalid_response")
    assert gateway["detail"].startswith("HTTP 200 but not SSTP: Content-Length '13'")

    current = evaluate(load_ruleset("azure-current"), facts, req())
    assert current["options"]["p2s"]["verdict"] == "conditional"
    assert {"current.p2s.sstp-unavailable", "current.p2s.tls-reachable"} <= _fired(current, "p2s")
    assert "current.p2s.sstp-reachable" not in _fired(current, "p2s")
    [unavailable] = [r for r in current["options"]["p2s"]["reasons"] if r["rule"] == "current.p2s.sstp-unavailable"]
    assert "HTTP 200 but not SSTP" in unavailable["text"] and "OpenVPN" in unavailable["text"]
    assert "vpn-gateway-faq-p2s" in unavailable["source"]

    # In 2015 SSTP was P2S's only protocol: no SSTP server, no P2S.
    seed = evaluate(load_ruleset("azure-2015"), facts, req())
    assert seed["options"]["p2s"]["verdict"] == "infeasible"
    assert "2015.p2s.sstp-unreachable" in _fired(seed, "p2s")


def test_an_sstp_server_on_443_keeps_p2s_sstp(pki, trust_test_ca):
    facts = _facts_against(web_server(SSTP_ANSWER), pki.context(pki.good))
    assert facts["reachability"]["sstp"]["reachable"] is True
    for ruleset, rule in (("azure-current", "current.p2s.sstp-reachable"), ("azure-2015", "2015.p2s.sstp-reachable")):
        result = evaluate(load_ruleset(ruleset), facts, req())
        assert rule in _fired(result, "p2s")
        assert result["options"]["p2s"]["verdict"] != "infeasible"
        assert not any(r["verdict"] in ("conditional", "infeasible") and "sstp" in r["rule"]
                       for o in OPTIONS for r in result["options"][o]["reasons"])


# ---------------------------------------------------------------------------------------
# sstpc, a real SSTP client, against the same servers

def needs_sstpc(test):
    for mark in (pytest.mark.lab,
                 pytest.mark.skipif(os.geteuid() != 0, reason="sstpc needs root (it creates /var/run/sstpc)"),
                 pytest.mark.skipif(shutil.which("sstpc") is None,
                                    reason="needs sstpc (Debian: apt-get install -y sstp-client)")):
        test = mark(test)
    return test


def _sstpc_and_xcheck(directory, answer: bytes) -> tuple[str, float | None, Outcome]:
    """sstpc's log and when it got past HTTP, and xcheck's sstp outcome, against one web server."""
    ca, cert, key = _pki(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def run():
        server, port = await _start(web_server(answer), context)
        async with server:
            return await _sstpc(port, ca), await _run(sstp, port, gateway="127.0.0.1", timeout=CHECK_TIMEOUT)

    (log, past_http_after), outcome = asyncio.run(run())
    print(f"sstpc:\n{log}")
    return log, past_http_after, outcome


@needs_sstpc
def test_sstpc_refuses_the_web_server_that_xcheck_calls_invalid(tmp_path):
    """A web server's empty page (sstpc reads the whole head and judges it; after a page with a
    body it waits for the end of a head that already ended, and says nothing to compare)."""
    log, past_http_after, outcome = _sstpc_and_xcheck(tmp_path, EMPTY_PAGE)
    assert "Connected to 127.0.0.1" in log and "verification failed" not in log  # TLS went through
    assert past_http_after is None, log  # never accepted
    if SSTPC_REFUSED in log:  # sstpc judged (rather than missed the answer, see _sstpc): and why
        assert "Received invalid content length" in log, log
    assert (outcome.status, outcome.reason) == (Status.FAIL, Reason.INVALID_RESPONSE)
    assert "HTTP 200 but not SSTP: Content-Length '0'" in outcome.detail
