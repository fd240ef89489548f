"""Facts derived from what real checks measured in the lab: every recording of
tests/fixtures/assessments (tests/record_evidence.py) read back into its runs (tests/recorded.py),
and `derive_facts`, the code under test, run on them. Every fact is shown true (or a value),
false and null by some recording; the reduction rules over several targets and stages are fed
the results of real runs, combined where one lab run cannot show the rule."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import recorded
from conftest import validate_report

from agent.facts import REACHABILITY_CHECKS, derive_facts
from checks.contract import CheckRun, evidence_dict, evidence_from_dict
from checks.registry import CHECKS


def facts_of(scenario: str, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """The facts of a recording, derived anew from its runs (leaving out the checks named)."""
    _, runs = recorded.load(scenario)
    return derive_facts(run for run in runs if run.name not in without)


def fact(facts: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        facts = facts[key]
    return facts


# Three-state facts: a recording where each is true, one where it is false, one where nobody measured it.
STATES: dict[str, dict[bool | None, str]] = {
    "public_ipv4.present": {True: "public-responder", False: "nat-strongswan", None: "no-network"},
    "nat.detected": {True: "nat-strongswan", False: "public-responder", None: "udp-dropped"},
    "nat.cgnat": {True: "cgnat", False: "nat-strongswan", None: "udp-dropped"},
    "nat.udp_blocked": {True: "udp-dropped", False: "public-responder", None: "no-targets"},
    # strongSwan's IKE_SA_INIT answer carries NAT_DETECTION; the responder's stub answers without it.
    "nat.ike_detected": {True: "nat-strongswan", False: "public-strongswan", None: "public-responder"},
    "nat.mapping_varies_by_destination": {True: "symmetric-nat", False: "nat-strongswan", None: "public-responder"},
    **{f"reachability.{name}.reachable": {True: "public-responder", False: "refused-at-router", None: "no-targets"}
       for name in REACHABILITY_CHECKS},
    "reachability.esp.reachable": {True: "public-responder", False: "refused-at-router", None: "esp-dropped"},
    "tls_interception": {True: "pinned-certificate-differs", False: "public-responder", None: "refused-at-router"},
    "throughput.both_directions": {True: "public-responder", False: "download-stalled", None: "nat-strongswan"},
    # True needs this host's CPU to be the bottleneck: on the lab's veths the kernel moves the bytes
    # and the pumps stay far below one core, so no recording shows it.
    "throughput.cpu_limited": {False: "public-responder", None: "no-targets"},
}

# Facts that are a value from a closed or a lab-given set, or null.
VALUES: dict[str, dict[Any, str]] = {
    "public_ipv4.addresses": {("198.51.100.2",): "public-responder", ("10.0.0.2",): "routed-private",
                              (): "nat-strongswan"},
    "nat.reflexive_address": {"203.0.113.1": "nat-strongswan", "198.51.100.2": "public-responder",
                              "10.0.0.2": "routed-private", None: "udp-dropped"},
    "nat.local_address": {"10.0.0.2": "nat-strongswan", "100.64.0.2": "cgnat", None: "udp-dropped"},
    "nat.mapping": {"endpoint-independent": "nat-strongswan", "address-and-port-dependent": "symmetric-nat",
                    None: "public-strongswan"},  # a plain STUN server: RFC 5780 not supported
    "nat.filtering": {"endpoint-independent": "public-responder", "address-and-port-dependent": "nat-strongswan",
                      None: "udp-dropped"},
    "path_mtu.bytes": {1500: "public-responder", 1400: "narrow-path", None: "no-targets"},
    "path_mtu.tcp_mss_bytes": {1460: "public-responder", 1360: "narrow-path", None: "all-dropped"},
    # Beside the figure, why: a gateway that answered no probe (no_response) leaves it unknown.
    "path_mtu.reason": {"success": "public-responder", "no_response": "all-dropped", "no_target": "no-targets"},
    # The address the gateway's side must be configured with: a STUN server's view, else the host's own.
    "public_ipv4.site_address": {"203.0.113.1": "nat-strongswan", "198.51.100.2": "ike-unknown-peer",
                                 None: "udp-dropped"},
    "public_ipv4.site_address_source": {"stun": "nat-strongswan", "interface": "ike-unknown-peer", None: "udp-dropped"},
}

_FIGURES = ("rtt_p50_seconds", "rtt_p90_seconds", "rtt_p99_seconds", "jitter_seconds", "loss_ratio")
# Figures: (a recording that measured it, one that did not).
MEASURED: dict[str, tuple[str, str]] = {
    "nat.reflexive_port": ("nat-strongswan", "no-route"),
    "nat.local_port": ("cgnat", "unresolvable"),
    "throughput.upload_bits_per_second": ("download-stalled", "nat-strongswan"),
    "throughput.download_bits_per_second": ("public-responder", "download-stalled"),  # the stalled one is partial
    "throughput.path_bits_per_second": ("download-stalled", "all-dropped"),
    "throughput.streams": ("public-responder", "all-dropped"),
    "throughput.duration_seconds": ("public-responder", "no-targets"),
    "throughput.retransmits": ("public-responder", "no-targets"),
    **{f"latency.{key}": ("nat-strongswan", "all-dropped") for key in _FIGURES},
    **{f"latency.udp.{key}": ("nat-strongswan", "no-targets") for key in _FIGURES},
    # Under load needs a complete upload stage: --no-throughput measured latency alone.
    **{f"latency.under_load.{key}": ("public-responder", "nat-strongswan") for key in _FIGURES},
    **{f"latency.under_load.udp.{key}": ("download-stalled", "nat-strongswan") for key in _FIGURES},
}

# Not single facts but what explains them; the reduction tests below read them.
EXPLAINING = {"interfaces", "throughput.stages", "path_mtu.detail"} | {
    f"reachability.{name}.{key}" for name in REACHABILITY_CHECKS for key in ("reason", "detail", "gateways")}


def _leaves(facts: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in facts.items():
        path = prefix + key
        paths |= _leaves(value, path + ".") if isinstance(value, dict) and path not in EXPLAINING else {path}
    return paths


def test_every_fact_has_a_row_and_every_state_a_recording():
    assert _leaves(facts_of("public-responder")) - EXPLAINING == set(STATES) | set(VALUES) | set(MEASURED)
    assert all(len(states) == 3 for path, states in STATES.items() if path != "throughput.cpu_limited")


@pytest.mark.parametrize(("path", "expected", "scenario"),
                         [(path, state, scenario) for path, states in STATES.items()
                          for state, scenario in states.items()],
                         ids=lambda value: str(value))
def test_three_state_facts(path, expected, scenario):
    assert fact(facts_of(scenario), path) is expected


@pytest.mark.parametrize(("path", "expected", "scenario"),
                         [(path, value, scenario) for path, values in VALUES.items()
                          for value, scenario in values.items()],
                         ids=lambda value: str(value))
def test_valued_facts(path, expected, scenario):
    value = fact(facts_of(scenario), path)
    assert (tuple(value) if isinstance(value, list) else value) == expected


@pytest.mark.parametrize(("path", "measured", "not_measured"),
                         [(path, *scenarios) for path, scenarios in MEASURED.items()], ids=str)
def test_figures_are_measured_or_null(path, measured, not_measured):
    figure = fact(facts_of(measured), path)
    assert isinstance(figure, (int, float)) and not isinstance(figure, bool) and figure >= 0
    assert fact(facts_of(not_measured), path) is None


# ---------------------------------------------------------------- the recordings themselves

@pytest.mark.parametrize("scenario", recorded.SCENARIOS)
def test_a_recording_is_a_valid_report_that_says_where_it_came_from(scenario):
    whole = recorded.report(scenario)
    provenance = whole.pop("recorded")
    assert provenance["scenario"] == scenario and provenance["command"].startswith("xcheck run --format json")
    assert provenance["date"] and provenance["lab"]
    validate_report(whole)


@pytest.mark.parametrize("scenario", recorded.SCENARIOS)
def test_evidence_round_trips_into_the_checks_own_types(scenario):
    for check in recorded.report(scenario)["checks"]:
        kind = CHECKS[check["name"]].evidence
        for result in check["results"]:
            typed = evidence_from_dict(kind, result["evidence"])
            assert typed is None or isinstance(typed, kind), (check["name"], type(typed))
            assert evidence_dict(typed) == result["evidence"], check["name"]


@pytest.mark.parametrize("scenario", recorded.SCENARIOS)
def test_the_rebuilt_runs_sum_up_and_give_the_facts_the_real_run_reported(scenario):
    """`CheckRun.of` over the recorded per-target results gives each check's recorded summary, and
    the typed evidence the facts xcheck reported. A deliberate change to what a fact says needs the
    recordings made anew (`python tests/record_evidence.py`, as root)."""
    report, runs = recorded.load(scenario)
    assert [run.to_dict() for run in runs] == report["checks"]
    assert json.loads(json.dumps(derive_facts(runs))) == report["facts"]


# ---------------------------------------------------------------- reductions over targets and stages

def test_one_unreachable_gateway_makes_a_probe_unreachable_and_each_gateway_is_kept():
    """A real run with two gateways: the responder, and an address where nothing but coturn listens."""
    facts = facts_of("two-gateways")
    for name in REACHABILITY_CHECKS:
        reachability = facts["reachability"][name]
        assert reachability["reachable"] is False, name
        assert [(g["gateway"], g["reachable"]) for g in reachability["gateways"]] == [
            ("203.0.113.10", True), ("203.0.113.11", False)], name
        assert reachability["gateways"][0]["reason"] == "success"
        # The gateway that decides it gives the reason and the detail.
        refused = reachability["gateways"][1]
        assert (reachability["reason"], reachability["detail"]) == (refused["reason"], f"203.0.113.11: {refused['detail']}")
    assert (facts["path_mtu"]["bytes"], facts["path_mtu"]["tcp_mss_bytes"]) == (1500, 1460)


@pytest.mark.parametrize("name", REACHABILITY_CHECKS)
def test_a_probe_is_reachable_when_every_gateway_is(name):
    facts = derive_facts([recorded.together(name, ["public-responder", "narrow-path"])])
    reachability = facts["reachability"][name]
    assert reachability["reachable"] is True
    assert [g["gateway"] for g in reachability["gateways"]] == ["203.0.113.10", "203.0.113.11"]
    assert reachability["reason"] == "success"
    assert reachability["detail"] == "; ".join(f"{g['gateway']}: {g['detail']}" for g in reachability["gateways"])


def test_an_unknown_gateway_leaves_reachability_unknown_unless_another_is_unreachable():
    unknown = derive_facts([recorded.together("esp", ["public-responder", "esp-dropped"])])["reachability"]["esp"]
    assert unknown["reachable"] is None and [g["reachable"] for g in unknown["gateways"]] == [True, None]
    refused = derive_facts([recorded.together("esp", ["nat-strongswan", "esp-dropped"])])["reachability"]["esp"]
    assert refused["reachable"] is False and [g["reachable"] for g in refused["gateways"]] == [False, None]


def test_the_reason_of_several_gateways_is_the_most_telling():
    """A refusal proves more than silence (checks/contract.py `_TELLING`)."""
    run = recorded.together("tls_tcp443", ["all-dropped", "refused-at-router"])
    assert [str(r.reason) for r in run.results] == ["no_response", "connection_refused"]
    assert derive_facts([run])["reachability"]["tls_tcp443"]["reason"] == "connection_refused"


def test_reachability_not_probed_says_why():
    no_gateway = facts_of("no-targets")["reachability"]["ike_udp500"]
    assert no_gateway == {"reachable": None, "reason": "no_target", "detail": "no gateway given (--gateway)",
                          "gateways": []}
    assert facts_of("public-responder", without=("sstp",))["reachability"]["sstp"] == {
        "reachable": None, "reason": None, "detail": "not run", "gateways": []}


def test_ike_nat_detection_over_gateways_and_both_ike_checks():
    behind_nat_and_public = [recorded.together(name, ["nat-strongswan", "public-strongswan"])
                             for name in ("ike_udp500", "ike_natt_udp4500")]
    assert derive_facts(behind_nat_and_public)["nat"]["ike_detected"] is True  # one gateway saw the NAT
    stub_and_public = [recorded.together("ike_udp500", ["public-responder", "public-strongswan"])]
    assert derive_facts(stub_and_public)["nat"]["ike_detected"] is False  # a "no" beside a "not known"
    # NAT-T on 4500 alone is read too.
    assert facts_of("nat-strongswan", without=("ike_udp500",))["nat"]["ike_detected"] is True


def test_tls_interception_suspected_toward_any_gateway():
    run = recorded.together("tls_tcp443", ["pinned-certificate-differs", "narrow-path"])
    assert [r.evidence.exchange.interception_suspected for r in run.results] == [True, False]
    assert derive_facts([run])["tls_interception"] is True


def test_the_narrowest_path_decides_the_mtu():
    run = recorded.together("path_mtu", ["public-responder", "narrow-path"])
    assert [r.evidence.path_mtu_bytes for r in run.results] == [1500, 1400]
    path_mtu = derive_facts([run])["path_mtu"]
    assert (path_mtu["bytes"], path_mtu["tcp_mss_bytes"]) == (1400, 1360)


def test_throughput_takes_the_best_complete_stage_per_direction():
    _, runs = recorded.load("public-responder")
    stages = recorded.run("public-responder", "throughput").results[0].evidence.stages
    assert [(s.direction, s.streams, s.ok) for s in stages] == [
        ("upload", 1, True), ("download", 1, True), ("upload", 6, True), ("download", 6, True),
        ("upload", 16, True), ("download", 16, True)]
    best = {direction: max((s for s in stages if s.direction == direction), key=lambda s: s.bits_per_second)
            for direction in ("upload", "download")}
    throughput = derive_facts(runs)["throughput"]
    assert throughput["upload_bits_per_second"] == best["upload"].bits_per_second
    assert throughput["download_bits_per_second"] == best["download"].bits_per_second
    assert throughput["path_bits_per_second"] == min(s.bits_per_second for s in best.values())
    assert (throughput["streams"], throughput["retransmits"]) == (best["upload"].streams, best["upload"].retransmits)
    assert len(throughput["stages"]) == 6 and throughput["both_directions"] is True


def test_a_failed_stage_keeps_its_partial_figures_in_stages_only():
    stages = recorded.run("download-stalled", "throughput").results[0].evidence.stages
    upload, download = stages
    assert (download.ok, download.partial, str(download.failure)) == (False, True, "stalled")
    assert download.bits_per_second is not None  # a partial figure, from before the stall
    throughput = facts_of("download-stalled")["throughput"]
    assert throughput["download_bits_per_second"] is None and throughput["both_directions"] is False
    assert throughput["upload_bits_per_second"] == throughput["path_bits_per_second"] == upload.bits_per_second
    assert [(s["direction"], s["ok"], s["partial"], s["failure"]) for s in throughput["stages"]] == [
        ("upload", True, False, None), ("download", False, True, "stalled")]


def test_latency_idle_and_under_the_heaviest_complete_upload():
    _, runs = recorded.load("public-responder")
    idle = recorded.run("public-responder", "latency").results[0].evidence
    stages = recorded.run("public-responder", "throughput").results[0].evidence.stages
    heaviest = max((s for s in stages if s.direction == "upload" and s.ok), key=lambda s: s.streams)
    latency = derive_facts(runs)["latency"]
    assert latency["rtt_p50_seconds"] == idle.tcp.rtt_p50_seconds
    assert latency["udp"]["rtt_p99_seconds"] == idle.udp.rtt_p99_seconds
    assert heaviest.streams == 16
    assert latency["under_load"]["rtt_p50_seconds"] == heaviest.latency_under_load.tcp.rtt_p50_seconds
    assert latency["under_load"]["udp"]["loss_ratio"] == heaviest.latency_under_load.udp.loss_ratio


def test_udp_is_blocked_only_when_every_server_stays_silent():
    one_answers = recorded.together("stun_binding", ["udp-dropped", "nat-strongswan"])
    assert derive_facts([one_answers])["nat"]["udp_blocked"] is False
    # A local send error proves neither, beside silence or alone.
    send_error_and_silence = recorded.together("stun_binding", ["no-route", "udp-dropped"])
    assert derive_facts([send_error_and_silence])["nat"]["udp_blocked"] is None
    assert facts_of("no-route")["nat"]["udp_blocked"] is None
    assert facts_of("unresolvable")["nat"]["udp_blocked"] is None
    assert facts_of("all-dropped")["nat"]["udp_blocked"] is True


def test_cgnat_is_known_from_the_local_address_even_when_udp_is_blocked():
    nat = facts_of("cgnat-udp-dropped")["nat"]
    assert (nat["cgnat"], nat["udp_blocked"], nat["detected"]) == (True, True, None)


def test_a_private_address_the_server_sees_unchanged_is_internet_facing():
    facts = facts_of("routed-private")
    assert facts["public_ipv4"] == {"present": True, "addresses": ["10.0.0.2"], "site_address": "10.0.0.2",
                                    "site_address_source": "stun"}
    assert facts["nat"]["detected"] is False


def test_mapping_and_filtering_come_from_the_first_server_that_decided_them():
    """The second server (a plain coturn) supports no RFC 5780: the first one's verdicts stand."""
    run = recorded.run("nat-strongswan", "nat_behavior")
    assert [(r.target.name, str(r.status)) for r in run.results] == [("203.0.113.10:3478", "ok"),
                                                                     ("203.0.113.20:3478", "skipped")]
    nat = facts_of("nat-strongswan")["nat"]
    assert (nat["mapping"], nat["filtering"]) == ("endpoint-independent", "address-and-port-dependent")


