"""The kernel as the oracle of the firewall evaluator (issue 11, item 4 and "Tests: Firewalls").

Every ruleset of the corpus (tests/fixtures/firewall/) is loaded into the real netfilter of a lab
namespace, read back as the kernel holds it (`nft -j list ruleset`, `iptables-save`), and then
probed with real packets; what became of each packet is the answer `evaluate` must give.

The lab (tests/lab.py, public addressing, no STUN server): its router is the host under test::

    client 198.51.100.2 (.3) --- lan0 [host 203.0.113.1 (.2)] wan0 --- gateway 203.0.113.10 (.11)

Probes, per the tables of a ruleset's sidecar (below):
- output: the host sends to the gateway (from 203.0.113.1, out wan0; conntrack new);
- forward: the client sends through the host to the gateway (in lan0, out wan0; new);
- input-established: the gateway answers the host (to 203.0.113.2, in wan0);
- forward-established: the gateway answers the client (to 198.51.100.3, in wan0, out lan0).
An answer needs the flow it answers: before the ruleset is loaded, under an accept-all ruleset,
the inside end sends first (a UDP datagram, an ESP packet, a whole TCP handshake) and the gateway
receives it, so conntrack holds the flow; then the ruleset is loaded and the gateway answers
(a datagram back, an ESP packet back, data on the TCP connection). The answering addresses
(.2, .3) are not the new probes' (.1, .2), so a new probe never finds a flow of an answer.

A probe is `udp500`, `udp4500`, `esp` or `tcp443` (any udpN/tcpN works), optionally to the second
gateway address: `esp@203.0.113.11`. UDP goes from and to the same port (IKE's habit); TCP is a
connect() from an ephemeral port (a SYN); ESP a raw IP protocol 50 packet with a fresh SPI.

What the kernel did, seen by raw sockets in every namespace (which see every packet delivered to
the namespace's stack, after its input hook):
- delivered: the receiver's stack got it (a TCP probe: its SYN; a TCP answer: its data);
- rejected: the sender got an ICMP destination unreachable quoting it, or a TCP reset for it;
- dropped: neither within SILENCE_SECONDS of the last send.

Corpus: tests/fixtures/firewall/nft/NAME.nft (loaded with `nft -f`) and
tests/fixtures/firewall/iptables/NAME.rules (iptables-restore syntax, loaded into both back ends,
nf_tables and legacy). Each file starts with a comment saying what it tests; NAME.toml beside it
says what the kernel does with each probe (written by reading the rules, then confirmed)::

    [output]                    # one table per path above, each listing at least the 4 probes
    udp500 = "delivered"        # delivered | dropped | rejected
    "udp500@203.0.113.11" = "dropped"
    [mss]                       # optional: the MSS option the gateway sees on a delivered SYN
    "forward tcp443" = 1350
    [unmodelled]                # optional: probes whose fate hangs on a match the evaluator does
    "output esp" = "mark"       # not model (another outcome if it matched): it must answer unknown,
                                # naming a rule whose text has this; it decides every other probe

Only lab addresses are used (203.0.113.0/24, 198.51.100.0/24). Every socket, namespace and
process is closed or removed at the end, also on failure (tests/lab.py removes the namespaces).

    sudo .venv/bin/python tests/firewall_kernel.py [NAME ...]   # print what the kernel does
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import pathlib
import re
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

from lab import Lab, LabError

from agent.audit.firewall.model import CtState, Packet, Path, Protocol

CORPUS = pathlib.Path(__file__).parent / "fixtures" / "firewall"

# Silence counts as "dropped" only this long after the last probe left. On the lab's veths a
# packet, an ICMP error or a reset arrives in well under a millisecond; a loaded 2-core CI machine
# can still keep a namespace's softirq or this process off the CPU for some hundreds of ms. 2 s is
# far above that, and it is paid once per ruleset: all of a ruleset's probes are in flight at once.
SILENCE_SECONDS = 2.0
# The primers run under an accept-all ruleset and arrive at once; this only keeps a broken lab
# from hanging.
PRIME_SECONDS = 10.0
COMMAND_TIMEOUT_SECONDS = 30.0

HOST_ADDRESS = "203.0.113.1"
HOST_ANSWER_ADDRESS = "203.0.113.2"
CLIENT_ADDRESS = "198.51.100.2"
CLIENT_ANSWER_ADDRESS = "198.51.100.3"
GATEWAY = "203.0.113.10"
SECOND_GATEWAY = "203.0.113.11"
LAN_IF = "lan0"
WAN_IF = "wan0"

OUTCOMES = ("delivered", "dropped", "rejected")
STANDARD_PROBES = ("udp500", "udp4500", "esp", "tcp443")
# sidecar table -> the path and conntrack state of its probes
TABLES = {
    "output": (Path.OUTPUT, CtState.NEW),
    "forward": (Path.FORWARD, CtState.NEW),
    "input-established": (Path.INPUT, CtState.ESTABLISHED),
    "forward-established": (Path.FORWARD, CtState.ESTABLISHED),
}
_PROBE_RE = re.compile(r"^(?:(udp|tcp)([1-9][0-9]{0,4})|esp)(?:@(203\.0\.113\.1[01]))?$")
_IPPROTO = {Protocol.UDP: socket.IPPROTO_UDP, Protocol.TCP: socket.IPPROTO_TCP, Protocol.ESP: 50}

# Conntrack runs in a namespace only while some rule needs it. Flows primed under the accept-all
# ruleset must be in conntrack when the ruleset under test is loaded, so a rule that needs
# conntrack (and does nothing) stays loaded throughout, in the back end the readback does not
# show: the legacy one beside nf_tables, an nft table beside the legacy one (iptables-nft-save
# shows only its own tables).
KEEPER_NFT = """table inet xcheck_conntrack {
\tchain keep {
\t\ttype filter hook prerouting priority -500; policy accept;
\t\tct state invalid counter
\t}
}
"""
KEEPER_IPTABLES = "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m conntrack --ctstate INVALID\nCOMMIT\n"
EMPTY_IPTABLES = "".join(
    "*%s\n%sCOMMIT\n" % (table, "".join(":%s ACCEPT [0:0]\n" % chain for chain in chains))
    for table, chains in (
        ("raw", ("PREROUTING", "OUTPUT")),
        ("mangle", ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")),
        ("filter", ("INPUT", "FORWARD", "OUTPUT")),
    )
)


@dataclass(frozen=True)
class Backend:
    """A way of loading and reading back a ruleset, with what resets it to accept-all."""

    name: str
    syntax: str  # which corpus files it loads: "nft" or "iptables"
    load: tuple[str, ...]  # + the fixture's path
    save: tuple[str, ...]  # the readback command, also the readers' `file`
    reset: tuple[tuple[str, ...], str]  # argv and its standard input
    keeper: tuple[tuple[str, ...], str]

    def unavailable_reason(self) -> str | None:
        tools = {self.load[0], self.save[0], self.reset[0][0], self.keeper[0][0]}
        missing = sorted(t for t in tools if shutil.which(t) is None)
        if missing:
            return "backend %s needs %s (Debian: apt-get install -y nftables iptables)" % (
                self.name, ", ".join(missing))
        return None


_NFT_RESET_WITH_KEEPER = (("nft", "-f", "-"), "flush ruleset\n" + KEEPER_NFT)
BACKENDS = (
    Backend("nft", "nft", ("nft", "-f"), ("nft", "-j", "list", "ruleset"),
            reset=(("nft", "-f", "-"), "flush ruleset\n"),
            keeper=(("iptables-legacy-restore",), KEEPER_IPTABLES)),
    # one nft transaction flushes and puts the keeper back: conntrack never stops
    Backend("iptables-nft", "iptables", ("iptables-nft-restore",), ("iptables-nft-save",),
            reset=_NFT_RESET_WITH_KEEPER, keeper=_NFT_RESET_WITH_KEEPER),
    Backend("iptables-legacy", "iptables", ("iptables-legacy-restore",), ("iptables-legacy-save",),
            reset=(("iptables-legacy-restore",), EMPTY_IPTABLES), keeper=_NFT_RESET_WITH_KEEPER),
)


# ---------------------------------------------------------------------------------------
# the corpus


@dataclass(frozen=True)
class Probe:
    key: str  # as the sidecar names it: "<table> <probe>", e.g. "forward-established esp@203.0.113.11"
    path: Path
    ct_state: CtState
    protocol: Protocol
    port: int | None  # the gateway's port; None for ESP
    gateway: str


@dataclass(frozen=True)
class Case:
    name: str  # the file's name without its suffix
    syntax: str  # "nft" or "iptables"
    file: pathlib.Path
    purpose: str  # the file's leading comment
    probes: tuple[Probe, ...]
    expected: dict[str, str]  # probe key -> delivered | dropped | rejected
    mss: dict[str, int] = field(default_factory=dict)
    unmodelled: dict[str, str] = field(default_factory=dict)  # probe key -> text of the rule to name


def load_corpus() -> list[Case]:
    cases = [load_case(syntax, file)
             for syntax, suffix in (("nft", ".nft"), ("iptables", ".rules"))
             for file in sorted((CORPUS / syntax).glob("*" + suffix))]
    if not cases:
        raise ValueError("no ruleset in %s" % CORPUS)
    return cases


def load_case(syntax: str, file: pathlib.Path) -> Case:
    text = file.read_text()
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    purpose = " ".join(c for c in comment if c)
    if not purpose:
        raise ValueError("%s must start with a comment saying what it tests" % file)
    sidecar_file = file.with_suffix(".toml")
    sidecar = tomllib.loads(sidecar_file.read_text())
    stray = set(sidecar) - set(TABLES) - {"mss", "unmodelled"}
    if stray:
        raise ValueError("%s: unknown tables %s" % (sidecar_file, sorted(stray)))
    probes: list[Probe] = []
    expected: dict[str, str] = {}
    for table, (path, ct_state) in TABLES.items():
        entries = sidecar.get(table, {})
        missing = [p for p in STANDARD_PROBES if p not in entries]
        if missing:
            raise ValueError("%s: [%s] must list %s" % (sidecar_file, table, ", ".join(missing)))
        for name, outcome in entries.items():
            m = _PROBE_RE.match(name)
            if m is None or outcome not in OUTCOMES:
                raise ValueError("%s: [%s] %s = %r: a probe is udpN, tcpN or esp (optionally "
                                 "@203.0.113.11), an outcome one of %s"
                                 % (sidecar_file, table, name, outcome, OUTCOMES))
            protocol = Protocol(m.group(1)) if m.group(1) else Protocol.ESP
            port = int(m.group(2)) if m.group(2) else None
            if port is not None and port > 65535:
                raise ValueError("%s: [%s] %s: no such port" % (sidecar_file, table, name))
            key = "%s %s" % (table, name)
            probes.append(Probe(key, path, ct_state, protocol, port, m.group(3) or GATEWAY))
            expected[key] = outcome
    mss = dict(sidecar.get("mss", {}))
    unmodelled = dict(sidecar.get("unmodelled", {}))
    for key in [*mss, *unmodelled]:
        if key not in expected:
            raise ValueError("%s: %r is not one of its probes" % (sidecar_file, key))
    return Case(file.stem, syntax, file, purpose, tuple(probes), expected, mss, unmodelled)


# ---------------------------------------------------------------------------------------
# what the kernel did


@dataclass(frozen=True)
class Seen:
    """What the kernel did with one probe, and the probe as the evaluator is asked about it."""

    probe: Probe
    packet: Packet
    outcome: str  # delivered | dropped | rejected
    detail: str  # the proof: where it arrived, which ICMP error or reset came back, or silence
    mss: int | None = None  # the MSS option of a delivered SYN


@dataclass(frozen=True)
class CaseResult:
    backend: Backend
    case: Case
    readback: str  # the ruleset as the kernel holds it, printed by backend.save
    seen: dict[str, Seen]  # probe key -> what the kernel did


# ---------------------------------------------------------------------------------------
# packets as raw sockets see them (IPv4 header included)


def _ipv4(data: bytes) -> tuple[int, str, str, bytes] | None:
    """(protocol, source, destination, payload) of an IPv4 packet, which may be truncated (as
    the copy inside an ICMP error is)."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    header = (data[0] & 0x0F) * 4
    total = struct.unpack_from("!H", data, 2)[0]
    if header < 20 or len(data) < header:
        return None
    return data[9], socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20]), data[header:total]


