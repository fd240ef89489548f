"""The runner: concurrency, deadlines, dependencies, crashes turned into results."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.runner import GRACE_SECONDS, order_checks, run_checks
from agent.store import ResultStore
from checks.contract import Check, Outcome, Reason, Scope, Status
from checks.targets import Endpoint, Targets


def check(name, probe, depends_on=(), scope=Scope.HOST, **more):
    return Check(name=name, summary=name, scope=scope, probe=probe, evidence=dict, depends_on=depends_on, **more)


async def sleeper(ctx):
    await asyncio.sleep(0.2)
    return Outcome.ok({"slept": 0.2})


def run(checks, timeout=2.0, targets=Targets(), store=None):
    """Each check's result on its one target (checks of the host scope have exactly one)."""
    return [r.results[0] if r.results else r
            for r in asyncio.run(run_checks(checks, targets, timeout, store=store))]


GATEWAYS = Targets(gateways=("192.0.2.1", "192.0.2.2", "192.0.2.3"))


async def first(ctx):
    """A check others build on: it learns a mapping."""
    return Outcome.ok({"mapped": "203.0.113.1:4000"})


async def second(ctx):
    """A check that builds on `first` for the same target, and says when it had nothing to build on."""
    dependency = ctx.dependency("first")
    return Outcome.ok({"used": dependency.evidence["mapped"] if dependency else None})


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

    async def records(ctx):
        seen["deps"] = dict(ctx.dependencies)
        return await second(ctx)

    # Listed dependent-first: the runner still runs the dependency first.
    results = run([check("second", records, ("first",)), check("first", first)])
    assert [r.check for r in results] == ["first", "second"]
    assert results[1].evidence == {"used": "203.0.113.1:4000"}
    assert set(seen["deps"]) == {"first"}


def test_each_check_gets_a_deadline_from_its_own_start():
    deadlines = {}

    async def records(ctx):
        deadlines[ctx.logger.name] = ctx.remaining()
        return Outcome.ok({})

    run([check("a", records)], timeout=30)
    assert 30 - 10 < deadlines["xcheck.runner.a"] <= 30  # generous: a loaded machine may start it late


def test_order_rejects_cycles_and_leaves_outside_dependencies_to_the_store():
    async def noop(ctx):
        return Outcome.ok({})

    # A dependency not in the subset is no error: its latest result comes from the store.
    assert [c.name for c in order_checks([check("a", noop, ("elsewhere",))])] == ["a"]
    with pytest.raises(ValueError, match="cycle"):
        order_checks([check("a", noop, ("b",)), check("b", noop, ("a",))])


def test_registry_checks_are_ordered_and_documented():
    from checks.registry import CHECKS

    ordered = [c.name for c in order_checks(CHECKS.values())]
    assert ordered.index("stun_binding") < ordered.index("nat_behavior")
    assert all(c.summary for c in CHECKS.values())


def test_registry_checks_skip_without_targets():
    from checks.registry import CHECKS

    results = {r.name: r for r in asyncio.run(run_checks(CHECKS.values(), Targets(), 2.0))}
    assert (results["stun_binding"].status, results["stun_binding"].reason) == (Status.SKIPPED, Reason.NO_TARGET)
    assert results["stun_binding"].detail == "no STUN server given" and results["stun_binding"].results == ()
    assert results["nat_behavior"].reason is Reason.NO_TARGET
    assert (results["ike_udp500"].reason, results["ike_udp500"].detail) == (Reason.NO_TARGET,
                                                                            "no gateway given (--gateway)")
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
    from checks.targets import Endpoint
    from checks.registry import CHECKS

    # ".invalid" never resolves (RFC 6761); the others are refused before any query.
    settings = build_settings({"stun": (Endpoint(host, 3478), Endpoint("127.0.0.1", 9))})
    # Time for silence to count (one RTO, 0.5 s, after the first send), however loaded the machine.
    results = {r.name: r for r in asyncio.run(run_checks(CHECKS.values(), settings.targets, 3.0))}
    binding = results["stun_binding"]
    assert binding.status is Status.FAIL  # the name unresolved, and nothing listens on the loopback port
    first, second = binding.results
    assert first.reason is Reason.RESOLVE_FAILED and host[:20] in first.detail
    assert second.reason in (Reason.NO_RESPONSE, Reason.PORT_UNREACHABLE)  # port 9: ICMP, unless rate-limited
    assert results["interfaces"].status is Status.OK


