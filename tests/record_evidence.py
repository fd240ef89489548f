"""Record whole `xcheck run` reports in the lab, for the tests that feed facts, verdicts and
renderings from evidence real checks produced (tests/recorded.py reads them back).

    sudo .venv/bin/python tests/record_evidence.py [SCENARIO ...]   # from the repository's root

Run as root, with the lab's peers installed (.ci/run: coturn, strongswan-charon,
strongswan-swanctl, iperf3). Each scenario builds a lab (tests/lab.py: onprem, a Linux router,
the cloud with coturn), starts the real peers it names (`xcheck responder`, strongSwan's charon,
a stock `iperf3 -s`), changes the router as it says, and runs the real
`xcheck run --format json` in onprem. The whole report is written to
tests/fixtures/assessments/<scenario>.json with one key added beside the report's own:
"recorded" = {"scenario", "command", "date", "lab"}, which says where it came from (a report
may carry more fields, so the file still validates against the report schema). Without
arguments every scenario is recorded anew; figures (ports, times, rates) differ each time,
and the tests assert only what holds for any recording of the scenario.

Only lab addresses are used: 198.51.100.0/24, 203.0.113.0/24, 10.0.0.0/24, 100.64.0.0/24.
Every scenario names its STUN servers (or none): the default public ones are never contacted.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import XCHECK, validate_report  # noqa: E402
from lab import Lab  # noqa: E402
from test_lab_gateway import start_responder  # noqa: E402
from test_lab_ike import charon  # noqa: E402
from test_lab_throughput import iperf3_server  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "assessments"
PRIMARY, ALTERNATE, PLAIN = "203.0.113.10", "203.0.113.11", "203.0.113.20"
# Each check's deadline: the IKE checks import scapy inside it; a dropped port costs all of it.
TIMEOUT = ("--timeout", "5")
# Not the certificate of any responder: a gateway that shows another one looks re-signed.
WRONG_PIN = "00" * 32


# One step of building a scenario; `peers` stops what it enters before the lab goes.
Setup = Callable[[Lab, ExitStack], None]


@dataclass(frozen=True)
class Scenario:
    lab: str  # one line for "recorded.lab"
    args: tuple[str, ...]  # after `xcheck run --format json`
    nat: str = "masquerade"
    udp: str = "open"
    stun: str = "rfc5780"
    extra_plain_stun: int = 0
    setup: Setup = lambda lab, peers: None
    config: str | None = None  # a config file's text, passed as --config
    as_user: tuple[str, ...] = ()  # a command prefix that drops privileges (setpriv ...)


def responder(address: str) -> Setup:
    return lambda lab, peers: start_responder(lab, address=address)


def strongswan(lab: Lab, peers: ExitStack) -> None:
    peers.enter_context(charon(lab))


def iperf3(lab: Lab, peers: ExitStack) -> None:
    iperf3_server(lab)  # a stock `iperf3 -s` at 203.0.113.10:5201


def router(*commands: tuple[str, ...]) -> Setup:
    def change(lab: Lab, peers: ExitStack) -> None:
        # Linux rate-limits ICMP errors; the lab's router must not turn a REJECT into silence.
        lab.run(lab.router, ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"], check=True)
        for command in commands:
            lab.run(lab.router, list(command), check=True)
    return change


def forward(*rule: str) -> tuple[str, ...]:
    """A rule appended to the router's FORWARD chain."""
    return ("iptables", "-A", "FORWARD", *rule)


def onprem(*commands: tuple[str, ...]) -> Setup:
    def change(lab: Lab, peers: ExitStack) -> None:
        for command in commands:
            lab.run(lab.onprem, list(command), check=True)
    return change


def cloud(*commands: tuple[str, ...]) -> Setup:
    def change(lab: Lab, peers: ExitStack) -> None:
        for command in commands:
            lab.run(lab.cloud, list(command), check=True)
    return change