# ---------------------------------------------------------------- silence is not a verdict

# Per check: a recording where the gateway was barely silent, and one where silence was shown to be
# a filter (the same gateway answered IKE on its other port, or it is `xcheck responder`, known by
# its ESP echo, which answers every peer).
SILENCE = {
    "ike_udp500": ("ike-dropped", "ike-500-dropped"),
    "ike_natt_udp4500": ("ike-dropped", "responder-filtered"),
    "ikev1_udp500": ("ike-unknown-peer", "responder-filtered"),
    "tls_tcp443": ("all-dropped", "responder-filtered"),
    "sstp": ("all-dropped", "responder-filtered"),
    "gateway_health": ("all-dropped", None),
    "esp": ("esp-dropped", None),  # ESP is what tells the responder: its silence is never contrasted
}


@pytest.mark.parametrize("name", SILENCE)
def test_bare_silence_is_not_known_with_its_reason(name):
    reachability = facts_of(SILENCE[name][0])["reachability"][name]
    assert (reachability["reachable"], reachability["reason"]) == (None, "no_response"), reachability
    assert [(g["reachable"], g["reason"]) for g in reachability["gateways"]] == [(None, "no_response")]


@pytest.mark.parametrize("name", [name for name, (_, filtered) in SILENCE.items() if filtered])
def test_silence_shown_to_be_a_filter_is_unreachable_and_says_how_it_was_shown(name):
    scenario = SILENCE[name][1]
    reachability = facts_of(scenario)["reachability"][name]
    assert (reachability["reachable"], reachability["reason"]) == (False, "no_response"), reachability
    probed = recorded.run(scenario, name).results[0]
    assert (probed.evidence.reachable, str(probed.reason)) == (None, "no_response")  # the probe itself proves nothing
    if scenario == "responder-filtered":
        assert reachability["detail"] == ("filtered: no answer, while the gateway is `xcheck responder` (it echoed our "
                                          "ESP), which answers every peer")
    else:
        assert reachability["detail"] == "filtered: no answer on UDP 500 while the same gateway answers IKEv2 NAT-T on UDP 4500"


