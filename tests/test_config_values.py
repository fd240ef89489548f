"""Every config field's accepted, normalised and refused values, with the exact message a user reads,
and the bounds of the messages themselves (issue 13). In-process and fast: no subprocess, no network."""

from __future__ import annotations

import pytest

from agent import config
from agent.config import (MAX_DOTS_PER_LINE, MAX_PROBLEMS_SHOWN, ConfigError, build_settings, from_environment,
                          load_file, parse_values)
from agent.verdicts import available_rulesets
from checks.targets import Endpoint

RULESETS = ", ".join(available_rulesets())  # the rule files present, as messages list them
FINGERPRINT = "0123456789abcdef" * 4
PROXY_USAGE = "expected http://[USER:PASSWORD@]HOST:PORT"
NOT_A_NAME = ("not an IP address or a host name (labels of 1-63 letters, digits and hyphens, not starting or ending "
              "with a hyphen, joined by dots)")
IPV6 = "is IPv6: xcheck measures IPv4 paths; give an IPv4 address or a name with an A record"


def shown(text: str) -> str:
    """A value as messages show it: quoted and escaped, and cut in the middle past 60 characters."""
    quoted = repr(text)
    return quoted if len(quoted) <= 60 else quoted[:28] + "..." + quoted[-29:]


def problems_of(raw: dict, labels: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_values(raw, "x", labels)
    return caught.value.problems


# ---- every field, through parse_values as flags and the file reach it ----

@pytest.mark.parametrize(
    ("field", "given", "stored"),
    [
        ("ruleset", "azure-2015", ("ruleset", "azure-2015")),
        ("timeout_seconds", 1, ("timeout_seconds", 1.0)),
        ("stun", [], ("stun", ())),
        ("stun", ["Stun.Example.NET", " 203.0.113.9:3479 "],
         ("stun", (Endpoint("stun.example.net", 3478), Endpoint("203.0.113.9", 3479)))),
        ("expect", ["p2s", "expressroute_nsp"], ("expect", ("p2s", "expressroute_nsp"))),
        ("iperf", "198.51.100.5", ("iperf", Endpoint("198.51.100.5", 5201))),  # iperf3's port, not STUN's
        ("iperf", "Far.Example:5202", ("iperf", Endpoint("far.example", 5202))),
        ("gateway", [" VPN.Example.NET ", "198.51.100.4"], ("gateway", ("vpn.example.net", "198.51.100.4"))),
        ("gateway_fingerprint", FINGERPRINT.upper(), ("gateway_fingerprint", FINGERPRINT)),
        ("gateway_fingerprint", ":".join(FINGERPRINT[i:i + 2] for i in range(0, 64, 2)),
         ("gateway_fingerprint", FINGERPRINT)),
        ("proxy", "http://u:p@proxy.example.net:3128/", ("proxy", "http://u:p@proxy.example.net:3128/")),
        ("throughput", False, ("throughput", False)),
        ("throughput_seconds", 2.5, ("throughput_seconds", 2.5)),
        ("streams", 16, ("streams", 16)),
        ("throughput_profile", "azurect", ("throughput_profile", "azurect")),
        ("requirements.bandwidth_mbps", 1e-3, ("requirements.bandwidth_bits_per_second", 1e3)),
        ("requirements.clients", 7, ("requirements.clients", 7)),
        ("requirements.private_only", True, ("requirements.private_only", True)),
        ("requirements.vpn_device", False, ("requirements.vpn_device", False)),
        ("requirements.colocation", True, ("requirements.colocation", True)),
        ("requirements.nsp_wan", False, ("requirements.nsp_wan", False)),
    ],
)
def test_accepted_values_are_stored_normalised(field, given, stored):
    values = parse_values({field: given}, "x")
    assert list(values.items()) == [stored]
    assert type(values[stored[0]]) is type(stored[1])  # 1 is stored as 1.0 where a float is meant


@pytest.mark.parametrize(
    ("field", "given", "problem"),
    [
        ("ruleset", "Azure-2015", f"expected one of {RULESETS}, got 'Azure-2015'"),  # no case folding
        ("ruleset", 2015, f"expected one of {RULESETS}, got 2015"),
        ("expect", ["p2s", "vnet"], "[1] expected one of p2s, s2s, expressroute_exp, expressroute_nsp, got 'vnet'"),
        ("expect", "p2s", "expected a list, got 'p2s'"),
        ("expect", ["p2s"] * 5, "at most 4 entries, got 5"),
        ("throughput_profile", "AzureCT", "expected one of default, azurect, got 'AzureCT'"),
        ("stun", "stun.example.net", "expected a list, got 'stun.example.net'"),
        ("stun", [3478, "h_x"], f"[0] expected 'HOST[:PORT]', got 3478; [1] 'h_x': {NOT_A_NAME}"),
        ("iperf", ["198.51.100.5"], "expected 'HOST[:PORT]', got ['198.51.100.5']"),
        ("iperf", "198.51.100.5:0", "'198.51.100.5:0': port must be a number from 1 to 65535"),
        ("gateway", [7, "vpn.example.net"], "[0] expected an IP address or a host name, got 7"),
        ("gateway", ["2001:db8::1"], f"[0] '2001:db8::1': 2001:db8::1 {IPV6}"),
        ("gateway", "vpn.example.net", "expected a list, got 'vpn.example.net'"),
        ("gateway_fingerprint", 5, "expected a SHA-256 fingerprint (64 hex digits, colons allowed), got 5"),
        ("gateway_fingerprint", FINGERPRINT[:63],
         f"expected a SHA-256 fingerprint (64 hex digits, colons allowed), got {shown(FINGERPRINT[:63])}"),
        ("gateway_fingerprint", FINGERPRINT + "0",
         f"expected a SHA-256 fingerprint (64 hex digits, colons allowed), got {shown(FINGERPRINT + '0')}"),
        ("gateway_fingerprint", "g" + FINGERPRINT[1:],
         f"expected a SHA-256 fingerprint (64 hex digits, colons allowed), got {shown('g' + FINGERPRINT[1:])}"),
        ("throughput", "true", "expected true or false, got 'true'"),
        ("throughput", 1, "expected true or false, got 1"),
        ("streams", 4.0, "expected a whole number from 1 to 16, got 4.0"),
        ("streams", "4", "expected a whole number from 1 to 16, got '4'"),
        ("timeout_seconds", "3", "expected a number, got '3'"),
        ("timeout_seconds", True, "expected a number, got True"),
        ("timeout_seconds", 0.999, "must be at least 1 and at most 300, got 0.999"),
        ("requirements.bandwidth_mbps", False, "expected a number, got False"),
        ("requirements.bandwidth_mbps", -0.0, "must be greater than 0 and at most 100000, got -0.0"),
        ("requirements.clients", 1_000_000.0, "expected a whole number from 1 to 1000000, got 1000000.0"),
        ("requirements.nsp_wan", None, "expected true or false, got None"),
    ],
)
def test_refused_values_are_named_with_their_field(field, given, problem):
    assert problems_of({field: given}) == [f"x: {field}: {problem}"]


# ---- the validator kinds, each at its own edges ----
# FIELDS holds validators built when agent.config was imported; these tests build theirs when they
# run, so each kind is pinned on itself (a mutation tool plants its bug after the import: the table's
# validators would never carry it).

KINDS = {
    "from 1 to 300": lambda: config._number(1, 300, minimum_allowed=True),
    "above 0 to 10": lambda: config._number(0, 10),
    "whole 1 to 16": lambda: config._whole_number(16),
    "choice": lambda: config._choice(("default", "azurect")),
    "stun endpoint": lambda: config._endpoint(3478),
    "iperf endpoint": lambda: config._endpoint(5201),
    "two hosts": lambda: config._list_of(config._host, 2),
    "three booleans": lambda: config._list_of(config._boolean, 3),
}


@pytest.mark.parametrize(
    ("kind", "value", "result"),
    [
        ("from 1 to 300", 1, 1.0),
        ("from 1 to 300", 300, 300.0),
        ("above 0 to 10", 1e-12, 1e-12),
        ("above 0 to 10", 10, 10.0),
        ("whole 1 to 16", 1, 1),
        ("whole 1 to 16", 16, 16),
        ("choice", "azurect", "azurect"),
        ("stun endpoint", "203.0.113.1", Endpoint("203.0.113.1", 3478)),
        ("iperf endpoint", "Far.Example:5202", Endpoint("far.example", 5202)),
        ("two hosts", ["A.Example", "198.51.100.1"], ("a.example", "198.51.100.1")),
        ("two hosts", [], ()),
    ],
)
def test_each_validator_kind_takes_its_edges(kind, value, result):
    taken = KINDS[kind]()(value)
    assert taken == result and type(taken) is type(result)


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("from 1 to 300", 0.9999, "must be at least 1 and at most 300, got 0.9999"),
        ("from 1 to 300", 300.01, "must be at least 1 and at most 300, got 300.01"),
        ("from 1 to 300", float("nan"), "must be a finite number at least 1 and at most 300, got nan"),
        ("above 0 to 10", 0, "must be greater than 0 and at most 10, got 0"),
        ("above 0 to 10", True, "expected a number, got True"),
        ("whole 1 to 16", 0, "expected a whole number from 1 to 16, got 0"),
        ("whole 1 to 16", 17, "expected a whole number from 1 to 16, got 17"),
        ("whole 1 to 16", True, "expected a whole number from 1 to 16, got True"),
        ("whole 1 to 16", 2.0, "expected a whole number from 1 to 16, got 2.0"),
        ("whole 1 to 16", "3", "expected a whole number from 1 to 16, got '3'"),
        ("choice", "Default", "expected one of default, azurect, got 'Default'"),
        ("stun endpoint", 3478, "expected 'HOST[:PORT]', got 3478"),
        ("two hosts", "a.example", "expected a list, got 'a.example'"),
        ("two hosts", ["a.example", "b.example", "c.example"], "at most 2 entries, got 3"),
        ("three booleans", [True, "yes", 0],
         "[1] expected true or false, got 'yes'; [2] expected true or false, got 0"),
    ],
)
def test_each_validator_kind_refuses_past_its_edges(kind, value, message):
    validator = KINDS[kind]()
    with pytest.raises(ValueError) as caught:
        validator(value)
    assert str(caught.value) == message