# A gateway that ignores IKE from every peer but the one configured on its side (not this lab's router).
IGNORE_UNKNOWN_PEERS = ("iptables", "-A", "INPUT", "-p", "udp", "-m", "multiport", "--dports", "500,4500",
                        "!", "-s", "198.51.100.99", "-j", "DROP")


# A gateway that speaks only IKEv2 and ignores IKEv1: the IKE header's version byte (offset 17 of the
# UDP payload, 8 bytes past the UDP header) is 0x10 for IKEv1.
IGNORE_IKEV1 = ("iptables", "-A", "INPUT", "-p", "udp", "--dport", "500", "-m", "u32", "--u32",
                "0>>22&0x3C@25>>24=0x10", "-j", "DROP")


def cloud_link(mtu: int) -> Setup:
    """Both ends of the router-cloud link: a veth drops what exceeds its peer's MTU, ICMP or not."""
    def change(lab: Lab, peers: ExitStack) -> None:
        lab.run(lab.router, ["ip", "link", "set", lab.router_wan_if, "mtu", str(mtu)], check=True)
        lab.run(lab.cloud, ["ip", "link", "set", lab.cloud_if, "mtu", str(mtu)], check=True)
    return change


def both(*steps: Setup) -> Setup:
    def each(lab: Lab, peers: ExitStack) -> None:
        for step in steps:
            step(lab, peers)
    return each


