"""Config files and flags: defaults, field paths in every error, unknown keys refused."""

from __future__ import annotations

import pytest

from agent.config import DEFAULT_TIMEOUT_SECONDS, ConfigError, build_settings, load_file, parse_values
from checks.targets import Endpoint


def write(tmp_path, text):
    path = tmp_path / "xcheck.toml"
    path.write_text(text)
    return path


def test_a_full_config_file(tmp_path):
    path = write(tmp_path, """
ruleset = "azure-2015"
timeout_seconds = 1.5
stun = ["203.0.113.10", "stun.example.net:19302", "198.51.100.7:3479"]
expect = ["s2s"]

[requirements]
bandwidth_mbps = 250
clients = 40
private_only = false
vpn_device = true
colocation = false
nsp_wan = true
""")
    settings = build_settings(load_file(path))
    assert settings.ruleset == "azure-2015" and settings.timeout_seconds == 1.5
    assert settings.stun == (Endpoint("203.0.113.10", 3478), Endpoint("stun.example.net", 19302), Endpoint("198.51.100.7", 3479))
    assert settings.expect == ("s2s",)
    r = settings.requirements
    assert (r.bandwidth_bits_per_second, r.clients, r.private_only, r.vpn_device, r.colocation, r.nsp_wan) == (
        250e6, 40, False, True, False, True)


def test_defaults_leave_declarations_undeclared():
    settings = build_settings()
    assert settings.ruleset == "azure-current" and settings.timeout_seconds == DEFAULT_TIMEOUT_SECONDS
    assert settings.requirements.vpn_device is None and settings.requirements.colocation is None
    assert len(settings.stun) >= 2


def test_flags_override_the_file(tmp_path):
    path = write(tmp_path, 'timeout_seconds = 9\n[requirements]\nclients = 3\n')
    settings = build_settings(load_file(path), parse_values({"timeout_seconds": 2.0}, "command line"))
    assert settings.timeout_seconds == 2.0 and settings.requirements.clients == 3


def test_every_error_is_reported_with_its_field_path(tmp_path):
    path = write(tmp_path, """
ruleset = "azure-1999"
timeout_seconds = -1
stun = ["host:99999", 7]
colour = "blue"

[requirements]
bandwidth_mbps = "fast"
clients = 0
vpn_device = "yes"
wan = true
""")
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    problems = "\n".join(caught.value.problems)
    for expected in (
        "ruleset: expected one of azure-2015, azure-current, got 'azure-1999'",
        "timeout_seconds: must be at least 1 and at most 300",
        "stun: [0] 'host:99999': port must be a number from 1 to 65535; [1] expected 'HOST[:PORT]', got 7",
        "colour: unknown key",
        "requirements.bandwidth_mbps: expected a number, got 'fast'",
        "requirements.clients: expected a whole number from 1 to 1000000, got 0",
        "requirements.vpn_device: expected true or false, got 'yes'",
        "requirements.wan: unknown key",
    ):
        assert expected in problems
    assert all(line.startswith(str(path)) for line in caught.value.problems)


def test_a_section_given_as_a_value(tmp_path):
    with pytest.raises(ConfigError, match=r"requirements: expected a table"):
        load_file(write(tmp_path, "requirements = 5\n"))


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"ruleset = \n", "not valid TOML"), (b"\xff\xfe", "not UTF-8")],
)
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_file(path)


def test_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(tmp_path / "absent.toml")


def test_flag_labels_name_the_flag():
    with pytest.raises(ConfigError, match="command line: --timeout: must be at least 1"):
        parse_values({"timeout_seconds": 0.0}, "command line", {"timeout_seconds": "--timeout"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("stun.example.net", Endpoint("stun.example.net", 3478)), ("203.0.113.10:3479", Endpoint("203.0.113.10", 3479))],
)
def test_endpoint_parsing(text, expected):
    assert Endpoint.parse(text, 3478) == expected


@pytest.mark.parametrize("text", ["", ":3478", "host:", "host:0", "host:http", "[2001:db8::1", "[::1]x", "[2001:db8::1]",
                                  "2001:db8::1"])
def test_bad_endpoints(text):
    with pytest.raises(ValueError):
        Endpoint.parse(text, 3478)


def test_the_azurect_profile_and_a_stream_count_conflict():
    with pytest.raises(ConfigError, match="azurect profile sets its own stages"):
        build_settings(parse_values({"throughput_profile": "azurect", "streams": 4}, "command line"))
    assert build_settings(parse_values({"throughput_profile": "azurect"}, "x")).targets.throughput.streams == (1, 6, 16)