def test_a_choice_from_a_function_is_read_when_a_value_is_checked():
    """Rule sets are files: the ones present when the config is read count, not those at import."""
    rulesets = ["azure-current"]
    check = config._choice(lambda: rulesets)
    rulesets.append("azure-next")
    assert check("azure-next") == "azure-next"
    with pytest.raises(ValueError, match="expected one of azure-current, azure-next, got 'azure-2015'"):
        check("azure-2015")


# ---- the proxy: every check, and the value kept as given ----

def long_proxy(length: int) -> str:
    """A valid proxy URL of exactly `length` characters (a long password)."""
    head, tail = "http://user:", "@proxy.example.net:3128"
    return head + "p" * (length - len(head) - len(tail)) + tail


@pytest.mark.parametrize(
    "proxy", ["http://proxy.example.net:1", "http://proxy.example.net:65535", "http://198.51.100.3:3128",
              long_proxy(1024)],
)
def test_a_proxy_is_kept_as_given(proxy):
    assert parse_values({"proxy": proxy}, "x") == {"proxy": proxy}


@pytest.mark.parametrize(
    ("proxy", "problem"),
    [
        (3128, PROXY_USAGE),
        (["http://proxy.example.net:3128"], PROXY_USAGE),
        (long_proxy(1025), PROXY_USAGE),
        ("http://proxy.example.net:0", f"{PROXY_USAGE}; the port must be from 1 to 65535"),
        ("http://proxy.example.net:65536", PROXY_USAGE),
        ("http://[2001:db8::3]:3128", f"{PROXY_USAGE}; its host: 2001:db8::3 {IPV6}"),
        ("http://user:secret@bad_host:3128", f"{PROXY_USAGE}; its host: {NOT_A_NAME}"),
        ("http://user:secret@1.2.3:3128",
         f"{PROXY_USAGE}; its host: not an IPv4 address (four numbers 0-255, without leading zeros)"),
    ],
)
def test_a_bad_proxy_is_refused_without_its_password(proxy, problem):
    assert problems_of({"proxy": proxy}, {"proxy": "--proxy"}) == [f"x: --proxy: {problem}"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"HTTPS_PROXY": "http://192.0.2.8:8080", "https_proxy": "http://192.0.2.9:8080"},
         {"proxy": "http://192.0.2.8:8080"}),  # curl's order: the upper-case name first
        ({"HTTPS_PROXY": "", "https_proxy": "http://192.0.2.9:8080"}, {"proxy": "http://192.0.2.9:8080"}),
        ({"HTTPS_PROXY": "", "https_proxy": ""}, {}),
        ({"HTTP_PROXY": "http://192.0.2.8:8080", "ALL_PROXY": "http://192.0.2.8:8080"}, {}),  # not for CONNECT
    ],
)
def test_https_proxy_variables(environ, expected):
    assert from_environment(environ) == expected


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy"])
def test_a_bad_https_proxy_names_the_variable(variable):
    with pytest.raises(ConfigError) as caught:
        from_environment({variable: "http://user:secret@proxy.example.net"})
    assert caught.value.lines() == [f"environment: {variable}: {PROXY_USAGE}"]


