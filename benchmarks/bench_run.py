"""Figures for `xcheck run` (issue 3), as ratios against references measured in the same run.

    sudo .venv/bin/python benchmarks/bench_run.py [--rounds N]

1. Start-up: `xcheck version` against a bare typer app with one command (target: <= 1.3x).
2. `xcheck run` in the lab behind MASQUERADE with an RFC 5780 coturn (target: < 1.0 s wall),
   beside coturn's own `turnutils_natdiscovery -m -f` on the same lab as a reference.
3. `xcheck run` with UDP dropped at the router (target: <= --timeout + 0.5 s).
4. `--gateway` against `xcheck responder`: healthy (target < 1.5 s), and with every UDP port dropped
   (target: <= --timeout + scapy's import, done before the deadlines start, + 0.5 s).
Prints figures; asserts nothing (these machines are noisy). Lab parts need root; they only
touch the lab's own namespaces (tests/lab.py).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from lab import Lab, lab_unavailable_reason  # noqa: E402

XCHECK = str(Path(sys.executable).with_name("xcheck"))
BARE_TYPER_APP = '''
import typer

app = typer.Typer()


@app.command()
def version() -> None:
    print("0")


app()
'''


def wall(argv: list[str], runner=None) -> float:
    started = time.perf_counter()
    completed = runner(argv) if runner else subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if completed.returncode not in (0, 1):
        raise SystemExit(f"{argv} failed ({completed.returncode}): {completed.stderr}")
    return elapsed


def startup(rounds: int) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(BARE_TYPER_APP)
    bare, ours = [], []
    for _ in range(rounds):  # interleaved, so drift hits both alike
        bare.append(wall([sys.executable, handle.name]))
        ours.append(wall([XCHECK, "version"]))
    Path(handle.name).unlink()
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"startup: xcheck version {o * 1000:.0f} ms, bare typer app {b * 1000:.0f} ms, "
          f"ratio {o / b:.2f}x (target <= 1.3x), median of {rounds}")


def lab_runs(rounds: int, timeout: float) -> None:
    reason = lab_unavailable_reason()
    if reason:
        print(f"lab figures skipped: {reason}")
        return
    with Lab(nat="masquerade") as lab:
        def in_lab(argv):
            return lab.run(lab.onprem, argv, timeout=60)

        run = [XCHECK, "run", "--format", "json", "--stun", lab.stun_primary, "--timeout", str(timeout)]
        version = [wall([XCHECK, "version"], in_lab) for _ in range(rounds)]
        nat = [wall(run, in_lab) for _ in range(rounds)]
        started = time.perf_counter()
        lab.natdiscovery()
        reference = time.perf_counter() - started
    v, n = statistics.median(version), statistics.median(nat)
    print(f"behind NAT (RFC 5780): xcheck run {n:.3f} s wall (target < 1.0 s; max {max(nat):.3f} s), "
          f"of which start-up {v:.3f} s; turnutils_natdiscovery -m -f {reference:.2f} s, "
          f"ratio {n / reference:.2f}x")
    with Lab(nat="masquerade", udp="drop") as lab:
        blocked = [wall([XCHECK, "run", "--format", "json", "--stun", lab.stun_primary, "--timeout", str(timeout)],
                        lambda argv: lab.run(lab.onprem, argv, timeout=60)) for _ in range(max(2, rounds // 2))]
    b = statistics.median(blocked)
    print(f"UDP dropped: xcheck run {b:.3f} s wall with --timeout {timeout:g} "
          f"(target <= {timeout + 0.5:g} s; max {max(blocked):.3f} s), ratio to the timeout {b / timeout:.2f}x")
    gateway_runs(rounds, timeout)


def gateway_runs(rounds: int, timeout: float) -> None:
    """Issue 4: every gateway probe at once against `xcheck responder` (as root, so ESP is echoed)."""
    figures = {}
    for udp in ("open", "drop"):
        with Lab(nat="masquerade", udp=udp) as lab:
            lab.spawn(lab.cloud, [XCHECK, "responder", "--listen", lab.stun_primary, "--stun-port", "3490"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            run = [XCHECK, "run", "--format", "json", "--stun", lab.stun_primary, "--gateway", lab.stun_primary,
                   "--timeout", str(timeout)]
            figures[udp] = [wall(run, lambda argv: lab.run(lab.onprem, argv, timeout=60)) for _ in range(max(2, rounds // 2))]
    healthy, dropped = statistics.median(figures["open"]), statistics.median(figures["drop"])
    # The IKE probes import scapy before the deadlines start (Check.prepare), so the reference for a
    # run cut off by its timeout is the timeout plus that import, measured here on the same machine.
    scapy = statistics.median(wall([sys.executable, "-c", "import checks.protocols.ike"])
                              - wall([sys.executable, "-c", "import checks.contract"]) for _ in range(5))
    print(f"--gateway, healthy lab: xcheck run {healthy:.3f} s wall (target < 1.5 s; max {max(figures['open']):.3f} s)")
    print(f"--gateway, every UDP port dropped: {dropped:.3f} s wall with --timeout {timeout:g} "
          f"(target <= timeout + scapy's import {scapy:.3f} s + 0.5 = {timeout + scapy + 0.5:.3f} s; "
          f"max {max(figures['drop']):.3f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    startup(args.rounds)
    lab_runs(args.rounds, args.timeout)


if __name__ == "__main__":
    main()
