"""Figures for `xcheck audit` (issue 11), as ratios against references measured in the same run.

    sudo .venv/bin/python benchmarks/bench_audit.py [--rounds N] [--grid-rounds N]

1. `xcheck audit` (the installed CLI, as a user runs it) over a 5,000-rule nftables ruleset and a
   swanctl.conf of 200 connections (target: under 2 s wall), with the share spent starting up
   (`xcheck version` in the same run). --gateway takes at most 16 gateways (agent/config.py), so 16
   are given; each connection names its own gateway in remote_addrs (16 of them the given ones).
2. How the cost grows: the in-process pieces (read_nft_json / read_iptables_save + judge_firewall;
   read_swanctl + judge_ipsec) over rules x gateways and connections x gateways, with the fitted
   cost per rule, per packet judged and per connection, and whether it is linear (the per-unit
   cost at the largest size over that at the smallest).
3. The ratio to `nft -c -f FILE` (nft's own check of the same ruleset file, which parses it and has
   the kernel validate it without committing) at each size.

The rulesets are generated in nft syntax and in iptables-restore syntax (the same rules), loaded
into a scratch network namespace made here (`ip netns add`, deleted at the end) with `nft -f` and
`iptables-restore`, and read back with `nft -j list ruleset` and `iptables-save` as the kernel
holds them. Generated files live in a temporary directory, deleted at the end. Nothing is sent on
any network (the namespace has only its loopback, down; the CLI's route lookup toward a gateway is
a UDP connect(), which sends nothing). Prints figures; asserts nothing (these machines are noisy).
Needs root (the namespace).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent.audit.findings import ParseState
from agent.audit.firewall import judge_firewall, read_iptables_save, read_nft_json
from agent.audit.firewall.judge import FLOWS
from agent.audit.ipsec.rules import IpsecContext, judge_ipsec
from agent.audit.ipsec.swanctl import read_swanctl
from agent.config import MAX_GATEWAYS
from agent.verdicts import DEFAULT_RULESET, load_ruleset

XCHECK = str(Path(sys.executable).with_name("xcheck"))
RULE_COUNTS = (500, 1_000, 2_000, 5_000, 10_000)
GATEWAY_COUNTS = (1, 4, 16)
CONNECTION_COUNTS = (25, 50, 100, 200)
HEADLINE_RULES, HEADLINE_CONNECTIONS = 5_000, 200
TARGET_SECONDS = 2.0
# Documentation and benchmarking ranges only: the gateways in 203.0.113.0/24 (one per connection),
# the site's own address in 198.51.100.0/24, the rules' far ends in 198.18.0.0/15 (RFC 2544).
GATEWAYS = tuple(f"203.0.113.{10 + i}" for i in range(HEADLINE_CONNECTIONS))
SITE_ADDRESS = "198.51.100.2"
ONPREM_PREFIX, VNET_PREFIX = "172.16.0.0/12", "10.200.0.0/16"
ALLOWED_GATEWAYS = 12  # of the 16 given, the firewall lets IPsec through to these; the rest meet its drop policy
CLONE_NEWNET = 0x40000000


# --- the firewall: one rule list, written for nft and for iptables-restore ----------------------

@dataclass(frozen=True)
class FwRule:
    chain: str
    saddr: str | None = None
    daddr: str | None = None
    protocol: str | None = None  # tcp, udp, esp
    dports: int | tuple[int, ...] | None = None  # one port, or a list
    port_range: tuple[int, int] | None = None  # (low, high), instead of dports
    new_only: bool = False
    verdict: str = "accept"  # accept, drop, reject
    log: str | None = None


# The zone chains, and the share of the bulk rules each holds (a gateway host forwards most).
ZONES = {"in_wan": 0.15, "in_lan": 0.10, "in_dmz": 0.05, "fwd_lan_wan": 0.35, "fwd_dmz_wan": 0.05,
         "fwd_wan_dmz": 0.15, "out_wan": 0.15}
# Dispatch from the base chains, by interface: (base chain, in, out, zone chain).
DISPATCH = (("input", "wan", None, "in_wan"), ("input", "lan", None, "in_lan"), ("input", "dmz", None, "in_dmz"),
            ("forward", "lan", "wan", "fwd_lan_wan"), ("forward", "dmz", "wan", "fwd_dmz_wan"),
            ("forward", "wan", "dmz", "fwd_wan_dmz"), ("output", None, "wan", "out_wan"))
# The base chains' own, the dispatch, the NAT-T drop, the IPsec rules, the MSS clamp
FIXED_RULES = 3 * 3 + len(DISPATCH) + 1 + 2 * 3 + 1


def _external(rng: random.Random) -> str:
    return f"198.{18 + rng.randrange(2)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _internal(rng: random.Random, prefix: int) -> str:
    net = f"172.{16 + rng.randrange(16)}.{rng.randrange(256)}"
    return f"{net}.0/24" if prefix == 24 else f"{net}.{rng.randrange(1, 255)}"


def _bulk_rule(rng: random.Random, chain: str) -> FwRule:
    """An address/port rule of the kind a site's firewall holds by the thousand."""
    kind = rng.random()
    protocol = rng.choice(("tcp", "tcp", "tcp", "udp"))
    if kind < 0.55:
        ports = {"dports": rng.choice((22, 25, 53, 80, 123, 161, 389, 443, 636, 1433, 3306, 3389, 5432, 8080, 8443))}
    elif kind < 0.75:
        low = rng.randrange(1024, 60000)
        ports = {"port_range": (low, low + rng.randrange(1, 1000))}
    else:
        ports = {"dports": tuple(sorted(rng.sample((21, 22, 80, 110, 143, 443, 465, 587, 993, 995, 3389, 5900), 3)))}
    verdict = rng.choices(("accept", "drop", "reject"), (0.85, 0.1, 0.05))[0]
    new_only = rng.random() < 0.2
    log = "zone drop: " if verdict == "drop" and rng.random() < 0.5 else None
    if chain.startswith("in_"):  # to this host: by source
        return FwRule(chain, saddr=_internal(rng, rng.choice((24, 32))) if chain != "in_wan" else _external(rng),
                      protocol=protocol, new_only=new_only, verdict=verdict, log=log, **ports)
    if chain == "fwd_wan_dmz":  # published services in the DMZ
        return FwRule(chain, daddr=f"192.168.100.{rng.randrange(1, 255)}", protocol=protocol, new_only=new_only,
                      verdict=verdict, log=log, **ports)
    # Toward the outside: some rules name the gateways' own /24 (other ports), so no address index
    # can pass over them for the gateways' packets.
    daddr = f"203.0.113.{rng.randrange(1, 255)}" if rng.random() < 0.1 else _external(rng)
    saddr = _internal(rng, 24) if chain == "fwd_lan_wan" and rng.random() < 0.6 else None
    return FwRule(chain, saddr=saddr, daddr=daddr, protocol=protocol, new_only=new_only, verdict=verdict, log=log,
                  **ports)


