"""`/probe?target=HOST&module=NAME`: one target probed when Prometheus scrapes, the way
blackbox_exporter users work (`relabel_configs` turn each listed address into `target`).

Only a target the config allows may be probed: one of the configured targets of the module's
kind, or a host of `[daemon] probe_targets`. Anything else is refused before a packet is sent, so
the daemon never becomes a probe reflector for whoever can reach its port.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from agent.config import STUN_PORT, Settings
from agent.runner import GRACE_SECONDS
from checks.contract import Check, Scope
from checks.protocols.iperf3 import DEFAULT_PORT as IPERF3_PORT
from checks.registry import CHECKS
from checks.targets import Endpoint, Targets


@dataclass(frozen=True)
class Module:
    scope: Scope
    checks: tuple[Check, ...]
    summary: str


def _of_scope(scope: Scope) -> tuple[Check, ...]:
    return tuple(check for check in CHECKS.values() if check.scope is scope and not check.loads_path)


def _named(*names: str) -> tuple[Check, ...]:
    return tuple(CHECKS[name] for name in names)


MODULES = {
    "gateway": Module(Scope.GATEWAY, _of_scope(Scope.GATEWAY), "every gateway check: IKE, NAT-T, ESP, TLS, SSTP, "
                                                                "health probe, path MTU"),
    "ike": Module(Scope.GATEWAY, _named("ike_udp500", "ike_natt_udp4500", "ikev1_udp500"),
                  "IKEv2 on UDP 500 and 4500, IKEv1 on UDP 500"),
    "tls": Module(Scope.GATEWAY, _named("tls_tcp443", "sstp", "gateway_health"), "TLS and SSTP on TCP 443, "
                                                                                 "the health probe on TCP 8081"),
    "stun": Module(Scope.STUN_SERVER, _of_scope(Scope.STUN_SERVER), "a STUN server: the mapped address and, with "
                                                                    "RFC 5780, the NAT's behaviour"),
    "far_end": Module(Scope.FAR_END, _of_scope(Scope.FAR_END), "the far end's latency (TCP connect and UDP)"),
}
# What Prometheus's scrape timeout leaves us: its header less this, as blackbox_exporter's timeout_offset.
TIMEOUT_OFFSET_SECONDS = 0.5


class ProbeRefused(ValueError):
    """The request names no module, or a target the config does not allow (HTTP 400 or 403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def probe_targets(settings: Settings, targets: Targets, module_name: str | None, target: str | None) -> Targets:
    """The Targets that probe exactly `target` with `module_name`, if the config allows it; else ProbeRefused."""
    if not module_name or module_name not in MODULES:
        raise ProbeRefused(400, f"module must be one of {', '.join(MODULES)}")
    if not target:
        raise ProbeRefused(400, "target parameter is missing")
    module = MODULES[module_name]
    allowed_hosts = set(settings.daemon.probe_targets)
    only = dataclasses.replace(targets, stun=(), iperf=None, gateways=(), throughput=None)
    try:
        if module.scope is Scope.GATEWAY:
            host = Endpoint.check_host(target.strip())
            if host in targets.gateways or host in allowed_hosts:
                return dataclasses.replace(only, gateways=(host,))
        elif module.scope is Scope.STUN_SERVER:
            # A probe_targets host on the protocol's own port only: any port would make a port scanner.
            endpoint = Endpoint.parse(target, STUN_PORT)
            if endpoint in targets.stun or endpoint in {Endpoint(host, STUN_PORT) for host in allowed_hosts}:
                return dataclasses.replace(only, stun=(endpoint,))
        else:
            endpoint = Endpoint.parse(target, IPERF3_PORT)
            if endpoint == targets.iperf or endpoint in {Endpoint(host, IPERF3_PORT) for host in allowed_hosts}:
                return dataclasses.replace(only, iperf=endpoint)
    except ValueError:
        pass  # not echoed: whatever was sent is not a target we would probe
    raise ProbeRefused(403, "target not allowed: only the configured targets and [daemon] probe_targets may be probed")


def probe_timeout(settings: Settings, module: Module, targets: Targets, scrape_timeout: str | None) -> float:
    """The timeout each check of the probe gets: the config's, shortened so that the whole probe
    (the checks' planned work and the runner's grace included) ends before Prometheus gives up."""
    timeout = settings.timeout_seconds
    try:
        scrape = float(scrape_timeout) if scrape_timeout else None
    except ValueError:
        scrape = None
    if scrape is not None and scrape > 0:
        budget = max((check.budget_seconds(targets) for check in module.checks), default=0.0)
        timeout = min(timeout, scrape - TIMEOUT_OFFSET_SECONDS - GRACE_SECONDS - budget)
    return max(0.0, timeout)  # a scrape timeout that leaves nothing: every check says "timeout" at once