# ---- the messages: field paths, unknown keys, sections, and the bound on how many are shown ----

def test_a_section_given_as_a_value_and_the_problems_after_it(tmp_path):
    path = tmp_path / "xcheck.toml"
    path.write_text('requirements = 5\nColour = "blue"\nstreams = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    assert caught.value.problems == [
        f"{path}: requirements: expected a table ([requirements]), got 5",
        f"{path}: Colour: unknown key",
        f"{path}: streams: expected a whole number from 1 to 16, got 0",
    ]
    assert caught.value.note.startswith("known keys: ruleset, timeout_seconds, stun, expect, iperf, gateway,")


@pytest.mark.parametrize(
    ("key", "shown"),
    [("Colour", "Colour"), ("a-b_c.9", "a-b_c.9"), ("k" * 64, "k" * 64),
     ("k" * 65, "'" + "k" * 27 + "..." + "k" * 28 + "'"),  # quoted, and cut in the middle
     ("two words", "'two words'"), ("", "''"), ("bell\a", "'bell\\x07'")],
)
def test_unknown_keys_are_shown_as_typed_or_quoted(key, shown):
    assert problems_of({key: 1}) == [f"x: {shown}: unknown key"]


def test_a_bad_value_alone_lists_no_known_keys():
    with pytest.raises(ConfigError) as caught:
        parse_values({"streams": 0}, "command line", {"streams": "--streams"})
    assert caught.value.note is None
    assert caught.value.lines() == ["command line: --streams: expected a whole number from 1 to 16, got 0"]


