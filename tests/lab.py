"""A small real network in Linux network namespaces, for xcheck's tests and benchmarks.

Topology (see shared/LAB.md)::

    onprem (eth0) <-veth-> (lan0) router (wan0) <-veth-> (eth0) cloud

* cloud holds 203.0.113.10/24 and 203.0.113.11/24 (plus 203.0.113.20, .21, ... for extra
  plain STUN servers) and runs real coturn STUN servers;
* router is 203.0.113.1/24 on the cloud side, forwards, and NATs (or not) per ``nat``;
* onprem sits behind the router.

Only addresses of the namespaces built here are ever used. Nothing is configured in the
host's own network namespace: every ``ip``/``iptables``/``sysctl`` call runs inside one of
the lab's namespaces. Everything (processes, namespaces, temp dir) is torn down in
``__exit__``, also on exceptions and on KeyboardInterrupt, and best-effort at interpreter
exit; namespaces left behind by a crashed run (whose owner pid is gone) are removed when
the next Lab starts.

Importable both as ``from tests.lab import Lab`` and as ``import lab`` (tests/ on
sys.path): this module has no relative imports.
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref

__all__ = [
    "NAT_MODES",
    "UDP_POLICIES",
    "STUN_MODES",
    "NAME_PREFIX",
    "Lab",
    "LabError",
    "lab_unavailable_reason",
    "parse_natdiscovery",
    "cleanup_stale",
]

NAT_MODES = ("public", "masquerade", "random-fully", "cgnat")
UDP_POLICIES = ("open", "drop", "reject")
STUN_MODES = ("rfc5780", "plain", "none")

# Lab names are NAME_PREFIX + owner pid (6 hex digits) + sequence (2 hex digits), e.g.
# "xl00a1b201"; namespaces are "<name>-onprem", "<name>-router", "<name>-cloud".
NAME_PREFIX = "xl"
_NS_RE = re.compile(r"^%s([0-9a-f]{6})([0-9a-f]{2})-(onprem|router|cloud)$" % NAME_PREFIX)

STUN_PORT = 3478
STUN_ALT_PORT = 3479
COTURN_READY_TIMEOUT = 10.0

_REQUIRED_TOOLS = ("ip", "turnserver", "turnutils_natdiscovery", "iptables", "ss")


class LabError(RuntimeError):
    """The lab could not be built (the message says which step failed and why)."""


# ---------------------------------------------------------------------------------------
# availability


def lab_unavailable_reason() -> str | None:
    """None when a Lab can be built here, else a human-readable reason (for pytest.skip)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "lab needs root (network namespaces, iptables)"
    missing = [t for t in _REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return "lab needs %s on PATH (Debian: apt-get install -y coturn iptables iproute2)" % ", ".join(
            missing
        )
    try:
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return "`ip netns list` failed: %s" % e
    if r.returncode != 0:
        return "`ip netns list` failed: %s" % (r.stderr.strip() or r.returncode)
    return None


# ---------------------------------------------------------------------------------------
# turnutils_natdiscovery output (coturn 4.6.1, strings of /usr/bin/turnutils_natdiscovery)

_MAPPING_LINES = {
    "No NAT! (Endpoint Independent Mapping)": "endpoint-independent",
    "NAT with Endpoint Independent Mapping!": "endpoint-independent",
    "NAT with Address Dependent Mapping!": "address-dependent",
    "NAT with Address and Port Dependent Mapping!": "address-and-port-dependent",
}
_FILTERING_LINES = {
    "NAT with Endpoint Independent Filtering!": "endpoint-independent",
    "NAT with Address Dependent Filtering!": "address-dependent",
    "NAT with Address and Port Dependent Filtering!": "address-and-port-dependent",
}


def parse_natdiscovery(stdout: str) -> dict:
    """Parse `turnutils_natdiscovery -m -f` output strictly.

    Returns {"mapping", "filtering", "nat", "responses", "raw"}:

    * mapping / filtering: RFC 5780 terms ("endpoint-independent", "address-dependent",
      "address-and-port-dependent"), or None when the verdict line is missing, its wording
      is unknown, or two different verdicts were printed;
    * nat: the tool's own wording only: False when it printed "No NAT! (Endpoint
      Independent Mapping)" (anywhere: with -L and no NAT, coturn 4.6.1 prints it after
      the first answer and then still ends with "NAT with Endpoint Independent
      Mapping!"), True when it printed only "NAT with ... Mapping!", None otherwise.
      Caution: without a local address (-L) the tool compares the mapped address with
      0.0.0.0 and so says "NAT with Endpoint Independent Mapping!" even where there is
      no NAT at all;
    * responses: how many "RFC 5780 response N" blocks (STUN answers) it printed;
    * raw: the output as given.
    """
    mapping: set[str] = set()
    filtering: set[str] = set()
    nat: set[bool] = set()
    for line in stdout.splitlines():
        line = line.strip()
        if line in _MAPPING_LINES:
            mapping.add(_MAPPING_LINES[line])
            nat.add(not line.startswith("No NAT!"))
        elif line in _FILTERING_LINES:
            filtering.add(_FILTERING_LINES[line])
    responses = len(re.findall(r"^RFC 5780 response \d+$", stdout, re.M))
    return {
        "mapping": mapping.pop() if len(mapping) == 1 else None,
        "filtering": filtering.pop() if len(filtering) == 1 else None,
        # with -L and no NAT the tool prints "No NAT!" after the first answer and then,
        # after the second, "NAT with Endpoint Independent Mapping!" anyway: "No NAT!" wins
        "nat": False if False in nat else (True if nat else None),
        "responses": responses,
        "raw": stdout,
    }


# ---------------------------------------------------------------------------------------
# small process helpers


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as gone
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ip(*args: str, input: str | None = None, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], input=input, capture_output=True, text=True, timeout=timeout)


