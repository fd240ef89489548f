"""Mutation score of the decision path: how many deliberate bugs the unit tests catch.

    .venv/bin/python benchmarks/mutation_score.py [--jobs N] [--keep] [--survivors]

mutmut (pinned in the test extras) plants one small bug at a time (a `<` for a `<=`, a constant
changed, a call's argument dropped, a return replaced by None) in the modules that turn results
into the verdict a user acts on, and runs the unit tests against each: a mutant the tests do not
catch ("survived") is a wrong verdict that could ship. What is mutated and which tests run is
pyproject.toml's [tool.mutmut]: facts, the verdict engine and rule-file loader, config,
report and redaction, address classes and the STUN codec; unit tests only (no lab).

Printed per module: mutants, killed (a timeout counts as killed: the mutant hung a test),
survived, not reached by any test, equivalent, and the score, killed / (mutants - equivalent).
Equivalent mutants change nothing a caller can observe; each is listed with why in
benchmarks/equivalent_mutants.toml, and an entry that no longer names a surviving mutant is
reported as stale (its function changed: judge it again). The target is 90% per module.

Not part of .ci/run: it takes minutes of both cores. Without --keep it starts from a clean
`mutants/` folder, so that no result cached from an older tree is counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
EQUIVALENT = Path(__file__).with_name("equivalent_mutants.toml")
TARGET = 0.90
# mutmut's exit codes (mutmut/stats.py); anything else is "suspicious" and counts as not killed.
KILLED = {1, 3, 36, 24, -24, 152, 255}
SURVIVED = {0}
NOT_REACHED = {5, 33}


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def equivalents() -> dict[str, str]:
    return tomllib.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}


def results(module: str) -> dict[str, int | None]:
    meta = ROOT / "mutants" / f"{module}.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}


def run_mutmut(jobs: int, keep: bool) -> float:
    if not keep:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    started = time.monotonic()
    completed = subprocess.run([MUTMUT, "run", "--max-children", str(jobs)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"mutmut run failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true", help="reuse mutants/ and its results (after a change to tests only)")
    parser.add_argument("--survivors", action="store_true", help="show every surviving mutant's diff")
    args = parser.parse_args()

    seconds = run_mutmut(args.jobs, args.keep)
    judged = equivalents()
    seen: set[str] = set()
    failing = []
    total = 0
    print(f"{'module':34} {'mutants':>7} {'killed':>7} {'survived':>8} {'no test':>7} {'equiv.':>6} {'score':>7}")
    for module in modules():
        codes = results(module)
        total += len(codes)
        counts = Counter("killed" if c in KILLED else "survived" if c in SURVIVED else
                         "not reached" if c in NOT_REACHED else "other" for c in codes.values())
        equivalent = {name for name, code in codes.items() if name in judged and code not in KILLED}
        seen |= equivalent
        counted = len(codes) - len(equivalent)
        score = counts["killed"] / counted if counted else 1.0
        print(f"{module:34} {len(codes):7} {counts['killed']:7} {counts['survived'] - len(equivalent):8} "
              f"{counts['not reached'] + counts['other']:7} {len(equivalent):6} {score:7.1%}")
        if score < TARGET:
            failing.append(module)
        if args.survivors:
            for name, code in codes.items():
                if code not in KILLED and name not in judged:
                    subprocess.run([MUTMUT, "show", name], cwd=ROOT)
    stale = sorted(set(judged) - seen)
    for name in stale:
        print(f"stale entry in {EQUIVALENT.name}: {name} is no surviving mutant any more: judge it again")
    print(f"{total} mutants in {seconds:.0f} s with {args.jobs} jobs; "
          f"target {TARGET:.0%} per module: " + ("met" if not failing else f"missed by {', '.join(failing)}"))


if __name__ == "__main__":
    main()
