"""The report's edges, table-driven and fast (issue 13): what build_report takes from a recorded
assessment, the summary line for each fact true/false/null, timestamps in UTC, the OS name, how the
schema's shape is folded, and redaction where names overlap: a name inside a longer one, a host
named like a number, names given only in a certificate, keys, the summary and the tool's identity.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import platform
import socket
import time
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
import recorded
from test_redaction import HOST, report_with, this_host
from test_report import report_of

from agent import report as report_module
from agent.assessment import assessment_of
from agent.config import build_settings
from agent.facts import derive_facts
from agent.report import Pseudonyms, _Scrubber, _shape, build_report, host_info, redact, rfc3339, schema, summary_line
from agent.verdicts import load_ruleset
from checks.contract import Reason

# ---------------------------------------------------------------- the report's own fields


@pytest.mark.parametrize(("moment", "shown"), [
    (datetime(2026, 11, 25, 4, 2, 52, 123456, tzinfo=timezone.utc), "2026-11-25T04:02:52.123Z"),
    (datetime(2026, 11, 25, 9, 32, 52, 123999, tzinfo=timezone(timedelta(hours=5, minutes=30))),
     "2026-11-25T04:02:52.123Z"),
    (datetime(2026, 11, 24, 20, 2, 52, tzinfo=timezone(timedelta(hours=-8))), "2026-11-25T04:02:52.000Z"),
])
def test_timestamps_are_utc_whatever_the_local_zone(moment, shown, monkeypatch):
    """A machine in Kolkata writes the same instant as one in UTC ("Z", never "+05:30")."""
    monkeypatch.setenv("TZ", "IST-5:30")  # POSIX form: needs no tz database
    time.tzset()
    try:
        assert rfc3339(moment) == shown
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(("os_release", "shown"), [
    ('NAME="XCP-ng"\nPRETTY_NAME="XCP-ng 8.2 (a=b)"\nID=xenenterprise\n', "XCP-ng 8.2 (a=b)"),
    ("ID=alpine\nPRETTY_NAME=Alpine Linux v3.19\n", "Alpine Linux v3.19"),
    ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"  \n', "Debian GNU/Linux 12 (bookworm)"),
    ('NAME="Debian"\npretty_name="not the key"\n', None),  # no PRETTY_NAME: the system's name
    (None, None),  # no /etc/os-release
])
def test_the_os_is_named_from_os_release(os_release, shown, tmp_path, monkeypatch):
    release = tmp_path / "os-release"
    if os_release is not None:
        release.write_text(os_release)
    monkeypatch.setattr(report_module, "Path",
                        lambda path: release if path == "/etc/os-release" else tmp_path / "absent")
    info = host_info()
    assert info["os"] == (shown if shown is not None else platform.system())
    assert info["hostname"] == socket.gethostname() and info["kernel"] == platform.release()


def _facts(udp_blocked=None, present=None, detected=None, mapping=None, filtering=None, cgnat=None):
    facts = json.loads(json.dumps(derive_facts([])))
    facts["nat"].update(udp_blocked=udp_blocked, detected=detected, mapping=mapping, filtering=filtering, cgnat=cgnat)
    facts["public_ipv4"]["present"] = present
    return facts


@pytest.mark.parametrize(("facts", "line"), [
    (_facts(), "udp=- public_ipv4=- nat=- mapping=- filtering=- cgnat=-"),
    (_facts(udp_blocked=True, present=False, detected=False, cgnat=False),
     "udp=false public_ipv4=false nat=false mapping=- filtering=- cgnat=false"),
    (_facts(udp_blocked=False, present=True, detected=True, mapping="address-dependent",
            filtering="endpoint-independent", cgnat=True),
     "udp=true public_ipv4=true nat=true mapping=address-dependent filtering=endpoint-independent cgnat=true"),
])
def test_summary_line_for_each_fact_true_false_and_null(facts, line):
    """udp is the opposite of udp_blocked; a null fact is "-", never "false"."""
    assert summary_line(facts) == line


@pytest.mark.parametrize("scenario", ["nat-strongswan", "two-gateways", "no-targets", "unresolvable"])
def test_build_report_fields_come_from_the_assessment(scenario):
    """What the recorded run was asked (targets, an iperf server or none, gateways), its checks,
    facts and verdicts, as build_report puts them in the report."""
    printed, runs = recorded.load(scenario)
    settings = build_settings({})
    started, finished = datetime(2026, 11, 25, 4, 2, 52, tzinfo=timezone.utc), datetime(2026, 11, 25, 4, 3, 1,
                                                                                       tzinfo=timezone.utc)
    assessment = assessment_of(runs, load_ruleset(settings.ruleset), settings.requirements.to_dict(),
                               recorded.targets(printed), started, finished)
    report = build_report(assessment)
    assert report["targets"] == printed["targets"]
    assert (report["started_at"], report["finished_at"]) == ("2026-11-25T04:02:52.000Z", "2026-11-25T04:03:01.000Z")
    assert report["ruleset"] == settings.ruleset and report["requirements"] == settings.requirements.to_dict()
    assert [c["name"] for c in report["checks"]] == [c["name"] for c in printed["checks"]]
    assert report["facts"] == assessment.facts and report["summary"] == summary_line(assessment.facts)
    assert report["options"] == assessment.options and report["recommendation"] == list(assessment.recommendation)
    assert report["redacted"] is False and report["tool"]["name"] == "xcheck"


# ---------------------------------------------------------------- the schema's shape

ROOT = {"$defs": {"reason": {"enum": ["success", "no_response"]},
                  "rtt": {"type": "object", "properties": {"p50": {"type": "number"}, "kind": {"enum": ["udp"]}}},
                  "bare": {"type": "object", "required": ["p50"]}}}


@pytest.mark.parametrize(("node", "shape"), [
    ({"type": "string"}, {"type": "string"}),
    # A $ref's siblings apply too.
    ({"$ref": "#/$defs/reason", "description": "why"}, {"enum": ["success", "no_response"], "description": "why"}),
    # An enum or null: the values of every alternative.
    ({"anyOf": [{"$ref": "#/$defs/reason"}, {"type": "null"}]},
     {"anyOf": [{"$ref": "#/$defs/reason"}, {"type": "null"}], "enum": ["success", "no_response"]}),
    # allOf: the properties of every part and of the node itself, the node's own first.
    ({"allOf": [{"$ref": "#/$defs/rtt"}], "properties": {"under_load": {"$ref": "#/$defs/rtt"}}},
     {"type": "object", "allOf": [{"$ref": "#/$defs/rtt"}],
      "properties": {"p50": {"type": "number"}, "kind": {"enum": ["udp"]}, "under_load": {"$ref": "#/$defs/rtt"}}}),
    ({"allOf": [{"$ref": "#/$defs/rtt"}]},
     {"type": "object", "allOf": [{"$ref": "#/$defs/rtt"}],
      "properties": {"p50": {"type": "number"}, "kind": {"enum": ["udp"]}}}),
    ({"allOf": [{"$ref": "#/$defs/bare"}], "properties": {"p50": {"type": "integer"}}},
     {"type": "object", "required": ["p50"], "allOf": [{"$ref": "#/$defs/bare"}],
      "properties": {"p50": {"type": "integer"}}}),
])
def test_schema_shapes_fold_ref_anyof_and_allof(node, shape):
    assert _shape(node, ROOT) == shape


def test_the_shipped_schema_s_folded_shapes():
    root = schema()
    facts = root["properties"]["facts"]["properties"]
    latency = _shape(facts["latency"], root)
    assert {"rtt_p50_seconds", "loss_ratio", "udp", "under_load"} <= set(latency["properties"])
    reasons = {str(r) for r in Reason}
    assert set(_shape(facts["path_mtu"]["properties"]["reason"], root)["enum"]) == reasons
    assert set(_shape(root["$defs"]["reachability"]["properties"]["reason"], root)["enum"]) == reasons


# ---------------------------------------------------------------- pseudonyms

def test_pseudonyms_are_stable_per_input_and_keep_class_and_family():
    given = Pseudonyms()
    shown = [given.address(ipaddress.ip_address(a)) for a in
             ("10.0.0.2", "198.51.100.2", "10.0.0.3", "10.0.0.2", "2001:db8::1", "fe80::1", "::ffff:10.0.0.3",
              "100.64.0.9", "127.0.0.1")]
    assert shown == ["rfc1918-ipv4-1", "public-ipv4-1", "rfc1918-ipv4-2", "rfc1918-ipv4-1", "public-ipv6-1",
                     "link-local-ipv6-1", "::ffff:rfc1918-ipv4-2", "cgnat-ipv4-1", "loopback-ipv4-1"]
    names = [given.name(text, kind) for text, kind in
             (("Lab-Host7", "host"), ("lab-host7", "host"), ("alice", "user"), ("LAB-HOST7", "host"),
              ("lab-host8", "host"), ("alice", "host"))]
    assert names == ["host-1", "host-1", "user-1", "host-1", "host-2", "host-3"]


def test_only_case_is_folded_never_two_names_into_one():
    """Two Turkish organisations, ılık and ilik, are two names: an upper-cased key would merge them."""
    given = Pseudonyms()
    assert [given.name(text, "org") for text in ("ılık", "ilik", "ILIK")] == ["org-1", "org-2", "org-2"]


# ---------------------------------------------------------------- redaction edges

@contextlib.contextmanager
def home_from_environment(home):
    """This host as test_redaction's, but its home read from $HOME as `~` really is."""
    with mock.patch.object(socket, "gethostname", return_value=HOST), \
         mock.patch.object(socket, "getfqdn", return_value=f"{HOST}.corp.example.net"), \
         mock.patch("getpass.getuser", return_value="carol"), \
         mock.patch.dict(os.environ, {"HOME": home}):
        os.environ.pop("SUDO_USER", None)
        yield