def _ends(protocol: int, payload: bytes) -> tuple[int, int | None] | None:
    """The two numbers that tell flows apart: ports, or for ESP the SPI (and None)."""
    if len(payload) < 4:
        return None
    if protocol == 50:
        return struct.unpack_from("!I", payload)[0], None
    return struct.unpack_from("!HH", payload)


def _tcp(payload: bytes) -> tuple[int, int | None, int] | None:
    """(flags, MSS option or None, length of data) of a TCP segment."""
    if len(payload) < 20:
        return None
    offset = (payload[12] >> 4) * 4
    flags = payload[13]
    mss = None
    options = payload[20:offset]
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            break
        if kind == 2 and options[i + 1] == 4 and i + 4 <= len(options):
            mss = struct.unpack_from("!H", options, i + 2)[0]
        i += options[i + 1]
    return flags, mss, max(0, len(payload) - offset)


TCP_RST, TCP_SYN, TCP_ACK = 0x04, 0x02, 0x10


# ---------------------------------------------------------------------------------------
# sockets inside a namespace

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _enter_netns(ns: str) -> None:
    """Move the calling thread into namespace ns (a socket keeps the namespace it was made in)."""
    fd = os.open(os.path.join("/run/netns", ns), os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns into %s: %s" % (ns, os.strerror(err)))
    finally:
        os.close(fd)


@dataclass
class _Flow:
    """One probe on the wire."""

    probe: Probe
    sender: str  # namespace
    receiver: str
    src: str
    dst: str
    sport: int  # source port, or for ESP the SPI
    dport: int | None  # destination port; None for ESP
    inside: str = ""  # an answer's: the inside end that sent first, and its port
    inside_port: int | None = None
    send_error: str = ""
    outcome: str | None = None
    detail: str = ""
    mss: int | None = None

    @property
    def wire(self) -> tuple[int, str, int, str, int | None]:
        return _IPPROTO[self.probe.protocol], self.src, self.sport, self.dst, self.dport

    def packet(self) -> Packet:
        """The evaluator's question about this probe."""
        probe = self.probe
        ports = probe.protocol is not Protocol.ESP
        if probe.ct_state is CtState.NEW:
            in_if = LAN_IF if probe.path is Path.FORWARD else None
            out_if = WAN_IF
        else:
            in_if = WAN_IF
            out_if = LAN_IF if probe.path is Path.FORWARD else None
        return Packet(path=probe.path, protocol=probe.protocol, source=self.src, destination=self.dst,
                      source_port=self.sport if ports else None, destination_port=self.dport if ports else None,
                      in_interface=in_if, out_interface=out_if, ct_state=probe.ct_state)


class FirewallLab:
    """A Lab whose router is the host under test, loading rulesets with one Backend."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._stack = ExitStack()
        self._selector = selectors.DefaultSelector()
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._listeners: dict[tuple[Protocol, str, int], socket.socket] = {}
        self._esp_senders: dict[tuple[str, str], socket.socket] = {}
        self._accepted: dict[tuple[str, int], socket.socket] = {}  # the gateway's TCP connections
        self._spi = 0x78630000  # "xc": unique SPIs in this lab
        self.lab: Lab | None = None

    # -- building and tearing down --------------------------------------------------------

    def __enter__(self) -> FirewallLab:
        try:
            self.lab = self._stack.enter_context(Lab(nat="public", stun="none"))
            self._stack.callback(self._close_sockets)
            self._setup()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _setup(self) -> None:
        lab = self.lab
        layout = (lab.router_wan_address, lab.onprem_address, lab.stun_primary, lab.stun_alternate,
                  lab.router_lan_if, lab.router_wan_if)
        if layout != (HOST_ADDRESS, CLIENT_ADDRESS, GATEWAY, SECOND_GATEWAY, LAN_IF, WAN_IF):
            raise LabError("tests/lab.py's layout %s is not the one the corpus is written for" % (layout,))
        self.host, self.client, self.far = lab.router, lab.onprem, lab.cloud
        self._run(self.host, ["ip", "addr", "add", HOST_ANSWER_ADDRESS + "/24", "dev", WAN_IF])
        self._run(self.client, ["ip", "addr", "add", CLIENT_ANSWER_ADDRESS + "/24", "dev", lab.onprem_if])
        # Linux rate-limits the ICMP errors a host sends: a REJECT must never turn into silence.
        self._run(self.host, ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"])
        argv, text = self.backend.keeper
        self._run(self.host, list(argv), input=text)
        for ns in (self.host, self.client, self.far):
            executor = ThreadPoolExecutor(1, thread_name_prefix="netns-" + ns,
                                          initializer=_enter_netns, initargs=(ns,))
            self._stack.callback(executor.shutdown)
            self._executors[ns] = executor
            for protocol in (socket.IPPROTO_UDP, socket.IPPROTO_TCP, 50, socket.IPPROTO_ICMP):
                sniffer = self._socket(ns, socket.SOCK_RAW, protocol)
                self._selector.register(sniffer, selectors.EVENT_READ, ("sniff", ns))

    def _close_sockets(self) -> None:
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fileobj)
            key.fileobj.close()
        self._selector.close()
        for s in [*self._esp_senders.values(), *self._accepted.values()]:
            s.close()

    def _run(self, ns: str, argv: list[str], input: str | None = None) -> str:
        r = self.lab.run(ns, argv, input=input, timeout=COMMAND_TIMEOUT_SECONDS)
        if r.returncode != 0:
            raise LabError("%s in %s failed (rc=%d): %s" % (" ".join(argv), ns, r.returncode,
                                                             (r.stderr or r.stdout).strip()))
        return r.stdout

    def _socket(self, ns: str, kind: int, protocol: int = 0) -> socket.socket:
        s = self._executors[ns].submit(socket.socket, socket.AF_INET, kind, protocol).result()
        s.setblocking(False)
        return s

    def _listener(self, protocol: Protocol, gateway: str, port: int) -> socket.socket:
        """The gateway's socket on a port (made once): no ICMP port unreachable ever comes from it,
        and it sends the UDP answers."""
        key = (protocol, gateway, port)
        if key not in self._listeners:
            s = self._socket(self.far, socket.SOCK_DGRAM if protocol is Protocol.UDP else socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((gateway, port))
            if protocol is Protocol.TCP:
                s.listen(128)
                self._selector.register(s, selectors.EVENT_READ, ("accept", self.far))
            else:
                self._selector.register(s, selectors.EVENT_READ, ("drain", self.far))
            self._listeners[key] = s
        return self._listeners[key]

    def _esp_sender(self, ns: str, address: str) -> socket.socket:
        key = (ns, address)
        if key not in self._esp_senders:
            s = self._socket(ns, socket.SOCK_RAW, 50)
            s.bind((address, 0))
            self._esp_senders[key] = s
        return self._esp_senders[key]

    def _next_spi(self) -> int:
        self._spi += 1
        return self._spi

    # -- the traffic -----------------------------------------------------------------------

    def _pump(self, timeout: float) -> list[tuple[str, bytes]]:
        """Wait up to timeout for traffic: the packets the sniffers saw, as (namespace, bytes).
        The gateway's TCP connections are accepted (and kept by peer), its UDP sockets drained."""
        seen = []
        for key, _ in self._selector.select(max(0.0, timeout)):
            role, ns = key.data
            while True:
                try:
                    if role == "accept":
                        conn, peer = key.fileobj.accept()
                        old = self._accepted.pop(peer, None)
                        if old is not None:
                            old.close()
                        self._accepted[peer] = conn
                    else:
                        data = key.fileobj.recv(65535)
                        if role == "sniff":
                            seen.append((ns, data))
                except (BlockingIOError, InterruptedError):
                    break
        return seen

    def _drain(self) -> None:
        while self._pump(0):
            pass

    def _forget_connections(self) -> None:
        for s in self._accepted.values():
            _abort(s)
        self._accepted.clear()

    def _flows(self, case: Case) -> list[_Flow]:
        flows = []
        for probe in case.probes:
            if probe.protocol is not Protocol.ESP:
                self._listener(probe.protocol, probe.gateway, probe.port)
            if probe.ct_state is CtState.NEW:
                sender, src = ((self.host, HOST_ADDRESS) if probe.path is Path.OUTPUT
                               else (self.client, CLIENT_ADDRESS))
                flows.append(_Flow(probe, sender, self.far, src, probe.gateway, probe.port or 0, probe.port))
            else:
                inside_ns, inside = ((self.host, HOST_ANSWER_ADDRESS) if probe.path is Path.INPUT
                                     else (self.client, CLIENT_ANSWER_ADDRESS))
                flows.append(_Flow(probe, self.far, inside_ns, probe.gateway, inside, probe.port or 0,
                                   probe.port, inside=inside, inside_port=probe.port))
        return flows

    def _start(self, ns: str, src: str, protocol: Protocol, dst: str, port: int | None,
               sockets: list[socket.socket]) -> tuple[int, str]:
        """src (in ns) sends a flow's first packet to dst: a UDP datagram from port to port, an ESP
        packet with a fresh SPI, or a TCP SYN from an ephemeral port. Returns that source port or
        SPI, and the send's error: a packet dropped on this host's own output path fails the send
        (EPERM), which is kept as a detail; the outcome is still what the wire shows."""
        if protocol is Protocol.ESP:
            first = self._next_spi()
            send = functools.partial(self._esp_sender(ns, src).sendto,
                                     struct.pack("!II", first, 1) + b"xcheck firewall-kernel", (dst, 0))
        else:
            s = self._socket(ns, socket.SOCK_DGRAM if protocol is Protocol.UDP else socket.SOCK_STREAM)
            sockets.append(s)
            if protocol is Protocol.UDP:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((src, port))
                send = functools.partial(s.sendto, b"xcheck firewall-kernel", (dst, port))
            else:
                s.bind((src, 0))
                send = functools.partial(s.connect_ex, (dst, port))
            first = s.getsockname()[1]
        try:
            send()
        except OSError as e:
            return first, errno.errorcode.get(e.errno, str(e))
        return first, ""

    def _prime(self, flows: list[_Flow], sockets: list[socket.socket]) -> None:
        """Under accept-all, each answer's inside end sends first, so conntrack holds the flow."""
        waiting: dict[tuple, _Flow] = {}
        for flow in flows:
            probe = flow.probe
            first, error = self._start(flow.receiver, flow.inside, probe.protocol, probe.gateway, probe.port,
                                       sockets)
            if error:
                raise LabError("lab %s: under an accept-all ruleset, the primer of %s failed: %s"
                               % (self.lab.name, probe.key, error))
            if probe.protocol is Protocol.TCP:
                flow.inside_port = first
                waiting[("accepted", flow.inside, first)] = flow
            else:
                waiting[(_IPPROTO[probe.protocol], flow.inside, first, probe.gateway, probe.port)] = flow
            if probe.protocol is Protocol.ESP:
                flow.sport = self._next_spi()  # the answer's own SPI
            flow.dport = flow.inside_port
        deadline = time.monotonic() + PRIME_SECONDS
        while waiting and time.monotonic() < deadline:
            for ns, data in self._pump(deadline - time.monotonic()):
                ip = _ipv4(data)
                ends = ip and _ends(ip[0], ip[3])
                if ns == self.far and ends:
                    waiting.pop((ip[0], ip[1], ends[0], ip[2], ends[1]), None)
            for peer in list(self._accepted):
                waiting.pop(("accepted", *peer), None)
        if waiting:
            raise LabError("lab %s: under an accept-all ruleset, no primer of %s reached the gateway "
                           "within %.0f s" % (self.lab.name, sorted(f.probe.key for f in waiting.values()),
                                              PRIME_SECONDS))

    def _send(self, flow: _Flow, sockets: list[socket.socket]) -> None:
        probe = flow.probe
        if probe.ct_state is CtState.NEW:
            flow.sport, flow.send_error = self._start(flow.sender, flow.src, probe.protocol, flow.dst, probe.port,
                                                  sockets)
            return
        answer = b"xcheck firewall-kernel answer"
        # the gateway's sends do not cross the host under test's output path: they cannot fail
        if probe.protocol is Protocol.UDP:
            self._listener(Protocol.UDP, probe.gateway, probe.port).sendto(answer, (flow.inside, probe.port))
        elif probe.protocol is Protocol.ESP:
            self._esp_sender(self.far, probe.gateway).sendto(struct.pack("!II", flow.sport, 1) + answer,
                                                             (flow.inside, 0))
        else:
            self._accepted[(flow.inside, flow.inside_port)].send(answer)

    def _probe(self, flows: list[_Flow], sockets: list[socket.socket]) -> None:
        delivered: dict[tuple, _Flow] = {}
        quoted: dict[tuple, _Flow] = {}  # an ICMP error quoting the probe, seen by its sender
        reset: dict[tuple, _Flow] = {}  # a TCP reset for the probe, seen by its sender
        for flow in flows:
            self._send(flow, sockets)
            proto, src, a, dst, b = flow.wire
            delivered[(flow.receiver, proto, src, a, dst, b)] = flow
            quoted[(flow.sender, proto, src, a, dst, b)] = flow
            if proto == socket.IPPROTO_TCP:
                reset[(flow.sender, proto, dst, b, src, a)] = flow
        deadline = time.monotonic() + SILENCE_SECONDS
        pending = len(flows)
        while pending and time.monotonic() < deadline:
            for ns, data in self._pump(deadline - time.monotonic()):
                pending -= self._observe(ns, data, delivered, quoted, reset)
        for flow in flows:
            if flow.outcome is None:
                flow.outcome = "dropped"
                flow.detail = "silence for %.1f s" % SILENCE_SECONDS
            if flow.send_error:
                flow.detail += "; the send failed (%s)" % flow.send_error

    def _observe(self, ns: str, data: bytes, delivered: dict, quoted: dict, reset: dict) -> int:
        """Record what this packet proves; return how many probes it settled (0 or 1)."""
        ip = _ipv4(data)
        ends = ip and _ends(ip[0], ip[3])
        if not ends:
            return 0
        proto, src, dst, payload = ip
        wire = (ns, proto, src, ends[0], dst, ends[1])
        flow = delivered.get(wire)
        if flow is not None and flow.outcome != "delivered":
            tcp = _tcp(payload) if proto == socket.IPPROTO_TCP else None
            if tcp is not None:
                flags, mss, length = tcp
                # a probe's SYN, or an answer's data (not a retransmitted handshake)
                if flow.probe.ct_state is CtState.NEW and not (flags & TCP_SYN and not flags & TCP_ACK):
                    return 0
                if flow.probe.ct_state is CtState.ESTABLISHED and length == 0:
                    return 0
                flow.mss = mss
            settled = flow.outcome is None
            flow.outcome, flow.detail = "delivered", "arrived at %s" % dst
            return int(settled)
        if proto == socket.IPPROTO_TCP:
            flow = reset.get(wire)
            tcp = _tcp(payload)
            if flow is not None and flow.outcome is None and tcp and tcp[0] & TCP_RST:
                flow.outcome, flow.detail = "rejected", "TCP reset from %s:%d" % (src, ends[0])
                return 1
        if proto == socket.IPPROTO_ICMP and payload[:1] == b"\x03" and len(payload) >= 8:
            inner = _ipv4(payload[8:])
            inner_ends = inner and _ends(inner[0], inner[3])
            if inner_ends:
                flow = quoted.get((ns, inner[0], inner[1], inner_ends[0], inner[2], inner_ends[1]))
                if flow is not None and flow.outcome is None:
                    flow.outcome = "rejected"
                    flow.detail = "ICMP type 3 code %d from %s" % (payload[1], src)
                    return 1
        return 0

    # -- a case ----------------------------------------------------------------------------

    def reset(self) -> None:
        argv, text = self.backend.reset
        self._run(self.host, list(argv), input=text)

    def run_case(self, case: Case) -> CaseResult:
        """Reset to accept-all, prime the answers' flows, load the ruleset, read it back, probe."""
        if case.syntax != self.backend.syntax:
            raise ValueError("%s is %s, backend %s loads %s" % (case.file, case.syntax, self.backend.name,
                                                                 self.backend.syntax))
        sockets: list[socket.socket] = []
        try:
            self.reset()
            flows = self._flows(case)
            self._drain()
            self._prime([f for f in flows if f.probe.ct_state is CtState.ESTABLISHED], sockets)
            self._run(self.host, [*self.backend.load, str(case.file)])
            readback = self._run(self.host, list(self.backend.save))
            self._drain()
            self._probe(flows, sockets)
            seen = {f.probe.key: Seen(f.probe, f.packet(), f.outcome, f.detail, f.mss) for f in flows}
            return CaseResult(self.backend, case, readback, seen)
        finally:
            for s in sockets:
                _abort(s)
            self._forget_connections()


def _abort(s: socket.socket) -> None:
    """Close at once: a TCP socket with a reset (no FIN exchange, no TIME_WAIT left behind)."""
    if s.type == socket.SOCK_STREAM:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    s.close()


def run_corpus(backend: Backend, cases: Iterable[Case], stop: threading.Event | None = None
               ) -> dict[str, CaseResult | Exception]:
    """Every case through one lab of this backend; a case that fails (a ruleset the tool refuses,
    a broken lab) gives its exception, the others still run. `stop` ends it between cases."""
    results: dict[str, CaseResult | Exception] = {}
    with FirewallLab(backend) as lab:
        for case in cases:
            if stop is not None and stop.is_set():
                break
            try:
                results[case.name] = lab.run_case(case)
            except (LabError, OSError, subprocess.SubprocessError) as e:
                results[case.name] = e
    return results


def main(argv: list[str]) -> int:
    cases = [c for c in load_corpus() if not argv or c.name in argv]
    for backend in BACKENDS:
        reason = backend.unavailable_reason()
        if reason:
            print("# %s" % reason)
            continue
        mine = [c for c in cases if c.syntax == backend.syntax]
        for name, result in (run_corpus(backend, mine) if mine else {}).items():
            print("\n# %s on %s" % (name, backend.name))
            if isinstance(result, Exception):
                print("# failed: %s" % result)
                continue
            for key, seen in result.seen.items():
                mark = "" if seen.outcome == result.case.expected[key] else "   # expected %s" % (
                    result.case.expected[key])
                print("%-40s %-9s %s%s%s" % (key, seen.outcome, seen.detail,
                                             "" if seen.mss is None else "; MSS %d" % seen.mss, mark))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
