"""Settings: defaults, then a TOML config file, then command-line flags.

The config file is validated against one table of fields; every error names its field path,
unknown keys are rejected, and all errors are reported together.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.verdicts import DEFAULT_RULESET, OPTIONS, available_rulesets
from checks import iperf3
from checks.contract import Endpoint, Targets, ThroughputPlan

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


class ConfigError(ValueError):
    """Bad settings. `problems` lists every one, each starting with its field path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
class Settings:
    ruleset: str = DEFAULT_RULESET
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    stun: tuple[Endpoint, ...] = tuple(Endpoint.parse(s, STUN_PORT) for s in DEFAULT_STUN)
    expect: tuple[str, ...] = ()
    iperf: Endpoint | None = None
    gateway: tuple[str, ...] = ()
    gateway_fingerprint: str | None = None
    # CONNECT proxy for TLS probes; like curl and pip, HTTPS_PROXY is the default.
    proxy: str | None = field(default_factory=lambda: os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"))
    throughput: bool = True
    throughput_seconds: float = 10.0
    streams: int = 4
    throughput_profile: str = "default"
    requirements: Requirements = field(default_factory=Requirements)

    @property
    def targets(self) -> Targets:
        plan = None
        if self.throughput:
            plan = ThroughputPlan(seconds=self.throughput_seconds,
                                  streams=THROUGHPUT_PROFILES[self.throughput_profile] or (self.streams,))
        return Targets(stun=self.stun, iperf=self.iperf, throughput=plan, gateways=self.gateway,
                       gateway_fingerprint=self.gateway_fingerprint, proxy=self.proxy)


# ---- validators: each returns the value to store or raises ValueError with a message ----

def _number(minimum: float, maximum: float | None = None) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        if value <= minimum or (maximum is not None and value > maximum):
            bound = f"greater than {minimum:g}" + (f" and at most {maximum:g}" if maximum is not None else "")
            raise ValueError(f"must be {bound}, got {value!r}")
        return float(value)
    return check


def _whole_number(maximum: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (maximum and value > maximum):
            bound = f"from 1 to {maximum}" if maximum else ">= 1"
            raise ValueError(f"expected a whole number {bound}, got {value!r}")
        return value
    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _choice(choices: Callable[[], list[str]] | tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        known = choices() if callable(choices) else choices
        if value not in known:
            raise ValueError(f"expected one of {', '.join(known)}, got {value!r}")
        return value
    return check


def _host(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", value):
        raise ValueError(f"expected an IP address or a host name, got {value!r}")
    return value


def _fingerprint(value: Any) -> str:
    text = value.replace(":", "").lower() if isinstance(value, str) else ""
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValueError(f"expected a SHA-256 fingerprint (64 hex digits, colons allowed), got {value!r}")
    return text


def _proxy(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"http://[^/\s]+:\d{1,5}/?", value):
        raise ValueError(f"expected http://HOST:PORT, got {value!r}")
    return value


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {value!r}")
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
            raise ValueError(f"expected 'HOST[:PORT]', got {value!r}")
        return Endpoint.parse(value, default_port)
    return check


# The config file's fields: path -> (validator, where it goes in Settings).
FIELDS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "ruleset": (_choice(available_rulesets), "ruleset"),
    "timeout_seconds": (_number(0, MAX_TIMEOUT_SECONDS), "timeout_seconds"),
    "stun": (_list_of(_endpoint(STUN_PORT)), "stun"),
    "expect": (_list_of(_choice(OPTIONS)), "expect"),
    "iperf": (_endpoint(iperf3.DEFAULT_PORT), "iperf"),
    "gateway": (_list_of(_host), "gateway"),
    "gateway_fingerprint": (_fingerprint, "gateway_fingerprint"),
    "proxy": (_proxy, "proxy"),
    "throughput": (_boolean, "throughput"),
    "throughput_seconds": (_number(0, MAX_TIMEOUT_SECONDS), "throughput_seconds"),
    "streams": (_whole_number(iperf3.MAX_STREAMS), "streams"),
    "throughput_profile": (_choice(tuple(THROUGHPUT_PROFILES)), "throughput_profile"),
    "requirements.bandwidth_mbps": (lambda v: _number(0)(v) * 1e6, "requirements.bandwidth_bits_per_second"),
    "requirements.clients": (_whole_number(), "requirements.clients"),
    "requirements.private_only": (_boolean, "requirements.private_only"),
    "requirements.vpn_device": (_boolean, "requirements.vpn_device"),
    "requirements.colocation": (_boolean, "requirements.colocation"),
    "requirements.nsp_wan": (_boolean, "requirements.nsp_wan"),
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
    for path, value in raw.items():
        label = (labels or {}).get(path, path)
        if path in _SECTIONS:
            problems.append(f"{source}: {path}: expected a table ([{path}]), got {value!r}")
            continue
        if path not in FIELDS:
            problems.append(f"{source}: {path}: unknown key (known: {', '.join(FIELDS)})")
            continue
        validate, target = FIELDS[path]
        try:
            values[target] = validate(value)
        except ValueError as exc:
            problems.append(f"{source}: {label}: {exc}")
    if problems:
        raise ConfigError(problems)
    return values


def load_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_values(_flatten(table), str(path))


def build_settings(*layers: Mapping[str, Any]) -> Settings:
    """Defaults overlaid by each layer of {settings path: value} in turn (later wins)."""
    top: dict[str, Any] = {}
    requirements: dict[str, Any] = {}
    for layer in layers:
        for path, value in layer.items():
            if path.startswith("requirements."):
                requirements[path.removeprefix("requirements.")] = value
            else:
                top[path] = value
    if top.get("throughput_profile") == "azurect" and "streams" in top:
        raise ConfigError(["streams: the azurect profile sets its own stages (1, 6, 16 streams); give one or the other"])
    return replace(Settings(), requirements=Requirements(**requirements), **top)
