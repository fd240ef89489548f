"""Accuracy of `xcheck run --iperf` against `iperf3 -c` on links shaped to 20, 50 and 200 Mbit/s (issue 5).

    sudo .venv/bin/python benchmarks/bench_throughput_accuracy.py [--seconds 5] [--rounds 3]

In the lab (tests/lab.py): onprem behind NAT, `tc tbf` on the router's uplink, a stock
`iperf3 -s` in the cloud namespace. Both clients use one stream, one second of warm-up
(`-O 1`) and the same length, interleaved; the figure compared is the server's receiver rate
(`end.sum_received` for iperf3, `facts.throughput.upload_bits_per_second` for xcheck).
Target: |xcheck / iperf3 - 1| <= 3%. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from lab import Lab, lab_unavailable_reason  # noqa: E402

XCHECK = str(Path(sys.executable).with_name("xcheck"))
FAR_END = "203.0.113.10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if reason := lab_unavailable_reason():
        raise SystemExit(f"needs the lab: {reason}")
    for rate in (20, 50, 200):
        with Lab(nat="masquerade") as lab:
            lab.run(lab.router, ["tc", "qdisc", "add", "dev", lab.router_wan_if, "root", "tbf", "rate", f"{rate}mbit",
                                 "burst", "64kb", "latency", "50ms"], check=True)
            lab.spawn(lab.cloud, ["iperf3", "-s", "-B", FAR_END], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            ours, theirs = [], []
            for _ in range(args.rounds):
                reference = lab.run(lab.onprem, ["iperf3", "-c", FAR_END, "-t", str(args.seconds), "-O", "1", "-J"],
                                    timeout=120, check=True)
                theirs.append(json.loads(reference.stdout)["end"]["sum_received"]["bits_per_second"])
                run = lab.run(lab.onprem, [XCHECK, "run", "--format", "json", "--stun", FAR_END, "--iperf", FAR_END, "--streams", "1",
                                           "--throughput-seconds", str(args.seconds)], timeout=120, check=True)
                ours.append(json.loads(run.stdout)["facts"]["throughput"]["upload_bits_per_second"])
        o, t = statistics.median(ours), statistics.median(theirs)
        print(f"{rate:>4} Mbit/s shaped: xcheck {o / 1e6:.2f} Mbit/s, iperf3 {t / 1e6:.2f} Mbit/s, "
              f"ratio {o / t:.4f} (|ratio - 1| = {abs(o / t - 1):.2%}, target <= 3%), median of {args.rounds}")


if __name__ == "__main__":
    main()
