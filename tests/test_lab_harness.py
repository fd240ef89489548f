"""Tests of the namespace lab harness (tests/lab.py) against real peers (coturn, iptables).

Observed with coturn 4.6.1 (Debian 12), `turnutils_natdiscovery -m -f 203.0.113.10` in onprem:
  masquerade   -> "NAT with Endpoint Independent Mapping!" / "NAT with Address and Port Dependent Filtering!"
  cgnat        -> the same as masquerade
  random-fully -> "NAT with Address and Port Dependent Mapping!" / "NAT with Address and Port Dependent Filtering!"
  public       -> "NAT with Endpoint Independent Mapping!" / "NAT with Endpoint Independent Filtering!"
                  (no -L: the tool compares with 0.0.0.0); with -L 198.51.100.2 it prints
                  "No NAT! (Endpoint Independent Mapping)" after the 1st answer, then still
                  "NAT with Endpoint Independent Mapping!", and "NAT with Endpoint Independent Filtering!"
  udp=drop     -> no verdict: "STUN receive timeout.." once per phase, exit status 0, ~6 s
Each unanswered exchange costs the tool ~3 s, so NAT cases take ~6 s (two filtering
tests time out); the whole file runs in ~25 s.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
try:
    from tests.lab import Lab, NAT_MODES, cleanup_stale, lab_unavailable_reason, parse_natdiscovery
except ImportError:
    sys.path.insert(0, _HERE)
    from lab import Lab, NAT_MODES, cleanup_stale, lab_unavailable_reason, parse_natdiscovery

_REASON = lab_unavailable_reason()


def needs_lab(test):
    """Mark a test as a lab test (pyproject marker `lab`) and skip it with the reason when no lab."""
    return pytest.mark.lab(pytest.mark.skipif(_REASON is not None, reason=_REASON or "")(test))

FIXTURES = os.path.join(_HERE, "fixtures", "stun")

# A tiny STUN Binding client run inside a namespace: prints "ip:port" of XOR-MAPPED-ADDRESS
# (or "TIMEOUT" / "REFUSED").
_STUN_CLIENT = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[2]) if len(sys.argv) > 2 else 0))
s.settimeout(float(sys.argv[3]) if len(sys.argv) > 3 else 2.0)
for dst in sys.argv[1].split(","):
    tid = b"xcheck-test0"
    s.sendto(struct.pack("!HHI", 1, 0, 0x2112A442) + tid, (dst, 3478))
    try:
        d, _ = s.recvfrom(2048)
    except socket.timeout:
        print("TIMEOUT"); continue
    i = 20
    while i < 20 + struct.unpack("!H", d[2:4])[0]:
        t, n = struct.unpack("!HH", d[i:i + 4])
        if t == 0x0020:
            port = struct.unpack("!H", d[i + 6:i + 8])[0] ^ 0x2112
            ip = bytes(a ^ b for a, b in zip(d[i + 8:i + 12], b"\x21\x12\xa4\x42"))
            print("%s:%d" % (socket.inet_ntoa(ip), port))
        i += 4 + (n + 3) // 4 * 4
"""

# Connected UDP socket: ICMP port unreachable surfaces as ECONNREFUSED on recv.
_UDP_PROBE = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2.0)
s.connect((sys.argv[1], 3478))
s.send(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"xcheck-test1")
try:
    s.recv(2048); print("ANSWER")
except ConnectionRefusedError:
    print("REFUSED")
except socket.timeout:
    print("TIMEOUT")