def test_the_home_is_the_user_s_own():
    with home_from_environment("/srv/users/carol"):
        hidden = redact(report_with(detail="config in /srv/users/carol/.config/xcheck"))
    assert hidden["checks"][0]["detail"] == "config in home-1/.config/xcheck"


@pytest.mark.parametrize(("host", "detail", "shown"), [
    # Where a name and an address begin together, the longer wins: the address, not a host named "10".
    ("10", "10.0.0.2 is on 10", "rfc1918-ipv4-1 is on host-1"),
    ("198", "198.51.100.2:3478 from 198", "public-ipv4-1:3478 from host-1"),
    # A name that is a prefix of the FQDN, and labels joined by - and _.
    ("gw", "gw.corp.example.net, gw, gw-2, old_gw, GW", "host-2, host-1, host-3, host-4, host-1"),
])
def test_overlapping_names_and_addresses(host, detail, shown):
    with this_host(hostname=host, fqdn=f"{host}.corp.example.net"):
        hidden = redact(report_with(detail=detail, hostname=host))
    assert hidden["host"]["hostname"] == "host-1"
    assert hidden["checks"][0]["detail"] == shown


def test_a_host_with_nothing_to_hide_still_hides_its_addresses():
    """localhost, root and /root name no one: no name is hidden, every address still is."""
    with this_host(hostname="localhost", fqdn="localhost", user="root", home="/root"):
        hidden = redact(report_with(detail="root@localhost in /root saw 10.0.0.2", hostname="localhost"))
    assert hidden["checks"][0]["detail"] == "root@localhost in /root saw rfc1918-ipv4-1"
    assert hidden["host"]["hostname"] == "localhost"