def firewall_rules(count: int, seed: int = 11) -> dict[str, list[FwRule]]:
    """The zone chains' rules: `count` rules in the whole ruleset (FIXED_RULES of them in the base
    chains, the MSS clamp and the IPsec rules at the end of out_wan and fwd_lan_wan)."""
    rng = random.Random(seed)
    bulk = count - FIXED_RULES
    zones = {name: [] for name in ZONES}
    names, weights = list(ZONES), list(ZONES.values())
    for _ in range(bulk):
        chain = rng.choices(names, weights)[0]
        zones[chain].append(_bulk_rule(rng, chain))
    # A misplaced early drop of NAT-T toward one gateway, for the walk to find among the thousands
    zones["out_wan"].insert(len(zones["out_wan"]) // 3,
                            FwRule("out_wan", daddr=GATEWAYS[3], protocol="udp", dports=4500, verdict="drop"))
    for chain in ("out_wan", "fwd_lan_wan"):  # IPsec and TCP 443 toward the allowed gateways: last
        zones[chain] += [FwRule(chain, daddr="@vpn_gateways", protocol="udp", dports=(500, 4500)),
                         FwRule(chain, daddr="@vpn_gateways", protocol="esp"),
                         FwRule(chain, daddr="@vpn_gateways", protocol="tcp", dports=443)]
    return zones