"""


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------------------- no root needed


def test_parse_natdiscovery_is_strict():
    out = "\n-= Mapping Behavior Discovery =-\nNAT with Endpoint Independent Mapping!\n" \
          "\n-= Filtering Behavior Discovery =-\nNAT with Address and Port Dependent Filtering!\n"
    r = parse_natdiscovery(out)
    assert (r["mapping"], r["filtering"], r["nat"], r["raw"]) == (
        "endpoint-independent", "address-and-port-dependent", True, out)
    # what coturn 4.6.1 prints with -L and no NAT: "No NAT!", then the NAT wording anyway
    r = parse_natdiscovery("No NAT! (Endpoint Independent Mapping)\nNAT with Endpoint Independent Mapping!\n"
                           "No NAT! (Endpoint Independent Mapping)\nNAT with Address Dependent Filtering!\n")
    assert (r["mapping"], r["filtering"], r["nat"]) == ("endpoint-independent", "address-dependent", False)
    # unknown / slightly different wording -> None, raw kept
    for text in ("NAT with Full Cone Mapping!\n", "NAT with endpoint independent mapping\n", ""):
        r = parse_natdiscovery(text)
        assert (r["mapping"], r["filtering"], r["nat"], r["raw"]) == (None, None, None, text)
    # two different verdicts -> ambiguous -> None
    r = parse_natdiscovery("NAT with Address Dependent Mapping!\nNAT with Endpoint Independent Mapping!\n")
    assert r["mapping"] is None


def _read_fixture(path: str) -> tuple[list[str], bytes]:
    # format of tests/fixtures/stun/README.md: text after "#" is a comment, whitespace ignored
    with open(path) as f:
        lines = f.read().splitlines()
    header = [line for line in lines if line.startswith("#")]
    return header, bytes.fromhex("".join("".join(line.split("#")[0] for line in lines).split()))


def test_recorded_coturn_fixtures_are_well_formed():
    files = sorted(f for f in os.listdir(FIXTURES) if re.match(r"coturn-.*\.hex$", f))
    expected = {"coturn-4.6.1-binding-success.hex", "coturn-4.6.1-change-port.hex",
                "coturn-4.6.1-change-ip-port.hex", "coturn-4.6.1-plain-binding-success.hex",
                "coturn-4.6.1-error-420.hex"}
    assert expected <= set(files)
    for name in files:
        header, msg = _read_fixture(os.path.join(FIXTURES, name))
        assert header, name
        tid_hex = re.search(r"transaction id ([0-9a-f]{24})", header[0]).group(1)
        mtype, mlen, cookie = struct.unpack("!HHI", msg[:8])
        assert cookie == 0x2112A442 and mlen == len(msg) - 20, name
        assert msg[8:20].hex() == tid_hex, name
        assert mtype == (0x0111 if "420" in name else 0x0101), name
        attrs, i = {}, 20
        while i < len(msg):
            t, n = struct.unpack("!HH", msg[i:i + 4])
            attrs[t] = msg[i + 4:i + 4 + n]
            i += 4 + (n + 3) // 4 * 4
        assert i == len(msg), name
        if mtype == 0x0111:
            assert attrs[0x0009][2:4] == b"\x04\x14", name  # ERROR-CODE class 4 number 20
        else:
            assert 0x0020 in attrs, name  # XOR-MAPPED-ADDRESS
            assert (0x802C in attrs) == ("plain" not in name), name  # OTHER-ADDRESS iff RFC 5780


# ---------------------------------------------------------------------------- real lab


@needs_lab
@pytest.mark.parametrize("nat", NAT_MODES)
def test_each_nat_mode_builds_and_reaches_cloud(nat):
    expected_onprem = {"public": "198.51.100.2", "masquerade": "10.0.0.2",
                       "random-fully": "10.0.0.2", "cgnat": "100.64.0.2"}[nat]
    with Lab(nat=nat) as lab:
        assert lab.onprem_address == expected_onprem
        assert set(lab.namespaces) <= _netns_names()
        addrs = lab.run(lab.onprem, ["ip", "-4", "-o", "addr", "show"], check=True).stdout
        assert expected_onprem + "/" in addrs
        r = lab.run(lab.onprem, ["ping", "-c1", "-W10", lab.stun_primary])  # -W: only a bound on a hang
        assert r.returncode == 0, r.stdout + r.stderr
        # the STUN server sees the router's address behind NAT, onprem's own in public mode
        seen = lab.run(lab.onprem, [sys.executable, "-c", _STUN_CLIENT, lab.stun_primary], check=True)
        want = expected_onprem if nat == "public" else lab.router_wan_address
        assert seen.stdout.split()[0].split(":")[0] == want
        assert lab.timings["setup"] < 60  # a bound on a hang, generous for a loaded machine


@needs_lab
def test_natdiscovery_masquerade_and_random_fully_differ():
    with Lab(nat="masquerade") as lab:
        masq = lab.natdiscovery(timeout=20)
    assert "NAT with Endpoint Independent Mapping!" in masq["raw"].splitlines()
    assert (masq["mapping"], masq["filtering"], masq["nat"]) == (
        "endpoint-independent", "address-and-port-dependent", True), masq["raw"]
    with Lab(nat="random-fully") as lab:
        rf = lab.natdiscovery(timeout=20)
    assert "NAT with Address and Port Dependent Mapping!" in rf["raw"].splitlines()
    assert (rf["mapping"], rf["filtering"]) == (
        "address-and-port-dependent", "address-and-port-dependent"), rf["raw"]
    assert rf["mapping"] != masq["mapping"]


@needs_lab
def test_natdiscovery_public_has_no_nat():
    with Lab(nat="public") as lab:
        plain = lab.natdiscovery(timeout=20)
        bound = lab.natdiscovery(timeout=20, bind_local=True)
    # without -L the tool compares with 0.0.0.0 and uses NAT wording even here
    assert (plain["mapping"], plain["filtering"]) == ("endpoint-independent", "endpoint-independent"), plain["raw"]
    assert "No NAT! (Endpoint Independent Mapping)" in bound["raw"].splitlines(), bound["raw"]
    assert (bound["mapping"], bound["filtering"], bound["nat"]) == (
        "endpoint-independent", "endpoint-independent", False)


@needs_lab
def test_udp_drop_natdiscovery_gets_no_answer():
    with Lab(nat="masquerade", udp="drop") as lab:
        t = time.monotonic()
        r = lab.natdiscovery(timeout=15)
        took = time.monotonic() - t
    assert took < 15 + 15  # killed at its timeout, not left running (generous for a loaded machine)
    assert (r["mapping"], r["filtering"], r["responses"]) == (None, None, 0), r["raw"]
    assert r["timed_out"] or "STUN receive timeout.." in r["raw"].splitlines()


@needs_lab
def test_udp_drop_vs_reject_and_router_iptables():
    with Lab(udp="drop") as drop, Lab(udp="reject") as reject, Lab() as open_:
        assert len({drop.name, reject.name, open_.name}) == 3
        probe = lambda lab: lab.run(lab.onprem, [sys.executable, "-c", _UDP_PROBE, lab.stun_primary],
                                    check=True).stdout.strip()
        assert probe(drop) == "TIMEOUT"
        assert probe(reject) == "REFUSED"
        assert probe(open_) == "ANSWER"
        # router_iptables acts on this lab's router only
        open_.router_iptables("-I", "FORWARD", "-p", "icmp", "-j", "DROP")
        assert open_.run(open_.onprem, ["ping", "-c1", "-W1", open_.stun_primary]).returncode != 0
        assert drop.run(drop.onprem, ["ping", "-c1", "-W10", drop.stun_primary]).returncode == 0


@needs_lab
def test_plain_and_extra_plain_stun_servers():
    with Lab(stun="plain", extra_plain_stun=2) as lab:
        assert lab.plain_stun_servers == ["203.0.113.20", "203.0.113.21"]
        listening = lab.run(lab.cloud, ["ss", "-ulnH"], check=True).stdout
        assert "203.0.113.10:3478" in listening and "203.0.113.20:3478" in listening
        assert ":3479" not in listening and "203.0.113.11:" not in listening
        # masquerade keeps one mapping for one local port across servers (EIM)
        dsts = ",".join([lab.stun_primary, *lab.plain_stun_servers])
        out = lab.run(lab.onprem, [sys.executable, "-c", _STUN_CLIENT, dsts, "41000"], check=True).stdout.split()
        assert out == ["203.0.113.1:41000"] * 3
    with Lab(stun="none") as lab:
        assert lab.coturn == []
        assert lab.run(lab.cloud, ["ss", "-ulnH"], check=True).stdout.strip() == ""


@needs_lab
def test_teardown_removes_namespaces_and_processes():
    lab = Lab(extra_plain_stun=1)
    with lab:
        nss = lab.namespaces
        pids = [p.pid for p in lab.coturn]
        sleeper = lab.spawn(lab.onprem, ["sleep", "300"])
        pids.append(sleeper.pid)
        assert len(nss) == 3 and set(nss) <= _netns_names()
        assert all(_alive(p) for p in pids)
    assert not set(nss) & _netns_names()
    assert not any(_alive(p) for p in pids)
    assert not os.path.exists(lab.tmpdir)
    assert lab.timings["teardown"] < 60  # killed, not waited for (sleep 300); generous for a loaded machine


@needs_lab
def test_teardown_on_exception_inside_with_block():
    class Boom(Exception):
        pass

    holder = {}
    with pytest.raises(Boom):
        with Lab(nat="cgnat") as lab:
            holder.update(nss=lab.namespaces, pids=[p.pid for p in lab.coturn])
            holder["pids"].append(lab.spawn(lab.cloud, ["sleep", "300"]).pid)
            raise Boom()
    assert holder["nss"] and not set(holder["nss"]) & _netns_names()
    assert not any(_alive(p) for p in holder["pids"])


@needs_lab
def test_stale_namespaces_of_dead_owners_are_cleaned():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = "xl%06xff-cloud" % (dead.pid & 0xFFFFFF)
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        with Lab(stun="none") as lab:
            assert stale not in _netns_names()
            assert lab.name.startswith("xl%06x" % (os.getpid() & 0xFFFFFF))
        assert stale not in cleanup_stale()  # already gone
    finally:
        if stale in _netns_names():
            subprocess.run(["ip", "netns", "del", stale])
