"""Figures for `xcheck daemon` (issue 10), as ratios against references measured in the same run.

    sudo .venv/bin/python benchmarks/bench_daemon.py [--rounds N] [--minutes M] [--parts ...]

About 5 minutes plus --minutes (default 10); the parts run one after another, memory last.

1. /metrics throughput with 16 concurrent clients (`wrk -t2 -c16 -d10s --latency`): the daemon
   holding a whole assessment (STUN with RFC 5780 behind a NAT, `xcheck responder` as gateway
   and far end) against a bare prometheus_client `start_http_server` serving the same series
   (target >= 1.0x) and blackbox_exporter's own /metrics, interleaved over --rounds.
2. Scrape latency at 10 scrapes/s (one keep-alive connection, as Prometheus keeps) while the
   daemon's own 4-stream throughput stage runs (target p99 <= 50 ms), against the same scrapes
   with the path idle after the stage. A scrape counts as under load when the on-prem interface
   moved more than LOADED_BYTES_PER_SECOND around it: the stage itself, not a guess at its timing.
3. Memory: the daemon's resident set after start and after its first cycles (target < 80 MB)
   beside blackbox_exporter's in the same run, and its growth over --minutes at a 5 s interval,
   scraped at each sample (target < 5 MB).
4. A gateway cycle's cost against the number of gateways (25 to 200; the config allows 16, so the
   scheduler runs in-process): CPU seconds and wall time of one cycle of the gateway family
   against `xcheck responder`s on 200 lab addresses, per target and marginal.
Prints figures; asserts nothing (these machines are noisy). Needs root: everything runs in lab
namespaces (tests/lab.py) and only talks to their own addresses and loopbacks.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import XCHECK  # noqa: E402
from lab import Lab, lab_unavailable_reason  # noqa: E402
from prometheus_lab import http_get  # noqa: E402
from test_lab_daemon import LISTEN, start_daemon  # noqa: E402
from test_lab_gateway import start_responder  # noqa: E402

from agent.daemon.scheduler import families  # noqa: E402

THIS = str(Path(__file__).resolve())
METRICS_URL = f"http://{LISTEN}/metrics"
BARE_LISTEN = "127.0.0.1:9479"
BLACKBOX_LISTEN = "127.0.0.1:9115"
BLACKBOX_CONFIG = "/etc/prometheus/blackbox.yml"
FAR_END = "203.0.113.10"  # the lab's first cloud address: coturn on 3478, the responder beside it
SCRAPES_PER_SECOND = 10
# A 4-stream stage on the lab's veths moves hundreds of MB/s; the quick checks move a few kB.
LOADED_BYTES_PER_SECOND = 10e6
IDLE_REFERENCE_SECONDS = 20.0  # idle scrapes after the stage, the reference for item 2
MEMORY_INTERVAL_SECONDS = 5
GATEWAY_COUNTS = (25, 50, 100, 200)
GATEWAY_FIRST = 30  # cloud addresses 203.0.113.30-229 (the lab's own .10, .11 and .20+ stay apart)
MB = 1e6
PARTS = ("throughput", "latency", "cycles", "memory")


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def setup_line() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    return (f"setup: {os.cpu_count()} cores ({model}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Linux {platform.release()}, Python {platform.python_version()}; {load_line()}")


def section(title: str) -> None:
    print(f"\n== {title} ({load_line()})", flush=True)


def quick_checks() -> set[str]:
    return {check.name for family in families() if not family.loads_path for check in family.checks}


def checks_seen(lab: Lab) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families
    status, body = http_get(lab, lab.onprem, METRICS_URL, timeout=10)
    if status != 200:
        return set()
    return {sample.labels["check"] for family in text_string_to_metric_families(body)
            if family.name == "xcheck_check_last_run_timestamp_seconds" for sample in family.samples}


def wait_first_cycles(lab: Lab, timeout: float = 120) -> float:
    """Seconds until every quick check has a result in /metrics (its first cycles done)."""
    started = time.monotonic()
    wanted = quick_checks()
    while not wanted <= checks_seen(lab):
        if time.monotonic() - started > timeout:
            raise SystemExit(f"the daemon's first cycles did not end within {timeout:g} s: "
                             f"{sorted(wanted - checks_seen(lab))} missing")
        time.sleep(0.5)
    return time.monotonic() - started


def process_in(ns: str, *words: str) -> psutil.Process:
    """The process in `ns` whose command line has every one of `words` (ip netns exec execs it)."""
    listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10).stdout
    for pid in map(int, listed.split()):
        try:
            process = psutil.Process(pid)
            if set(words) <= set(process.cmdline()):
                return process
        except psutil.NoSuchProcess:
            continue
    raise SystemExit(f"no process {words} in {ns}")


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / MB


def start_site_daemon(lab: Lab, log: Path, *args: str) -> psutil.Process:
    """The daemon in onprem with every quick family's target: STUN (coturn, RFC 5780, behind the NAT),
    the responder as gateway and far end."""
    start_daemon(lab, log, "--stun", lab.stun_primary, "--gateway", FAR_END, "--iperf", FAR_END, "--vpn-device", *args)
    return process_in(lab.onprem, XCHECK, "daemon")


def wait_http(lab: Lab, url: str, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while http_get(lab, lab.onprem, url, timeout=5)[0] != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer {url} within {timeout:g} s")
        time.sleep(0.3)


# ---------------------------------------------------------------- 1 and 3a: /metrics throughput, RSS


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_wrk(output: str) -> dict:
    """Requests/s, p99 (seconds) and errors from `wrk --latency`'s report."""
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+([0-9.]+)(us|ms|s)\s*$", output, re.M)
    if not rate or not p99:
        raise SystemExit(f"cannot read wrk's report:\n{output}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"rate": float(rate.group(1)), "p99": float(p99.group(1)) * _UNITS[p99.group(2)],
            "errors": sum(map(int, errors.groups())) if errors else 0,
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0}