SCENARIOS: dict[str, Scenario] = {
    "public-responder": Scenario(
        "onprem 198.51.100.2 routed without NAT; coturn RFC 5780 at 203.0.113.10/.11; `xcheck responder` at "
        "203.0.113.10 as gateway and far end (AzureCT stages of 1, 6 and 16 streams, 1 s each)",
        ("--stun", PRIMARY, "--gateway", PRIMARY, "--iperf", PRIMARY, "--throughput-profile", "azurect",
         "--throughput-seconds", "1", *TIMEOUT),
        nat="public", setup=responder(PRIMARY)),
    "nat-strongswan": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; coturn RFC 5780 at 203.0.113.10/.11 and a plain coturn at "
        "203.0.113.20; strongSwan charon 5.9.8 at 203.0.113.10 as gateway (IKEv2, PSK, "
        "aes256-sha256-modp2048; nothing on TCP 443 or 8081); stock iperf3 -s at 203.0.113.10 as far end, "
        "latency only (--no-throughput)",
        ("--stun", PRIMARY, "--stun", PLAIN, "--gateway", PRIMARY, "--iperf", PRIMARY, "--no-throughput", *TIMEOUT),
        extra_plain_stun=1, setup=both(strongswan, iperf3)),
    "public-strongswan": Scenario(
        "onprem 198.51.100.2 routed without NAT; a plain coturn (no RFC 5780) at 203.0.113.10; strongSwan "
        "charon 5.9.8 as gateway, probed at 203.0.113.11",
        ("--stun", PRIMARY, "--gateway", ALTERNATE, *TIMEOUT),
        nat="public", stun="plain", setup=strongswan),
    "cgnat": Scenario(
        "onprem 100.64.0.2 (RFC 6598 carrier NAT space) behind MASQUERADE; coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, *TIMEOUT), nat="cgnat"),
    "symmetric-nat": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE --random-fully (a new port per destination); coturn RFC 5780 at "
        "203.0.113.10/.11 and a plain coturn at 203.0.113.20",
        ("--stun", PRIMARY, "--stun", PLAIN, *TIMEOUT), nat="random-fully", extra_plain_stun=1),
    "routed-private": Scenario(
        "onprem 10.0.0.2 routed without NAT (the router's MASQUERADE rule removed; the cloud routes back through "
        "it): a private address the Internet side sees unchanged; coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, *TIMEOUT), setup=router(("iptables", "-t", "nat", "-F", "POSTROUTING"))),
    "udp-dropped": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; the router DROPs all forwarded UDP; coturn RFC 5780 at "
        "203.0.113.10/.11",
        ("--stun", PRIMARY, *TIMEOUT), udp="drop"),
    "cgnat-udp-dropped": Scenario(
        "onprem 100.64.0.2 (RFC 6598 carrier NAT space) behind MASQUERADE; the router DROPs all forwarded UDP; "
        "coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, *TIMEOUT), nat="cgnat", udp="drop"),
    "refused-at-router": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; `xcheck responder` at 203.0.113.11 as gateway; the router REJECTs "
        "TCP 443 and 8081 with a TCP reset, UDP 500 and 4500 with ICMP port unreachable, and ESP with ICMP "
        "administratively prohibited; coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, "--gateway", ALTERNATE, *TIMEOUT),
        setup=both(responder(ALTERNATE), router(
            forward("-p", "tcp", "-m", "multiport", "--dports", "443,8081", "-j", "REJECT",
                    "--reject-with", "tcp-reset"),
            forward("-p", "udp", "-m", "multiport", "--dports", "500,4500", "-j", "REJECT",
                    "--reject-with", "icmp-port-unreachable"),
            forward("-p", "esp", "-j", "REJECT", "--reject-with", "icmp-admin-prohibited")))),
    "esp-dropped": Scenario(
        "onprem 198.51.100.2 routed without NAT; `xcheck responder` at 203.0.113.11 as gateway; the router DROPs "
        "ESP; coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, "--gateway", ALTERNATE, *TIMEOUT),
        nat="public", setup=both(responder(ALTERNATE), router(forward("-p", "esp", "-j", "DROP")))),
    "two-gateways": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; coturn RFC 5780 at 203.0.113.10/.11; two gateways: "
        "`xcheck responder` at 203.0.113.10, and 203.0.113.11 where only coturn listens",
        ("--stun", PRIMARY, "--gateway", PRIMARY, "--gateway", ALTERNATE, *TIMEOUT), setup=responder(PRIMARY)),
    "narrow-path": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; the router-cloud link has an MTU of 1400 bytes (both ends); "
        "`xcheck responder` at 203.0.113.11 as gateway; coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, "--gateway", ALTERNATE, *TIMEOUT),
        setup=both(cloud_link(1400), responder(ALTERNATE))),
    "pinned-certificate-differs": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; `xcheck responder` at 203.0.113.10 as gateway, with its own "
        "self-signed certificate while the user pinned another SHA-256 (--gateway-fingerprint); coturn RFC 5780",
        ("--stun", PRIMARY, "--gateway", PRIMARY, "--gateway-fingerprint", WRONG_PIN, *TIMEOUT),
        setup=responder(PRIMARY)),
    "download-stalled": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; the router shapes the uplink (tbf 50 Mbit/s on its WAN side) and "
        "drops a TCP connection's packets from port 5201 once more than 20 MB came that way (connbytes), so the "
        "download stalls; stock iperf3 -s at 203.0.113.10 as far end, 1 stream, 4 s (a stall is data stopped "
        "for 3 s); coturn RFC 5780",
        ("--stun", PRIMARY, "--iperf", PRIMARY, "--streams", "1", "--throughput-seconds", "4", *TIMEOUT),
        setup=both(router(("tc", "qdisc", "add", "dev", Lab.router_wan_if, "root", "tbf", "rate", "50mbit", "burst",
                           "64kb", "latency", "50ms"),
                          ("sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"),
                          forward("-p", "tcp", "--sport", "5201", "-m", "connbytes", "--connbytes", "20000000:",
                                  "--connbytes-dir", "reply", "--connbytes-mode", "bytes", "-j", "DROP")),
                   iperf3)),
    "ike-500-dropped": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; strongSwan charon 5.9.8 at 203.0.113.10 as gateway; the router DROPs "
        "UDP 500 (4500 passes); coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, "--gateway", PRIMARY, *TIMEOUT),
        setup=both(strongswan, router(forward("-p", "udp", "--dport", "500", "-j", "DROP")))),
    "ike-dropped": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; strongSwan charon 5.9.8 at 203.0.113.10 as gateway; the router DROPs "
        "UDP 500 and 4500; coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, "--gateway", PRIMARY, *TIMEOUT),
        setup=both(strongswan, router(forward("-p", "udp", "-m", "multiport", "--dports", "500,4500", "-j", "DROP")))),
    "ike-unknown-peer": Scenario(
        "onprem 198.51.100.2 routed without NAT, no STUN server (a config with `stun = []`); strongSwan charon "
        "5.9.8 at 203.0.113.10 as gateway, whose namespace drops IKE (UDP 500, 4500) from every source but "
        "198.51.100.99, the one peer configured on its side",
        ("--gateway", PRIMARY, *TIMEOUT), nat="public", stun="none", config="stun = []\n",
        setup=both(strongswan, cloud(IGNORE_UNKNOWN_PEERS))),
    "ikev1-ignored": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; strongSwan charon 5.9.8 at 203.0.113.10 as gateway, whose namespace "
        "drops IKEv1 (UDP 500 with IKE version 1.0 in the header, a u32 match) and takes IKEv2; coturn RFC 5780 at "
        "203.0.113.10/.11",
        ("--stun", PRIMARY, "--gateway", PRIMARY, *TIMEOUT),
        setup=both(strongswan, cloud(IGNORE_IKEV1))),
    "ike-rejected": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; strongSwan charon 5.9.8 at 203.0.113.10 as gateway; the router REJECTs "
        "UDP 500 and 4500 with ICMP administratively prohibited; coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, "--gateway", PRIMARY, *TIMEOUT),
        setup=both(strongswan, router(forward("-p", "udp", "-m", "multiport", "--dports", "500,4500", "-j", "REJECT",
                                              "--reject-with", "icmp-admin-prohibited")))),
    "responder-filtered": Scenario(
        "onprem 198.51.100.2 routed without NAT; `xcheck responder` at 203.0.113.11 as gateway; the router DROPs "
        "UDP 500, UDP 4500 and TCP 443 (ESP and TCP 8081 pass); coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, "--gateway", ALTERNATE, *TIMEOUT),
        nat="public", setup=both(responder(ALTERNATE), router(
            forward("-p", "udp", "-m", "multiport", "--dports", "500,4500", "-j", "DROP"),
            forward("-p", "tcp", "--dport", "443", "-j", "DROP")))),
    "tls-stalled": Scenario(
        "onprem 198.51.100.2 routed without NAT; `xcheck responder` at 203.0.113.11 as gateway; the router passes "
        "the responder's SYN/ACK on TCP 443 and 8081 and drops everything after it, as a path MTU black hole "
        "swallows full-size segments; coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, "--gateway", ALTERNATE, *TIMEOUT),
        nat="public", setup=both(responder(ALTERNATE), router(
            forward("-p", "tcp", "-s", ALTERNATE, "-m", "multiport", "--sports", "443,8081", "!", "--tcp-flags",
                    "SYN", "SYN", "-j", "DROP")))),
    "stun-port-closed": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; a STUN server named at 203.0.113.11:3490, where nothing listens (the "
        "cloud host answers ICMP port unreachable)",
        ("--stun", f"{ALTERNATE}:3490", *TIMEOUT)),
    "stun-rejected": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; the router REJECTs all forwarded UDP with ICMP port unreachable; "
        "coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, *TIMEOUT), udp="reject"),
    "stun-one-host-two-ports": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE --random-fully (a new port per destination); coturn RFC 5780 at "
        "203.0.113.10/.11 named twice on one address, ports 3478 and 3479",
        ("--stun", PRIMARY, "--stun", f"{PRIMARY}:3479", *TIMEOUT), nat="random-fully"),
    "alternate-dropped": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; the router DROPs UDP to 203.0.113.11, coturn's alternate address, so "
        "RFC 5780's tests through it get no answer; coturn RFC 5780 at 203.0.113.10/.11",
        ("--stun", PRIMARY, *TIMEOUT),
        setup=router(forward("-p", "udp", "-d", ALTERNATE, "-j", "DROP"))),
    "unprivileged": Scenario(
        "onprem 198.51.100.2 routed without NAT; `xcheck run` as uid/gid 65534 with no capabilities (setpriv), so "
        "ESP (a raw socket) is skipped; `xcheck responder` at 203.0.113.11 as gateway; coturn RFC 5780",
        ("--stun", PRIMARY, "--gateway", ALTERNATE, *TIMEOUT), nat="public", setup=responder(ALTERNATE),
        as_user=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")),
    "all-dropped": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; the router DROPs everything it would forward; a STUN server, a "
        "gateway and a far end named at 203.0.113.10 (1 s throughput stages)",
        ("--stun", PRIMARY, "--gateway", PRIMARY, "--iperf", PRIMARY, "--throughput-seconds", "1", *TIMEOUT),
        setup=router(("iptables", "-P", "FORWARD", "DROP"))),
    "no-targets": Scenario(
        "onprem 10.0.0.2 behind MASQUERADE; a config with `stun = []` and no gateway or far end: only the "
        "host's own interfaces are read",
        (*TIMEOUT,), stun="none", config="stun = []\n"),
    "no-network": Scenario(
        "onprem with every interface down (lo and eth0); a STUN server and a gateway named at 203.0.113.10",
        ("--stun", PRIMARY, "--gateway", PRIMARY, *TIMEOUT), stun="none",
        setup=onprem(("ip", "link", "set", "eth0", "down"), ("ip", "link", "set", "lo", "down"))),
    "no-route": Scenario(
        "onprem 10.0.0.2 without a default route; a STUN server and a gateway named at 203.0.113.10",
        ("--stun", PRIMARY, "--gateway", PRIMARY, *TIMEOUT), stun="none",
        setup=onprem(("ip", "route", "del", "default"))),
    "unresolvable": Scenario(
        "onprem 10.0.0.2 without a default route (no name server reachable); the STUN server named "
        "stun.example.invalid (RFC 2606: never resolves)",
        ("--stun", "stun.example.invalid", *TIMEOUT), stun="none",
        setup=onprem(("ip", "route", "del", "default"))),
}