@pytest.mark.parametrize(("certificate", "detail", "shown"), [
    # An e-mail address's domain is hidden wherever it appears, from the address alone.
    ({"subject": "CN=Appliance, emailAddress=ops@fabrikam.example"}, "ops@fabrikam.example, www.fabrikam.example",
     "email-1, www.domain-1"),
    # RFC 5322 allows "@" in a quoted local part: the domain is after the last one.
    ({"subject": 'CN=Appliance, emailAddress="ops@hq"@fabrikam.example'}, "see www.fabrikam.example",
     "see www.domain-1"),
    # The domains a DNS name is in (two labels or more), but never the top level alone.
    ({"subject": "CN=vpn.fabrikam.example"}, "www.fabrikam.example, docs at example.org",
     "www.domain-1, docs at example.org"),
    # An absolute name (a final dot) and upper case name the same domain.
    ({"san_dns": ["vpn.fabrikam.example."]}, "www.fabrikam.example", "www.domain-1"),
    # ...and the absolute name is hidden whole also where it is written without its final dot.
    ({"san_dns": ["vpn.fabrikam.example."]}, "vpn.fabrikam.example. or vpn.fabrikam.example",
     "name-1 or name-2"),
    ({"san_dns": ["VPN.FABRIKAM.BOX."]}, "vpn.fabrikam.box", "name-1"),  # only the final dot goes, not a final X
    # An e-mail address in an absolute domain: the domain is hidden as a domain, not as an address.
    ({"subject": "CN=Appliance, emailAddress=ops@fabrikam.example."}, "www.fabrikam.example", "www.domain-1"),
    ({"san_dns": ["VPN.FABRIKAM.BOX"]}, "www.fabrikam.box", "www.domain-1"),
    # An attribute without a kind of its own (organizationIdentifier, UID) is a name.
    ({"subject": "CN=Appliance, 2.5.4.97=VATGB-123456, UID=jdoe"}, "VATGB-123456 by jdoe", "name-1 by name-2"),
    # A certificate that names its owner by address: hidden as an address, by its class.
    ({"subject": "CN=203.0.113.7, O=Fabrikam"}, "203.0.113.7 of Fabrikam", "public-ipv4-1 of org-1"),
])
def test_names_only_a_certificate_gives(certificate, detail, shown):
    with this_host():
        hidden = redact(report_with(detail=detail, evidence={"certificate": certificate}))
    assert hidden["checks"][0]["detail"] == shown


