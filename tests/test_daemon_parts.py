"""The daemon's own parts, each on its own: the families and their schedule, the path lock, the
/probe allow-list and timeout, systemd's notify protocol on a real socket, the structured logs,
and the [daemon] settings."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import os
import random
import re
import socket
import time

import pytest
from conftest import free_port

from agent.config import ConfigError, build_settings, parse_values
from agent.daemon import logs
from agent.daemon.notify import Notifier
from agent.daemon.probe import MODULES, TIMEOUT_OFFSET_SECONDS, ProbeRefused, probe_targets, probe_timeout
from agent.daemon.scheduler import FIRST_CYCLE_SPREAD, JITTER, PathLock, Scheduler, daemon_targets, families
from agent.runner import GRACE_SECONDS
from agent.verdicts import load_ruleset
from checks.contract import Outcome, Reason, Scope, Status
from checks.registry import CHECKS
from checks.targets import Endpoint


def settings(**values):
    return build_settings(parse_values(values, "test"))


# ---------------------------------------------------------------- families and schedule

def test_every_check_is_in_exactly_one_family_and_throughput_is_alone():
    found = families()
    names = [check.name for family in found for check in family.checks]
    assert sorted(names) == sorted(CHECKS)
    by_name = {family.name: family for family in found}
    assert [c.name for c in by_name["throughput"].checks] == ["throughput"] and by_name["throughput"].loads_path
    assert {c.scope for c in by_name["gateway"].checks} == {Scope.GATEWAY}
    # nat_behavior builds on stun_binding: they share a cycle, so it never reads a result of another time.
    assert {"interfaces", "stun_binding", "nat_behavior"} <= {c.name for c in by_name["site"].checks}


def test_throughput_is_scheduled_only_when_its_interval_is_given():
    quiet = settings(stun=["203.0.113.10"], iperf="203.0.113.10")
    scheduler = Scheduler(quiet, lambda a: None)
    by_name = {family.name: family for family in families()}
    assert scheduler.interval(by_name["throughput"]) is None
    assert scheduler.targets.throughput is None  # and a run of it would say "disabled"
    loaded = settings(stun=["203.0.113.10"], iperf="203.0.113.10", **{"daemon.throughput_interval_seconds": 3600})
    scheduler = Scheduler(loaded, lambda a: None)
    assert scheduler.interval(by_name["throughput"]) == 3600 and scheduler.targets.throughput is not None
    assert scheduler.interval(by_name["site"]) == 60


def test_daemon_targets_carry_the_rule_sets_ike_offer():
    chosen = settings(gateway=["203.0.113.10"], ruleset="azure-2015")
    assert daemon_targets(chosen, load_ruleset("azure-2015")).ike_offer == load_ruleset("azure-2015").ike_offer


async def _starts(interval: float, seed: int, cycles: int) -> list[float]:
    """When a family's cycles start, on a virtual clock: asyncio.sleep is replaced by adding to it."""
    now = [0.0]
    starts: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds
        await real_sleep(0)

    scheduler = Scheduler(settings(**{"daemon.interval_seconds": interval}), lambda a: None, rng=random.Random(seed))

    async def fake_cycle(family) -> None:
        starts.append(now[0])
        if len(starts) == cycles:
            raise asyncio.CancelledError

    scheduler.cycle = fake_cycle
    original = asyncio.sleep
    asyncio.sleep = fake_sleep
    try:
        with pytest.raises(asyncio.CancelledError):
            await scheduler._loop(families()[0])
    finally:
        asyncio.sleep = original
    return starts


def test_first_cycles_are_spread_and_intervals_jittered():
    firsts, gaps = [], []
    for seed in range(40):
        starts = asyncio.run(_starts(60.0, seed, 5))
        firsts.append(starts[0])
        gaps += [b - a for a, b in zip(starts, starts[1:])]
    # Forty daemons started together do not start together, and each stays within its bounds.
    assert all(0 <= first <= FIRST_CYCLE_SPREAD for first in firsts) and len({round(f, 3) for f in firsts}) > 30
    assert all(60 * (1 - JITTER) - 1e-9 <= gap <= 60 * (1 + JITTER) + 1e-9 for gap in gaps)
    assert max(gaps) - min(gaps) > 60 * JITTER  # drawn, not fixed: lockstep does not come back


