"""Nothing in a config file or a flag is trusted to be small or sane: every number is finite and in
its stated range, every host is an address or an RFC 1123 name, every list and the file itself are
bounded, and however bad the input, the answer is exit 2 with a bounded message naming the field."""

from __future__ import annotations

import math

import pytest
from conftest import run_xcheck

from agent.config import (MAX_CONFIG_BYTES, MAX_GATEWAYS, MAX_PROBLEMS_SHOWN, MAX_STUN_SERVERS, ConfigError,
                          build_settings, load_file, parse_values)
from checks.targets import Endpoint

# Loopback's discard port: nothing answers there, and nothing leaves the machine.
SILENT_STUN = "127.0.0.1:9"
FLAG_LABELS = {"timeout_seconds": "--timeout", "throughput_seconds": "--throughput-seconds", "streams": "--streams",
               "requirements.bandwidth_mbps": "--bandwidth-mbps", "requirements.clients": "--clients"}


def write(tmp_path, text: str | bytes):
    path = tmp_path / "xcheck.toml"
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def problems_of(raw: dict, labels=None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_values(raw, "command line", labels)
    return "\n".join(caught.value.lines())


# ---- numbers ----

@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("timeout_seconds", 1, 1.0), ("timeout_seconds", 300, 300.0),
        ("throughput_seconds", 1, 1.0), ("throughput_seconds", 300.0, 300.0),
        ("requirements.bandwidth_mbps", 0.5, 0.5e6), ("requirements.bandwidth_mbps", 100_000, 100e9),
        ("requirements.clients", 1, 1), ("requirements.clients", 1_000_000, 1_000_000),
        ("streams", 1, 1), ("streams", 16, 16),
    ],
)
def test_numbers_at_the_edges_of_their_range_are_taken(field, value, stored):
    values = parse_values({field: value}, "x")
    assert list(values.values()) == [stored]


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout_seconds", NAN, "must be a finite number at least 1 and at most 300, got nan"),
        ("timeout_seconds", INF, "must be a finite number at least 1 and at most 300, got inf"),
        ("timeout_seconds", -INF, "must be a finite number at least 1 and at most 300, got -inf"),
        ("timeout_seconds", 0, "must be at least 1 and at most 300, got 0"),
        ("timeout_seconds", -1.5, "must be at least 1 and at most 300, got -1.5"),
        ("timeout_seconds", 300.5, "must be at least 1 and at most 300, got 300.5"),
        ("timeout_seconds", 10**30, "must be at least 1 and at most 300"),
        ("throughput_seconds", INF, "must be a finite number at least 1 and at most 300, got inf"),
        ("throughput_seconds", 0.5, "must be at least 1 and at most 300, got 0.5"),
        ("requirements.bandwidth_mbps", NAN, "must be a finite number greater than 0 and at most 100000, got nan"),
        ("requirements.bandwidth_mbps", INF, "must be a finite number greater than 0 and at most 100000, got inf"),
        ("requirements.bandwidth_mbps", 0, "must be greater than 0 and at most 100000, got 0"),
        ("requirements.bandwidth_mbps", 100_001, "must be greater than 0 and at most 100000, got 100001"),
        ("requirements.bandwidth_mbps", 2**63, "must be greater than 0 and at most 100000"),
        ("requirements.clients", 0, "expected a whole number from 1 to 1000000, got 0"),
        ("requirements.clients", -3, "expected a whole number from 1 to 1000000, got -3"),
        ("requirements.clients", 1_000_001, "expected a whole number from 1 to 1000000, got 1000001"),
        ("requirements.clients", 2.5, "expected a whole number from 1 to 1000000, got 2.5"),
        ("requirements.clients", NAN, "expected a whole number from 1 to 1000000, got nan"),
        ("requirements.clients", True, "expected a whole number from 1 to 1000000, got True"),
        ("streams", 0, "expected a whole number from 1 to 16, got 0"),
        ("streams", 17, "expected a whole number from 1 to 16, got 17"),
    ],
)
def test_numbers_outside_their_range_are_refused_by_name(field, value, message):
    text = problems_of({field: value}, FLAG_LABELS)
    assert f"command line: {FLAG_LABELS.get(field, field)}: {message}" in text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("timeout_seconds = nan", "timeout_seconds: must be a finite number at least 1 and at most 300, got nan"),
        ("timeout_seconds = inf", "timeout_seconds: must be a finite number"),
        ("throughput_seconds = -inf", "throughput_seconds: must be a finite number"),
        ("[requirements]\nbandwidth_mbps = nan", "requirements.bandwidth_mbps: must be a finite number"),
        ("[requirements]\nbandwidth_mbps = +inf", "requirements.bandwidth_mbps: must be a finite number"),
        ("[requirements]\nclients = 9223372036854775807", "requirements.clients: expected a whole number from 1"),
    ],
)
def test_toml_nan_and_inf_are_refused(tmp_path, line, message):
    with pytest.raises(ConfigError) as caught:
        load_file(write(tmp_path, line + "\n"))
    assert message in "\n".join(caught.value.problems)