def test_silence_through_a_proxy_is_the_proxys_and_never_contrasted():
    """The responder's TLS silence is a filter when probed directly; the same silence marked as come
    through an HTTP proxy (no recording has one) may be the proxy's own."""
    _, runs = recorded.load("responder-filtered")
    assert derive_facts(runs)["reachability"]["tls_tcp443"]["reachable"] is False
    tls = next(run for run in runs if run.name == "tls_tcp443")
    (result,) = tls.results
    proxied = dataclasses.replace(result, evidence=dataclasses.replace(result.evidence, path="proxy"))
    runs = [CheckRun.of(tls.check, [proxied]) if run is tls else run for run in runs]
    reachability = derive_facts(runs)["reachability"]["tls_tcp443"]
    assert (reachability["reachable"], reachability["reason"]) == (None, "no_response")


def test_ikev1_is_filtered_where_ikev2_is_but_ignored_where_ikev2_passes_the_same_port():
    filtered = facts_of("ike-500-dropped")["reachability"]["ikev1_udp500"]
    assert (filtered["reachable"], filtered["reason"]) == (False, "no_response")
    assert filtered["detail"] == "filtered: no answer on UDP 500 while the same gateway answers IKEv2 NAT-T on UDP 4500"
    ignored = facts_of("ikev1-ignored")["reachability"]
    assert ignored["ike_udp500"]["reachable"] is True and ignored["ike_natt_udp4500"]["reachable"] is True
    assert (ignored["ikev1_udp500"]["reachable"], ignored["ikev1_udp500"]["reason"]) == (None, "no_response")