def record(name: str) -> dict:
    scenario = SCENARIOS[name]
    args = ["run", "--format", "json", *scenario.args]
    command = shlex.join(["xcheck", *args])
    with Lab(nat=scenario.nat, udp=scenario.udp, stun=scenario.stun,
             extra_plain_stun=scenario.extra_plain_stun) as lab, ExitStack() as peers, \
            tempfile.TemporaryDirectory() as directory:
        if scenario.config is not None:
            config = Path(directory) / "xcheck.toml"
            config.write_text(scenario.config)
            args += ["--config", str(config)]
            command += f" --config {config.name}  # {config.name}: {scenario.config.strip()}"
        scenario.setup(lab, peers)
        completed = lab.run(lab.onprem, [*scenario.as_user, XCHECK, *args], timeout=300)
    if completed.returncode != 0 or not completed.stdout.strip():
        raise SystemExit(f"{name}: xcheck exited {completed.returncode}\n{completed.stderr}")
    report = validate_report(json.loads(completed.stdout))
    report["recorded"] = {"scenario": name, "command": command,
                          "date": datetime.now(timezone.utc).date().isoformat(), "lab": scenario.lab}
    (FIXTURES / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    names = sys.argv[1:] or list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name in names:
        report = record(name)
        print(f"{name}: {report['summary']}")


if __name__ == "__main__":
    main()