# How each tool writes a destination port match: one port, a range, a list (and its separator)
NFT_PORTS = ("{protocol} dport {0}", "{protocol} dport {0}-{1}", "{protocol} dport {{ {ports} }}", ", ")
IPT_PORTS = ("--dport {0}", "--dport {0}:{1}", "-m multiport --dports {ports}", ",")


def _ports(rule: FwRule, syntax: tuple[str, str, str, str]) -> list[str]:
    one, span, many, separator = syntax
    if rule.port_range:
        return [span.format(*rule.port_range, protocol=rule.protocol)]
    if isinstance(rule.dports, int):
        return [one.format(rule.dports, protocol=rule.protocol)]
    if rule.dports:
        return [many.format(protocol=rule.protocol, ports=separator.join(map(str, rule.dports)))]
    return []


def _nft_rule(rule: FwRule) -> str:
    parts = []
    if rule.saddr:
        parts.append(f"ip saddr {rule.saddr}")
    if rule.daddr:
        parts.append(f"ip daddr {rule.daddr}")
    if rule.protocol == "esp":
        parts.append("meta l4proto esp")
    else:
        parts += _ports(rule, NFT_PORTS)
    if rule.new_only:
        parts.append("ct state new")
    if rule.log:
        parts.append(f'log prefix "{rule.log}"')
    verdict = rule.verdict
    if verdict == "reject" and rule.protocol == "tcp":
        verdict = "reject with tcp reset"
    return " ".join(parts + ["counter", verdict])


def render_nft(zones: dict[str, list[FwRule]]) -> str:
    gateways = ", ".join(GATEWAYS[:ALLOWED_GATEWAYS])
    blocked = ", ".join(f"198.19.{i}.0/24" for i in range(240, 256))
    out = ["#!/usr/sbin/nft -f", "flush ruleset", "", "table inet filter {",
           f"\tset vpn_gateways {{ type ipv4_addr; elements = {{ {gateways} }} }}",
           f"\tset blocklist {{ type ipv4_addr; flags interval; elements = {{ {blocked} }} }}"]
    conntrack = ["ct state invalid drop", "ct state established,related accept"]
    heads = {"input": ['iif "lo" accept', *conntrack], "forward": [*conntrack, "ip saddr @blocklist drop"],
             "output": ['oif "lo" accept', *conntrack]}
    for base, own in heads.items():
        out += [f"\tchain {base} {{", f"\t\ttype filter hook {base} priority filter; policy drop;"]
        out += [f"\t\t{rule}" for rule in own]
        for chain, iif, oif, zone in DISPATCH:
            if chain == base:
                match = (f'iifname "{iif}*" ' if iif else "") + (f'oifname "{oif}*" ' if oif else "")
                out.append(f"\t\t{match}jump {zone}")
        out.append("\t}")
    for zone, rules in zones.items():
        out += [f"\tchain {zone} {{"] + [f"\t\t{_nft_rule(rule)}" for rule in rules] + ["\t}"]
    out += ["}", "", "table inet mangle {", "\tchain forward {",
            "\t\ttype filter hook forward priority mangle; policy accept;",
            '\t\toifname "vti*" tcp flags syn tcp option maxseg size set 1350', "\t}", "}", ""]
    return "\n".join(out)


def _ipt_rule(rule: FwRule) -> list[str]:
    """One line, or one per gateway where nft uses the set (iptables has no sets without ipset)."""
    daddrs = GATEWAYS[:ALLOWED_GATEWAYS] if rule.daddr == "@vpn_gateways" else (rule.daddr,)
    lines = []
    for daddr in daddrs:
        parts = [f"-A {rule.chain}"]
        if rule.saddr:
            parts.append(f"-s {rule.saddr}")
        if daddr:
            parts.append(f"-d {daddr}")
        if rule.protocol:
            parts.append(f"-p {rule.protocol}")
        parts += _ports(rule, IPT_PORTS)
        if rule.new_only:
            parts.append("-m conntrack --ctstate NEW")
        if rule.log:  # iptables logs with a rule of its own
            lines.append(" ".join(parts + [f'-j LOG --log-prefix "{rule.log}"']))
        target = {"accept": "ACCEPT", "drop": "DROP"}.get(rule.verdict) or (
            "REJECT --reject-with tcp-reset" if rule.protocol == "tcp" else "REJECT")
        lines.append(" ".join(parts + [f"-j {target}"]))
    return lines


