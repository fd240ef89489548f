"""Run one check over its targets and print its run as JSON: for lab tests, inside a namespace.

    python tests/run_probe.py CHECK [--gateway HOST]... [--timeout S] [--fingerprint HEX] [--proxy URL]

CHECK is a name in the registry (the three IKE checks are rows there, not modules). The check
runs as `xcheck run` runs it, through the runner: one target per gateway, each with its own
deadline. The output is the run as the report shows it (`CheckRun.to_dict`): the check's
summed-up status, reason and detail, and under "results" one entry per target with its evidence.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.runner import run_checks  # noqa: E402
from agent.verdicts import load_ruleset  # noqa: E402
from checks.contract import CheckRun, Reason, Status, TargetResult, evidence_from_dict  # noqa: E402
from checks.targets import Targets  # noqa: E402
from checks.registry import CHECKS  # noqa: E402

# What the IKE checks propose, as `xcheck run` takes it from its default rule set.
RULESET = "azure-current"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("check", choices=sorted(CHECKS), help="a check's name, e.g. ike_udp500")
    parser.add_argument("--gateway", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--fingerprint")
    parser.add_argument("--proxy")
    args = parser.parse_args()
    targets = Targets(gateways=tuple(args.gateway), gateway_fingerprint=args.fingerprint, proxy=args.proxy,
                      ike_offer=load_ruleset(RULESET).ike_offer)
    (run,) = asyncio.run(run_checks([CHECKS[args.check]], targets, args.timeout))
    print(json.dumps(run.to_dict()))


def run_of(printed: dict) -> CheckRun:
    """A run as `main` printed it, back as a CheckRun with typed evidence (to derive facts from)."""
    check = CHECKS[printed["name"]]
    entries = printed["results"]
    targets = Targets(gateways=tuple(entry["target"] for entry in entries)).of_scope(check.scope)
    return CheckRun.of(check, [
        TargetResult(check.name, target, Status(entry["status"]), Reason(entry["reason"]), entry["detail"],
                     entry["duration_seconds"], evidence_from_dict(check.evidence, entry["evidence"]), 0.0)
        for target, entry in zip(targets, entries, strict=True)])


if __name__ == "__main__":
    main()
