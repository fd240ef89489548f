"""Reports the real `xcheck run` wrote in the lab (tests/fixtures/assessments, made by
tests/record_evidence.py), read back into the runs they came from: each check's `CheckRun` with
its `TargetResult`s and their typed evidence, rebuilt by the contract's own functions
(`evidence_from_dict`, `Targets.of_scope`, `CheckRun.of`). Nothing here writes evidence: facts,
verdicts and renderings are fed what real checks measured.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.config import STUN_PORT
from checks.contract import CheckRun, Outcome, Reason, Status, TargetResult, evidence_from_dict
from checks.targets import Endpoint, Targets
from checks.protocols.iperf3 import DEFAULT_PORT as IPERF3_PORT
from checks.registry import CHECKS

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "assessments"
SCENARIOS = tuple(sorted(path.stem for path in FIXTURES.glob("*.json")))


def report(scenario: str) -> dict[str, Any]:
    """The recorded file as written: the report and, beside its own keys, "recorded" (where it came from)."""
    return json.loads((FIXTURES / f"{scenario}.json").read_text())


def targets(report: dict[str, Any]) -> Targets:
    """What the recorded run was asked to probe, as the CLI gave it to the runner."""
    given = report["targets"]
    return Targets(stun=tuple(Endpoint.parse(text, STUN_PORT) for text in given["stun"]),
                   iperf=Endpoint.parse(given["iperf"], IPERF3_PORT) if given["iperf"] else None,
                   gateways=tuple(given["gateways"]))


def check_run_of(printed: dict[str, Any], asked: Targets, ended_at: float = 0.0) -> CheckRun:
    """A check's entry of a report (`CheckRun.to_dict`) back as the run it was, for the targets asked."""
    check = CHECKS[printed["name"]]
    by_name = {target.name: target for target in asked.of_scope(check.scope)}
    results = [TargetResult(check.name, by_name[result["target"]], Status(result["status"]), Reason(result["reason"]),
                            result["detail"], result["duration_seconds"],
                            evidence_from_dict(check.evidence, result["evidence"]), ended_at)
               for result in printed["results"]]
    # A check with no target to probe has no result: the runner summed it up as skipped itself.
    nothing = None if results else Outcome(Status(printed["status"]), Reason(printed["reason"]), printed["detail"])
    return CheckRun.of(check, results, nothing)


def runs_of(report: dict[str, Any]) -> list[CheckRun]:
    """Every check of the report as the runner returned it, in the report's order."""
    asked, ended_at = targets(report), datetime.fromisoformat(report["finished_at"]).timestamp()
    return [check_run_of(printed, asked, ended_at) for printed in report["checks"]]


def load(scenario: str) -> tuple[dict[str, Any], list[CheckRun]]:
    recorded = report(scenario)
    return recorded, runs_of(recorded)


def run(scenario: str, check: str) -> CheckRun:
    """One check's run in one recording."""
    _, runs = load(scenario)
    return next(r for r in runs if r.name == check)


def together(check: str, scenarios: Iterable[str]) -> CheckRun:
    """`check` over the targets of several recordings at once (two gateways, one of them unreachable),
    summed up by `CheckRun.of` as the runner would have: for a rule no single lab run shows."""
    return CheckRun.of(CHECKS[check], [result for scenario in scenarios for result in run(scenario, check).results])