def render_iptables(zones: dict[str, list[FwRule]]) -> str:
    out = ["*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT DROP [0:0]"]
    out += [f":{zone} - [0:0]" for zone in zones]
    out += ["-A INPUT -i lo -j ACCEPT", "-A INPUT -m conntrack --ctstate INVALID -j DROP",
            "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A FORWARD -m conntrack --ctstate INVALID -j DROP",
            "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A FORWARD -s 198.19.240.0/20 -j DROP",
            "-A OUTPUT -o lo -j ACCEPT", "-A OUTPUT -m conntrack --ctstate INVALID -j DROP",
            "-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    for chain, iif, oif, zone in DISPATCH:
        match = (f" -i {iif}+" if iif else "") + (f" -o {oif}+" if oif else "")
        out.append(f"-A {chain.upper()}{match} -j {zone}")
    for rules in zones.values():
        for rule in rules:
            out += _ipt_rule(rule)
    out += ["COMMIT", "*mangle", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]",
            "-A FORWARD -o vti+ -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1350", "COMMIT", ""]
    return "\n".join(out)


# --- IPsec: a swanctl.conf of N connections, one gateway each ------------------------------------

IKE_PROPOSALS = ("aes256-sha256-modp2048", "aes256gcm16-prfsha384-ecp384",
                 "aes256-sha256-modp1024, aes256-sha256-modp2048", "aes128-sha1-modp2048", "aes256-sha384-modp2048")
ESP_PROPOSALS = ("aes256gcm16", "aes256-sha256", "aes256-sha256-modp2048", "aes128-sha1", "aes256gcm16-modp2048")


def render_swanctl(count: int, seed: int = 11) -> str:
    rng = random.Random(seed)
    conns, secrets = ["connections {"], ["secrets {"]
    for i in range(count):
        name, gateway = f"site{i:03d}", GATEWAYS[i]
        conns += [f"  {name} {{", "    version = 2", f"    local_addrs = {SITE_ADDRESS}",
                  f"    remote_addrs = {gateway}",
                  f"    proposals = {rng.choice(IKE_PROPOSALS)}",
                  f"    rekey_time = {rng.choice(('28800s', '28800s', '28800s', '86400s', '8h'))}",
                  f"    dpd_delay = {rng.choice(('45s', '30s', '10s', '5s'))}",
                  f"    encap = {rng.choice(('yes', 'no'))}",
                  "    local {", "      auth = psk", f"      id = {SITE_ADDRESS}", "    }",
                  "    remote {", "      auth = psk", f"      id = {gateway}", "    }", "    children {"]
        for c in range(rng.choice((1, 1, 2))):
            local = f"172.{16 + (i * 2 + c) // 256}.{(i * 2 + c) % 256}.0/24"
            remote = rng.choice(("0.0.0.0/0", VNET_PREFIX, "10.200.0.0/24, 10.200.1.0/24"))
            conns += [f"      net{c} {{", f"        local_ts = {local}", f"        remote_ts = {remote}",
                      f"        esp_proposals = {rng.choice(ESP_PROPOSALS)}",
                      f"        rekey_time = {rng.choice(('3600s', '27000s', '240s', '1h'))}",
                      f"        start_action = {rng.choice(('start', 'trap'))}", "        dpd_action = restart",
                      "      }"]
        conns += ["    }", "  }"]
        # Made up here, never a real key: strength is judged by length only.
        psk = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789")
                      for _ in range(rng.choice((12, 32, 40))))
        secrets += [f"  ike-{name} {{", f"    id-site = {SITE_ADDRESS}", f"    id-azure = {gateway}",
                    f'    secret = "{psk}"', "  }"]
    return "\n".join(conns + ["}", ""] + secrets + ["}", ""])


# --- the scratch namespace -----------------------------------------------------------------------

