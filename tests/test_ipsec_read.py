"""The IPsec readers: swanctl.conf, strongSwan's and Libreswan's ipsec.conf, proposals, PSKs, and
input files read bounded (agent/audit/sources.py).

The corpus is tests/fixtures/ipsec/ (its README says what each file breaks); that the real parsers
accept it is tests/test_lab_ipsec_parsers.py. Here each reader is held to what those parsers do, as
read in their sources (strongSwan 5.9.8, Libreswan 4.10), and hostile input must end in a FAILED
status that says why: never an exception, never a hang, never a secret in any message.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from agent.audit.findings import ParseState
from agent.audit.ipsec.ipsec_conf import LIBRESWAN, STRONGSWAN, read_host_ipsec, read_ipsec_conf
from agent.audit.ipsec.model import Proposal
from agent.audit.ipsec.proposals import (ESP, IKE, STRONGSWAN_DEFAULT, ProposalError, implementation_default,
                                         libreswan_default, parse_libreswan, parse_strongswan, parse_strongswan_list)
from agent.audit.ipsec.secrets import SharedSecret, psk_for
from agent.audit.ipsec.swanctl import parse_bytes, parse_time, read_swanctl, read_swanctl_with
from agent.audit.sources import MIB, Sources, SourceError

FIXTURES = Path(__file__).parent / "fixtures" / "ipsec"
GOOD_PSK = "Xk3pQ9vL2mN8rT5wY7zB4cF6hJ1sD0gA"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def only(statuses, state=ParseState.PARSED):
    assert [s.status for s in statuses] == [state] * len(statuses), statuses
    return statuses


# --- proposals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, protocol, expected", [
    ("aes256-sha256-modp2048", IKE, (("aes256",), ("sha256",), (), (14,))),
    ("aes256gcm16-prfsha384-ecp384", IKE, (("aes256gcm16",), (), ("sha384",), (20,))),
    ("aes128-aes256-sha1-sha256-modp1024-modp2048", IKE, (("aes128", "aes256"), ("sha1", "sha256"), (), (2, 14))),
    ("aes256-sha512-curve25519", IKE, (("aes256",), ("sha512",), (), (31,))),
    ("3des-md5-modp768", IKE, (("3des",), ("md5",), (), (1,))),
    ("aes256gcm16", ESP, (("aes256gcm16",), (), (), ())),
    ("aes128gcm128-modp2048", ESP, (("aes128gcm16",), (), (), (14,))),
    ("aes256gcm12-esn", ESP, (("aes256gcm12",), (), (), ())),
    ("aes256-sha256-modp2048-none", ESP, (("aes256",), ("sha256",), (), (14, 0))),  # PFS optional
    ("aes-sha1", ESP, (("aes128",), ("sha1",), (), ())),
    ("AES256-SHA256-prfsha256-MODP2048", ESP, (("aes256",), ("sha256",), (), (14,))),  # no PRF in ESP
])
def test_strongswan_proposals_read_into_the_models_vocabulary(text, protocol, expected):
    proposal = parse_strongswan(text, protocol)
    assert (proposal.encryption, proposal.integrity, proposal.prf, proposal.dh_groups) == expected
    assert proposal.text == text


@pytest.mark.parametrize("text, protocol, why", [
    ("aes256-sha256", IKE, "a DH group is mandatory"),
    ("aes256gcm16-modp2048", IKE, "a PRF algorithm is mandatory"),  # AEAD in IKE needs a PRF
    ("aes256-aes256gcm16-sha256-modp2048", IKE, "classic and combined-mode"),
    ("aes256-sha256-modp2048x", IKE, "algorithm 'modp2048x' not recognized"),
    ("sha256-modp2048", ESP, "an encryption algorithm is mandatory"),
    ("aes256-prfsha256-modp2048", IKE, "an integrity algorithm is mandatory"),
    ("", ESP, "an empty proposal"),
])
def test_strongswan_refuses_what_charon_refuses(text, protocol, why):
    with pytest.raises(ProposalError, match=why):
        parse_strongswan(text, protocol)


def test_strongswan_default_and_the_legacy_strict_flag():
    # swanctl: "default" is charon's default proposals, in the list where it stands
    listed = parse_strongswan_list("aes256-sha256-modp2048, default", IKE)
    assert listed[0].text == "aes256-sha256-modp2048" and listed[1:] == STRONGSWAN_DEFAULT[IKE]
    # ipsec.conf: without "!" the defaults are appended, with it they are not
    assert parse_strongswan_list("aes128gcm16-modp2048", ESP, legacy=True)[1:] == STRONGSWAN_DEFAULT[ESP]
    assert len(parse_strongswan_list("aes128gcm16-modp2048!", ESP, legacy=True)) == 1
    # charon's default ESP proposals carry no DH group: they accept a rekey without PFS
    assert all(p.dh_groups == () for p in STRONGSWAN_DEFAULT[ESP])
    with pytest.raises(ProposalError):
        parse_strongswan_list("aes256-sha256-modp2048,,aes128-sha1-modp2048", IKE, legacy=True)
    assert len(parse_strongswan_list("aes256-sha256-modp2048,,aes128-sha1-modp2048", IKE)) == 2


@pytest.mark.parametrize("text, protocol, expected", [
    # <encr>-<PRF>;<DH>: the integrity is the PRF's own
    ("aes256-sha2_256;modp2048", IKE, (("aes256",), ("sha256",), ("sha256",), (14,))),
    ("3des-sha1;dh2", IKE, (("3des",), ("sha1",), ("sha1",), (2,))),
    ("aes256-sha2_256-modp2048", IKE, (("aes256",), ("sha256",), ("sha256",), (14,))),  # "-" before the DH
    ("aes-256-sha1;modp1024", IKE, (("aes256",), ("sha1",), ("sha1",), (2,))),  # <ealg>-<eklen>
    ("aes_gcm256-sha2_384;dh20", IKE, (("aes256gcm16",), (), ("sha384",), (20,))),
    ("aes_gcm_16_128+aes_gcm_16_256-sha2;dh19+dh14", IKE, (("aes128gcm16", "aes256gcm16"), (), ("sha256",), (19, 14))),
    # what is left out comes from pluto's defaults: both AES key sizes, SHA2-512/256, its DH list
    ("aes", IKE, (("aes256", "aes128"), ("sha512", "sha256"), ("sha512", "sha256"), (14, 15, 16, 18, 19, 20, 21, 31))),
    ("aes_gcm256-null", ESP, (("aes256gcm16",), (), (), ())),
    ("aes256-sha1;modp2048", ESP, (("aes256",), ("sha1",), (), (14,))),
    ("aes", ESP, (("aes128", "aes256"), ("sha512", "sha256"), (), ())),
    ("3des-sha1", ESP, (("3des",), ("sha1",), (), ())),
])
def test_libreswan_proposals_read_as_pluto_reads_them(text, protocol, expected):
    proposal = parse_libreswan(text, protocol)
    assert (proposal.encryption, proposal.integrity, proposal.prf, proposal.dh_groups) == expected


@pytest.mark.parametrize("text, why", [
    ("aes_gcm16", "no 16-bit key length"),  # what pluto says too: "aes_gcm" with a key of 16 bits
    ("foo-sha1", "encryption algorithm 'foo'"),
    ("aes-sha1;modp2047", "DH algorithm 'modp2047'"),
    ("aes-sha1;modp2048-sha1", "unexpected 'sha1'"),
    ("", "proposal is empty"),
])
def test_libreswan_refuses_what_pluto_refuses(text, why):
    with pytest.raises(ProposalError, match=why):
        parse_libreswan(text, IKE)


def test_libreswan_defaults_differ_by_ike_version():
    assert [p.encryption for p in libreswan_default(IKE, 1)] == [("aes256", "aes128"), ("3des",)]
    assert all(p.dh_groups == (14, 5) for p in libreswan_default(IKE, 1))
    assert [p.encryption[0] for p in libreswan_default(ESP, 2)] == ["aes256gcm16", "aes128gcm16", "aes256", "aes128"]


def test_what_applies_where_proposals_are_not_set_depends_on_the_implementation():
    assert implementation_default("swanctl", ESP) == implementation_default(STRONGSWAN, ESP) == STRONGSWAN_DEFAULT[ESP]
    assert implementation_default("swanctl", IKE) == STRONGSWAN_DEFAULT[IKE]
    # Libreswan keys its ESP SA with the IKE SA's DH group: Azure's PFS-less rekey finds no proposal
    assert {p.dh_groups for p in implementation_default(LIBRESWAN, ESP, 2, (14,))} == {(14,)}
    assert {p.dh_groups for p in implementation_default(LIBRESWAN, ESP)} == {(14, 15, 16, 18, 19, 20, 21, 31)}
    assert implementation_default(LIBRESWAN, IKE, 1) == libreswan_default(IKE, 1)


# --- swanctl ------------------------------------------------------------------------------------

def test_the_good_swanctl_fixture_reads_whole():
    [conn], statuses = read_swanctl(str(FIXTURES / "swanctl" / "good-route-based.conf"))
    only(statuses)
    assert (conn.name, conn.dialect, conn.ike_version, conn.remote_addrs, conn.local_addrs) == (
        "azure", "swanctl", 2, ("203.0.113.10",), None)
    assert [p.text for p in conn.ike_proposals] == ["aes256-sha256-modp1024", "aes256-sha256-modp2048"]
    assert [p.dh_groups for p in conn.ike_proposals] == [(2,), (14,)]
    assert (conn.ike_lifetime_seconds, conn.dpd_delay_seconds, conn.dpd_timeout_seconds) == (28800, 45, None)
    assert (conn.encap, conn.auth, conn.psk_length) == (True, "psk", len(GOOD_PSK))
    [child] = conn.children
    assert (child.name, child.local_ts, child.remote_ts) == ("vnet", ("0.0.0.0/0",), ("0.0.0.0/0",))
    assert child.esp_proposals == (Proposal("aes256gcm16", ("aes256gcm16",), (), (), ()),)
    assert (child.lifetime_seconds, child.life_bytes, child.mode, child.start_action, child.dpd_action) == (
        27000, None, None, "start", "restart")
    # every setting's line, by the model's field name and by the key as written
    assert (conn.line, child.line) == (6, 22)
    assert conn.line_of("ike_proposals") == conn.line_of("proposals") == 9
    assert conn.line_of("ike_lifetime_seconds") == conn.line_of("rekey_time") == 10
    assert conn.line_of("dpd_delay_seconds") == 11 and conn.line_of("encap") == 12
    assert conn.line_of("children.vnet.esp_proposals") == 25
    assert conn.line_of("children.vnet.lifetime_seconds") == conn.line_of("children.vnet.rekey_time") == 26
    assert conn.line_of("psk_length") == 38  # the secret's line, never its text
    assert conn.line_of("no such key") == conn.line


def test_the_included_swanctl_fixture_reads_as_the_single_file_one():
    root = FIXTURES / "swanctl" / "good-include"
    [conn], statuses = read_swanctl(str(root / "swanctl.conf"))
    assert [Path(s.file).relative_to(root).as_posix() for s in only(statuses)] == [
        "swanctl.conf", "conf.d/azure.conf", "conf.d/secrets.conf"]
    [single], _ = read_swanctl(str(FIXTURES / "swanctl" / "good-route-based.conf"))
    assert conn.file == str(root / "conf.d" / "azure.conf")
    assert (conn.ike_version, conn.ike_proposals, conn.ike_lifetime_seconds, conn.dpd_delay_seconds, conn.encap) == (
        single.ike_version, single.ike_proposals, single.ike_lifetime_seconds, single.dpd_delay_seconds, single.encap)
    # 450m is 27,000 s; the lines are another file's
    assert [replace(c, line=0) for c in conn.children] == [replace(c, line=0) for c in single.children]
    assert conn.psk_length == 20  # 0s base64 counts decoded bytes
    # inherited from the template in swanctl.conf: another file, so the connection's own line stands
    assert conn.line_of("ike_proposals") == conn.line


# Each broken fixture, what differs from good-route-based.conf: the same in all three forms.
BROKEN = {
    "ikev1-route-based": lambda c: c.ike_version == 1,
    "ike-proposal-not-offered": lambda c: [(p.integrity, p.dh_groups) for p in c.ike_proposals] == [
        (("sha512",), (31,))],
    "rekey-pfs-only": lambda c: all(p.dh_groups == (14,) for p in c.children[0].esp_proposals),
    "ike-lifetime-86400": lambda c: c.ike_lifetime_seconds == 86400,
    "child-lifetime-short": lambda c: c.children[0].lifetime_seconds == 240,
    "dpd-5": lambda c: c.dpd_delay_seconds == 5,
    "remote-not-gateway": lambda c: c.remote_addrs == ("203.0.113.99",),
    "no-encap-behind-nat": lambda c: c.encap is False,
    "psk-short": lambda c: c.psk_length == 6,
}


def _broken_paths(form: str, name: str) -> Path:
    path = FIXTURES / form / f"{name}.conf"
    return path if path.exists() else FIXTURES / form / name / "ipsec.conf"


def _read(form: str, path: Path):
    return read_swanctl(str(path)) if form == "swanctl" else read_ipsec_conf(
        str(path), STRONGSWAN if form == "strongswan" else LIBRESWAN)


@pytest.mark.parametrize("form", ["swanctl", "strongswan", "libreswan"])
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_broken_fixture_breaks_its_one_thing(form, name):
    [conn], statuses = _read(form, _broken_paths(form, name))
    only(statuses)
    assert BROKEN[name](conn), conn
    [good], _ = _read(form, FIXTURES / form / "good-route-based.conf")
    assert not BROKEN[name](good)


TWO_SUBNETS = ("10.1.0.0/16", "10.3.0.0/16")


def test_selectors_and_pfs_fixtures_of_each_form():
    [conn], _ = read_swanctl(str(FIXTURES / "swanctl" / "selectors-two-subnets.conf"))
    assert (conn.children[0].local_ts, conn.children[0].remote_ts) == (TWO_SUBNETS, ("10.20.0.0/16",))
    [conn], _ = read_ipsec_conf(str(FIXTURES / "strongswan" / "selectors-two-subnets.conf"))
    assert (conn.children[0].local_ts, conn.children[0].remote_ts) == (TWO_SUBNETS, ("10.20.0.0/16",))
    [conn], _ = read_ipsec_conf(str(FIXTURES / "libreswan" / "selectors-supernet.conf"))
    assert (conn.children[0].local_ts, conn.children[0].remote_ts) == (("10.0.0.0/14",), ("10.20.0.0/16",))
    # Libreswan's default pfs=yes: the CHILD_SA keys with the IKE SA's group (libreswan#765)
    [conn], _ = read_ipsec_conf(str(FIXTURES / "libreswan" / "rekey-pfs-default.conf"))
    assert [p.dh_groups for p in conn.children[0].esp_proposals] == [(14,)]
    # strongSwan without "!": charon's defaults follow, and they need no PFS
    [conn], _ = read_ipsec_conf(str(FIXTURES / "strongswan" / "rekey-pfs-not-strict.conf"))
    assert [p.dh_groups for p in conn.children[0].esp_proposals] == [(14,), (), ()]


def test_swanctl_settings_merge_replace_clear_and_inherit(tmp_path):
    path = write(tmp_path, "swanctl.conf", """\
        base {
          proposals = aes128-sha1-modp2048
          dpd_delay = 30s
          children {
            net {
              esp_proposals = aes256-sha1
            }
          }
        }
        connections {
          a : base {
            version = 1
            version = 2
            rekey_time = 1h
          }
        }
        connections {
          a {
            rekey_time = 2h
            dpd_delay =
            include part.conf
          }
        }
        """)
    write(tmp_path, "part.conf", "remote_addrs = 203.0.113.10, 203.0.113.11\n")
    [conn], statuses = read_swanctl(str(path))
    only(statuses)
    assert conn.ike_version == 2  # a later value replaces an earlier one
    assert conn.ike_lifetime_seconds == 7200  # the two sections named a are one
    assert conn.dpd_delay_seconds is None  # `dpd_delay =` clears the inherited value: the default applies
    assert [p.text for p in conn.ike_proposals] == ["aes128-sha1-modp2048"]  # from the referenced section
    assert conn.children[0].esp_proposals[0].integrity == ("sha1",)  # its subsections too
    assert conn.remote_addrs == ("203.0.113.10", "203.0.113.11")  # the include's settings land in `a`
    assert conn.line_of("ike_version") == 13 and conn.line_of("ike_lifetime_seconds") == 19


def test_swanctl_values_as_charon_parses_them():
    assert [parse_time(t) for t in ("45", "45s", "8h", "1d", "450m", "0x10", "010", "8 h", "8H")] == [
        45, 45, 28800, 86400, 27000, 16, 8, 28800, 28800]
    assert [parse_time(t) for t in ("8x", "h", "-", "1234567890123456", "8hh")] == [None] * 5
    assert [parse_bytes(t) for t in ("1024", "1k", "2M", "1g", "100000k")] == [
        1024, 1024, 2 * MIB, 1024 ** 3, 102400000]
    assert parse_bytes("1t") is None


@pytest.mark.parametrize("setting, why", [
    ("rekey_timer = 8h", "unknown option 'rekey_timer'"),
    ("rekey_time = 8 hours", "invalid value for rekey_time"),
    ("proposals = aes256-sha256", "invalid value for proposals: a DH group is mandatory"),
    ("encap = maybe", "invalid value for encap"),
    ("version = 3", "invalid value for version"),
    ("foo { }", "invalid section 'foo'"),
])
def test_a_connection_charon_would_discard_is_left_out_and_named_on_its_line(tmp_path, setting, why):
    path = write(tmp_path, "swanctl.conf", f"""\
        connections {{
          bad {{
            remote_addrs = 203.0.113.10
            {setting}
          }}
          fine {{
            remote_addrs = 203.0.113.11
          }}
        }}
        """)
    conns, [status] = read_swanctl(str(path))
    assert [c.name for c in conns] == ["fine"]
    assert status.status == ParseState.PARTIALLY_UNRECOGNIZED
    [entry] = status.unrecognized
    assert entry.line == 4 and why in entry.text and "connection 'bad'" in entry.text and "charon refuses" in entry.text


@pytest.mark.parametrize("text, line, why", [
    ("connections {\n  a {\n    version = 2\n", 2, "section 'a' is never closed"),
    ("connections {\n}\n}\n", 3, "unexpected '}'"),
    ("connections {\n  a b {\n  }\n}\n", 2, "unexpected name, expecting '{' or '='"),
    ('connections {\n  "a" {\n  }\n}\n', 2, "unexpected string"),
    ("connections {\n  a.b = 1\n}\n", 2, "unexpected '.'"),
    ('secrets {\n  ike-x {\n    secret = "not closed\n  }\n}\n', 3, "unterminated string"),
])
def test_a_swanctl_syntax_error_fails_the_file_with_its_line(tmp_path, text, line, why):
    path = write(tmp_path, "swanctl.conf", text)
    conns, [status] = read_swanctl(str(path))
    assert conns == [] and status.status == ParseState.FAILED
    assert status.detail.startswith(f"line {line}: ") and why in status.detail


def test_swanctl_quoted_strings_escapes_comments_and_includes_where_flex_sees_them(tmp_path):
    path = write(tmp_path, "swanctl.conf", """\
        connections {  # a comment after a brace
          a {
            remote_addrs = "203.0.113.10"  # quoted, then a comment
            local_addrs = 198.51.100.2#no space before the comment
            children {
              c {
                updown = "/usr/bin/up \\"x\\"\\
        continued"
                local_ts = 10.1.0.0/16
              }
            }
          }
        }
        """)
    [conn], statuses = read_swanctl(str(path))
    only(statuses)
    assert conn.remote_addrs == ("203.0.113.10",) and conn.local_addrs == ("198.51.100.2",)
    assert conn.children[0].local_ts == ("10.1.0.0/16",)
    assert conn.line_of("children.c.local_ts") == 9  # the escaped newline counted
    # "include  = 5" with two blanks is an include of an empty pattern (flex's trailing context), then
    # "= 5" outside a section: a syntax error, as settings_parser.y says; with one blank, a setting
    with open(path, "a") as f:
        f.write("include  = 5\n")
    conns, [status] = read_swanctl(str(path))
    assert conns == [] and status.detail == "line 14: syntax error, unexpected '='"
    write(tmp_path, "swanctl.conf", "include = 5\nconnections {\n}\n")
    assert only(read_swanctl(str(path))[1])


def test_swanctl_psk_follows_the_identities_as_charon_chooses(tmp_path):
    path = write(tmp_path, "swanctl.conf", """\
        connections {
          a {
            remote_addrs = 203.0.113.10
            local { auth = psk }
            remote { auth = psk }
          }
          b {
            remote_addrs = 203.0.113.11
            local { auth = psk }
            remote {
              auth = psk
              id = @gw.example.net
            }
          }
          c {
            remote_addrs = 203.0.113.12
            local { auth = pubkey }
            remote { auth = pubkey }
          }
        }
        secrets {
          ike-any { secret = 12345678 }
          ike-a {
            id = 203.0.113.10
            secret = 0x00112233445566778899
          }
          ike-b {
            id-1 = gw.example.net
            secret = "sixteen-chars-ok"
          }
          eap-x { secret = not-an-ike-secret-at-all }
        }
        """)
    conns, statuses = read_swanctl(str(path))
    only(statuses)
    assert {c.name: c.psk_length for c in conns} == {"a": 10, "b": 16, "c": None}
    assert {c.name: c.auth for c in conns} == {"a": "psk", "b": "psk", "c": "pubkey"}


def test_swanctl_top_level_sections_it_does_not_read_are_said(tmp_path):
    path = write(tmp_path, "swanctl.conf",
                 "conections {\n  a {\n  }\n}\ntemplate {\n}\nconnections {\n  b : template {\n  }\n}\n")
    conns, [status] = read_swanctl(str(path))
    assert [c.name for c in conns] == ["b"]
    assert [(u.line, "conections" in u.text) for u in status.unrecognized] == [(1, True)]  # a referenced one is fine


# --- ipsec.conf ---------------------------------------------------------------------------------

@pytest.mark.parametrize("form, dialect", [("strongswan", STRONGSWAN), ("libreswan", LIBRESWAN)])
def test_the_good_ipsec_conf_fixtures_read_whole_and_their_dialect_is_guessed(form, dialect):
    path = FIXTURES / form / "good-route-based.conf"
    [conn], statuses = read_ipsec_conf(str(path))
    assert [(s.kind, Path(s.file).name) for s in only(statuses)] == [(dialect, path.name), ("ipsec.secrets",
                                                                                            "ipsec.secrets")]
    name = "strongSwan's" if form == "strongswan" else "Libreswan's"
    assert statuses[0].detail.startswith(f"dialect guessed: {name}")
    assert (conn.name, conn.dialect, conn.ike_version) == ("azure", dialect, 2)
    assert (conn.local_addrs, conn.remote_addrs) == (("%defaultroute",), ("203.0.113.10",))
    assert (conn.ike_lifetime_seconds, conn.dpd_delay_seconds, conn.encap, conn.auth, conn.psk_length) == (
        28800, 45, True, "psk", len(GOOD_PSK))
    [child] = conn.children
    assert (child.name, child.line, child.local_ts, child.remote_ts) == (
        "azure", conn.line, ("0.0.0.0/0",), ("0.0.0.0/0",))
    assert [(p.encryption, p.integrity, p.dh_groups) for p in child.esp_proposals] == [(("aes256gcm16",), (), ())]
    assert (child.lifetime_seconds, child.start_action, child.dpd_action) == (27000, "start", "restart")
    assert conn.line_of("ike_proposals") == conn.line_of("ike") and conn.line_of("esp_proposals") == conn.line_of("esp")
    assert conn.line_of("children.azure.esp_proposals") == conn.line_of("esp") > conn.line
    if form == "strongswan":  # keyexchange= comes from conn %default
        assert conn.line_of("ike_version") == 9 and [p.text for p in conn.ike_proposals] == [
            "aes256-sha256-modp1024", "aes256-sha256-modp2048"]
    else:
        assert conn.dpd_timeout_seconds == 135 and conn.ike_proposals[0].prf == ("sha256",)


def test_the_dialect_guess_says_what_decided_it_and_an_explicit_one_wins(tmp_path):
    ambiguous = write(tmp_path, "a.conf", "conn a\n    right=203.0.113.10\n    authby=secret\n")
    _, [status] = read_ipsec_conf(str(ambiguous))
    assert status.kind == STRONGSWAN and "no keyword only one of strongSwan and Libreswan knows" in status.detail
    _, [status] = read_ipsec_conf(str(ambiguous), LIBRESWAN)
    assert status.kind == LIBRESWAN and status.detail == ""
    libreswan = write(tmp_path, "b.conf", "conn a\n    right=203.0.113.10\n    salifetime=1h\n    ikev2=insist\n")
    [conn], [status] = read_ipsec_conf(str(libreswan))
    assert conn.dialect == LIBRESWAN and "salifetime (b.conf:3), ikev2 (b.conf:4)" in status.detail
    with pytest.raises(ValueError, match="dialect must be one of"):
        read_ipsec_conf(str(ambiguous), "openswan")


def test_strongswan_also_and_default_linearized_as_starter_does(tmp_path):
    path = write(tmp_path, "ipsec.conf", """\
        conn %default
            ikelifetime=3h
            dpddelay=10s
            keyexchange=ikev2

        conn common
            ikelifetime=8h
            lifetime=1h
            also=more

        conn more
            lifetime=2h
            dpddelay=20s

        conn azure
            right=203.0.113.10
            also=common
            lifetime=30m
            lifetime=45m
        """)
    conns, statuses = read_ipsec_conf(str(path), STRONGSWAN)
    only(statuses)
    azure = next(c for c in conns if c.name == "azure")
    assert azure.children[0].lifetime_seconds == 2700  # its own, the last of two
    assert azure.ike_lifetime_seconds == 28800  # also= before %default
    assert azure.ike_version == 2 and azure.line_of("ike_version") == 4
    assert azure.dpd_delay_seconds == 0  # 20 s written (also's also), but no dpdaction: starter sends no DPD
    assert [c.name for c in conns] == ["common", "more", "azure"]


# starter's "config invalid!", addconn's refusal of the file: no conn at all
@pytest.mark.parametrize("dialect, text, why", [
    (STRONGSWAN, "conn a\n    also=b\nconn b\n    also=a\n", "also= loop: a -> b -> a"),
    (STRONGSWAN, "conn a\n    also=nowhere\n", "section 'nowhere' referenced in section 'a' not found"),
    (STRONGSWAN, "conn a\nright=1.2.3.4\n", "unexpected text outside an indented setting"),
    (STRONGSWAN, "conn\n    right=1.2.3.4\n", "section name missing"),
    (STRONGSWAN, "conn a\n    right\n", "missing value"),
    (STRONGSWAN, 'conn a\n    right="1.2.3.4\n', "unterminated string"),
    (LIBRESWAN, "conn a\n    right=1.2.3.4\n    ikelifetme=8h\n", "line 3: syntax error: unknown keyword 'ikelifetme'"),
    (LIBRESWAN, "conn a\n    ikev2=maybe\n", "line 2: keyword ikev2, invalid value: maybe"),
    (LIBRESWAN, "conn a\n    pfs=maybe\n", "line 2: syntax error: pfs takes yes or no"),
    (LIBRESWAN, "conn a\n    ike=a b\n", "line 2: syntax error"),
    (LIBRESWAN, "config setup\n    ikelifetime=8h\n", "unexpected keyword 'ikelifetime' in section 'config setup'"),
    (LIBRESWAN, "  right=1.2.3.4\n", "line 1: syntax error"),
    (LIBRESWAN, "conn a\n include x.conf\n", "line 2: syntax error"),
])
def test_errors_that_make_the_real_parser_refuse_the_file(tmp_path, dialect, text, why):
    conns, [status] = read_ipsec_conf(str(write(tmp_path, "ipsec.conf", text)), dialect)
    assert conns == [] and status.status == ParseState.FAILED and why in status.detail


def test_strongswan_unknown_keywords_are_noted_and_bad_values_drop_the_conn(tmp_path):
    path = write(tmp_path, "ipsec.conf", """\
        conn a
            right=203.0.113.10
            rekeytime=1h
        conn b
            right=203.0.113.11
            lifebytes=10k
        conn c
            right=203.0.113.12
            ike=aes256-sha256
        conn d
            right=203.0.113.13
            lifebytes=1024000
            ike=aes256-sha256-modp2048
        """)
    conns, [status] = read_ipsec_conf(str(path), STRONGSWAN)
    assert [c.name for c in conns] == ["a", "d"]
    assert conns[1].children[0].life_bytes == 1024000  # starter reads lifebytes= as a plain integer
    assert conns[1].ike_proposals[1:] == STRONGSWAN_DEFAULT[IKE]  # no "!": defaults appended
    notes = {u.line: u.text for u in status.unrecognized}
    assert "unknown keyword 'rekeytime' (starter ignores it)" in notes[3]
    assert "bad value lifebytes=10k" in notes[6] and "(the conn is not loaded)" in notes[6]
    assert "a DH group is mandatory" in notes[9] and "charon refuses it" in notes[9]


def test_a_conn_named_twice_is_merged_by_starter_and_replaced_in_pluto(tmp_path):
    text = "conn a\n    right=203.0.113.10\n    ikelifetime=1h\nconn a\n    right=203.0.113.11\n"
    [conn], statuses = read_ipsec_conf(str(write(tmp_path, "s.conf", text)), STRONGSWAN)
    only(statuses)
    assert (conn.remote_addrs, conn.ike_lifetime_seconds, conn.line) == (("203.0.113.11",), 3600, 1)
    [conn], [status] = read_ipsec_conf(str(write(tmp_path, "l.conf", text)), LIBRESWAN)
    assert (conn.remote_addrs, conn.ike_lifetime_seconds, conn.line) == (("203.0.113.11",), None, 4)
    assert [(u.line, u.text) for u in status.unrecognized] == [(1, "conn 'a' is defined again at line 4, which replaces it")]


def test_libreswan_also_duplicates_and_loops_as_addconn_loads_them(tmp_path):
    path = write(tmp_path, "ipsec.conf", """\
        conn %default
            ikelifetime=1h
        conn a
            left=%defaultroute
            right=203.0.113.10
            also=b
            also=c
        conn b
            salifetime=2h
            also=a
        conn c
            salifetime=2h
            keyingtries=3
        conn d
            right=203.0.113.11
            also=e
        conn e
            right=203.0.113.12
        """)
    conns, [status] = read_ipsec_conf(str(path), LIBRESWAN)
    a = next(c for c in conns if c.name == "a")
    assert (a.children[0].lifetime_seconds, a.ike_lifetime_seconds) == (7200, 3600)
    assert "d" not in [c.name for c in conns]  # right= set twice with two values: not loaded
    notes = [u.text for u in status.unrecognized]
    assert any("also= loop back to conn 'a'" in n for n in notes)
    assert any("conn 'd': duplicate key 'right'" in n for n in notes)


def test_libreswan_values_it_cannot_read_stay_unset_and_pfs_and_subnets(tmp_path):
    path = write(tmp_path, "ipsec.conf", """\
        conn a
            left=%defaultroute
            right=203.0.113.10
            ikelifetime=8x
            salifetime=1d
            ipsec-max-bytes=100MiB
            IKE=aes256-sha2;dh14+dh19
            esp=aes256-sha1
            leftsubnets={10.1.0.0/16 10.3.0.0/16}
            rightsubnet=10.20.0.0/16
            forceencaps=yes
            x-note=anything at all
        conn b
            right=203.0.113.11
            pfs=no
        """)
    conns, [status] = read_ipsec_conf(str(path), LIBRESWAN)
    a, b = conns
    assert a.ike_lifetime_seconds is None  # Libreswan ignores what it cannot read: its default applies
    assert (a.children[0].lifetime_seconds, a.children[0].life_bytes) == (86400, 100 * MIB)
    assert a.ike_proposals[0].dh_groups == (14, 19)  # keywords in any case
    assert [(c.name, c.local_ts, c.remote_ts) for c in a.children] == [
        ("a/1x1", ("10.1.0.0/16",), ("10.20.0.0/16",)), ("a/2x1", ("10.3.0.0/16",), ("10.20.0.0/16",))]
    assert a.children[0].esp_proposals[0].dh_groups == (14, 19)  # pfs=yes by default: the IKE groups
    assert a.encap is None  # forceencaps is obsolete in Libreswan 4
    # esp= unset but pfs=no set: pluto's default ESP proposals, without PFS
    assert b.children[0].esp_proposals == libreswan_default(ESP)
    notes = {u.line: u.text for u in status.unrecognized}
    assert sorted(notes) == [4, 11]
    assert "ikelifetime=8x" in notes[4] and "forceencaps: obsolete" in notes[11]


def test_libreswan_relative_includes_are_read_beside_the_file_and_said(tmp_path, monkeypatch):
    main = write(tmp_path, "etc/ipsec.conf", "config setup\n\ninclude ipsec.d/*.conf\ninclude /nonexistent/*.conf\n")
    write(tmp_path, "etc/ipsec.d/azure.conf", "conn azure\n    right=203.0.113.10\n    ikev2=insist\n")
    monkeypatch.chdir(tmp_path)  # not the file's directory
    [conn], statuses = read_ipsec_conf(str(main))
    assert conn.dialect == LIBRESWAN and conn.file == str(tmp_path / "etc/ipsec.d/azure.conf")
    [note] = statuses[0].unrecognized
    assert note.line == 3 and "addconn's working directory" in note.text


def test_ipsec_secrets_shapes_and_choice(tmp_path):
    write(tmp_path, "ipsec.secrets", """\
        # comment
        : RSA {
            Modulus: 0x00
        }
        203.0.113.10 : PSK 0s""" + "QUJDREVGR0g=" + """
        @gw.example.net 198.51.100.2 : PSK 'single-quoted'
        %any : PSK "wildcard-key"
        203.0.113.12 : PSK "unterminated
        """)
    path = write(tmp_path, "ipsec.conf", """\
        conn a
            right=203.0.113.10
            authby=secret
        conn b
            right=203.0.113.11
            rightid=@GW.example.net
            authby=psk
        conn c
            right=203.0.113.13
            authby=secret
        conn d
            right=203.0.113.14
            authby=pubkey
        """)
    conns, statuses = read_ipsec_conf(str(path), STRONGSWAN)
    assert {c.name: c.psk_length for c in conns} == {"a": 8, "b": 13, "c": 12, "d": None}
    [secrets] = [s for s in statuses if s.kind == "ipsec.secrets"]
    [note] = secrets.unrecognized
    assert note.line == 8 and "does not decode" in note.text and "unterminated" not in note.text


def test_ipsec_secrets_is_read_only_for_a_connection_with_a_psk(tmp_path):
    (tmp_path / "ipsec.secrets").mkdir()  # unreadable as a file: read, it would fail
    path = write(tmp_path, "ipsec.conf", "conn a\n    right=203.0.113.10\n    authby=pubkey\n")
    _, statuses = read_ipsec_conf(str(path), STRONGSWAN)
    assert [Path(s.file).name for s in only(statuses)] == ["ipsec.conf"]
    with open(path, "a") as f:
        f.write("conn b\n    right=203.0.113.11\n    authby=secret\n")
    conns, statuses = read_ipsec_conf(str(path), STRONGSWAN)
    assert [(Path(s.file).name, s.status, s.detail) for s in statuses] == [
        ("ipsec.conf", ParseState.PARSED, ""), ("ipsec.secrets", ParseState.FAILED, "a directory, not a file")]
    assert [c.psk_length for c in conns] == [None, None]


def test_psk_choice_prefers_a_perfect_owner_over_a_wildcard():
    secrets = [SharedSecret(("%any",), 5, "f", 1), SharedSecret(("203.0.113.10",), 30, "f", 2),
               SharedSecret(("198.51.100.9",), 40, "f", 3)]
    assert psk_for(secrets, ["198.51.100.2"], ["203.0.113.10"]) is secrets[1]
    assert psk_for(secrets, ["198.51.100.2"], ["203.0.113.99"]) is secrets[0]
    assert psk_for(secrets[1:2], ["198.51.100.2"], ["203.0.113.99"]) is None


# --- no secret anywhere --------------------------------------------------------------------------

SECRET = "S3cr3t-Never-Shown-4711"


@pytest.mark.parametrize("name, text", [
    ("swanctl.conf", "connections {\n  a {\n    local { auth = psk }\n  }\n}\n"
                     f'secrets {{\n  ike-a {{\n    secret = "{SECRET}"\n  }}\n}}\n'),
    ("swanctl.conf", f'secrets {{\n  ike-a {{\n    secret = "{SECRET}\n  }}\n}}\n'),
    ("swanctl.conf", f"secrets {{\n  ike-a {{\n    secret {SECRET}\n  }}\n}}\n"),
    ("swanctl.conf", f"secrets {{\n  ike-a {{\n    secret = 0x{SECRET}\n  }}\n}}\n"),
    ("ipsec.secrets", f': PSK "{SECRET}"\n: PSK "{SECRET}\n{SECRET}\n'),
])
def test_no_secret_in_any_object_message_or_repr(tmp_path, name, text):
    path = write(tmp_path, name, text)
    if name == "ipsec.secrets":
        path = write(tmp_path, "ipsec.conf", "conn a\n    right=203.0.113.10\n    authby=secret\n")
        result = read_ipsec_conf(str(path), STRONGSWAN)
    else:
        result = read_swanctl(str(path))
    shown = repr(result) + str(result) + "".join(str(s.to_dict()) for s in result[1])
    assert SECRET not in shown and SECRET[:8] not in shown


# --- input files, bounded -------------------------------------------------------------------------

READERS = [
    ("swanctl", read_swanctl),
    ("strongswan", lambda p: read_ipsec_conf(p, STRONGSWAN)),
    ("libreswan", lambda p: read_ipsec_conf(p, LIBRESWAN)),
    ("guessed", read_ipsec_conf),
]


@pytest.fixture(params=READERS, ids=[name for name, _ in READERS])
def reader(request):
    return request.param[1]


def test_what_a_status_quotes_of_a_file_is_inert_and_bounded(tmp_path):
    key = "\x1b[2J\u202e" + "k" * 5000
    _, [status] = read_ipsec_conf(str(write(tmp_path, "a.conf", f"conn a\n    {key}=1\n")), LIBRESWAN)
    assert status.status == ParseState.FAILED and len(status.detail) <= 1024
    assert status.detail.startswith("line 2: syntax error: unknown keyword '\\x1b[2J\\u202ekkk")
    _, [status] = read_ipsec_conf(str(write(tmp_path, "b.conf", f"conn a\n    {key}=1\n")), STRONGSWAN)
    [note] = status.unrecognized
    assert len(note.text) <= 160 and note.text.startswith("unknown keyword '\\x1b[2J\\u202ekkk")


def test_a_100_mb_file_is_refused_without_reading_it(tmp_path, reader):
    big = tmp_path / "big.conf"
    with open(big, "wb") as f:
        f.truncate(100 * 1000 * 1000)  # 100 MB, sparse: made here, never committed
    conns, [status] = reader(str(big))
    assert conns == [] and status.status == ParseState.FAILED
    assert status.detail.startswith("100000000 bytes, more than the 4 MiB")
    sources = Sources()
    with pytest.raises(SourceError):
        sources.read(str(big))
    assert sources.bytes_read == 0  # refused on its size: not one byte read


def test_binary_junk_is_refused_as_binary(reader):
    conns, [status] = reader(str(FIXTURES / "hostile" / "binary.conf"))
    assert conns == [] and status.status == ParseState.FAILED
    assert status.detail == "binary content, not a configuration file (a NUL byte at line 1)"


def test_control_bytes_without_nul_are_binary_too_and_latin1_text_is_read(tmp_path):
    junk = tmp_path / "junk.conf"
    junk.write_bytes(bytes(range(1, 32)) * 40)
    _, [status] = read_swanctl(str(junk))
    assert status.status == ParseState.FAILED and "control bytes" in status.detail
    latin = tmp_path / "latin.conf"
    latin.write_bytes("# réseau du siège\nconnections {\n  a {\n    remote_addrs = 203.0.113.10\n  }\n}\n"
                      .encode("latin-1"))
    [conn], [status] = read_swanctl(str(latin))
    assert status.status == ParseState.PARSED and status.detail == "not UTF-8 (line 1): read byte for byte as Latin-1"


def test_what_is_not_a_file_is_refused_without_blocking(tmp_path, reader):
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)  # an open() that waits for a writer would hang here
    assert reader(str(fifo))[1][0].detail == "not a regular file (a FIFO, socket or device): not read"
    assert reader(str(tmp_path))[1][0].detail == "a directory, not a file"
    assert reader(str(tmp_path / "missing.conf"))[1][0].detail == "no such file"
    assert reader("/dev/zero")[1][0].detail == "not a regular file (a FIFO, socket or device): not read"


@pytest.mark.parametrize("form, main, loop", [
    ("swanctl", "connections {\n}\ninclude b.conf\n", "include a.conf\n"),
    ("strongswan", "conn a\n    right=203.0.113.10\ninclude b.conf\n", "include a.conf\n"),
    ("libreswan", "conn a\n    right=203.0.113.10\ninclude b.conf\n", "include a.conf\n"),
])
def test_an_include_loop_fails_naming_the_loop(tmp_path, form, main, loop):
    a, _ = write(tmp_path, "a.conf", main), write(tmp_path, "b.conf", loop)
    conns, statuses = _read(form, a)
    assert conns == []
    [failed] = [s for s in statuses if s.status == ParseState.FAILED]
    assert failed.file == str(a)
    assert failed.detail.startswith(f"include loop: {a}:3 includes {tmp_path / 'b.conf'}:1 includes {a} again")


def test_the_hostile_include_loop_fixtures(tmp_path):
    conns, statuses = read_swanctl(str(FIXTURES / "hostile" / "include-loop" / "swanctl.conf"))
    assert conns == [] and "include loop" in statuses[0].detail and "loop-b.conf:1 includes" in statuses[0].detail
    conns, [status] = read_ipsec_conf(str(FIXTURES / "hostile" / "libreswan-include-loop.conf"), LIBRESWAN)
    assert conns == [] and status.status == ParseState.FAILED and "include loop" in status.detail
    conns, [status] = read_ipsec_conf(str(FIXTURES / "hostile" / "strongswan-also-loop.conf"))
    assert conns == [] and "also= loop: azure -> azure-common -> azure" in status.detail
    conns, [status] = read_ipsec_conf(str(FIXTURES / "hostile" / "libreswan-unknown-keyword.conf"), LIBRESWAN)
    assert conns == [] and status.detail.startswith("line 9: syntax error: unknown keyword 'ikelifetme'")


@pytest.mark.parametrize("form", ["swanctl", "strongswan", "libreswan"])
def test_includes_nested_too_deep_fail(tmp_path, form):
    for i in range(12):
        write(tmp_path, f"d{i}.conf", f"include d{i + 1}.conf\n")
    write(tmp_path, "d12.conf", "")
    conns, statuses = _read(form, tmp_path / "d0.conf")
    assert conns == []
    failed = {Path(s.file).name: s.detail for s in statuses if s.status == ParseState.FAILED}
    assert failed["d11.conf"] == "includes nested deeper than 10 levels: not read"
    assert failed["d0.conf"] == "not loaded: " + str(tmp_path / "d11.conf") + ", which it includes, failed"


def test_deep_section_nesting_fails():
    conns, [status] = read_swanctl(str(FIXTURES / "hostile" / "deep-nesting.conf"))
    assert conns == [] and status.detail == "line 34: sections nested deeper than 32 levels: xcheck stops here"


def test_long_chains_of_references_and_also_end_without_recursing(tmp_path):
    n = 5000  # deeper than Python's recursion limit
    chain = "".join(f"t{i} : t{i + 1} {{\n}}\n" for i in range(n)) + f"t{n} {{\n  version = 2\n}}\n"
    path = write(tmp_path, "swanctl.conf", chain + "connections {\n  a : t0 {\n  }\n}\n")
    [conn], statuses = read_swanctl(str(path))
    assert conn.ike_version == 2 and conn.line_of("ike_version") == 2 * n + 2
    also = "".join(f"conn c{i}\n    also=c{i + 1}\n" for i in range(n)) + f"conn c{n}\n    right=203.0.113.10\n"
    conns, [status] = read_ipsec_conf(str(write(tmp_path, "ipsec.conf", also)), STRONGSWAN)
    assert conns == [] and status.detail.endswith("also= nested deeper than 100: xcheck stops here")
    conns, [status] = read_ipsec_conf(str(write(tmp_path, "ipsec.conf", also)), LIBRESWAN)
    assert [c.name for c in conns][-3:] == [f"c{n - 2}", f"c{n - 1}", f"c{n}"]  # up to 31 also= away from right=
    assert conns[-32].remote_addrs == ("203.0.113.10",) and sum(c.remote_addrs is not None for c in conns) == 32
    assert "more than 32 also= in its chain" in status.unrecognized[0].text


def test_an_include_that_grows_the_total_past_the_budget_fails(tmp_path):
    for i in range(3):
        write(tmp_path, f"part{i}.conf", "# " + "x" * 3000 + "\n")
    main = write(tmp_path, "swanctl.conf", "include part*.conf\n")
    conns, statuses = read_swanctl_with(str(main), Sources(max_total_bytes=7000))
    assert conns == []
    assert [(Path(s.file).name, s.status) for s in statuses] == [
        ("swanctl.conf", ParseState.FAILED), ("part0.conf", ParseState.PARSED), ("part1.conf", ParseState.PARSED),
        ("part2.conf", ParseState.FAILED)]
    assert statuses[3].detail == "the files of this configuration pass 7000 bytes together: not read"


def test_globs_match_nothing_quietly_and_a_missing_literal_include_is_said(tmp_path, reader):
    main = write(tmp_path, "main.conf", "include nothing/*.conf\ninclude missing.conf\n")
    conns, [status] = reader(str(main))
    assert conns == [] and status.status == ParseState.PARTIALLY_UNRECOGNIZED
    [note] = [u for u in status.unrecognized if "no such file" in u.text]
    assert note.line == 2 and f"include {tmp_path / 'missing.conf'}: no such file" in note.text


@pytest.mark.parametrize("form", ["swanctl", "strongswan"])
def test_strongswan_skips_a_directory_an_include_glob_matches(tmp_path, form):
    (tmp_path / "conf.d" / "old.conf").mkdir(parents=True)
    main = write(tmp_path, "main.conf", "include conf.d/*.conf\n")
    conns, [status] = _read(form, main)
    [note] = status.unrecognized
    assert note.line == 1 and note.text.endswith("old.conf: a directory, not a file (" + (
        "swanctl" if form == "swanctl" else "starter") + " skips it)")


def test_an_unreadable_include_is_named_and_strongswan_skips_it(tmp_path):
    """Run as an unprivileged user (root reads anything): the include's status says permission
    denied; swanctl and starter skip a file they cannot open, Libreswan's addconn refuses."""
    directory = Path(tempfile.mkdtemp(prefix="xcheck-perm-"))
    try:
        directory.chmod(0o755)
        write(directory, "swanctl.conf",
              "connections {\n  a {\n    remote_addrs = 203.0.113.10\n  }\n}\ninclude secret.conf\n")
        write(directory, "ipsec.conf", "conn a\n    right=203.0.113.10\n    ikev2=insist\ninclude secret.conf\n")
        write(directory, "secret.conf", "connections {\n}\n").chmod(0o000)
        for p in ("swanctl.conf", "ipsec.conf"):
            (directory / p).chmod(0o644)
        script = textwrap.dedent(f"""\
            import json
            from agent.audit.ipsec.swanctl import read_swanctl
            from agent.audit.ipsec.ipsec_conf import read_ipsec_conf
            for conns, statuses in (read_swanctl({str(directory / 'swanctl.conf')!r}),
                                    read_ipsec_conf({str(directory / 'ipsec.conf')!r})):
                shown = [[s.file.rsplit('/', 1)[1], s.status.value, s.detail] for s in statuses]
                print(json.dumps([len(conns), shown]))
            """)
        argv = [sys.executable, "-c", script]
        if os.geteuid() == 0:
            argv = [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
        assert done.returncode == 0, done.stderr
        swanctl, libreswan = (json.loads(line) for line in done.stdout.splitlines())
        denied = "permission denied: cannot read it (run as a user who can, e.g. root)"
        assert swanctl == [1, [["swanctl.conf", "parsed", ""], ["secret.conf", "failed", denied]]]
        assert libreswan[0] == 0 and libreswan[1][1] == ["secret.conf", "failed", denied]
        assert libreswan[1][0][:2] == ["ipsec.conf", "failed"]
        assert libreswan[1][0][2].startswith(f"not loaded: {directory / 'secret.conf'}, which it includes, failed")
    finally:
        for p in directory.iterdir():
            p.chmod(0o644)
        shutil.rmtree(directory)


def test_garbage_never_raises(tmp_path):
    """Fuzzing by mutation: the corpus with bytes flipped, cut and repeated reads without an
    exception and ends in some status for every file."""
    rng = random.Random(5)
    corpus = sorted(p for p in FIXTURES.rglob("*.conf") if p.stat().st_size < 10_000 and b"\0" not in p.read_bytes())
    for n in range(1000):
        data = bytearray(rng.choice(corpus).read_bytes())
        for _ in range(rng.randint(1, 8)):
            if not data:
                break
            i = rng.randrange(len(data))
            action = rng.randrange(3)
            if action == 0:
                data[i] = rng.choice(b'{}="#\\\n\t !;-+,:.\x7f\xff' + bytes([rng.randrange(256)]))
            elif action == 1:
                del data[i:i + rng.randint(1, 40)]
            else:
                data[i:i] = data[i:i + rng.randint(1, 40)]
        path = tmp_path / f"f{n}.conf"
        path.write_bytes(bytes(data))
        for _, read in READERS:
            conns, statuses = read(str(path))
            assert statuses and all(s.file for s in statuses)


def test_read_host_ipsec_reads_whichever_exists(tmp_path):
    assert read_host_ipsec(str(tmp_path / "none1"), str(tmp_path / "none2")) == ([], [])
    swanctl = str(FIXTURES / "swanctl" / "good-route-based.conf")
    ipsec = str(FIXTURES / "libreswan" / "good-route-based.conf")
    conns, statuses = read_host_ipsec(swanctl, ipsec)
    assert [c.dialect for c in conns] == ["swanctl", LIBRESWAN]
    assert [s.kind for s in statuses] == ["swanctl", LIBRESWAN, "ipsec.secrets"]
    conns, statuses = read_host_ipsec(str(tmp_path / "none"), ipsec)
    assert [c.dialect for c in conns] == [LIBRESWAN]


def test_an_ipsec_conf_no_keyword_tells_is_read_as_the_installed_implementation(tmp_path):
    """A typical Libreswan conn with nothing only Libreswan knows: on a host with pluto it is
    Libreswan's, so its pfs=yes default (the rekey drop of libreswan#765) is judged."""
    from agent.audit.ipsec.ipsec_conf import installed_dialect

    conf = tmp_path / "ipsec.conf"
    conf.write_text("conn azure\n    left=%defaultroute\n    right=203.0.113.10\n    authby=secret\n"
                    "    esp=aes256-sha1\n    auto=start\n")
    pluto = tmp_path / "pluto"
    pluto.write_text("")
    assert installed_dialect((str(pluto),), (str(tmp_path / "none"),)) == LIBRESWAN
    assert installed_dialect((str(pluto),), (str(pluto),)) is None  # both: no preference
    _, statuses = read_ipsec_conf(str(conf), fallback=LIBRESWAN)
    assert statuses[0].kind == LIBRESWAN and "installed here" in statuses[0].detail
    _, statuses = read_ipsec_conf(str(conf))
    assert statuses[0].kind == STRONGSWAN  # no fallback: strongSwan's, as said in the detail
    connections, _ = read_host_ipsec(str(tmp_path / "no-swanctl.conf"), str(conf))
    assert connections and connections[0].dialect in (LIBRESWAN, STRONGSWAN)