def test_settings_hold_only_finite_numbers(tmp_path):
    config = write(tmp_path, "timeout_seconds = 2.5\n[requirements]\nbandwidth_mbps = 1e5\n")
    settings = build_settings(load_file(config))
    assert math.isfinite(settings.timeout_seconds) and settings.requirements.bandwidth_bits_per_second == 100e9


# ---- hosts: one rule for every target ----

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.10", Endpoint("203.0.113.10", 3478)),
        ("203.0.113.10:19302", Endpoint("203.0.113.10", 19302)),
        ("Stun.Example.NET", Endpoint("stun.example.net", 3478)),  # names are case-insensitive: one spelling
        ("stun.example.net.:3479", Endpoint("stun.example.net.", 3479)),
        ("3com.example", Endpoint("3com.example", 3478)),  # a label may start with a digit (RFC 1123)
        ("localhost", Endpoint("localhost", 3478)),
        ("a" * 63 + ".example", Endpoint("a" * 63 + ".example", 3478)),
        (".".join(["a" * 63] * 3) + "." + "b" * 61, Endpoint(".".join(["a" * 63] * 3) + "." + "b" * 61, 3478)),
        (" 198.51.100.7:65535 ", Endpoint("198.51.100.7", 65535)),
    ],
)
def test_accepted_and_normalised_endpoints(text, expected):
    assert Endpoint.parse(text, 3478) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("300.1.1.1", "not an IPv4 address"),
        ("1.2.3", "not an IPv4 address"),  # inet_aton would read it as 1.2.0.3
        ("127.1", "not an IPv4 address"),
        ("1.2.3.4.5", "not an IPv4 address"),
        ("010.0.0.1", "not an IPv4 address"),  # octal to inet_aton, decimal to a reader
        ("0x7f000001", "not an IPv4 address"),
        ("2130706433", "not an IPv4 address"),
        ("1.2.3.4.", "not an IPv4 address"),
        ("under_score.example", "not an IP address or a host name"),
        ("-lead.example", "not an IP address or a host name"),
        ("trail-.example", "not an IP address or a host name"),
        ("a..example", "not an IP address or a host name"),
        ("a" * 64 + ".example", "not an IP address or a host name"),
        ("xn--caf-dma.example/x", "not an IP address or a host name"),
        ("café.example", "not an IP address or a host name"),
        ("host\x1b[2J", "not an IP address or a host name"),
        ("host name", "not an IP address or a host name"),
        (".".join(["a" * 63] * 4), "a host name has at most 253 characters"),
        ("2001:db8::g", "not an IPv6 address"),
        ("[2001:db8::1%eth0]:3478", "is IPv6: xcheck measures IPv4 paths"),
        ("[2001:DB8:0:0::1]:3479", "2001:db8::1 is IPv6: xcheck measures IPv4 paths"),
        ("2001:db8::1", "2001:db8::1 is IPv6"),
        ("[example.net]:3478", "brackets are for an IPv6 address only"),
        ("host:0", "port must be a number from 1 to 65535"),
        ("host:65536", "port must be a number from 1 to 65535"),
        ("host:٣٤٧٨", "port must be a number from 1 to 65535"),  # Arabic-Indic digits: isdigit, not a port
        ("host:-1", "port must be a number from 1 to 65535"),
        ("", "empty host"),
        ("x" * 10_000_000, "10000000 characters is too long for HOST[:PORT]"),
    ],
)
def test_refused_endpoints(text, message):
    with pytest.raises(ValueError) as caught:
        Endpoint.parse(text, 3478)
    assert message in str(caught.value)
    assert len(str(caught.value)) < 700  # never the whole input back