class Namespace:
    """A network namespace of our own; commands run in it by setns() before exec (no `ip netns
    exec` in the timings)."""

    def __init__(self) -> None:
        self.name = f"xcbench-audit-{os.getpid()}"
        self.fd: int | None = None
        self._libc = ctypes.CDLL(None, use_errno=True)

    def __enter__(self) -> Namespace:
        added = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True)
        if added.returncode != 0:
            raise SystemExit(f"ip netns add {self.name} failed: {added.stderr.strip()}")
        try:
            self.fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        except OSError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def _enter(self) -> None:
        if self._libc.setns(self.fd, CLONE_NEWNET) != 0:
            os._exit(127)

    def run(self, argv: list[str], stdin: str | None = None) -> str:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, preexec_fn=self._enter,
                              pass_fds=(self.fd,), timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} in {self.name} failed ({done.returncode}): {done.stderr.strip()[:500]}")
        return done.stdout

    def wall(self, argv: list[str]) -> float:
        started = time.perf_counter()
        self.run(argv)
        return time.perf_counter() - started


@dataclass
class Generated:
    nft_file: Path
    nft_json: str
    iptables_save: str


def generate_firewalls(ns: Namespace, tmp: Path) -> dict[int, Generated]:
    out = {}
    for count in RULE_COUNTS:
        zones = firewall_rules(count)
        nft_file = tmp / f"ruleset-{count}.nft"
        nft_file.write_text(render_nft(zones))
        ns.run(["nft", "-f", str(nft_file)])
        nft_json = ns.run(["nft", "-j", "list", "ruleset"])
        ns.run(["nft", "flush", "ruleset"])
        ns.run(["iptables-restore"], render_iptables(zones))
        saved = ns.run(["iptables-save"])
        ns.run(["nft", "flush", "ruleset"])  # iptables-nft's tables too
        (tmp / f"ruleset-{count}.json").write_text(nft_json)
        out[count] = Generated(nft_file, nft_json, saved)
    return out


# --- timing --------------------------------------------------------------------------------------

def median_of(rounds: int, work) -> tuple[float, ...]:
    """Per round, the times `work()` returns (a tuple); the median of each."""
    runs = [work() for _ in range(rounds)]
    return tuple(statistics.median(column) for column in zip(*runs))


def timed(call):
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def firewall_once(text: str, reader, gateways: tuple[str, ...], forwards: bool) -> tuple[float, float]:
    """Read and judge from the text each time: the evaluator's per-chain caches start cold, as in a run."""
    read, (ruleset, status) = timed(lambda: reader(text, "bench"))
    if ruleset is None or status.status is not ParseState.PARSED:
        raise SystemExit(f"the generated ruleset did not read cleanly: {status.to_dict()}")
    judge, _ = timed(lambda: judge_firewall([ruleset], gateways, SITE_ADDRESS, None, forwards=forwards))
    return read, judge


def read_without_gc(text: str) -> float:
    """read_nft_json with the cyclic garbage collector off (collected before, so that no round pays
    for another's garbage): only to show what of the growth above linear is the collector's."""
    gc.collect()
    gc.disable()
    try:
        return timed(lambda: read_nft_json(text, "bench"))[0]
    finally:
        gc.enable()


def ipsec_once(path: Path, parameters, gateways: tuple[str, ...]) -> tuple[float, float]:
    read, (connections, statuses) = timed(lambda: read_swanctl(str(path)))
    if any(s.status is not ParseState.PARSED for s in statuses):
        raise SystemExit(f"the generated swanctl.conf did not read cleanly: {[s.to_dict() for s in statuses]}")
    context = IpsecContext(gateways=gateways, gateway_type="route-based", onprem_prefixes=(ONPREM_PREFIX,),
                           vnet_prefixes=(VNET_PREFIX,))
    judge, _ = timed(lambda: judge_ipsec(connections, parameters, context))
    return read, judge


def fit(columns: list[list[float]], times: list[float]) -> list[float]:
    """Least squares t = a + b1*x1 + b2*x2 ...: [a, b1, b2, ...] (the normal equations, eliminated)."""
    rows = [[1.0, *xs] for xs in zip(*columns)]
    k = len(rows[0])
    system = [[sum(r[i] * r[j] for r in rows) for j in range(k)] + [sum(r[i] * t for r, t in zip(rows, times))]
              for i in range(k)]
    for i in range(k):
        pivot = max(range(i, k), key=lambda r: abs(system[r][i]))
        system[i], system[pivot] = system[pivot], system[i]
        for r in range(k):
            if r != i:
                factor = system[r][i] / system[i][i]
                system[r] = [x - factor * y for x, y in zip(system[r], system[i])]
    return [system[i][k] / system[i][i] for i in range(k)]


