"""Settings: defaults, then a TOML config file, then command-line flags.

The config file is validated against one table of fields; every error names its field path,
unknown keys are rejected, and all errors are reported together. Nothing in a config or a flag is
trusted to be small: the file, every number, every host and every list has a stated bound.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import reprlib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.verdicts import DEFAULT_RULESET, OPTIONS, available_rulesets
from checks.protocols import iperf3
from checks.targets import Endpoint, Targets, ThroughputPlan
from checks.transport.tls_client import Proxy

STUN_PORT = 3478
# Stream counts per profile: "azurect" runs the stages of Microsoft's AzureCT Get-LinkPerformance.
THROUGHPUT_PROFILES = {"default": None, "azurect": (1, 6, 16)}
# Well-known public servers, for users: tests never contact them. stunprotocol.org answers
# with OTHER-ADDRESS (RFC 5780); the others give a second and third view of the mapping.
DEFAULT_STUN = ("stun.stunprotocol.org:3478", "stun.l.google.com:19302", "stun.cloudflare.com:3478")
# Long enough for three STUN retransmissions (0.5 + 1 + 2 s would need 3.5) on a lossy path,
# short enough that a blocked UDP path is reported in seconds.
DEFAULT_TIMEOUT_SECONDS = 3.0
MAX_TIMEOUT_SECONDS = 300.0
# Silence is judged only a whole retransmission timeout (STUN's first is 0.5 s) after a request went
# out: a shorter --timeout could only ever say "timed out".
MIN_TIMEOUT_SECONDS = 1.0
# iperf3 servers take a test's length in whole seconds (we send the ceiling): a shorter stage is not
# what was asked for. Five minutes per stage is already a soak test.
MIN_THROUGHPUT_SECONDS, MAX_THROUGHPUT_SECONDS = 1.0, 300.0
# The fastest connection Azure sells is an ExpressRoute Direct port of 100 Gbit/s; a larger need is a
# unit slip (bit/s typed as Mbit/s), and the verdicts for anything above 10 Gbit/s are the same.
MAX_BANDWIDTH_MBPS = 100_000.0
# The largest gateway takes 10,000 P2S connections; a hundred times that is still a site, not a typo.
MAX_CLIENTS = 1_000_000
# Several STUN servers let xcheck compare mappings; sixteen is more than any comparison needs, and every
# target costs probes and a line in the report. The same bound holds for gateways.
MAX_STUN_SERVERS = 16
MAX_GATEWAYS = 16
# A real config is a few hundred bytes; the bound keeps a wrong file (a log, a disk image) from
# taking the parser's time and memory.
MAX_CONFIG_BYTES = 64 << 10  # a config with every key and 16 servers is under 4 KiB
# The daemon ([daemon] in the config, or `xcheck daemon`'s flags). 9478 is none of the ports Prometheus
# and the common exporters use (9090-9094, 9100, 9115, ...), so it runs beside them on one host.
DEFAULT_LISTEN = "127.0.0.1:9478"
DEFAULT_INTERVAL_SECONDS = 60.0
# A quick cycle probes every target with --timeout each: more often than every 5 s is a flood, not a check;
# less often than daily is not monitoring.
MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS = 5.0, 86_400.0
# A throughput stage loads the path for --throughput-seconds: at most every 5 minutes, at least weekly.
MIN_THROUGHPUT_INTERVAL_SECONDS, MAX_THROUGHPUT_INTERVAL_SECONDS = 300.0, 7 * 86_400.0
# Hosts /probe may probe besides the configured targets: Prometheus's static lists, bounded.
MAX_PROBE_TARGETS = 256
LOG_FORMATS = ("logfmt", "json")
# The audit's declarations ([audit] in the config, or `xcheck audit`'s flags).
GATEWAY_TYPES = ("route-based", "policy-based")
GATEWAY_SKUS = ("Basic", "VpnGw1", "VpnGw2", "VpnGw3", "VpnGw4", "VpnGw5")
PLAN_OPTIONS = ("p2s", "s2s", "expressroute")
# Input files: a site has a handful; a list of hundreds is a glob gone wrong.
MAX_AUDIT_FILES = 64
# Prefixes: Azure takes 4,000 routes over BGP from a site; a declared list is far shorter.
MAX_PREFIXES = 4000
# The audit's exit 1 threshold for a network team's CI (--fail-on).
FAIL_ON = ("warning", "error")
# Enough to fix a config in one go; a file of thousands of mistakes needs no thousand lines to say so.
MAX_PROBLEMS_SHOWN = 20

# How a value the user gave is shown in a message: bounded, one line, escaped.
_shown = reprlib.Repr()
_shown.maxstring = _shown.maxother = 60
_shown.maxlist = _shown.maxtuple = _shown.maxdict = 4
_shown.maxlevel = 2


class ConfigError(ValueError):
    """Bad settings. `problems` lists every one, each starting with its field path; `note` says once
    what applies to several (the known keys)."""

    def __init__(self, problems: list[str], note: str | None = None) -> None:
        self.problems = problems
        self.note = note
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """What to print: the first MAX_PROBLEMS_SHOWN problems, how many more, then the note."""
        lines = self.problems[:MAX_PROBLEMS_SHOWN]
        if len(self.problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"... and {len(self.problems) - MAX_PROBLEMS_SHOWN} more problems")
        return lines + ([self.note] if self.note else [])


@dataclass(frozen=True)
class Requirements:
    """What the user declares; None means "not declared" (never "no")."""

    bandwidth_bits_per_second: float | None = None
    clients: int | None = None
    private_only: bool | None = None
    vpn_device: bool | None = None
    colocation: bool | None = None
    nsp_wan: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DaemonSettings:
    """How `xcheck daemon` runs: where it listens, how often each family of checks runs."""

    listen: tuple[str, int] = ("127.0.0.1", 9478)
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    throughput_interval_seconds: float | None = None  # None: the throughput stage never runs
    probe_targets: tuple[str, ...] = ()
    web_config: Path | None = None
    log_format: str = "logfmt"


@dataclass(frozen=True)
class AuditSettings:
    """What `xcheck audit` (and the audit inside `xcheck run`) reads and what the site declares."""

    ipsec_config: tuple[Path, ...] = ()  # empty: the host's own (/etc/swanctl, /etc/ipsec.conf)
    firewall: tuple[Path, ...] = ()  # empty: the host's own (nft -j list ruleset, iptables-save)
    gateway_type: str | None = None
    gateway_sku: str | None = None
    policy_based_selectors: bool | None = None  # UsePolicyBasedTrafficSelectors on the connection
    asn: int | None = None
    bgp_peer_address: str | None = None
    onprem_prefixes: tuple[ipaddress.IPv4Network, ...] = ()
    vnet_prefixes: tuple[ipaddress.IPv4Network, ...] = ()
    expressroute_peering_subnets: tuple[ipaddress.IPv4Network, ...] = ()
    plan: tuple[str, ...] = ()
    routes_vpn_device: bool | None = None  # this host routes for a VPN device behind it (FORWARD is judged)
    fail_on: str | None = None


@dataclass(frozen=True)
class Settings:
    ruleset: str = DEFAULT_RULESET
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    stun: tuple[Endpoint, ...] = tuple(Endpoint.parse(s, STUN_PORT) for s in DEFAULT_STUN)
    expect: tuple[str, ...] = ()
    iperf: Endpoint | None = None
    gateway: tuple[str, ...] = ()
    gateway_fingerprint: str | None = None
    proxy: str | None = None  # CONNECT proxy for TLS probes (see from_environment)
    throughput: bool = True
    throughput_seconds: float = 10.0
    streams: int = 4
    throughput_profile: str = "default"
    requirements: Requirements = field(default_factory=Requirements)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)

    @property
    def targets(self) -> Targets:
        plan = None
        if self.throughput:
            plan = ThroughputPlan(seconds=self.throughput_seconds,
                                  streams=THROUGHPUT_PROFILES[self.throughput_profile] or (self.streams,))
        return Targets(stun=self.stun, iperf=self.iperf, throughput=plan, gateways=self.gateway,
                       gateway_fingerprint=self.gateway_fingerprint, proxy=self.proxy)


# ---- validators: each returns the value to store or raises ValueError with a message ----

def _number(minimum: float, maximum: float, *, minimum_allowed: bool = False) -> Callable[[Any], float]:
    """A finite number up to `maximum`, above `minimum` (or from it, when `minimum_allowed`)."""
    bound = f"{'at least' if minimum_allowed else 'greater than'} {minimum:g} and at most {maximum:g}"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_shown.repr(value)}")
        if isinstance(value, float) and not math.isfinite(value):  # TOML and float() both accept nan and inf
            raise ValueError(f"must be a finite number {bound}, got {value!r}")
        if not (minimum <= value if minimum_allowed else minimum < value) or value > maximum:
            raise ValueError(f"must be {bound}, got {_shown.repr(value)}")
        return float(value)
    return check


def _whole_number(maximum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
            raise ValueError(f"expected a whole number from 1 to {maximum}, got {_shown.repr(value)}")
        return value
    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_shown.repr(value)}")
    return value


def _choice(choices: Callable[[], list[str]] | tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        known = choices() if callable(choices) else choices
        if value not in known:
            raise ValueError(f"expected one of {', '.join(known)}, got {_shown.repr(value)}")
        return value
    return check


def _host(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an IP address or a host name, got {_shown.repr(value)}")
    try:
        return Endpoint.check_host(value.strip())
    except ValueError as exc:
        raise ValueError(f"{_shown.repr(value)}: {exc}") from None


def _fingerprint(value: Any) -> str:
    text = value.replace(":", "").lower() if isinstance(value, str) else ""
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValueError(f"expected a SHA-256 fingerprint (64 hex digits, colons allowed), got {_shown.repr(value)}")
    return text


def _proxy(value: Any) -> str:
    # Not echoed: a proxy URL may carry a password.
    usage = "expected http://[USER:PASSWORD@]HOST:PORT"
    if not isinstance(value, str) or len(value) > 1024:
        raise ValueError(usage)
    try:
        proxy = Proxy.parse(value)
    except ValueError:
        raise ValueError(usage) from None
    try:
        Endpoint.check_host(proxy.host)
    except ValueError as exc:
        raise ValueError(f"{usage}; its host: {exc}") from None
    if proxy.port == 0:  # the only port out of range that urlsplit lets through
        raise ValueError(f"{usage}; the port must be from 1 to 65535")
    return value


def _listen(value: Any) -> tuple[str, int]:
    usage = f"expected ADDRESS:PORT with an IP address of this host (e.g. {DEFAULT_LISTEN}), got {_shown.repr(value)}"
    if not isinstance(value, str):
        raise ValueError(usage)
    host, _, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(usage) from None
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise ValueError(f"{usage}: the port must be from 1 to 65535")
    return str(address), int(port)


def _path(value: Any) -> Path:
    if not isinstance(value, str) or not value or len(value) > 4096 or "\0" in value:
        raise ValueError(f"expected a file name, got {_shown.repr(value)}")
    return Path(value)


def _prefix(value: Any) -> ipaddress.IPv4Network:
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"expected an IPv4 prefix such as 10.1.0.0/16, got {_shown.repr(value)}")
    try:
        return ipaddress.IPv4Network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{_shown.repr(value)}: {exc}") from None


def _ipv4(value: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(value.strip() if isinstance(value, str) else value))
    except ValueError:
        raise ValueError(f"expected an IPv4 address, got {_shown.repr(value)}") from None


def _asn(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**32:
        raise ValueError(f"expected an AS number from 1 to 4294967295, got {_shown.repr(value)}")
    return value


def _list_of(item: Callable[[Any], Any], maximum: int) -> Callable[[Any], tuple[Any, ...]]:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {_shown.repr(value)}")
        if len(value) > maximum:
            raise ValueError(f"at most {maximum} entries, got {len(value)}")
        items, problems = [], []
        for index, entry in enumerate(value):
            try:
                items.append(item(entry))
            except ValueError as exc:
                problems.append(f"[{index}] {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return tuple(items)
    return check


def _endpoint(default_port: int) -> Callable[[Any], Endpoint]:
    def check(value: Any) -> Endpoint:
        if not isinstance(value, str):
            raise ValueError(f"expected 'HOST[:PORT]', got {_shown.repr(value)}")
        return Endpoint.parse(value, default_port)
    return check


# The config file's fields: path -> (validator, where it goes in Settings).
FIELDS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "ruleset": (_choice(available_rulesets), "ruleset"),
    "timeout_seconds": (_number(MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS, minimum_allowed=True), "timeout_seconds"),
    "stun": (_list_of(_endpoint(STUN_PORT), MAX_STUN_SERVERS), "stun"),
    "expect": (_list_of(_choice(OPTIONS), len(OPTIONS)), "expect"),
    "iperf": (_endpoint(iperf3.DEFAULT_PORT), "iperf"),
    "gateway": (_list_of(_host, MAX_GATEWAYS), "gateway"),
    "gateway_fingerprint": (_fingerprint, "gateway_fingerprint"),
    "proxy": (_proxy, "proxy"),
    "throughput": (_boolean, "throughput"),
    "throughput_seconds": (_number(MIN_THROUGHPUT_SECONDS, MAX_THROUGHPUT_SECONDS, minimum_allowed=True),
                           "throughput_seconds"),
    "streams": (_whole_number(iperf3.MAX_STREAMS), "streams"),
    "throughput_profile": (_choice(tuple(THROUGHPUT_PROFILES)), "throughput_profile"),
    "requirements.bandwidth_mbps": (lambda v: _number(0, MAX_BANDWIDTH_MBPS)(v) * 1e6,
                                    "requirements.bandwidth_bits_per_second"),
    "requirements.clients": (_whole_number(MAX_CLIENTS), "requirements.clients"),
    "requirements.private_only": (_boolean, "requirements.private_only"),
    "requirements.vpn_device": (_boolean, "requirements.vpn_device"),
    "requirements.colocation": (_boolean, "requirements.colocation"),
    "requirements.nsp_wan": (_boolean, "requirements.nsp_wan"),
    "daemon.listen": (_listen, "daemon.listen"),
    "daemon.interval_seconds": (_number(MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS, minimum_allowed=True),
                                "daemon.interval_seconds"),
    "daemon.throughput_interval_seconds": (_number(MIN_THROUGHPUT_INTERVAL_SECONDS, MAX_THROUGHPUT_INTERVAL_SECONDS,
                                                   minimum_allowed=True), "daemon.throughput_interval_seconds"),
    "daemon.probe_targets": (_list_of(_host, MAX_PROBE_TARGETS), "daemon.probe_targets"),
    "daemon.web_config": (_path, "daemon.web_config"),
    "daemon.log_format": (_choice(LOG_FORMATS), "daemon.log_format"),
    "audit.ipsec_config": (_list_of(_path, MAX_AUDIT_FILES), "audit.ipsec_config"),
    "audit.firewall": (_list_of(_path, MAX_AUDIT_FILES), "audit.firewall"),
    "audit.gateway_type": (_choice(GATEWAY_TYPES), "audit.gateway_type"),
    "audit.gateway_sku": (_choice(GATEWAY_SKUS), "audit.gateway_sku"),
    "audit.policy_based_selectors": (_boolean, "audit.policy_based_selectors"),
    "audit.asn": (_asn, "audit.asn"),
    "audit.bgp_peer_address": (_ipv4, "audit.bgp_peer_address"),
    "audit.onprem_prefixes": (_list_of(_prefix, MAX_PREFIXES), "audit.onprem_prefixes"),
    "audit.vnet_prefixes": (_list_of(_prefix, MAX_PREFIXES), "audit.vnet_prefixes"),
    "audit.expressroute_peering_subnets": (_list_of(_prefix, 4), "audit.expressroute_peering_subnets"),
    "audit.plan": (_list_of(_choice(PLAN_OPTIONS), len(PLAN_OPTIONS)), "audit.plan"),
    "audit.routes_vpn_device": (_boolean, "audit.routes_vpn_device"),
    "audit.fail_on": (_choice(FAIL_ON), "audit.fail_on"),
}


_SECTIONS = {name.rsplit(".", 1)[0] for name in FIELDS if "." in name}


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and any(name.startswith(f"{path}.") for name in FIELDS):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def parse_values(raw: Mapping[str, Any], source: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Validate {field path: value} into {settings path: value}; ConfigError lists every problem.

    `labels` names fields as the user wrote them (a flag instead of a field path).
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    unknown = False
    for path, value in raw.items():
        label = (labels or {}).get(path, path)
        if path in _SECTIONS:
            problems.append(f"{source}: {path}: expected a table ([{path}]), got {_shown.repr(value)}")
            continue
        if path not in FIELDS:
            # A key may be anything TOML can quote: show it bounded and escaped, as a value.
            shown = path if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", path) else _shown.repr(path)
            problems.append(f"{source}: {shown}: unknown key")
            unknown = True
            continue
        validate, target = FIELDS[path]
        try:
            values[target] = validate(value)
        except ValueError as exc:
            problems.append(f"{source}: {label}: {exc}")
    if problems:
        raise ConfigError(problems, f"known keys: {', '.join(FIELDS)}" if unknown else None)
    return values


# tomllib takes time quadratic in the parts of one dotted key (64 KiB of `a.a.a…` takes 15 s, 1 MiB
# an hour). A key, and an inline table, stays on one line, so a bound on the dots of a line bounds
# every key whatever quoting hides it; no line of a real config comes near (a host name has at most
# 126 dots). With MAX_CONFIG_BYTES, the slowest file tomllib is given parses in a fraction of a second.
MAX_DOTS_PER_LINE = 256


def _line_with_too_many_dots(text: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.count(".") > MAX_DOTS_PER_LINE:
            return number
    return None


def load_file(path: Path) -> dict[str, Any]:
    too_large = ConfigError([f"{path}: larger than {MAX_CONFIG_BYTES} bytes; a config is a few hundred"])
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size > MAX_CONFIG_BYTES:
                raise too_large
            data = handle.read(MAX_CONFIG_BYTES + 1)  # a pipe or /proc file has no size to ask first
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise too_large
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    line = _line_with_too_many_dots(text)
    if line is not None:
        raise ConfigError([f"{path}: line {line}: not a config: more than {MAX_DOTS_PER_LINE} dots on one line"])
    try:
        table = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of thousands of digits
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except RecursionError:  # tomllib descends once per nested array or inline table
        raise ConfigError([f"{path}: not a config: arrays or tables nested too deeply"]) from None
    return parse_values(_flatten(table), str(path))


def from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The layer below the config file: like curl and pip, HTTPS_PROXY is the default proxy.
    Validated as --proxy is, so a bad value is a usage error naming the variable, never a
    check that fails later with the URL (and its password) in the report."""
    for variable in ("HTTPS_PROXY", "https_proxy"):
        if environ.get(variable):
            return parse_values({"proxy": environ[variable]}, "environment", {"proxy": variable})
    return {}


def build_settings(*layers: Mapping[str, Any]) -> Settings:
    """Defaults overlaid by each layer of {settings path: value} in turn (later wins)."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {"requirements": {}, "daemon": {}, "audit": {}}
    for layer in layers:
        for path, value in layer.items():
            section, _, key = path.partition(".")
            if key and section in sections:
                sections[section][key] = value
            else:
                top[path] = value
    if top.get("throughput_profile") == "azurect" and "streams" in top:
        raise ConfigError(["streams: the azurect profile sets its own stages (1, 6, 16 streams); give one or the other"])
    return replace(Settings(), requirements=Requirements(**sections["requirements"]),
                   daemon=DaemonSettings(**sections["daemon"]), audit=AuditSettings(**sections["audit"]), **top)