def test_host_work_is_prepared_before_any_deadline_starts():
    """A check's prepare (scapy's import for the IKE probes) runs before the clocks start: on a clock
    that moves only while preparing, every check still has its whole timeout left when it starts."""
    now = [0.0]

    def slow_prepare(targets):
        now[0] += 10.0  # a host busy for 10 s: counted against the deadline, nothing would be left

    async def probe(ctx):
        return Outcome.ok({"remaining": ctx.remaining()})

    def broken(targets):
        raise RuntimeError("no such library")

    checks = [check("heavy", probe, prepare=slow_prepare), check("broken", probe, prepare=broken)]
    results = {r.name: r.results[0] for r in asyncio.run(run_checks(checks, Targets(), timeout=2.0,
                                                                     clock=lambda: now[0]))}
    assert now[0] == 10.0
    assert results["heavy"].status is Status.OK and results["heavy"].evidence["remaining"] == 2.0
    assert results["broken"].status is Status.OK  # a failed preparation is the probe's to meet, not the run's


def test_each_target_is_probed_on_its_own_with_its_own_deadline():
    """The runner fans out: one probe per gateway, concurrently, each told its own target."""
    seen = []

    async def probe(ctx):
        seen.append((ctx.target.name, ctx.target.endpoint.host, ctx.remaining()))
        await asyncio.sleep(0.2)
        if ctx.target.name == "192.0.2.2":
            return Outcome.fail(Reason.NO_RESPONSE, "silent")
        return Outcome.ok({"target": ctx.target.name})

    [run_] = asyncio.run(run_checks([check("each", probe, scope=Scope.GATEWAY)], GATEWAYS, 30))
    assert sorted(name for name, _, _ in seen) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert all(name == host and 30 - 10 < left <= 30 for name, host, left in seen)
    assert [(r.target.name, r.status) for r in run_.results] == [
        ("192.0.2.1", Status.OK), ("192.0.2.2", Status.FAIL), ("192.0.2.3", Status.OK)]
    # Every gateway matters: one silent gateway fails the check, and its detail names it.
    assert (run_.status, run_.reason, run_.detail) == (Status.FAIL, Reason.NO_RESPONSE, "192.0.2.2: silent")


def test_targets_that_stand_in_for_each_other_need_one_success():
    async def probe(ctx):
        if ctx.target.name.startswith("192.0.2.1"):
            return Outcome.ok({})
        return Outcome.fail(Reason.PORT_UNREACHABLE, "closed")

    servers = Targets(stun=(Endpoint("192.0.2.1", 3478), Endpoint("192.0.2.9", 3478)))
    [any_] = asyncio.run(run_checks([check("any", probe, scope=Scope.STUN_SERVER, every_target=False)], servers, 5))
    [every] = asyncio.run(run_checks([check("every", probe, scope=Scope.STUN_SERVER)], servers, 5))
    assert (any_.status, any_.detail) == (Status.OK, "1 of 2 stun servers succeeded")
    assert (every.status, every.reason) == (Status.FAIL, Reason.PORT_UNREACHABLE)


def test_the_most_telling_failure_sums_a_check_up():
    replies = {"192.0.2.1": Outcome.fail(Reason.TIMEOUT, "late"), "192.0.2.2": Outcome.fail(Reason.PROHIBITED, "no"),
               "192.0.2.3": Outcome.fail(Reason.NO_RESPONSE, "silent")}

    async def probe(ctx):
        return replies[ctx.target.name]

    [run_] = asyncio.run(run_checks([check("c", probe, scope=Scope.GATEWAY)], GATEWAYS, 5))
    assert run_.reason is Reason.PROHIBITED  # a refusal says more than silence, silence more than a deadline
    assert run_.detail == "192.0.2.1: late; 192.0.2.2: no; 192.0.2.3: silent"


def test_a_session_is_shared_by_every_target_and_closed_after_them():
    import contextlib

    events = []

    @contextlib.asynccontextmanager
    async def session(targets, clock):
        events.append("open")
        yield {"socket": object()}
        events.append("close")

    async def probe(ctx):
        events.append(id(ctx.session["socket"]))
        return Outcome.ok({})

    asyncio.run(run_checks([check("s", probe, scope=Scope.GATEWAY, session=session)], GATEWAYS, 5))
    assert events[0] == "open" and events[-1] == "close"
    assert len(set(events[1:-1])) == 1 and len(events) == 5  # one session, three probes in it