def wrk(lab: Lab, url: str) -> dict:
    done = lab.run(lab.onprem, ["wrk", "-t2", "-c16", "-d10s", "--latency", url], timeout=60, check=True)
    return parse_wrk(done.stdout)


def metrics_throughput(rounds: int, work: Path) -> None:
    section("1. /metrics with 16 concurrent clients; 3. resident set")
    with Lab(nat="masquerade") as lab:
        start_responder(lab, address=FAR_END)
        daemon = start_site_daemon(lab, work / "throughput-daemon.log")
        after_start = rss_mb(daemon)
        first = wait_first_cycles(lab)
        after_cycles = rss_mb(daemon)
        body = http_get(lab, lab.onprem, METRICS_URL)[1]
        with open(work / "bare.log", "wb") as log:
            lab.spawn(lab.onprem, [sys.executable, THIS, "worker-bare", METRICS_URL, BARE_LISTEN], stdout=log,
                      stderr=subprocess.STDOUT)
        with open(work / "blackbox.log", "wb") as log:
            lab.spawn(lab.onprem, ["prometheus-blackbox-exporter", f"--config.file={BLACKBOX_CONFIG}",
                                   f"--web.listen-address={BLACKBOX_LISTEN}"], stdout=log, stderr=subprocess.STDOUT)
        urls = {"daemon": METRICS_URL, "bare": f"http://{BARE_LISTEN}/metrics",
                "blackbox": f"http://{BLACKBOX_LISTEN}/metrics"}
        wait_http(lab, urls["bare"], "the bare prometheus_client server")
        wait_http(lab, urls["blackbox"], "blackbox_exporter")
        blackbox = process_in(lab.onprem, "prometheus-blackbox-exporter")
        time.sleep(1.0)
        blackbox_start = rss_mb(blackbox)
        bare_body = http_get(lab, lab.onprem, urls["bare"])[1]
        series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        bare_series = sum(1 for line in bare_body.splitlines() if line and not line.startswith("#"))
        print(f"daemon: its {len(quick_checks())} quick checks' first cycles done {first:.1f} s after it listened; "
              f"exposition {len(body)} bytes, {series} series (the bare server: {len(bare_body)} bytes, "
              f"{bare_series} series)")
        figures: dict[str, list[dict]] = {name: [] for name in urls}
        for _ in range(rounds):  # interleaved, so drift hits each alike
            for name, url in urls.items():
                figures[name].append(wrk(lab, url))
        daemon_loaded, blackbox_loaded = rss_mb(daemon), rss_mb(blackbox)

    def median(name: str, key: str) -> float:
        return statistics.median(figure[key] for figure in figures[name])

    for name in urls:
        each = ", ".join(f"{f['rate']:.0f}" for f in figures[name])
        trouble = sum(f["errors"] + f["non_2xx"] for f in figures[name])
        print(f"  {name:8} {median(name, 'rate'):7.0f} req/s (rounds: {each}), p99 {median(name, 'p99') * 1000:6.1f} ms"
              + (f", {trouble} socket errors or non-2xx" if trouble else ""))
    print(f"/metrics: daemon/bare {median('daemon', 'rate') / median('bare', 'rate'):.2f}x req/s (target >= 1.0x), "
          f"p99 {median('daemon', 'p99') / median('bare', 'p99'):.2f}x; daemon/blackbox_exporter "
          f"{median('daemon', 'rate') / median('blackbox', 'rate'):.2f}x req/s, "
          f"p99 {median('daemon', 'p99') / median('blackbox', 'p99'):.2f}x; median of {rounds} x 10 s")
    print(f"resident set: daemon {after_start:.1f} MB after start, {after_cycles:.1f} MB after its first cycles "
          f"(target < 80 MB), {daemon_loaded:.1f} MB after the wrk runs; blackbox_exporter {blackbox_start:.1f} MB "
          f"after start, {blackbox_loaded:.1f} MB after; daemon/blackbox_exporter {after_cycles / blackbox_start:.2f}x")