def growth(label: str, unit: str, sizes: list[int], times: list[float]) -> str:
    """The fitted cost per unit, and the per-unit cost at the largest size over that at the smallest:
    about 1 is linear, above it grows faster, below it a fixed part weighs most at the small sizes."""
    a, b = fit([sizes], times)
    small, large = times[0] / sizes[0], times[-1] / sizes[-1]
    ratio = large / small
    shape = "linear" if 0.8 <= ratio <= 1.25 else "faster than linear" if ratio > 1.25 else "a fixed part dominates"
    return (f"  {label}: {b * 1e6:.1f} us per {unit} (fit; fixed part {a * 1000:.1f} ms); per {unit} "
            f"{small * 1e6:.1f} us at {sizes[0]:,}, {large * 1e6:.1f} us at {sizes[-1]:,}: ratio {ratio:.2f} ({shape})")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


# --- the three figures ---------------------------------------------------------------------------

def cli_figure(tmp: Path, rounds: int, nft_check: float, in_process: float) -> None:
    """in_process: the in-process read+judge of the same firewall and IPsec inputs (figure 2)."""
    swanctl, firewall = tmp / "swanctl.conf", tmp / f"ruleset-{HEADLINE_RULES}.json"
    argv = [XCHECK, "audit", "--ipsec-config", str(swanctl), "--firewall", str(firewall), "--gateway-type",
            "route-based", "--onprem-prefix", ONPREM_PREFIX, "--vnet-prefix", VNET_PREFIX, "--format", "json"]
    for gateway in GATEWAYS[:MAX_GATEWAYS]:
        argv += ["--gateway", gateway]
    # What `audit` imports beyond what every command does (agent/cli.py imports it in the command)
    imports = [[sys.executable, "-c", "import agent.cli"],
               [sys.executable, "-c", "import agent.cli, agent.audit.run, agent.render, agent.report, agent.output"]]
    audits, versions, bare, audit_imports, document = [], [], [], [], None
    for _ in range(rounds):  # interleaved, so drift hits all alike
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        audits.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"xcheck audit failed ({done.returncode}): {done.stderr.strip()[:500]}")
        document = json.loads(done.stdout)
        for times, command in ((versions, [XCHECK, "version"]), (bare, imports[0]), (audit_imports, imports[1])):
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times.append(time.perf_counter() - started)
    a, v = statistics.median(audits), statistics.median(versions)
    loading = statistics.median(audit_imports) - statistics.median(bare)
    findings = document["audit"]["findings"]
    by_id: dict[str, int] = {}
    for finding in findings:
        by_id[finding["id"]] = by_id.get(finding["id"], 0) + 1
    inputs = ", ".join(f"{i['kind']} {i['status']}" for i in document["audit"]["inputs"])
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    print(f"1. xcheck audit, {HEADLINE_RULES:,} nft rules x {HEADLINE_CONNECTIONS} connections x {MAX_GATEWAYS} "
          f"--gateway: {a:.3f} s wall (target < {TARGET_SECONDS:g} s; min {min(audits):.3f}, max {max(audits):.3f}), "
          f"median of {rounds}; ratio to nft -c -f on the same ruleset {a / nft_check:.2f}x")
    print(f"   start-up (xcheck version) {v:.3f} s = {v / a:.0%} of it; measured apart, so only roughly its parts: "
          f"importing the audit code {loading:.3f} s ({loading / a:.0%}), reading and judging the firewall and IPsec "
          f"inputs {in_process:.3f} s ({in_process / a:.0%}; in process, figure 2)")
    print(f"   inputs: {inputs}; {len(findings)} findings: "
          + ", ".join(f"{k} {n}" for k, n in sorted(by_id.items())))
    print(f"   this host {'forwards' if forwarding else 'does not forward'} (ip_forward), so the CLI judged "
          f"{'OUTPUT, INPUT and FORWARD' if forwarding else 'OUTPUT and INPUT'}")