@pytest.mark.parametrize("field", ["stun", "gateway", "iperf"])
@pytest.mark.parametrize(
    ("host", "message"),
    [("300.1.1.1", "not an IPv4 address"), ("bad_host", "not an IP address or a host name"),
     ("a" * 300, "253")],
)
def test_every_kind_of_target_is_judged_alike(field, host, message):
    value = host if field == "iperf" else [host]
    assert message in problems_of({field: value})


def test_gateways_take_a_host_without_a_port_and_are_normalised():
    assert parse_values({"gateway": ["VPN.Example.net", "198.51.100.4"]}, "x")["gateway"] == (
        "vpn.example.net", "198.51.100.4")
    assert "'vpn.example.net:443': a host without a port expected" in problems_of({"gateway": ["vpn.example.net:443"]})


@pytest.mark.parametrize(("field", "limit"), [("stun", MAX_STUN_SERVERS), ("gateway", MAX_GATEWAYS)])
def test_the_number_of_targets_is_bounded(field, limit):
    hosts = [f"198.51.100.{i}" for i in range(1, limit + 2)]
    assert len(parse_values({field: hosts[:limit]}, "x")[field]) == limit
    assert f"{field}: at most {limit} entries, got {limit + 1}" in problems_of({field: hosts})


@pytest.mark.parametrize(
    ("proxy", "ok"),
    [
        ("http://proxy.example.net:3128", True), ("http://user:secret@198.51.100.3:8080/", True),
        ("http://[2001:db8::3]:3128", False),  # IPv6: the probes measure IPv4 paths
        ("https://proxy.example.net:3128", False), ("http://proxy.example.net", False),
        ("http://proxy.example.net:0", False), ("http://proxy.example.net:70000", False),
        ("http://300.1.1.1:3128", False), ("http://bad_host:3128", False),
        ("http://user:secret@proxy.example.net:3128/path", False), ("http://" + "p" * 2000 + ":1", False),
    ],
)
def test_the_proxy_is_validated_without_echoing_its_password(proxy, ok):
    if ok:
        assert parse_values({"proxy": proxy}, "x") == {"proxy": proxy}
        return
    text = problems_of({"proxy": proxy})
    assert "proxy: expected http://[USER:PASSWORD@]HOST:PORT" in text
    assert "secret" not in text and len(text) < 400


def test_the_fingerprint_is_validated_and_normalised():
    digest = "AB:" * 31 + "AB"
    assert parse_values({"gateway_fingerprint": digest}, "x")["gateway_fingerprint"] == "ab" * 32
    text = problems_of({"gateway_fingerprint": "f" * 1_000_000})
    assert "expected a SHA-256 fingerprint" in text and len(text) < 300


# ---- the file itself ----

@pytest.mark.parametrize(
    "nesting",
    ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b = " * 5000 + "}" * 5000,
     "stun = " + "[" * 5000 + "]" * 5000],
    ids=["arrays", "inline-tables", "known-key"],
)
def test_deep_nesting_is_a_config_error(tmp_path, nesting):
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_file(write(tmp_path, nesting + "\n"))