def bare_worker(url: str, listen: str) -> None:
    """prometheus_client's own server with the daemon's series, parsed back from its exposition."""
    import urllib.request

    from prometheus_client import start_http_server
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.registry import CollectorRegistry

    with urllib.request.urlopen(url, timeout=30) as response:
        exposition = response.read().decode()
    collected = list(text_string_to_metric_families(exposition))

    class Same:
        def collect(self):
            return iter(collected)

    registry = CollectorRegistry()
    registry.register(Same())
    host, port = listen.rsplit(":", 1)
    start_http_server(int(port), addr=host, registry=registry)
    while True:
        time.sleep(3600)


# ---------------------------------------------------------------- 2: scrapes while a stage runs


def scrape_latency() -> None:
    section("2. scrape latency while the daemon's 4-stream throughput stage runs")
    with Lab(nat="masquerade") as lab, tempfile.TemporaryDirectory(prefix="bench-daemon-") as work:
        start_responder(lab, address=FAR_END)
        # --throughput-interval 300: the first stage starts at random within 10 s (FIRST_CYCLE_SPREAD).
        start_site_daemon(lab, Path(work) / "daemon.log", "--throughput-interval", "300")
        done = lab.run(lab.onprem, [sys.executable, THIS, "worker-scrape", METRICS_URL, "180"], timeout=240, check=True)
        scrapes = json.loads(done.stdout)
        rate = http_get(lab, lab.onprem, METRICS_URL)[1]
    loaded = [s for s in scrapes if s["moved_bytes_per_second"] > LOADED_BYTES_PER_SECOND]
    if not loaded:
        print("no throughput stage seen within 180 s: no figure")
        return
    stage_end = max(s["at"] for s in loaded)
    idle = [s for s in scrapes if s["at"] > stage_end + 1.0 and s["moved_bytes_per_second"] <= LOADED_BYTES_PER_SECOND]
    failed = sum(1 for s in scrapes if s["status"] != 200)
    moved = statistics.median(s["moved_bytes_per_second"] for s in loaded)

    def percentiles(group: list[dict]) -> tuple[float, float]:
        latencies = sorted(s["seconds"] for s in group)
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        return cuts[49], cuts[98]

    (p50, p99), (idle50, idle99) = percentiles(loaded), percentiles(idle)
    stage = re.findall(r'^xcheck_throughput_bytes_per_second\{.*direction="(\w+)".*\} (\S+)', rate, re.M)
    print(f"stage: {len(loaded)} scrapes under load over {stage_end - min(s['at'] for s in loaded):.1f} s, the "
          f"interface moving {moved * 8 / 1e9:.2f} Gbit/s (median); the daemon measured "
          + ", ".join(f"{direction} {float(value) * 8 / 1e9:.2f} Gbit/s" for direction, value in stage))
    print(f"scrape latency at {SCRAPES_PER_SECOND}/s: under the stage p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
          f"(target <= 50 ms; max {max(s['seconds'] for s in loaded) * 1000:.1f} ms); idle after it ({len(idle)} "
          f"scrapes) p50 {idle50 * 1000:.1f} ms, p99 {idle99 * 1000:.1f} ms; ratio p99 {p99 / idle99:.1f}x"
          + (f"; {failed} scrapes failed" if failed else ""))