@pytest.mark.parametrize(("targets", "secret"), [
    (None, None),  # the schema does not require targets
    ({"gateways": ["vpngw.fabrikam.example"]}, "vpngw.fabrikam.example"),
    ({"stun": ["stun.fabrikam.example:3478"]}, "stun.fabrikam.example"),
    ({"iperf": "far.fabrikam.example:5201", "gateways": []}, "far.fabrikam.example"),
])
def test_target_names_from_whatever_targets_the_report_has(targets, secret):
    report = report_with(detail=f"asked {secret}")
    if targets is None:
        del report["targets"]
    else:
        report["targets"] = targets
    with this_host():
        hidden = redact(report)
    assert hidden["checks"][0]["detail"] == ("asked None" if secret is None else "asked target-1")
    assert HOST not in json.dumps(hidden) and (secret is None or secret not in json.dumps(hidden))


def test_a_stun_server_given_by_name_is_hidden():
    """The recorded run asked stun.example.invalid: no string of its redacted report holds it."""
    report = report_of("unresolvable")
    assert "stun.example.invalid" in json.dumps(report)
    with this_host():
        hidden = redact(report)
    assert hidden["targets"]["stun"] == ["target-1:3478"]
    assert "stun.example.invalid" not in json.dumps(hidden)


@pytest.mark.parametrize(("host", "key", "shown"), [
    ("labhost7", "labhost7", "host-1"),  # an identifier, yet no field name nor word of xcheck's
    ("labhost7", "labhost7:3478", "host-1:3478"),
    ("gateway", "gateway", "gateway"),  # a key xcheck writes
    ("labhost7", "rtt_p50_seconds", "rtt_p50_seconds"),
])
def test_keys_are_hidden_unless_xcheck_writes_them(host, key, shown):
    with this_host(hostname=host, fqdn=f"{host}.corp.example.net"):
        hidden = redact(report_with(evidence={"by_peer": {key: 1}}, hostname=host))
    assert hidden["checks"][0]["results"][0]["evidence"]["by_peer"] == {shown: 1}