def _netns_list() -> list[str]:
    r = _ip("netns", "list")
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def _netns_pids(ns: str) -> list[int]:
    r = _ip("netns", "pids", ns)
    return [int(x) for x in r.stdout.split() if x.isdigit()]


def _kill_netns_and_delete(ns: str) -> None:
    """SIGKILL every process inside ns, wait for them to go, delete ns (best effort)."""
    for _ in range(3):
        pids = _netns_pids(ns)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
            time.sleep(0.01)
    _ip("netns", "del", ns)


def cleanup_stale() -> list[str]:
    """Delete lab namespaces (and temp dirs) whose owner process is gone. Returns them."""
    removed = []
    try:
        names = _netns_list()
    except (OSError, subprocess.SubprocessError):
        return removed
    for ns in names:
        m = _NS_RE.match(ns)
        if not m:
            continue
        owner = int(m.group(1), 16)
        if _pid_alive(owner):
            continue  # possibly a live Lab of another process: never touch it
        _kill_netns_and_delete(ns)
        removed.append(ns)
    tmp = tempfile.gettempdir()
    try:
        entries = os.listdir(tmp)
    except OSError:
        entries = []
    for entry in entries:
        m = re.match(r"^%s([0-9a-f]{6})[0-9a-f]{2}-lab-" % NAME_PREFIX, entry)
        if m and not _pid_alive(int(m.group(1), 16)):
            shutil.rmtree(os.path.join(tmp, entry), ignore_errors=True)
    return removed


# ---------------------------------------------------------------------------------------
# the lab

_live_labs: "weakref.WeakSet[Lab]" = weakref.WeakSet()
_seq = itertools.count(1)
_seq_lock = threading.Lock()


@atexit.register
def _close_leftover_labs() -> None:
    for lab in list(_live_labs):
        try:
            lab.close()
        except Exception:
            pass