def test_a_subset_run_takes_its_dependencies_from_the_store_with_their_age():
    wall = [1000.0]
    store = ResultStore(wall_clock=lambda: wall[0])
    producer, consumer = check("first", first), check("second", second, ("first",))
    asyncio.run(run_checks([producer], Targets(), 2.0, store=store))
    ended = store.latest("first").ended_at
    wall[0] = ended + 42.0
    assert store.age_seconds("first") == pytest.approx(42.0)
    [result] = run([consumer], store=store)  # "first" is not in this run: the store has it
    assert result.evidence == {"used": "203.0.113.1:4000"}
    assert store.latest("second").results[0] is result
    [alone] = run([consumer])  # an empty store: the probe is told there is nothing to build on
    assert alone.evidence == {"used": None}
    assert store.age_seconds("never") is None


def test_a_check_that_loads_the_path_starts_after_every_other_check():
    spans = {}

    def recorder(name, seconds):
        async def probe(ctx):
            started = time.monotonic()
            await asyncio.sleep(seconds)
            spans[name] = (started, time.monotonic())
            return Outcome.ok({})
        return probe

    run([check("load", recorder("load", 0.05), loads_path=True), check("slow", recorder("slow", 0.3)),
         check("quick", recorder("quick", 0.01))])
    assert spans["load"][0] >= max(spans["slow"][1], spans["quick"][1])


def test_nothing_may_wait_for_a_check_that_loads_the_path():
    """It starts after every other check: one that waited for it would wait forever."""
    async def noop(ctx):
        return Outcome.ok({})

    with pytest.raises(ValueError, match="'after' depends on 'load', which loads the path"):
        order_checks([check("load", noop, loads_path=True), check("after", noop, ("load",))])


def test_a_session_that_fails_to_close_keeps_the_results_and_one_that_fails_to_open_is_every_target_s():
    import contextlib

    @contextlib.asynccontextmanager
    async def closes_badly(targets, clock):
        yield "socket"
        raise OSError("close failed")

    @contextlib.asynccontextmanager
    async def opens_badly(targets, clock):
        raise OSError("no socket for you")
        yield  # pragma: no cover - never reached

    async def probe(ctx):
        return Outcome.ok({"session": ctx.session})

    [kept] = asyncio.run(run_checks([check("kept", probe, scope=Scope.GATEWAY, session=closes_badly)], GATEWAYS, 5))
    assert kept.status is Status.OK and [r.evidence for r in kept.results] == [{"session": "socket"}] * 3
    [lost] = asyncio.run(run_checks([check("lost", probe, scope=Scope.GATEWAY, session=opens_badly)], GATEWAYS, 5))
    assert (lost.status, lost.reason) == (Status.ERROR, Reason.EXCEPTION) and len(lost.results) == 3
    assert all(r.detail == "OSError: no socket for you" for r in lost.results)


def test_a_stored_dependency_older_than_allowed_counts_as_missing():
    wall = [1000.0]
    store = ResultStore(wall_clock=lambda: wall[0])
    asyncio.run(run_checks([check("first", first)], Targets(), 2.0, store=store))
    wall[0] = store.latest("first").ended_at + 600.0
    consumer = [check("second", second, ("first",))]
    [[fresh]] = [r.results for r in asyncio.run(run_checks(consumer, Targets(), 2.0, store=store,
                                                           dependency_max_age_seconds=900))]
    [[stale]] = [r.results for r in asyncio.run(run_checks(consumer, Targets(), 2.0, store=store,
                                                           dependency_max_age_seconds=300))]
    assert fresh.evidence == {"used": "203.0.113.1:4000"} and stale.evidence == {"used": None}


def test_skipped_targets_count_neither_for_nor_against_a_check():
    from checks.contract import CheckRun

    replies = {"192.0.2.1": Outcome.ok({}), "192.0.2.2": Outcome.skipped(Reason.NOT_PERMITTED, "no privilege"),
               "192.0.2.3": Outcome.ok({})}

    async def probe(ctx):
        return replies[ctx.target.name]

    gateway_check = check("c", probe, scope=Scope.GATEWAY)
    [run_] = asyncio.run(run_checks([gateway_check], GATEWAYS, 5))
    assert (run_.status, run_.reason, run_.detail) == (Status.OK, Reason.SUCCESS, "2 of 3 gateways succeeded")
    replies.update({"192.0.2.1": replies["192.0.2.2"], "192.0.2.3": replies["192.0.2.2"]})
    [all_skipped] = asyncio.run(run_checks([gateway_check], GATEWAYS, 5))
    assert (all_skipped.status, all_skipped.reason) == (Status.SKIPPED, Reason.NOT_PERMITTED)
    with pytest.raises(ValueError, match="no result and no outcome"):
        CheckRun.of(gateway_check, [])