def test_a_host_named_like_a_reason_keeps_every_reason():
    """facts.reachability's and facts.path_mtu's reason are a reason or null (anyOf): still the schema's."""
    report = report_with(hostname="success")
    with this_host(hostname="success", fqdn="success.corp.example.net"):
        hidden = redact(report)
    assert hidden["host"]["hostname"] == "host-1"
    reachability = report["facts"]["reachability"]
    assert "success" in {r["reason"] for r in reachability.values()}
    assert {k: v["reason"] for k, v in hidden["facts"]["reachability"].items()} == \
        {k: v["reason"] for k, v in reachability.items()}
    assert hidden["facts"]["path_mtu"].get("reason") == report["facts"]["path_mtu"].get("reason")


@pytest.mark.parametrize(("summary", "shown"), [
    (None, None),  # xcheck's own line stays, whatever the host is called
    ("udp=true via 198.51.100.2 on lab-host7", "udp=true via public-ipv4-1 on host-1"),  # not xcheck's: scrubbed
])
def test_the_summary_stays_only_when_it_is_xcheck_s_line(summary, shown):
    report = report_with()
    line = report["summary"]
    if summary is not None:
        report["summary"] = summary
    with this_host():
        hidden = redact(report)
    assert hidden["summary"] == (shown if summary is not None else line)


def test_the_tool_s_identity_stays():
    """A four-part version ("1.0.0.2") is no address, and the tool is xcheck on a host named xcheck too."""
    report = report_with(hostname="xcheck")
    report["tool"]["version"] = "1.0.0.2"
    with this_host(hostname="xcheck", fqdn="xcheck.corp.example.net"):
        hidden = redact(report)
    assert hidden["tool"] == {"name": "xcheck", "version": "1.0.0.2"}
    assert hidden["host"]["hostname"] == "host-1"


# ---------------------------------------------------------------- xcheck's own wording, given

@pytest.mark.parametrize(("own", "names", "text", "shown"), [
    # A name inside xcheck's own string, as written, stays; every other occurrence of it is hidden.
    (["vpn to vpn via vpn"], {"vpn": "host"}, "tunnel: vpn to vpn via vpn", "tunnel: vpn to vpn via vpn"),
    (["vpn to vpn via vpn"], {"vpn": "host"}, "vpn to vpn", "host-1 to host-1"),
    # The whole label must lie in the string: "vpn-gateway" is no part of "gateway given".
    (["gateway given"], {"gateway": "host"}, "vpn-gateway given", "host-1 given"),
    (["no gateway"], {"gateway": "host"}, "no gateway-2", "no host-1"),
    # A string made of the names alone says nothing of xcheck's: "gw-vpn" is the host, whichever
    # of its names is looked at (the longest is taken out first).
    (["gw-vpn"], {"gw-vpn": "host", "vpn": "target"}, "via gw-vpn", "via target-1"),
])
def test_own_wording_given(own, names, text, shown, monkeypatch):
    monkeypatch.setattr(report_module, "_own_wording", lambda: {s: s.lower() for s in own})
    monkeypatch.setattr(report_module, "_own_wording_at_once", lambda: "\0".join(s.lower() for s in own))
    assert _Scrubber(names)(text) == shown