def test_moderate_nesting_in_a_known_key_is_shown_bounded(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_file(write(tmp_path, "stun = " + "[" * 100 + "]" * 100 + "\n"))
    assert "stun: [0] expected 'HOST[:PORT]', got [[[...]]]" in caught.value.problems[0]


def test_the_file_size_is_bounded(tmp_path):
    exact = write(tmp_path, b"#" * (MAX_CONFIG_BYTES - 1) + b"\n")
    assert load_file(exact) == {}
    with pytest.raises(ConfigError, match=f"larger than {MAX_CONFIG_BYTES} bytes"):
        load_file(write(tmp_path, b"#" * MAX_CONFIG_BYTES + b"\n"))


def test_a_file_without_a_size_is_read_only_up_to_the_bound():
    """/dev/zero says its size is 0 and never ends: reading stops at the bound."""
    with pytest.raises(ConfigError, match="larger than"):
        load_file(__import__("pathlib").Path("/dev/zero"))


def test_unknown_keys_list_the_known_keys_once_and_problems_are_bounded(tmp_path):
    keys = "".join(f"unknown_{i} = 1\n" for i in range(MAX_PROBLEMS_SHOWN + 30))
    with pytest.raises(ConfigError) as caught:
        load_file(write(tmp_path, keys + "[requirements]\nwan = true\n"))
    lines = caught.value.lines()
    assert len(caught.value.problems) == MAX_PROBLEMS_SHOWN + 31
    assert len(lines) == MAX_PROBLEMS_SHOWN + 2
    assert lines[MAX_PROBLEMS_SHOWN] == "... and 31 more problems"
    assert lines[-1].startswith("known keys: ruleset, timeout_seconds, stun")
    assert "\n".join(lines).count("requirements.bandwidth_mbps") == 1


def test_an_unknown_key_is_shown_escaped_and_bounded(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_file(write(tmp_path, '"evil\\u001b[2J' + "k" * 5000 + '" = 1\n'))
    shown = caught.value.problems[0]
    assert "\x1b" not in shown and "\\x1b[2J" in shown and len(shown) < len(str(tmp_path)) + 200


# ---- as a user meets them: flags and files through `xcheck run` ----

@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "nan"], "--timeout: must be a finite number at least 1 and at most 300, got nan"),
        (["--timeout", "1e999"], "--timeout: must be a finite number"),
        (["--bandwidth-mbps", "nan"], "--bandwidth-mbps: must be a finite number"),
        (["--bandwidth-mbps", "inf"], "--bandwidth-mbps: must be a finite number"),
        (["--bandwidth-mbps", "-5"], "--bandwidth-mbps: must be greater than 0 and at most 100000, got -5.0"),
        (["--throughput-seconds", "inf"], "--throughput-seconds: must be a finite number at least 1"),
        (["--clients", "99999999999999999999"], "--clients: expected a whole number from 1 to 1000000"),
        (["--streams", "17"], "--streams: expected a whole number from 1 to 16, got 17"),
        (["--stun", "300.1.1.1"], "--stun: [1] '300.1.1.1': not an IPv4 address"),
        (["--gateway", "1.2.3"], "--gateway: [0] '1.2.3': not an IPv4 address"),
        (["--iperf", "far_end.example:5201"], "--iperf: 'far_end.example:5201': not an IP address or a host name"),
        (["--proxy", "http://user:secret@proxy:99999"], "--proxy: expected http://[USER:PASSWORD@]HOST:PORT"),
        ([arg for i in range(MAX_STUN_SERVERS) for arg in ("--stun", f"198.51.100.{i + 1}")],
         f"--stun: at most {MAX_STUN_SERVERS} entries, got {MAX_STUN_SERVERS + 1}"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(args, message):
    completed, _ = run_xcheck("run", "--stun", SILENT_STUN, *args)
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr and completed.stdout == ""
    assert "secret" not in completed.stderr


def test_a_huge_host_name_is_refused_in_a_bounded_message():
    completed, _ = run_xcheck("run", "--stun", SILENT_STUN, "--stun", "s" * 100_000, "--format", "json")
    assert completed.returncode == 2 and "100000 characters is too long" in completed.stderr
    assert completed.stdout == "" and len(completed.stderr) < 500


def test_a_5_mb_config_of_unknown_keys_exits_2_with_a_short_message(tmp_path):
    config = write(tmp_path, "".join(f"unknown_key_{i} = {i}\n" for i in range(250_000)).encode())
    assert config.stat().st_size > 5_000_000
    completed, _ = run_xcheck("run", "--stun", SILENT_STUN, "--config", str(config))
    assert completed.returncode == 2 and f"larger than {MAX_CONFIG_BYTES} bytes" in completed.stderr
    assert len(completed.stderr) < 1000


def test_a_config_just_under_the_bound_of_unknown_keys_prints_a_bounded_list(tmp_path):
    keys = MAX_CONFIG_BYTES // len("k9999 = 1\n")
    config = write(tmp_path, "".join(f"k{i} = 1\n" for i in range(keys)).encode())
    assert config.stat().st_size < MAX_CONFIG_BYTES
    completed, _ = run_xcheck("run", "--stun", SILENT_STUN, "--config", str(config))
    assert completed.returncode == 2
    assert f"and {keys - MAX_PROBLEMS_SHOWN} more problems" in completed.stderr
    assert completed.stderr.count("known keys:") == 1
    assert len(completed.stderr.splitlines()) == MAX_PROBLEMS_SHOWN + 3 and len(completed.stderr) < 5000


@pytest.mark.parametrize("nesting", ["a = " + "[" * 30_000 + "]" * 30_000, "a = " + "{b = " * 10_000 + "}" * 10_000])
def test_a_deeply_nested_config_exits_2(tmp_path, nesting):
    completed, _ = run_xcheck("run", "--stun", SILENT_STUN, "--config", str(write(tmp_path, nesting + "\n")))
    assert completed.returncode == 2, completed.stderr
    assert "nested too deeply" in completed.stderr and "internal error" not in completed.stderr


# ---- HTTPS_PROXY, the layer below the config file ----

def test_https_proxy_from_the_environment_is_validated_like_the_flag():
    from agent.config import from_environment

    assert from_environment({"HTTPS_PROXY": "http://proxy.example.net:3128"}) == {"proxy": "http://proxy.example.net:3128"}
    assert from_environment({"https_proxy": "http://192.0.2.8:8080"}) == {"proxy": "http://192.0.2.8:8080"}
    assert from_environment({}) == {}
    with pytest.raises(ConfigError) as refused:
        from_environment({"HTTPS_PROXY": "socks5://user:secret@proxy.example.net:1080"})
    assert "HTTPS_PROXY: expected http://[USER:PASSWORD@]HOST:PORT" in refused.value.lines()[0]
    assert "secret" not in "".join(refused.value.lines())


def test_a_bad_https_proxy_exits_2_only_where_it_would_be_used():
    import os
    import subprocess

    from conftest import XCHECK

    environ = os.environ | {"HTTPS_PROXY": "http://user:secret@proxy.example.net"}  # no port

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([XCHECK, "run", "--stun", SILENT_STUN, "--timeout", "1", "--format", "json", *args],
                              env=environ, capture_output=True, text=True, timeout=60)

    # Refused before measuring, so the loopback gateway is never probed.
    bad = run("--gateway", "127.0.0.1")
    assert bad.returncode == 2 and "HTTPS_PROXY: expected http://" in bad.stderr and "secret" not in bad.stderr
    # No gateway: no TLS probe, the variable is not read. --proxy wins over it (and is never used here).
    assert run().returncode == 0
    unused = subprocess.run([XCHECK, "run", "--stun", SILENT_STUN, "--timeout", "1", "--format", "json",
                             "--proxy", "http://192.0.2.8:3128"], env=environ, capture_output=True, text=True, timeout=60)
    assert unused.returncode == 0, unused.stderr