class Lab:
    """onprem <-> router (NAT per `nat`, UDP policy per `udp`) <-> cloud (coturn STUN).

    Use as a context manager::

        with Lab(nat="masquerade") as lab:
            lab.run(lab.onprem, ["ping", "-c1", lab.stun_primary], check=True)
    """

    # interface names inside the namespaces (veths are created directly inside them, so
    # these names never clash between labs and nothing appears in the host's namespace)
    onprem_if = "eth0"
    router_lan_if = "lan0"
    router_wan_if = "wan0"
    cloud_if = "eth0"

    router_wan_address = "203.0.113.1"
    stun_primary = "203.0.113.10"
    stun_alternate = "203.0.113.11"
    stun_port = STUN_PORT
    stun_alt_port = STUN_ALT_PORT

    def __init__(
        self,
        nat: str = "masquerade",
        udp: str = "open",
        stun: str = "rfc5780",
        extra_plain_stun: int = 0,
    ):
        if nat not in NAT_MODES:
            raise ValueError("nat must be one of %s, not %r" % (NAT_MODES, nat))
        if udp not in UDP_POLICIES:
            raise ValueError("udp must be one of %s, not %r" % (UDP_POLICIES, udp))
        if stun not in STUN_MODES:
            raise ValueError("stun must be one of %s, not %r" % (STUN_MODES, stun))
        if not 0 <= int(extra_plain_stun) <= 50:
            raise ValueError("extra_plain_stun must be in 0..50")
        self.nat = nat
        self.udp = udp
        self.stun = stun
        self.extra_plain_stun = int(extra_plain_stun)

        self.name = ""
        self.onprem = self.router = self.cloud = ""
        if nat == "public":
            self.onprem_address, self.onprem_gateway, plen = "198.51.100.2", "198.51.100.1", 24
        elif nat == "cgnat":
            self.onprem_address, self.onprem_gateway, plen = "100.64.0.2", "100.64.0.1", 24
        else:
            self.onprem_address, self.onprem_gateway, plen = "10.0.0.2", "10.0.0.1", 24
        self.onprem_prefixlen = plen
        self.plain_stun_servers = ["203.0.113.%d" % (20 + i) for i in range(self.extra_plain_stun)]
        self.tmpdir = ""
        self.coturn: list[subprocess.Popen] = []  # coturn processes (also in self._procs)
        self.coturn_logs: dict[int, str] = {}  # pid -> log file path
        self.timings: dict[str, float] = {}
        self._procs: list[subprocess.Popen] = []
        self._namespaces: list[str] = []
        self._closed = False
        self._entered = False

    # -- naming -----------------------------------------------------------------------

    @property
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    def _claim_name(self) -> None:
        pid = os.getpid() & 0xFFFFFF
        existing = set(_netns_list())
        for _ in range(256):
            with _seq_lock:
                seq = next(_seq) & 0xFF
            name = "%s%06x%02x" % (NAME_PREFIX, pid, seq)
            nss = [name + "-onprem", name + "-router", name + "-cloud"]
            if any(n in existing for n in nss):
                continue
            created = []
            ok = True
            for n in nss:
                r = _ip("netns", "add", n)
                if r.returncode != 0:
                    ok = False
                    break
                created.append(n)
                self._namespaces.append(n)
            if ok:
                self.name = name
                self.onprem, self.router, self.cloud = nss
                return
            for n in created:  # lost a race for this name: give it back, try the next
                _ip("netns", "del", n)
                self._namespaces.remove(n)
            existing = set(_netns_list())
        raise LabError("could not find a free lab name")

    # -- context manager --------------------------------------------------------------

    def __enter__(self) -> "Lab":
        if self._entered:
            raise LabError("a Lab can be entered only once")
        self._entered = True
        _live_labs.add(self)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - last resort
        try:
            if self._entered and not self._closed:
                self.close()
        except Exception:
            pass

    # -- setup ------------------------------------------------------------------------

    def _sh(self, step: str, argv: list[str], input: str | None = None) -> None:
        r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise LabError(
                "lab %s: %s failed (rc=%d): %s\n%s"
                % (self.name, step, r.returncode, " ".join(argv), (r.stderr or r.stdout).strip())
            )

    def _ip_batch(self, ns: str, step: str, lines: list[str]) -> None:
        self._sh(step, ["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")

    def _setup(self) -> None:
        t0 = time.monotonic()
        cleanup_stale()
        self._claim_name()
        self.tmpdir = tempfile.mkdtemp(prefix=self.name + "-lab-")
        onprem, router, cloud = self.onprem, self.router, self.cloud

        # No IPv6 at all (no DAD, no router solicitations): set before the veths exist so
        # they inherit it. Router forwards IPv4.
        for ns in (onprem, router, cloud):
            keys = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
            if ns == router:
                keys.append("net.ipv4.ip_forward=1")
            self._sh("sysctl in " + ns, ["ip", "netns", "exec", ns, "sysctl", "-qw", *keys])

        # veths created from inside a lab namespace with the peer placed in another one:
        # nothing is ever created in the host's namespace.
        self._sh(
            "veth onprem<->router",
            ["ip", "-n", onprem, "link", "add", self.onprem_if, "type", "veth",
             "peer", "name", self.router_lan_if, "netns", router],
        )
        self._sh(
            "veth router<->cloud",
            ["ip", "-n", router, "link", "add", self.router_wan_if, "type", "veth",
             "peer", "name", self.cloud_if, "netns", cloud],
        )

        plen = self.onprem_prefixlen
        self._ip_batch(onprem, "onprem addressing", [
            "link set lo up",
            "addr add %s/%d dev %s" % (self.onprem_address, plen, self.onprem_if),
            "link set %s up" % self.onprem_if,
            "route add default via %s" % self.onprem_gateway,
        ])
        self._ip_batch(router, "router addressing", [
            "link set lo up",
            "addr add %s/%d dev %s" % (self.onprem_gateway, plen, self.router_lan_if),
            "addr add %s/24 dev %s" % (self.router_wan_address, self.router_wan_if),
            "link set %s up" % self.router_lan_if,
            "link set %s up" % self.router_wan_if,
        ])
        cloud_lines = ["link set lo up"]
        for addr in [self.stun_primary, self.stun_alternate, *self.plain_stun_servers]:
            cloud_lines.append("addr add %s/24 dev %s" % (addr, self.cloud_if))
        cloud_lines.append("link set %s up" % self.cloud_if)
        cloud_lines.append("route add default via %s" % self.router_wan_address)
        self._ip_batch(cloud, "cloud addressing", cloud_lines)
        # (public mode: the cloud's default route via 203.0.113.1 covers 198.51.100.0/24)

        rules = ["*nat"]
        if self.nat == "masquerade" or self.nat == "cgnat":
            rules.append("-A POSTROUTING -o %s -j MASQUERADE" % self.router_wan_if)
        elif self.nat == "random-fully":
            rules.append("-A POSTROUTING -o %s -j MASQUERADE --random-fully" % self.router_wan_if)
        rules += ["COMMIT", "*filter"]
        if self.udp == "drop":
            rules.append("-A FORWARD -p udp -j DROP")
        elif self.udp == "reject":
            rules.append("-A FORWARD -p udp -j REJECT --reject-with icmp-port-unreachable")
        rules.append("COMMIT")
        self._sh("router iptables", ["ip", "netns", "exec", router, "iptables-restore"],
                 input="\n".join(rules) + "\n")
        self.timings["network"] = time.monotonic() - t0

        # STUN servers
        t1 = time.monotonic()
        expect: list[tuple[str, int]] = []
        if self.stun == "rfc5780":
            self._start_coturn("stun", [self.stun_primary, self.stun_alternate], alt_port=True)
            expect += [(a, p) for a in (self.stun_primary, self.stun_alternate)
                       for p in (STUN_PORT, STUN_ALT_PORT)]
        elif self.stun == "plain":
            self._start_coturn("stun", [self.stun_primary], alt_port=False)
            expect.append((self.stun_primary, STUN_PORT))
        for i, addr in enumerate(self.plain_stun_servers):
            self._start_coturn("plain%d" % i, [addr], alt_port=False)
            expect.append((addr, STUN_PORT))
        if expect:
            self._wait_udp_listening(expect)
        self.timings["stun"] = time.monotonic() - t1
        self.timings["setup"] = time.monotonic() - t0

    def _start_coturn(self, tag: str, addrs: list[str], alt_port: bool) -> subprocess.Popen:
        log = os.path.join(self.tmpdir, "coturn-%s.log" % tag)
        argv = ["turnserver", "-n", "--stun-only"]
        for a in addrs:
            argv += ["-L", a]
        argv += ["--listening-port", str(STUN_PORT)]
        if alt_port:
            argv += ["--alt-listening-port", str(STUN_ALT_PORT)]
        argv += [
            "--no-tls", "--no-dtls", "--no-cli",
            "--log-file", "stdout", "--simple-log",
            "--pidfile", os.path.join(self.tmpdir, "coturn-%s.pid" % tag),
            "--db", os.path.join(self.tmpdir, "coturn-%s.sqlite" % tag),
        ]
        logf = open(log, "wb")
        try:
            p = self.spawn(self.cloud, argv, stdout=logf, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL)
        finally:
            logf.close()
        p.lab_argv = argv  # type: ignore[attr-defined]
        self.coturn.append(p)
        self.coturn_logs[p.pid] = log
        return p

    def coturn_log(self, proc: subprocess.Popen | None = None) -> str:
        """Text of a coturn log (the first coturn by default)."""
        if proc is None:
            if not self.coturn:
                return ""
            proc = self.coturn[0]
        try:
            with open(self.coturn_logs[proc.pid], errors="replace") as f:
                return f.read()
        except (OSError, KeyError):
            return ""

    def _wait_udp_listening(self, expect: list[tuple[str, int]]) -> None:
        want = {"%s:%d" % e for e in expect}
        deadline = time.monotonic() + COTURN_READY_TIMEOUT
        seen: set[str] = set()
        while True:
            r = self.run(self.cloud, ["ss", "-ulnH"], timeout=5)
            seen = {line.split()[3] for line in r.stdout.splitlines() if len(line.split()) >= 4}
            if want <= seen:
                return
            dead = [p for p in self.coturn if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(
                    "--- coturn pid %d (rc=%s): %s\n%s"
                    % (p.pid, p.poll(), " ".join(getattr(p, "lab_argv", [])), self.coturn_log(p)[-4000:])
                    for p in self.coturn
                )
                why = "exited" if dead else "not listening after %.0f s" % COTURN_READY_TIMEOUT
                raise LabError(
                    "lab %s: coturn %s; waiting for UDP %s, listening: %s\n%s"
                    % (self.name, why, sorted(want - seen), sorted(seen), logs)
                )
            time.sleep(0.02)

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process, delete namespaces and the temp dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        t0 = time.monotonic()
        try:
            # our own process groups: TERM, then KILL after a short grace
            for p in self._procs:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + 1.0
            for p in self._procs:
                try:
                    p.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            for p in self._procs:
                if p.poll() is None:  # only groups whose leader we have not reaped yet
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    try:
                        p.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        pass
            # anything else still inside the namespaces (e.g. children that outlived their
            # group leader), then the namespaces themselves
            for ns in self._namespaces:
                _kill_netns_and_delete(ns)
            self._namespaces.clear()
        finally:
            if self.tmpdir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
            _live_labs.discard(self)
            self.timings["teardown"] = time.monotonic() - t0

    # -- running things ---------------------------------------------------------------

    def _check_ns(self, ns: str) -> None:
        if self._closed:
            raise LabError("lab %s is closed" % self.name)
        if ns not in self._namespaces:
            raise ValueError("%r is not a namespace of lab %s (%s)" % (ns, self.name, self._namespaces))

    def run(
        self,
        ns: str,
        argv: list[str],
        *,
        timeout: float = 30,
        check: bool = False,
        env=None,
        input=None,
    ) -> subprocess.CompletedProcess:
        """Run argv in namespace ns (text mode, stdout/stderr captured).

        On timeout the whole process group is killed and subprocess.TimeoutExpired is
        raised (with the output gathered so far in .stdout/.stderr), like subprocess.run.
        """
        self._check_ns(ns)
        cmd = ["ip", "netns", "exec", ns, *argv]
        p = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            out, err = p.communicate(input=input, timeout=timeout)
        except BaseException as e:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
            if isinstance(e, subprocess.TimeoutExpired):
                raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err) from None
            raise
        cp = subprocess.CompletedProcess(cmd, p.returncode, out, err)
        if check:
            cp.check_returncode()
        return cp

    def spawn(self, ns: str, argv: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start argv in namespace ns in its own process group; killed in __exit__."""
        self._check_ns(ns)
        popen_kwargs.setdefault("start_new_session", True)
        if not popen_kwargs["start_new_session"] and "process_group" not in popen_kwargs:
            popen_kwargs["process_group"] = 0  # own group all the same: close() kills groups
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **popen_kwargs)
        self._procs.append(p)
        return p

    def router_iptables(self, *rule: str) -> None:
        """iptables inside the router namespace, e.g. ("-A", "FORWARD", ..., "-j", "DROP")."""
        r = self.run(self.router, ["iptables", "-w", *rule], timeout=15)
        if r.returncode != 0:
            raise LabError("router iptables %s failed: %s" % (" ".join(rule), r.stderr.strip()))

    def natdiscovery(self, timeout: float = 20, *, bind_local: bool = False) -> dict:
        """`turnutils_natdiscovery -m -f 203.0.113.10` in onprem, parsed (see parse_natdiscovery).

        Returns {"mapping", "filtering", "nat", "responses", "raw", "timed_out",
        "returncode"}. With bind_local=True it adds `-L <onprem_address>`, which lets the
        tool say "No NAT!" when the mapped address is the local one (public mode).
        Each unanswered STUN exchange costs it about 3 s, after which it prints
        "STUN receive timeout.." and goes on (it exits 0 even if nothing answered);
        if it still has not finished after `timeout` seconds it is killed and
        timed_out is True.
        """
        argv = ["turnutils_natdiscovery", "-m", "-f"]
        if bind_local:
            argv += ["-L", self.onprem_address]
        argv.append(self.stun_primary)
        try:
            r = self.run(self.onprem, argv, timeout=timeout)
            out, rc, timed_out = r.stdout, r.returncode, False
        except subprocess.TimeoutExpired as e:
            out = e.stdout or ""
            if isinstance(out, bytes):
                out = out.decode(errors="replace")
            rc, timed_out = None, True
        res = parse_natdiscovery(out)
        res["timed_out"] = timed_out
        res["returncode"] = rc
        return res