def test_without_the_contrast_the_same_silence_is_not_known():
    """The filter is proven by the other port's answer, or the ESP echo: without them, silence stays silence."""
    assert facts_of("ike-500-dropped", without=("ike_natt_udp4500",))["reachability"]["ike_udp500"]["reachable"] is None
    assert facts_of("responder-filtered", without=("esp",))["reachability"]["tls_tcp443"]["reachable"] is None
    # IKEv1 on 500 is filtered only where IKEv2 on 500 was silent too, not where it was not measured.
    for scenario in ("ike-500-dropped", "ikev1-ignored"):
        assert facts_of(scenario, without=("ike_udp500",))["reachability"]["ikev1_udp500"]["reachable"] is None


def test_silence_after_the_connect_is_stalled_and_never_contrasted():
    """The responder (its ESP echo names it) connects, then its answers are lost: a black hole, not a filter."""
    facts = facts_of("tls-stalled")
    assert facts["reachability"]["esp"]["reachable"] is True
    for name in ("tls_tcp443", "sstp", "gateway_health"):
        assert (facts["reachability"][name]["reachable"], facts["reachability"][name]["reason"]) == (None, "stalled")


def test_several_unknown_gateways_give_the_most_telling_reason_in_any_order():
    """Silence says more than a missing route: --gateway's order must not pick the rule that fires."""
    for order in (["no-route", "ike-dropped"], ["ike-dropped", "no-route"]):
        reachability = derive_facts([recorded.together("ike_udp500", order)])["reachability"]["ike_udp500"]
        assert (reachability["reachable"], reachability["reason"]) == (None, "no_response"), order