def test_path_lock_gives_the_load_stage_the_path_alone():
    async def scenario() -> list[str]:
        lock, events = PathLock(), []

        async def quick(name: str, hold: float) -> None:
            await lock.acquire_shared()
            events.append(f"{name} start")
            await asyncio.sleep(hold)
            events.append(f"{name} end")
            await lock.release_shared()

        async def load() -> None:
            await lock.acquire_exclusive()
            events.append("load start")
            await asyncio.sleep(0.05)
            events.append("load end")
            await lock.release_exclusive()

        first = asyncio.create_task(quick("a", 0.05))
        await asyncio.sleep(0)
        stage = asyncio.create_task(load())
        await asyncio.sleep(0)
        later = asyncio.create_task(quick("b", 0.01))  # arrives while the stage waits: goes after it
        await asyncio.gather(first, stage, later)
        return events

    assert asyncio.run(scenario()) == ["a start", "a end", "load start", "load end", "b start", "b end"]


def test_a_check_that_hangs_is_cut_off_and_the_other_families_go_on():
    """A probe that never returns (nor honours its deadline) ends as a timeout at the deadline;
    the gateway family's cycle meanwhile finished and published."""
    hanging = dataclasses.replace(CHECKS["interfaces"], probe=_never)
    quick = dataclasses.replace(CHECKS["gateway_health"], probe=_refused)
    published = []
    chosen = settings(gateway=["203.0.113.10"], timeout_seconds=1)
    scheduler = Scheduler(chosen, published.append)
    site = dataclasses.replace(families()[0], checks=(hanging,))
    gateway = dataclasses.replace(families()[0], name="gateway", checks=(quick,))

    async def both() -> float:
        started = time.monotonic()
        site_cycle = asyncio.create_task(scheduler.cycle(site))
        await scheduler.cycle(gateway)
        gateway_done = time.monotonic() - started
        await site_cycle
        return gateway_done

    gateway_done = asyncio.run(both())
    assert gateway_done < 1.0, "the gateway family waited for the hanging one"
    assert scheduler.store.latest("gateway_health").reason is Reason.CONNECTION_REFUSED
    assert scheduler.store.latest("interfaces").reason is Reason.TIMEOUT
    # Two of the three quick families ran: nothing is published yet, verdicts would judge the
    # far end's facts unknown where they are only not measured yet. The third completes it.
    assert published == []
    asyncio.run(scheduler.cycle(next(f for f in families() if f.name == "far_end")))
    assert len(published) == 1 and {run.name for run in published[0].runs} >= {"interfaces", "gateway_health", "latency"}


async def _never(ctx):
    await asyncio.Event().wait()


async def _refused(ctx):
    return Outcome.fail(Reason.CONNECTION_REFUSED, "TCP connect refused")


def test_a_cycle_that_outlives_its_deadline_records_why(monkeypatch):
    """What the runner cannot cut (a session that never closes) is cut by the cycle's own bound,
    and every target of the family's checks then says so."""
    import agent.daemon.scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "CYCLE_MARGIN_SECONDS", 0.2)
    chosen = settings(gateway=["203.0.113.10", "203.0.113.11"], timeout_seconds=1)
    scheduler = Scheduler(chosen, lambda a: None)

    async def stuck_run_checks(*args, **kwargs):
        await asyncio.Event().wait()

    monkeypatch.setattr(scheduler_module, "run_checks", stuck_run_checks)
    gateway = next(f for f in families() if f.name == "gateway")
    asyncio.run(scheduler.cycle(gateway))
    run = scheduler.store.latest("ike_udp500")
    assert run.status is Status.ERROR and run.reason is Reason.TIMEOUT
    assert [r.target.name for r in run.results] == ["203.0.113.10", "203.0.113.11"]
    assert "did not finish within 1.2 s" in run.results[0].detail


# ---------------------------------------------------------------- /probe

def _probe_settings():
    return settings(gateway=["203.0.113.10", "vpn.example.net"], stun=["203.0.113.20:3478"], iperf="203.0.113.30",
                    **{"daemon.probe_targets": ["198.51.100.7"]})


def _targets(chosen):
    return Scheduler(chosen, lambda a: None).targets


