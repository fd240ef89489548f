"""Facts derived from check results: three-state, and the public-IPv4 and NAT definitions."""

from __future__ import annotations

from agent.facts import derive_facts
from checks.contract import CheckResult, Reason, Status


def interfaces(*addresses):
    from checks.transport.addressing import classify

    evidence = {"interfaces": [{"name": "eth0", "mtu": 1500, "addresses": [
        {"address": a, "family": "ipv4", "prefix_length": 24, "class": str(classify(a))} for a in addresses]}], "routes": []}
    return CheckResult("interfaces", Status.OK, Reason.SUCCESS, "", 0.01, evidence)


def server(result="answered", local=("10.0.0.2", 40000), mapped=("203.0.113.1", 40000), address="203.0.113.10:3478"):
    answered = result == "answered"
    return {"server": address, "address": address, "result": result, "local_address": local[0], "local_port": local[1],
            "mapped_address": mapped[0] if answered else None, "mapped_port": mapped[1] if answered else None,
            "nat_detected": (mapped != local) if answered else None}


def binding(*servers, varies=None):
    status = Status.OK if any(s["result"] == "answered" for s in servers) else Status.FAIL
    return CheckResult("stun_binding", status, Reason.SUCCESS, "", 0.01,
                       {"local_port": 40000, "servers": list(servers), "mapping_varies_by_destination": varies})


def behavior(mapping, filtering):
    return CheckResult("nat_behavior", Status.OK, Reason.SUCCESS, "", 0.3,
                       {"mapping": {"behavior": mapping}, "filtering": {"behavior": filtering}})


def test_behind_nat():
    facts = derive_facts([interfaces("10.0.0.2"), binding(server()), behavior("endpoint-independent", "address-dependent")])
    assert facts["public_ipv4"] == {"present": False, "addresses": []}
    nat = facts["nat"]
    assert nat["detected"] is True and nat["reflexive_address"] == "203.0.113.1" and nat["reflexive_port"] == 40000
    assert (nat["mapping"], nat["filtering"]) == ("endpoint-independent", "address-dependent")
    assert nat["cgnat"] is False and nat["udp_blocked"] is False


def test_public_address_without_nat():
    same = ("198.51.100.2", 40000)
    facts = derive_facts([interfaces("198.51.100.2"), binding(server(local=same, mapped=same))])
    assert facts["public_ipv4"] == {"present": True, "addresses": ["198.51.100.2"]}
    assert facts["nat"]["detected"] is False
    assert facts["nat"]["mapping"] is None  # nat_behavior did not run: not measured, not "no"


def test_a_private_address_the_server_sees_unchanged_counts_as_internet_facing():
    same = ("10.9.9.9", 40000)
    facts = derive_facts([interfaces("10.9.9.9"), binding(server(local=same, mapped=same))])
    assert facts["public_ipv4"] == {"present": True, "addresses": ["10.9.9.9"]}


def test_a_port_change_alone_is_a_nat():
    facts = derive_facts([interfaces("198.51.100.2"), binding(server(local=("198.51.100.2", 40000), mapped=("198.51.100.2", 1024)))])
    assert facts["nat"]["detected"] is True
    assert facts["public_ipv4"]["present"] is True  # the address is on the interface


def test_cgnat_from_the_local_or_the_reflexive_address():
    local = derive_facts([interfaces("100.64.0.2"), binding(server(local=("100.64.0.2", 40000)))])
    reflexive = derive_facts([interfaces("10.0.0.2"), binding(server(mapped=("100.80.1.1", 1)))])
    assert local["nat"]["cgnat"] is True and reflexive["nat"]["cgnat"] is True
    # Known from the interface even when UDP is blocked.
    blocked = derive_facts([interfaces("100.64.0.2"), binding(server("no_response", local=("100.64.0.2", 40000)))])
    assert blocked["nat"]["cgnat"] is True


def test_udp_blocked_needs_every_server_silent():
    silent = derive_facts([interfaces("10.0.0.2"), binding(server("no_response"), server("no_response", address="203.0.113.11:3478"))])
    assert silent["nat"]["udp_blocked"] is True and silent["nat"]["detected"] is None and silent["nat"]["cgnat"] is None
    one_bad = derive_facts([interfaces("10.0.0.2"), binding(server("no_response"), server("invalid_response"))])
    assert one_bad["nat"]["udp_blocked"] is False
    unresolved = derive_facts([interfaces("10.0.0.2"), binding(server("resolve_failed"))])
    assert unresolved["nat"]["udp_blocked"] is None


def test_nothing_measured_is_none_everywhere():
    facts = derive_facts([])
    assert facts["public_ipv4"]["present"] is None
    assert all(value is None for key, value in facts["nat"].items())


def stage(direction, streams, bps, ok=True, partial=False, cpu_limited=False, p50=0.01):
    summary = {"rtt_p50_seconds": p50, "rtt_p90_seconds": p50, "rtt_p99_seconds": p50, "jitter_seconds": 0.0, "loss_ratio": 0.0}
    return {"direction": direction, "streams": streams, "ok": ok, "partial": partial, "failure": None if ok else "server_gone",
            "bits_per_second": bps, "duration_seconds": 10.0, "retransmits": 3, "cpu_limited": cpu_limited,
            "latency_under_load": {"tcp": summary, "udp": summary}}


def test_throughput_takes_the_best_complete_stage_per_direction():
    stages = [stage("upload", 1, 40e6), stage("download", 1, 90e6), stage("upload", 6, 48e6, p50=0.05),
              stage("download", 6, 95e6), stage("upload", 16, 60e6, ok=False, partial=True)]
    result = CheckResult("throughput", Status.FAIL, Reason.CONNECTION_LOST, "", 1.0, {"stages": stages})
    idle = {"tcp": {"rtt_p50_seconds": 0.002, "loss_ratio": 0.0}, "udp": {}}
    facts = derive_facts([result, CheckResult("latency", Status.OK, Reason.SUCCESS, "", 1.0, idle)])
    throughput = facts["throughput"]
    assert (throughput["upload_bits_per_second"], throughput["download_bits_per_second"]) == (48e6, 95e6)
    assert throughput["path_bits_per_second"] == 48e6 and throughput["streams"] == 6
    assert throughput["cpu_limited"] is False
    assert [s["partial"] for s in throughput["stages"]] == [False, False, False, False, True]
    latency = facts["latency"]
    assert latency["rtt_p50_seconds"] == 0.002 and latency["udp"]["rtt_p50_seconds"] is None
    assert latency["under_load"]["rtt_p50_seconds"] == 0.05  # the heaviest complete upload stage (6 streams)


def test_throughput_not_measured_is_none():
    facts = derive_facts([])
    assert all(v is None for k, v in facts["throughput"].items() if k != "stages")
    assert facts["latency"]["rtt_p50_seconds"] is None and facts["latency"]["under_load"]["rtt_p50_seconds"] is None
