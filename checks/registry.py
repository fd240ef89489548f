"""The one list of checks. CLI help, docs and the runner's order are derived from it."""

from __future__ import annotations

from checks import interfaces, latency, nat_behavior, stun_binding, throughput
from checks.contract import Check

CHECKS: dict[str, Check] = {
    check.name: check
    for check in (interfaces.CHECK, stun_binding.CHECK, nat_behavior.CHECK, latency.CHECK, throughput.CHECK)
}