def _moved_bytes() -> int:
    statistics_dir = Path("/sys/class/net/eth0/statistics")  # the namespace's own (ip netns exec mounts its sysfs)
    return int((statistics_dir / "rx_bytes").read_text()) + int((statistics_dir / "tx_bytes").read_text())


def scrape_worker(url: str, max_seconds: float) -> None:
    """Scrapes at SCRAPES_PER_SECOND over one keep-alive connection until a load came and went (then
    IDLE_REFERENCE_SECONDS more) or `max_seconds`; prints each scrape with the interface's rate around it."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    period = 1 / SCRAPES_PER_SECOND
    started = next_at = time.perf_counter()
    scrapes: list[dict] = []
    last_load = None
    moved_before, at_before = _moved_bytes(), started
    while time.perf_counter() - started < max_seconds:
        time.sleep(max(0.0, next_at - time.perf_counter()))
        begin = time.perf_counter()
        try:
            connection.request("GET", parts.path)
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            connection.close()  # reconnects at the next request
            status = 0
        end = time.perf_counter()
        if scrapes:  # the rate over the period around the previous scrape, now that it is over
            moved_now = _moved_bytes()
            rate = (moved_now - moved_before) / (begin - at_before)
            scrapes[-1]["moved_bytes_per_second"] = rate
            moved_before, at_before = moved_now, begin
            if rate > LOADED_BYTES_PER_SECOND:
                last_load = begin
            elif last_load is not None and begin - last_load > IDLE_REFERENCE_SECONDS:
                break
        scrapes.append({"at": begin - started, "seconds": end - begin, "status": status})
        next_at = max(next_at + period, time.perf_counter())
    print(json.dumps([scrape for scrape in scrapes if "moved_bytes_per_second" in scrape]))


# ---------------------------------------------------------------- 3b: memory over a run


def memory_growth(minutes: float, work: Path) -> None:
    section(f"3. resident set over {minutes:g} minutes at a {MEMORY_INTERVAL_SECONDS} s interval")
    with Lab(nat="masquerade") as lab:
        start_responder(lab, address=FAR_END)
        daemon = start_site_daemon(lab, work / "memory-daemon.log", "--interval", str(MEMORY_INTERVAL_SECONDS))
        wait_first_cycles(lab)
        samples = []
        started = time.monotonic()
        while time.monotonic() - started < minutes * 60:
            http_get(lab, lab.onprem, METRICS_URL)  # scraped as Prometheus would, at each sample
            samples.append((time.monotonic() - started, rss_mb(daemon)))
            time.sleep(max(0.0, len(samples) * MEMORY_INTERVAL_SECONDS - (time.monotonic() - started)))
        errors = sum(1 for line in (work / "memory-daemon.log").read_text().splitlines() if "level=error" in line)
    values = [rss for _, rss in samples]
    half = samples[len(samples) // 2:]
    slope = statistics.linear_regression([t for t, _ in half], [rss for _, rss in half]).slope if len(half) > 2 else 0.0
    print(f"resident set over {samples[-1][0] / 60:.1f} min ({len(samples)} samples): {values[0]:.1f} MB after the "
          f"first cycles, {values[-1]:.1f} MB at the end, max {max(values):.1f} MB; "
          f"growth {values[-1] - values[0]:+.2f} MB (target < 5 MB), second half's trend {slope * 3600:+.2f} MB/hour"
          + (f"; {errors} errors in the daemon's log" if errors else ""))
    per_minute = samples[::60 // MEMORY_INTERVAL_SECONDS]
    print("  by minute: " + ", ".join(f"{rss:.1f}" for _, rss in per_minute) + " MB")


# ---------------------------------------------------------------- 4: cycle cost against gateways


def cycle_cost(cycles: int, timeout: float) -> None:
    section(f"4. one gateway cycle against {', '.join(map(str, GATEWAY_COUNTS))} gateways")
    addresses = [f"203.0.113.{GATEWAY_FIRST + i}" for i in range(max(GATEWAY_COUNTS))]
    with Lab(nat="public", stun="none") as lab, tempfile.TemporaryDirectory(prefix="bench-daemon-") as work:
        lab.run(lab.cloud, ["ip", "-batch", "-"], check=True,
                input="".join(f"addr add {address}/24 dev {lab.cloud_if}\n" for address in addresses))
        with open(Path(work) / "responders.log", "wb") as log:
            lab.spawn(lab.cloud, [sys.executable, THIS, "worker-responders", *addresses], stdout=log,
                      stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            listening = lab.run(lab.cloud, ["ss", "-tlnH"]).stdout
            if all(f"{address}:8081 " in listening for address in addresses):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the responders did not listen:\n{(Path(work) / 'responders.log').read_text()}")
            time.sleep(0.5)
        responders = process_in(lab.cloud, THIS, "worker-responders")
        done = lab.run(lab.onprem, [sys.executable, THIS, "worker-cycles", str(cycles), str(timeout), *addresses],
                       timeout=1200, check=True)
        responder_rss = rss_mb(responders)
    figures = json.loads(done.stdout)
    print(f"{cycles} cycles each after a warm-up, medians; --timeout {timeout:g}; {len(addresses)} `xcheck responder`s "
          f"in one process ({responder_rss:.0f} MB) on the cloud side, no NAT")
    print("  gateways  wall s  CPU s  CPU/target ms  rendering ms  RSS MB  outcomes (each check x target)")
    for figure in figures:
        print(f"  {figure['gateways']:8d}  {figure['wall']:6.2f}  {figure['cpu']:5.2f}  "
              f"{figure['cpu'] / figure['gateways'] * 1000:13.1f}  {figure['render_cpu'] * 1000:12.1f}  "
              f"{figure['rss_mb']:6.0f}  {figure['outcomes']}")
    first, last = figures[0], figures[-1]
    per_first, per_last = first["cpu"] / first["gateways"], last["cpu"] / last["gateways"]
    fit = statistics.linear_regression([f["gateways"] for f in figures], [f["cpu"] for f in figures])
    second, middle = figures[1], figures[-2]
    marginal_low = (second["cpu"] - first["cpu"]) / (second["gateways"] - first["gateways"])
    marginal_high = (last["cpu"] - middle["cpu"]) / (last["gateways"] - middle["gateways"])
    print(f"gateway cycle: CPU per target at {last['gateways']} / at {first['gateways']} = {per_last / per_first:.2f}x "
          f"(1.0x is linear; above it grows faster); marginal CPU per added target "
          f"{marginal_high * 1000:.1f} ms ({middle['gateways']}->{last['gateways']}) vs {marginal_low * 1000:.1f} ms "
          f"({first['gateways']}->{second['gateways']}), {marginal_high / marginal_low:.2f}x; least squares "
          f"{fit.intercept:.2f} s + {fit.slope * 1000:.1f} ms x gateways; "
          f"wall {last['wall']:.2f} s at {last['gateways']} vs {first['wall']:.2f} s at {first['gateways']} "
          "(every target at once)")


def responders_worker(addresses: list[str]) -> None:
    """One `xcheck responder` (its serve()) per address, in one process: each has its own per-source
    limits, so 200 gateways probed from one host are each answered as one would be."""
    from agent.responder.serve import serve
    from agent.responder.tls_responder import self_signed

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-responders-") as directory:
            cert, key = await self_signed(Path(directory), "gateway.example.net")  # one key for all: 200 would be slow
            await asyncio.gather(*(serve(address, 3478, 5201, cert=cert, key=key) for address in addresses))

    asyncio.run(main())


def cycles_worker(cycles: int, timeout: float, addresses: list[str]) -> None:
    """The daemon's scheduler in this process: one gateway cycle at a time, per count of gateways,
    each followed by what the daemon makes of a new result (the assessment, rendered once)."""
    from agent import metrics
    from agent.config import Settings
    from agent.daemon.scheduler import Scheduler
    from agent.report import build_report

    gateway_family = next(family for family in families() if family.name == "gateway")

    async def measure(count: int, rounds: int) -> dict:
        settings = dataclasses.replace(Settings(), stun=(), gateway=tuple(addresses[:count]), timeout_seconds=timeout)
        # The scheduler publishes once every quick family has run; here only the gateways do, so the
        # publishing is done below, as the daemon does it after each cycle.
        scheduler = Scheduler(settings, lambda assessment: None)
        walls, cpus, renders = [], [], []
        for _ in range(rounds):
            await asyncio.sleep(2.0)  # the responders' per-source buckets refill (IKE: 5/s, bursts of 10)
            cpu, wall = time.process_time(), time.perf_counter()
            await scheduler.cycle(gateway_family)
            rendering = time.process_time()
            assessment = scheduler.assessment()
            metrics.render(metrics.families(assessment))
            json.dumps(build_report(assessment), indent=2)
            renders.append(time.process_time() - rendering)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        # What the last cycle found: a cost is comparable across counts only when the outcomes are.
        outcomes = collections.Counter(f"{r.status}/{r.reason}" + ("" if r.succeeded else f" ({run.name})")
                                       for run in scheduler.store.runs() for r in run.results)
        return {"gateways": count, "wall": statistics.median(walls), "cpu": statistics.median(cpus),
                "render_cpu": statistics.median(renders), "rss_mb": psutil.Process().memory_info().rss / MB,
                "outcomes": ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items()))}

    async def main() -> list[dict]:
        await measure(GATEWAY_COUNTS[0], 1)  # imports, scapy, the first sockets
        return [await measure(count, cycles) for count in GATEWAY_COUNTS]

    print(json.dumps(asyncio.run(main())))


# ----------------------------------------------------------------


def main() -> None:
    workers = {"worker-bare": lambda args: bare_worker(*args),
               "worker-scrape": lambda args: scrape_worker(args[0], float(args[1])),
               "worker-responders": responders_worker,
               "worker-cycles": lambda args: cycles_worker(int(args[0]), float(args[1]), args[2:])}
    if len(sys.argv) > 1 and sys.argv[1] in workers:  # a part run inside a lab namespace
        workers[sys.argv[1]](sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs of 10 s per server (default 3)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the memory run (default 10)")
    parser.add_argument("--cycles", type=int, default=3, help="gateway cycles per count of gateways (default 3)")
    parser.add_argument("--gateway-timeout", type=float, default=10.0,
                        help="each gateway check's timeout in part 4 (default 10: 200 gateways probed at once keep "
                             "2 cores busy longer than the default 3 s, and cut-off probes cost less)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"some of {','.join(PARTS)} (default: all)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if not set(parts) <= set(PARTS):
        parser.error(f"--parts: choose from {', '.join(PARTS)}")
    reason = lab_unavailable_reason()
    if reason:
        raise SystemExit(f"bench_daemon needs the lab: {reason}")
    print(setup_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as work:
        if "throughput" in parts:
            metrics_throughput(args.rounds, Path(work))
        if "latency" in parts:
            scrape_latency()
        if "cycles" in parts:
            cycle_cost(args.cycles, args.gateway_timeout)
        if "memory" in parts:
            memory_growth(args.minutes, Path(work))


if __name__ == "__main__":
    main()