@pytest.mark.parametrize("module, target, expected", [
    ("gateway", "203.0.113.10", {"gateways": ("203.0.113.10",)}),
    ("ike", "VPN.example.net", {"gateways": ("vpn.example.net",)}),  # names compare as DNS does
    ("tls", "198.51.100.7", {"gateways": ("198.51.100.7",)}),  # a probe target, not a configured gateway
    ("stun", "203.0.113.20", {"stun": (Endpoint("203.0.113.20", 3478),)}),
    ("stun", "198.51.100.7", {"stun": (Endpoint("198.51.100.7", 3478),)}),
    ("far_end", "203.0.113.30:5201", {"iperf": Endpoint("203.0.113.30", 5201)}),
])
def test_probe_of_an_allowed_target_probes_only_it(module, target, expected):
    chosen = _probe_settings()
    targets = probe_targets(chosen, _targets(chosen), module, target)
    probed = {"gateways": targets.gateways, "stun": targets.stun, "iperf": targets.iperf}
    assert {key: value for key, value in probed.items() if value} == expected
    assert targets.throughput is None  # a scrape never loads the path


@pytest.mark.parametrize("module, target, status", [
    ("gateway", "192.0.2.1", 403),  # anyone's address: the reflector the allow-list prevents
    ("gateway", "203.0.113.20", 403),  # a configured STUN server is no gateway
    ("stun", "203.0.113.20:3479", 403),  # another port of a configured server: no port scan through us
    ("far_end", "203.0.113.30:22", 403),
    ("stun", "198.51.100.7:22", 403),  # a probe_targets host on its protocol's port only: no port scan
    ("far_end", "198.51.100.7:2222", 403),
    ("gateway", "not a host", 403),
    ("gateway", "x" * 10_000, 403),
    ("nope", "203.0.113.10", 400),
    (None, "203.0.113.10", 400),
    ("gateway", None, 400),
])
def test_probe_of_anything_else_is_refused(module, target, status):
    chosen = _probe_settings()
    with pytest.raises(ProbeRefused) as refused:
        probe_targets(chosen, _targets(chosen), module, target)
    assert refused.value.status == status
    assert "x" * 100 not in str(refused.value)  # what was sent is not echoed back


def test_probe_timeout_ends_before_prometheus_gives_up():
    chosen = settings(gateway=["203.0.113.10"], iperf="203.0.113.30", timeout_seconds=5)
    targets = _targets(chosen)
    gateway, far_end = MODULES["gateway"], MODULES["far_end"]
    assert probe_timeout(chosen, gateway, targets, None) == 5  # no header: the config's
    assert probe_timeout(chosen, gateway, targets, "10") == 5  # the config's is shorter
    assert probe_timeout(chosen, gateway, targets, "3") == pytest.approx(3 - TIMEOUT_OFFSET_SECONDS - GRACE_SECONDS)
    budget = CHECKS["latency"].budget_seconds(targets)
    assert budget > 0 and probe_timeout(chosen, far_end, targets, "4") == pytest.approx(
        4 - TIMEOUT_OFFSET_SECONDS - GRACE_SECONDS - budget)
    assert probe_timeout(chosen, gateway, targets, "garbage") == 5
    assert probe_timeout(chosen, gateway, targets, "0.2") == 0  # nothing left: never a negative deadline


# ---------------------------------------------------------------- systemd notify

@pytest.mark.parametrize("abstract", [False, True])
def test_notify_reaches_a_real_socket(tmp_path, abstract):
    name = f"@xcheck-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name[1:] if abstract else name)
        listener.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "30000000"})
        assert notifier.watchdog_interval_seconds == 15
        notifier.send(ready="1", status="udp=true nat=true\nsecond line")
        assert listener.recv(4096) == b"READY=1\nSTATUS=udp=true nat=true second line"


def test_notify_without_systemd_does_nothing_and_a_dead_socket_is_only_logged(tmp_path, caplog):
    Notifier({}).send(ready="1")
    assert Notifier({}).watchdog_interval_seconds is None
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"}).watchdog_interval_seconds is None
    with caplog.at_level(logging.WARNING):
        Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent")}).send(ready="1")
    assert "cannot notify systemd" in caplog.text


# ---------------------------------------------------------------- logs

