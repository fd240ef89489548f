"""xcheck's iperf3 client against `iperf3 -c`, both against one stock `iperf3 -s` on loopback.

Prints ratios and asserts nothing. For 1 and 4 streams, runs interleaved, medians printed:
  rate       xcheck's receiver-side bit rate / iperf3 -c's end.sum_received (target >= 0.85)
  cpu/GB     CPU seconds of the client process per transferred GB, xcheck / iperf3 (target <= 1.5)
Both clients run as child processes; their CPU is the RUSAGE_CHILDREN difference around each
run (ours includes interpreter start-up, a few tens of milliseconds). Upload only: that is the
direction where the client's own data path is the one sending.

    .venv/bin/python benchmarks/bench_iperf3_loopback.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"

OUR_CLIENT = """
import json, sys, time
from checks.transport.iperf3_client import TestSpec, run_test
port, seconds, streams = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
result = run_test(TestSpec("127.0.0.1", port, duration_seconds=seconds, streams=streams),
                  deadline=time.monotonic() + seconds + 15)
print(json.dumps({"ok": result.ok, "detail": result.detail, "bytes": result.bytes_received,
                  "bits_per_second": result.bits_per_second, "cpu_limited": result.cpu_limited}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_listening(port: int, timeout: float = 5.0) -> None:
    # /proc, not a probe connection: iperf3 -s would take a probe for a client.
    wanted = f"0100007F:{port:04X}"
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if any(line.split()[1] == wanted and line.split()[3] == "0A"
               for line in Path("/proc/net/tcp").read_text().splitlines()[1:]):
            return
        time.sleep(0.02)
    raise TimeoutError(f"iperf3 -s is not listening on {port}")


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(argv: list[str], timeout: float) -> tuple[str, float]:
    before = child_cpu_seconds()
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=True)
    return completed.stdout, child_cpu_seconds() - before


def iperf3_run(port: int, seconds: float, streams: int) -> tuple[float, float]:
    """(bits per second, CPU seconds per GB) of one `iperf3 -c` run."""
    out, cpu = run_child(["iperf3", "-c", LOOPBACK, "-p", str(port), "-t", f"{seconds:g}", "-P", str(streams), "-J"],
                         seconds + 20)
    received = json.loads(out)["end"]["sum_received"]
    return received["bits_per_second"], cpu / (received["bytes"] / 1e9)


def xcheck_run(port: int, seconds: float, streams: int) -> tuple[float, float]:
    out, cpu = run_child([sys.executable, "-c", OUR_CLIENT, str(port), f"{seconds:g}", str(streams)], seconds + 20)
    result = json.loads(out)
    if not result["ok"]:
        raise RuntimeError(f"xcheck's run failed: {result['detail']}")
    return result["bits_per_second"], cpu / (result["bytes"] / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-B", LOOPBACK, "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        print(f"stock iperf3 -s on {LOOPBACK}:{port}; {args.seconds:g} s runs, {args.rounds} rounds, upload")
        for streams in (1, 4):
            runs: dict[str, list[tuple[float, float]]] = {"iperf3": [], "xcheck": []}
            for _ in range(args.rounds):
                for name, run in (("iperf3", iperf3_run), ("xcheck", xcheck_run)):  # interleaved
                    wait_listening(port)
                    time.sleep(0.1)
                    runs[name].append(run(port, args.seconds, streams))
            rate = {name: statistics.median(r for r, _ in figures) for name, figures in runs.items()}
            cpu = {name: statistics.median(c for _, c in figures) for name, figures in runs.items()}
            print(f"-P {streams}: rate iperf3 {rate['iperf3'] / 1e9:6.2f} Gbit/s, xcheck {rate['xcheck'] / 1e9:6.2f} "
                  f"Gbit/s, xcheck/iperf3 {rate['xcheck'] / rate['iperf3']:.2f}x (target >= 0.85x)")
            print(f"      cpu/GB iperf3 {cpu['iperf3']:.3f} s, xcheck {cpu['xcheck']:.3f} s, "
                  f"xcheck/iperf3 {cpu['xcheck'] / cpu['iperf3']:.2f}x (target <= 1.5x)")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