@pytest.mark.parametrize(
    ("count", "more"),
    [(1, None), (MAX_PROBLEMS_SHOWN - 1, None), (MAX_PROBLEMS_SHOWN, None), (MAX_PROBLEMS_SHOWN + 1, 1),
     (MAX_PROBLEMS_SHOWN + 25, 25)],
)
@pytest.mark.parametrize("note", [None, "known keys: a, b"])
def test_the_problems_shown_are_bounded_at_exactly_max_problems_shown(count, more, note):
    problems = [f"x: k{i}: unknown key" for i in range(count)]
    error = ConfigError(problems, note)
    expected = problems[:MAX_PROBLEMS_SHOWN] + ([f"... and {more} more problems"] if more else []) + (
        [note] if note else [])
    assert error.lines() == expected
    assert error.lines() == expected and error.problems == problems  # showing them consumes nothing
    assert str(error) == "\n".join(expected)


def test_the_azurect_profile_refuses_a_stream_count_in_so_many_words():
    with pytest.raises(ConfigError) as caught:
        build_settings({"throughput_profile": "azurect"}, {"streams": 4})
    assert caught.value.lines() == [
        "streams: the azurect profile sets its own stages (1, 6, 16 streams); give one or the other"]


def test_layers_later_win_and_requirements_merge():
    settings = build_settings({"proxy": "http://192.0.2.8:8080", "requirements.clients": 3},
                              {"requirements.vpn_device": True}, {"proxy": "http://192.0.2.9:8080"})
    assert settings.proxy == "http://192.0.2.9:8080" and settings.targets.proxy == "http://192.0.2.9:8080"
    assert settings.requirements.to_dict() == {
        "bandwidth_bits_per_second": None, "clients": 3, "private_only": None, "vpn_device": True,
        "colocation": None, "nsp_wan": None}


# ---- the file: what it cannot be ----

@pytest.mark.parametrize(
    ("lines", "refused_line"),
    [
        (["# " + "." * MAX_DOTS_PER_LINE], None),  # at the bound: a comment, read as TOML
        (["# " + "." * (MAX_DOTS_PER_LINE + 1)], 1),
        (["streams = 4", "", "# " + "." * (MAX_DOTS_PER_LINE + 1), "ruleset = 1"], 3),
        (["a" + ".a" * (MAX_DOTS_PER_LINE + 1) + " = 1"], 1),  # a key tomllib would take: refused first
    ],
)
def test_dots_per_line_are_bounded_and_the_line_is_named(tmp_path, lines, refused_line):
    path = tmp_path / "xcheck.toml"
    path.write_text("\n".join(lines) + "\n")
    if refused_line is None:
        assert load_file(path) == {}
        return
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    # Said once, as what it is: not wrapped as "not valid TOML" (a ConfigError is a ValueError too).
    assert caught.value.lines() == [f"{path}: line {refused_line}: not a config: more than {MAX_DOTS_PER_LINE} dots on one line"]


def test_a_file_that_cannot_be_read_says_why_in_words(tmp_path):
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_file(missing)
    assert caught.value.lines() == [f"{missing}: cannot read: No such file or directory"]
    with pytest.raises(ConfigError) as caught:
        load_file(tmp_path)
    assert caught.value.lines() == [f"{tmp_path}: cannot read: Is a directory"]