def firewall_grid(generated: dict[int, Generated], rounds: int) -> dict[int, float]:
    """Returns, per rule count, xcheck's nft read+judge at 16 gateways (for the ratio to nft -c)."""
    print(f"\n2a. firewall, in process (median of {rounds}; ms): read, then judge per gateways; packets judged = "
          f"gateways x {len(FLOWS)} flows x 2 paths (OUTPUT, INPUT), x 4 paths (FORWARD both ways) when the host "
          "forwards")
    print(f"{'format':9} {'rules':>6} {'read':>8} " + " ".join(f"{'judge g=' + str(g):>10}" for g in GATEWAY_COUNTS)
          + f" {'judge g=16 fwd':>15}")
    reads: dict[str, list[float]] = {"nft": [], "iptables": []}
    judges: dict[tuple[str, int, bool], list[float]] = {}
    counted: dict[str, list[int]] = {"nft": [], "iptables": []}
    for gen in generated.values():
        for kind, text, reader in (("nft", gen.nft_json, read_nft_json),
                                   ("iptables", gen.iptables_save, read_iptables_save)):
            ruleset, _ = reader(text, "bench")
            counted[kind].append(sum(len(chain.rules) for table in ruleset.tables for chain in table.chains.values()))
            row = []
            for gateways, forwards in [(g, False) for g in GATEWAY_COUNTS] + [(MAX_GATEWAYS, True)]:
                read, judge = median_of(rounds, lambda: firewall_once(text, reader, GATEWAYS[:gateways], forwards))
                judges.setdefault((kind, gateways, forwards), []).append(judge)
                row.append(judge)
                if gateways == 1:
                    reads[kind].append(read)
            print(f"{kind:9} {counted[kind][-1]:>6,} {ms(reads[kind][-1])} "
                  + " ".join(f"{ms(t):>10}" for t in row[:-1]) + f" {ms(row[-1]):>15}")
    print("  (rules as read back from the kernel: iptables has no sets, so the 12 allowed gateways are a rule "
          "each, and it logs with a rule of its own)")
    for kind in ("nft", "iptables"):
        print(growth(f"{kind} read", "rule", counted[kind], reads[kind]))
        print(growth(f"{kind} judge, 16 gateways", "rule", counted[kind], judges[(kind, MAX_GATEWAYS, False)]))
        print(growth(f"{kind} judge, 16 gateways, forwarding", "rule", counted[kind],
                     judges[(kind, MAX_GATEWAYS, True)]))
        for i, count in enumerate(counted[kind]):
            print(growth(f"{kind} judge, {count:,} rules", "packet", [g * len(FLOWS) * 2 for g in GATEWAY_COUNTS],
                         [judges[(kind, g, False)][i] for g in GATEWAY_COUNTS]))
        cells = [(rules, g * len(FLOWS) * 2, judges[(kind, g, False)][i])
                 for i, rules in enumerate(counted[kind]) for g in GATEWAY_COUNTS]
        a, per_rule, per_packet = fit([[c[0] for c in cells], [c[1] for c in cells]], [c[2] for c in cells])
        worst = max(abs(a + per_rule * r + per_packet * p - t) for r, p, t in cells)
        print(f"  {kind} judge over the grid: {a * 1000:.1f} ms + {per_rule * 1e6:.2f} us per rule + "
              f"{per_packet * 1e6:.1f} us per packet judged (fit of {len(cells)} cells, worst cell off by "
              f"{worst * 1000:.1f} ms)")
    quiet = [median_of(rounds, lambda: (read_without_gc(generated[count].nft_json),))[0]
             for count in (RULE_COUNTS[0], RULE_COUNTS[-1])]
    print(growth("nft read with the cyclic garbage collector off", "rule",
                 [counted["nft"][0], counted["nft"][-1]], quiet))
    return {count: reads["nft"][i] + judges[("nft", MAX_GATEWAYS, False)][i] for i, count in enumerate(generated)}