def test_an_icmp_refusal_is_unreachable_with_the_icmp_error_in_the_detail():
    for name in ("ike_udp500", "ike_natt_udp4500"):
        reachability = facts_of("ike-rejected")["reachability"][name]
        assert (reachability["reachable"], reachability["reason"]) == (False, "prohibited")
        assert reachability["detail"] == "ICMP communication administratively prohibited (type 3, code 13) from 10.0.0.1"


def test_a_gateway_that_ignores_unknown_peers_looks_like_silence_and_the_sites_address_is_the_hosts_own():
    facts = facts_of("ike-unknown-peer")
    for name in ("ike_udp500", "ike_natt_udp4500", "ikev1_udp500"):
        assert (facts["reachability"][name]["reachable"], facts["reachability"][name]["reason"]) == (None, "no_response")
    assert (facts["public_ipv4"]["site_address"], facts["public_ipv4"]["site_address_source"]) == (
        "198.51.100.2", "interface")


# ---------------------------------------------------------------- edges a wrong verdict would hide in

def test_a_refusal_from_the_servers_own_host_proves_udp_passes_and_a_routers_proves_it_blocked():
    closed = recorded.run("stun-port-closed", "stun_binding").results[0].evidence
    assert (str(closed.result), closed.icmp_from) == ("port_unreachable", "203.0.113.11")  # the server's own host
    assert facts_of("stun-port-closed")["nat"]["udp_blocked"] is False
    rejected = recorded.run("stun-rejected", "stun_binding").results[0].evidence
    assert (str(rejected.result), rejected.icmp_from) == ("port_unreachable", "10.0.0.1")  # the router
    assert facts_of("stun-rejected")["nat"]["udp_blocked"] is True
    # Silence from one server and a filter's refusal from another: blocked, both ways of stopping UDP.
    mixed = recorded.together("stun_binding", ["udp-dropped", "stun-rejected"])
    assert {str(r.reason) for r in mixed.results} == {"no_response", "port_unreachable"}
    assert derive_facts([mixed])["nat"]["udp_blocked"] is True