def _log_line(log_format: str, message: str, **fields) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.FORMATTERS[log_format]())
    from agent.text import inert_log_record
    handler.addFilter(inert_log_record)
    logger = logging.getLogger(f"xcheck.test.{log_format}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning(message, extra={"fields": fields})
    return stream.getvalue()


def _logfmt(line: str) -> dict[str, str]:
    """A logfmt line back into its fields, as a log shipper reads it; the whole line must parse."""
    pair = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^\s"]+)(?: |$)')
    fields, position = {}, 0
    while position < len(line):
        match = pair.match(line, position)
        assert match, f"not logfmt at {line[position:]!r}"
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        fields[match.group(1)] = value
        position = match.end()
    return fields


def test_logfmt_is_one_line_whatever_a_peer_wrote():
    hostile = 'evil" level=error msg="forged\nsecond line \x1b[31m'
    line = _log_line("logfmt", "peer said %s" % hostile, detail=hostile, family="site")
    assert line.endswith("\n") and line.count("\n") == 1 and "\x1b" not in line
    fields = _logfmt(line.rstrip("\n"))
    assert list(fields) == ["ts", "level", "logger", "msg", "detail", "family"]  # nothing forged
    assert fields["level"] == "warning" and fields["family"] == "site"
    assert fields["detail"] == 'evil" level=error msg="forged\\nsecond line \\x1b[31m'  # inert, whole


def test_json_log_is_one_object_per_line():
    line = _log_line("json", "cycle done", family="gateway", duration_seconds=0.5)
    event = json.loads(line)
    assert event["msg"] == "cycle done" and event["family"] == "gateway" and event["level"] == "warning"
    assert event["ts"].endswith("Z")


# ---------------------------------------------------------------- settings

def test_daemon_settings_from_a_config_and_their_bounds():
    chosen = settings(**{"daemon.listen": "0.0.0.0:9999", "daemon.interval_seconds": 30,
                         "daemon.log_format": "json", "daemon.web_config": "/etc/xcheck/web.yml"})
    assert chosen.daemon.listen == ("0.0.0.0", 9999) and chosen.daemon.interval_seconds == 30
    assert str(chosen.daemon.web_config) == "/etc/xcheck/web.yml" and chosen.daemon.log_format == "json"
    assert settings().daemon.listen == ("127.0.0.1", 9478)
    for key, value in [("daemon.listen", "localhost:9478"), ("daemon.listen", "127.0.0.1:0"),
                       ("daemon.interval_seconds", 1), ("daemon.throughput_interval_seconds", 60),
                       ("daemon.log_format", "xml"), ("daemon.probe_targets", ["203.0.113.1"] * 300),
                       ("daemon.web_config", "")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            settings(**{key: value})


# ---------------------------------------------------------------- the service's lifecycle, in process

def test_reloads_in_quick_succession_leave_one_scheduler_with_the_newest_settings(stun_recorder):
    """Each SIGHUP is awaited to the end (the old scheduler stopped, the new one started) before the
    next is taken: never two schedulers, and the one running has the last settings."""
    from agent.daemon.notify import Notifier
    from agent.daemon.service import Daemon

    intervals = iter([30, 31, 32, 33])

    def load():
        return settings(stun=[stun_recorder.address], timeout_seconds=1,
                        **{"daemon.listen": f"127.0.0.1:{free_port()}", "daemon.interval_seconds": next(intervals)})

    async def scenario() -> tuple[int, float]:
        daemon = Daemon(load, Notifier({}))
        stop, reload = asyncio.Event(), asyncio.Event()
        serving = asyncio.create_task(daemon.serve(stop, reload))
        await asyncio.sleep(0.2)
        for _ in range(3):  # three HUPs, 10 ms apart: the second and third arrive mid-reload
            reload.set()
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)
        running = [t for t in asyncio.all_tasks() if t.get_name() == "scheduler" and not t.done()]
        interval = daemon._scheduler.settings.daemon.interval_seconds
        stop.set()
        await serving
        return len(running), interval

    count, interval = asyncio.run(scenario())
    assert count == 1
    assert interval >= 32  # the settings of a later reload than the first, never an older one


def test_a_scheduler_that_dies_stops_the_watchdog_so_systemd_restarts_the_daemon(tmp_path, stun_recorder):
    from agent.daemon import service as service_module
    from agent.daemon.notify import Notifier
    from agent.daemon.service import Daemon

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(0.5)

        async def dies(self) -> None:
            raise RuntimeError("a bug")

        async def scenario() -> None:
            daemon = Daemon(lambda: settings(stun=[stun_recorder.address], **{"daemon.listen": f"127.0.0.1:{free_port()}"}),
                            Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}))
            original = service_module.Scheduler.run
            service_module.Scheduler.run = dies
            try:
                stop = asyncio.Event()
                serving = asyncio.create_task(daemon.serve(stop))
                await asyncio.sleep(1.0)
                assert daemon._scheduler_died
                stop.set()
                await serving
            finally:
                service_module.Scheduler.run = original

        asyncio.run(scenario())
        pings = 0
        try:
            while True:
                pings += listener.recv(4096) == b"WATCHDOG=1"
        except TimeoutError:
            pass
    # At most the ping sent before the scheduler's first step; none in the second after it died.
    assert pings <= 1