def ipsec_grid(tmp: Path, parameters, rounds: int) -> float:
    """Returns read+judge at the largest size and 16 gateways (for the CLI's breakdown)."""
    print(f"\n2b. IPsec, in process (median of {rounds}; ms): read_swanctl, then judge_ipsec per gateways")
    print(f"{'connections':>11} {'read':>8} " + " ".join(f"{'judge g=' + str(g):>10}" for g in GATEWAY_COUNTS))
    reads, judges = [], {g: [] for g in GATEWAY_COUNTS}
    for count in CONNECTION_COUNTS:
        path = tmp / f"swanctl-{count}.conf"
        path.write_text(render_swanctl(count))
        row = []
        for gateways in GATEWAY_COUNTS:
            read, judge = median_of(rounds, lambda: ipsec_once(path, parameters, GATEWAYS[:gateways]))
            judges[gateways].append(judge)
            row.append(judge)
        reads.append(read)
        print(f"{count:>11} {ms(read)} " + " ".join(f"{ms(t):>10}" for t in row))
    sizes = list(CONNECTION_COUNTS)
    print(growth("read_swanctl", "connection", sizes, reads))
    for gateways in GATEWAY_COUNTS:
        print(growth(f"judge_ipsec, {gateways} gateways", "connection", sizes, judges[gateways]))
    print(growth(f"judge_ipsec, {CONNECTION_COUNTS[-1]} connections", "gateway", list(GATEWAY_COUNTS),
                 [judges[g][-1] for g in GATEWAY_COUNTS]))
    return reads[-1] + judges[MAX_GATEWAYS][-1]


def nft_check_figure(ns: Namespace, generated: dict[int, Generated], xcheck: dict[int, float], rounds: int,
                     tmp: Path) -> float:
    empty = tmp / "empty.nft"
    empty.write_text("flush ruleset\n")
    fixed = statistics.median(ns.wall(["nft", "-c", "-f", str(empty)]) for _ in range(rounds))
    print(f"\n3. nft -c -f FILE (check only: parse, and the kernel validates the batch without committing), "
          f"median of {rounds}; nft -c of an empty ruleset {fixed * 1000:.1f} ms")
    print(f"{'rules':>6} {'nft -c':>9} {'xcheck read+judge (nft JSON, 16 gw)':>37} {'ratio':>7}")
    checks = {}
    for count, gen in generated.items():
        checks[count] = statistics.median(ns.wall(["nft", "-c", "-f", str(gen.nft_file)]) for _ in range(rounds))
        print(f"{count:>6,} {ms(checks[count])} ms {ms(xcheck[count]):>34} ms {xcheck[count] / checks[count]:>6.2f}x")
    print(growth("nft -c", "rule", list(generated), [checks[c] for c in generated]))
    return checks[HEADLINE_RULES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="runs of the CLI and of nft -c per figure")
    parser.add_argument("--grid-rounds", type=int, default=5, help="runs per cell of the in-process grids")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: it makes a scratch network namespace to load the rulesets into")
    for tool in ("ip", "nft", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} on PATH (Debian: apt-get install -y iproute2 nftables iptables)")
    parameters = load_ruleset(DEFAULT_RULESET).audit
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs; rule set {DEFAULT_RULESET}")
    with tempfile.TemporaryDirectory(prefix="xcheck-bench-audit-") as name, Namespace() as ns:
        tmp = Path(name)
        (tmp / "swanctl.conf").write_text(render_swanctl(HEADLINE_CONNECTIONS))
        generated = generate_firewalls(ns, tmp)
        sizes = {count: (len(gen.nft_json) >> 10, len(gen.iptables_save) >> 10) for count, gen in generated.items()}
        print("generated: " + "; ".join(f"{c:,} rules: nft JSON {j:,} KiB, iptables-save {s:,} KiB"
                                        for c, (j, s) in sizes.items()))
        xcheck = firewall_grid(generated, args.grid_rounds)
        ipsec = ipsec_grid(tmp, parameters, args.grid_rounds)
        nft_check = nft_check_figure(ns, generated, xcheck, args.rounds, tmp)
        print()
        cli_figure(tmp, args.rounds, nft_check, xcheck[HEADLINE_RULES] + ipsec)


if __name__ == "__main__":
    main()