def test_one_host_on_two_ports_is_not_two_servers_for_the_mapping():
    """RFC 4787's test needs servers at different IP addresses: one coturn named on 3478 and 3479 behind
    a per-destination NAT saw two mappings, and still says nothing about the mapping across addresses."""
    answered = [r.evidence for r in recorded.run("stun-one-host-two-ports", "stun_binding").results]
    assert [a.address for a in answered] == ["203.0.113.10:3478", "203.0.113.10:3479"]
    assert answered[0].mapped_port != answered[1].mapped_port
    assert facts_of("stun-one-host-two-ports")["nat"]["mapping_varies_by_destination"] is None


def test_the_first_server_that_decided_a_behaviour_gives_it_not_the_first_that_tried():
    undecided = recorded.run("alternate-dropped", "nat_behavior").results[0].evidence
    assert undecided.mapping is not None and undecided.mapping.behavior is None  # its alternate address went silent
    assert facts_of("alternate-dropped")["nat"]["mapping"] is None
    both = recorded.together("nat_behavior", ["alternate-dropped", "nat-strongswan"])
    assert derive_facts([both])["nat"]["mapping"] == "endpoint-independent"


def test_one_stage_limited_by_the_cpu_makes_the_throughput_cpu_limited():
    """No lab run shows it (the veths outrun the pumps), so a real stage is marked as one that was."""
    run = recorded.run("public-responder", "throughput")
    (result,) = run.results
    stages = result.evidence.stages
    limited = dataclasses.replace(result.evidence, stages=(dataclasses.replace(stages[0], cpu_limited=True), *stages[1:]))
    marked = CheckRun.of(run.check, [dataclasses.replace(result, evidence=limited)])
    assert derive_facts([marked])["throughput"]["cpu_limited"] is True
    assert derive_facts([run])["throughput"]["cpu_limited"] is False


def test_a_gateway_check_skipped_without_evidence_is_not_known_and_says_why():
    """As nobody, ESP (a raw socket) is skipped: no evidence at all, and no verdict from it."""
    esp = facts_of("unprivileged")["reachability"]["esp"]
    assert esp == {"reachable": None, "reason": "not_permitted", "detail": esp["gateways"][0]["detail"],
                   "gateways": [{"gateway": "203.0.113.11", "reachable": None, "reason": "not_permitted",
                                 "detail": esp["gateways"][0]["detail"]}]}
    assert "CAP_NET_RAW" in esp["detail"]


def test_the_path_mtu_not_run_says_so():
    assert facts_of("public-responder", without=("path_mtu",))["path_mtu"] == {
        "bytes": None, "tcp_mss_bytes": None, "reason": None, "detail": "not run"}
