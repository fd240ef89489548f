"""Run one check's probe and print its result as JSON: for lab tests, inside a namespace.

    python tests/run_probe.py CHECK [--gateway HOST]... [--timeout S] [--fingerprint HEX] [--proxy URL]

The registry is not consulted, so a check can be tested before it is wired into `xcheck run`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checks.contract import CheckContext, Resolver, Targets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("check", help="module name under checks/, e.g. ike_udp500")
    parser.add_argument("--gateway", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--fingerprint")
    parser.add_argument("--proxy")
    args = parser.parse_args()
    module = importlib.import_module(f"checks.probes.{args.check}")
    targets = Targets(gateways=tuple(args.gateway), gateway_fingerprint=args.fingerprint, proxy=args.proxy)

    async def run():
        ctx = CheckContext(targets=targets, deadline=time.monotonic() + args.timeout, dependencies={},
                           resolver=Resolver(), logger=logging.getLogger(args.check))
        started = time.monotonic()
        outcome = await module.CHECK.probe(ctx)
        return {"name": module.CHECK.name, "status": str(outcome.status), "reason": str(outcome.reason),
                "detail": outcome.detail, "duration_seconds": time.monotonic() - started,
                "evidence": outcome.evidence}

    print(json.dumps(asyncio.run(run()), default=str))


if __name__ == "__main__":
    main()
