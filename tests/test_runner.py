"""The runner: concurrency, deadlines, dependencies, crashes turned into results."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.runner import GRACE_SECONDS, order_checks, run_checks
from checks.contract import Check, Outcome, Reason, Status, Targets


def check(name, probe, depends_on=()):
    return Check(name=name, summary=name, probe=probe, depends_on=depends_on)


async def sleeper(ctx):
    await asyncio.sleep(0.2)
    return Outcome.ok({"slept": 0.2})


def run(checks, timeout=2.0):
    return asyncio.run(run_checks(checks, Targets(), timeout))


def test_independent_checks_run_concurrently():
    spans = []

    async def records(ctx):
        started = time.monotonic()
        await sleeper(ctx)
        spans.append((started, time.monotonic()))
        return Outcome.ok({})

    results = run([check(f"c{i}", records) for i in range(5)])
    assert [r.status for r in results] == [Status.OK] * 5
    # All five were under way at once: each started before any finished (in sequence, none would).
    assert max(start for start, _ in spans) < min(end for _, end in spans)


def test_a_check_that_ignores_its_deadline_is_cut_off():
    async def hangs(ctx):
        await asyncio.sleep(60)

    started = time.monotonic()
    [result] = run([check("hangs", hangs)], timeout=0.2)
    assert (result.status, result.reason) == (Status.FAIL, Reason.TIMEOUT)
    assert result.duration_seconds < 60
    # Cut at the deadline plus grace, not after the 60 s sleep (generous: a loaded machine runs late).
    assert time.monotonic() - started < 0.2 + GRACE_SECONDS + 10


def test_a_crash_inside_a_task_group_is_reported_by_its_cause():
    async def crashes_in_group(ctx):
        async with asyncio.TaskGroup() as group:
            group.create_task(asyncio.sleep(0))
            group.create_task(asyncio.to_thread(int, "not a number"))

    [result] = run([check("grouped", crashes_in_group)])
    assert (result.status, result.reason) == (Status.ERROR, Reason.EXCEPTION)
    assert result.detail.startswith("ValueError: invalid literal")


def test_a_crash_becomes_an_error_result_and_others_go_on():
    async def crashes(ctx):
        raise KeyError("boom")

    results = run([check("crashes", crashes), check("fine", sleeper)])
    crashed, fine = results
    assert (crashed.status, crashed.reason) == (Status.ERROR, Reason.EXCEPTION)
    assert "KeyError" in crashed.detail and "boom" in crashed.detail
    assert fine.status is Status.OK


def test_dependencies_get_the_result_from_the_runner():
    seen = {}

    async def first(ctx):
        return Outcome.ok({"mapped": "203.0.113.1:4000"})

    async def second(ctx):
        seen["deps"] = dict(ctx.dependencies)
        return Outcome.ok({"used": ctx.dependencies["first"].evidence["mapped"]})

    # Listed dependent-first: the runner still runs the dependency first.
    results = run([check("second", second, ("first",)), check("first", first)])
    assert [r.name for r in results] == ["first", "second"]
    assert results[1].evidence == {"used": "203.0.113.1:4000"}
    assert set(seen["deps"]) == {"first"}


def test_each_check_gets_a_deadline_from_its_own_start():
    deadlines = {}

    async def records(ctx):
        deadlines[ctx.logger.name] = ctx.remaining()
        return Outcome.ok({})

    run([check("a", records)], timeout=30)
    assert 30 - 10 < deadlines["xcheck.runner.a"] <= 30  # generous: a loaded machine may start it late


def test_order_rejects_unknown_dependencies_and_cycles():
    async def noop(ctx):
        return Outcome.ok({})

    with pytest.raises(ValueError, match="unknown check 'ghost'"):
        order_checks([check("a", noop, ("ghost",))])
    with pytest.raises(ValueError, match="cycle"):
        order_checks([check("a", noop, ("b",)), check("b", noop, ("a",))])


def test_registry_checks_are_ordered_and_documented():
    from checks.registry import CHECKS

    ordered = [c.name for c in order_checks(CHECKS.values())]
    assert ordered.index("stun_binding") < ordered.index("nat_behavior")
    assert all(c.summary for c in CHECKS.values())


def test_registry_checks_skip_without_targets():
    from checks.registry import CHECKS

    results = {r.name: r for r in run(CHECKS.values())}
    assert (results["stun_binding"].status, results["stun_binding"].reason) == (Status.SKIPPED, Reason.NO_TARGET)
    assert results["nat_behavior"].reason is Reason.DEPENDENCY_UNAVAILABLE
    assert results["interfaces"].status is Status.OK


def test_readme_check_table_is_the_registry():
    """Docs are derived from the registry, never re-listed by hand: this keeps them in step."""
    import re
    from pathlib import Path

    from checks.registry import CHECKS

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| (.+?) \|$", readme, flags=re.MULTILINE))
    assert {name: rows.get(name) for name in CHECKS} == {name: c.summary for name, c in CHECKS.items()}


@pytest.mark.parametrize("host", ["a..b", "name.invalid", "x" * 300])
def test_names_that_do_not_resolve_are_data_not_crashes(host):
    from agent.config import build_settings
    from checks.contract import Endpoint
    from checks.registry import CHECKS

    # ".invalid" never resolves (RFC 6761); the others are refused before any query.
    settings = build_settings({"stun": (Endpoint(host, 3478), Endpoint("127.0.0.1", 9))})
    # Time for silence to count (one RTO, 0.5 s, after the first send), however loaded the machine.
    results = {r.name: r for r in asyncio.run(run_checks(CHECKS.values(), settings.targets, 3.0))}
    binding = results["stun_binding"]
    assert binding.status is Status.FAIL  # the loopback server is silent, the name unresolved
    first, second = binding.evidence["servers"]
    assert first["result"] == "resolve_failed" and host[:20] in first["detail"]
    assert second["result"] == "no_response"
    assert results["interfaces"].status is Status.OK


def test_host_work_is_prepared_before_any_deadline_starts():
    """A check's prepare (scapy's import for the IKE probes) runs before the clocks start: on a clock
    that moves only while preparing, every check still has its whole timeout left when it starts."""
    from checks.contract import Check, Outcome

    now = [0.0]

    def slow_prepare(targets):
        now[0] += 10.0  # a host busy for 10 s: counted against the deadline, nothing would be left

    async def probe(ctx):
        return Outcome.ok({"remaining": ctx.remaining()})

    def broken(targets):
        raise RuntimeError("no such library")

    checks = [Check("heavy", "needs a heavy import", probe, prepare=slow_prepare),
              Check("broken", "its preparation fails", probe, prepare=broken)]
    results = {r.name: r for r in asyncio.run(run_checks(checks, Targets(), timeout=2.0, clock=lambda: now[0]))}
    assert now[0] == 10.0
    assert results["heavy"].status is Status.OK and results["heavy"].evidence["remaining"] == 2.0
    assert results["broken"].status is Status.OK  # a failed preparation is the probe's to meet, not the run's
