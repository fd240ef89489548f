"""The IPsec corpus (tests/fixtures/ipsec/) against the real parsers, and the readers against them.

- swanctl.conf: each file is loaded into a lab charon 5.9.8 (tests/test_lab_ike.py `charon`: its
  own strongswan.conf and vici socket, in the lab's cloud namespace) with `swanctl --load-all
  --file F`; the connections swanctl loads are those xcheck reads, and what `swanctl --list-conns`
  then shows of each (IKE version, IKE SA renewal, DPD delay, remote addresses, PSK, children with
  their rekey time and traffic selectors) is what xcheck read. Hostile files are refused by both,
  but for an include loop, which swanctl follows until it runs out of file descriptors and then
  loads what it read: xcheck refuses it on purpose, naming the loop.
- strongSwan's legacy ipsec.conf has no documented check mode (AZURE-FACTS.md), but starter has an
  undocumented one: `starter --conftest --conf F` (src/starter/starter.c) parses the file, resolves
  also= and %default, says "config OK" or "config invalid!", and exits without starting charon or
  writing anything; with --debug-all it prints every conn's settings in effect. It runs here in a
  namespace of its own (`unshare --net --mount`) with an empty strongswan.conf; xcheck's conns and
  the keys in effect for each must be starter's.
- Libreswan's ipsec.conf: `addconn --config F --checkconfig` (silent and exit 0 when accepted) and
  `--listall` (the conns it would load) from Libreswan 4.10, never installed (it conflicts with
  strongSwan): `apt-get download libreswan` and `dpkg -x` into a directory under the system's temp
  directory, kept for the next run. addconn links libunbound, libevent, nettle and gmp; a library
  the host lacks is fetched the same way (its Debian package named after its soname, as Debian
  policy names them) and found with LD_LIBRARY_PATH. addconn resolves a relative include against
  its working directory, so it runs in the file's directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_lab
from lab import Lab
from test_lab_ike import CHARON, charon

from agent.audit.findings import ParseState
from agent.audit.ipsec.ipsec_conf import LIBRESWAN, STRONGSWAN, STRONGSWAN_KEYWORDS, read_ipsec_conf
from agent.audit.ipsec.swanctl import read_swanctl

FIXTURES = Path(__file__).parent / "fixtures" / "ipsec"
STARTER = "/usr/lib/ipsec/starter"
_TOOLS = (CHARON, STARTER, "swanctl", "unshare", "prlimit", "ldd", "dpkg", "apt-get")
_MISSING = [tool for tool in _TOOLS if shutil.which(tool) is None]
# CI installs them (.ci/run): there a missing one must fail the run, not skip it.
pytestmark = [pytest.mark.lab, needs_lab, pytest.mark.skipif(
    bool(_MISSING) and not os.environ.get("CI"),
    reason=f"needs {', '.join(_MISSING)} (Debian: apt-get install -y strongswan-charon strongswan-swanctl "
           "util-linux dpkg apt)")]
LIBRESWAN_CACHE = Path(tempfile.gettempdir()) / "xcheck-libreswan"
TIMEOUT = 120  # a bound, never a measure: apt-get may fetch; the parsers answer in milliseconds

SWANCTL_FILES = sorted(FIXTURES.glob("swanctl/*.conf")) + [FIXTURES / "swanctl/good-include/swanctl.conf",
                                                          FIXTURES / "hostile/refused-unknown-option.conf"]
STRONGSWAN_FILES = sorted(FIXTURES.glob("strongswan/*.conf")) + [FIXTURES / "strongswan/psk-short/ipsec.conf"]
LIBRESWAN_FILES = sorted(FIXTURES.glob("libreswan/*.conf")) + [FIXTURES / "libreswan/psk-short/ipsec.conf"]


def _id(path: Path) -> str:
    return path.relative_to(FIXTURES).as_posix()


# --- swanctl into charon -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def swanctl() -> Iterator:
    with Lab(nat="public", stun="none") as lab, charon(lab):
        env = dict(os.environ, STRONGSWAN_CONF=os.path.join(lab.tmpdir, "strongswan.conf"))
        uri = f"unix://{lab.tmpdir}/charon.vici"

        def run(*args: str, limit_files: int | None = None) -> str:
            argv = ["swanctl", *args, "--uri", uri]
            if limit_files:  # a file-descriptor bound keeps a looping include from running long
                argv = ["prlimit", f"--nofile={limit_files}", *argv]
            done = lab.run(lab.cloud, argv, env=env, timeout=TIMEOUT)
            return done.stdout + done.stderr

        yield run


def _load(run, path: Path, limit_files: int | None = None) -> tuple[list[str], str]:
    out = run("--load-all", "--noprompt", "--file", str(path), limit_files=limit_files)
    return re.findall(r"^loaded connection '([^']+)'$", out, re.M), out


def _list_conns(run) -> dict[str, dict]:
    """swanctl --list-conns (5.9.8's text) as {name: {version, renew, dpd, remote, psk, children}}."""
    conns: dict[str, dict] = {}
    conn = child = None
    for line in run("--list-conns").splitlines():
        head = re.match(r"^(\S+): (IKEv1|IKEv2|IKEv1/2), (.*)$", line)
        if head:
            rest = head.group(3)
            renew = re.search(r"(?:rekeying|reauthentication) every (\d+)s", rest)
            dpd = re.search(r"dpd delay (\d+)s", rest)
            conn = conns[head.group(1)] = {
                "version": {"IKEv1": 1, "IKEv2": 2}.get(head.group(2)), "renew": int(renew.group(1)) if renew else None,
                "dpd": int(dpd.group(1)) if dpd else None, "psk": False, "children": {}}
            child = None
        elif conn is not None and (m := re.match(r"^  remote: (.*)$", line)):
            conn["remote"] = m.group(1).split(", ")
        elif conn is not None and line.startswith("  local pre-shared key authentication"):
            conn["psk"] = True
        elif conn is not None and (m := re.match(r"^  (\S+): (TUNNEL|TRANSPORT|BEET|PASS|DROP), (.*)$", line)):
            rekey = re.search(r"rekeying every (\d+)s", m.group(3))
            child = conn["children"][m.group(1)] = {"rekey": int(rekey.group(1)) if rekey else None}
        elif child is not None and (m := re.match(r"^    (local|remote): (.*)$", line)):
            child[m.group(1)] = m.group(2).split()
    return conns


@pytest.mark.parametrize("path", SWANCTL_FILES, ids=_id)
def test_charon_loads_each_swanctl_fixture_as_xcheck_reads_it(swanctl, path):
    connections, statuses = read_swanctl(str(path))
    assert all(s.status != ParseState.FAILED for s in statuses), statuses
    refused = [u.text for s in statuses for u in s.unrecognized]
    loaded, out = _load(swanctl, path)
    assert loaded == [c.name for c in connections], out
    total = len(connections) + len(refused)
    if refused:  # the fixture whose one connection charon discards: both say which and why
        assert f"loaded {len(connections)} of {total} connections, {len(refused)} failed to load" in out, out
        assert "loading connection 'azure' failed: unknown option: rekey_timer, config discarded" in out
        assert refused == ["connection 'azure': unknown option 'rekey_timer' (charon refuses to load it)"]
    else:
        assert f"successfully loaded {total} connections" in out, out
    shown = _list_conns(swanctl)
    for conn in connections:
        seen = shown[conn.name]
        assert seen["version"] == conn.ike_version
        # None in the model is "not set here": charon's default applies (swanctl.opt: rekey_time = 4h)
        assert seen["renew"] == (14400 if conn.ike_lifetime_seconds is None else conn.ike_lifetime_seconds)
        assert seen["dpd"] == conn.dpd_delay_seconds
        assert seen["remote"] == list(conn.remote_addrs or ["%any"])
        assert seen["psk"] == (conn.auth == "psk")
        assert set(seen["children"]) == {c.name for c in conn.children}
        for child in conn.children:
            assert seen["children"][child.name]["rekey"] == (child.lifetime_seconds or 3600)  # default: 1h
            assert seen["children"][child.name]["local"] == list(child.local_ts or ["dynamic"])
            assert seen["children"][child.name]["remote"] == list(child.remote_ts or ["dynamic"])


@pytest.mark.parametrize("name, says", [
    ("binary.conf", "syntax error"),
    ("deep-nesting.conf", "memory exhausted"),
    ("unterminated-secret.conf", "unterminated string detected"),
])
def test_charon_and_xcheck_both_refuse_the_hostile_swanctl_files(swanctl, name, says):
    path = FIXTURES / "hostile" / name
    connections, statuses = read_swanctl(str(path))
    assert connections == [] and statuses[0].status == ParseState.FAILED
    loaded, out = _load(swanctl, path)
    assert loaded == [] and says in out and f"invalid config file '{path}'" in out, out


def test_an_include_loop_swanctl_loads_by_running_out_of_files_and_xcheck_refuses(swanctl):
    path = FIXTURES / "hostile" / "include-loop" / "swanctl.conf"
    loaded, out = _load(swanctl, path, limit_files=256)
    assert loaded == ["azure"], out  # the file opened until open() failed, then the rest skipped
    connections, statuses = read_swanctl(str(path))
    assert connections == [] and statuses[0].status == ParseState.FAILED
    assert statuses[0].detail.startswith(f"include loop: {path}:8 includes {path.parent / 'loop-b.conf'}:1")


# --- strongSwan's starter -------------------------------------------------------------------------

def _starter(path: Path, tmp_path: Path) -> tuple[int, str]:
    conf = tmp_path / "strongswan.conf"
    conf.write_text("")  # nothing of the host's strongSwan settings
    done = subprocess.run(["unshare", "--net", "--mount", STARTER, "--conftest", "--debug-all", "--conf", str(path)],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env=dict(os.environ, STRONGSWAN_CONF=str(conf)))
    return done.returncode, done.stdout + done.stderr


def _starter_conns(out: str) -> dict[str, set[str]]:
    """--debug-all prints "Loading conn 'NAME'" and then each setting in effect, indented, and
    "# ignored conn 'NAME' ..." after one with a bad value."""
    conns: dict[str, set[str]] = {}
    current = None
    for line in out.splitlines():
        m = re.match(r"^Loading conn '([^']+)'$", line)
        if m:
            current = conns[m.group(1)] = set()
        elif current is not None and (m := re.match(r"^  ([^=\s]+)=", line)):
            current.add(m.group(1))
        elif not line.startswith("  "):
            current = None
    for ignored in re.findall(r"^# ignored conn '([^']+)'", out, re.M):
        del conns[ignored]
    return conns


@pytest.mark.parametrize("path", STRONGSWAN_FILES, ids=_id)
def test_starter_accepts_each_strongswan_fixture_with_the_settings_xcheck_reads(path, tmp_path):
    rc, out = _starter(path, tmp_path)
    assert rc == 0 and out.rstrip().endswith("config OK") and "error" not in out, out
    connections, statuses = read_ipsec_conf(str(path))
    assert [s.status for s in statuses] == [ParseState.PARSED, ParseState.PARSED]
    assert statuses[0].kind == STRONGSWAN  # guessed right
    shown = _starter_conns(out)
    assert list(shown) == [c.name for c in connections]
    for conn in connections:
        assert {key for key, _ in conn.lines if key in STRONGSWAN_KEYWORDS} == shown[conn.name]


def test_starter_and_xcheck_both_refuse_an_also_loop(tmp_path):
    path = FIXTURES / "hostile" / "strongswan-also-loop.conf"
    rc, out = _starter(path, tmp_path)
    assert rc != 0 and "causes a loop" in out and "config invalid!" in out, out
    connections, [status] = read_ipsec_conf(str(path), STRONGSWAN)
    assert connections == [] and status.status == ParseState.FAILED and "also= loop" in status.detail


def test_starter_notes_unknown_keywords_where_xcheck_does(tmp_path):
    path = tmp_path / "ipsec.conf"
    path.write_text("conn a\n    right=203.0.113.10\n    rekeytime=1h\n"
                    "conn b\n    right=203.0.113.11\n    lifebytes=1k\n")
    rc, out = _starter(path, tmp_path)
    assert rc == 0 and "# unknown keyword 'rekeytime'" in out and "# ignored conn 'b' due to 1 parsing error" in out
    assert list(_starter_conns(out)) == ["a"]
    connections, [status] = read_ipsec_conf(str(path), STRONGSWAN)
    assert [c.name for c in connections] == ["a"]
    assert [u.line for u in status.unrecognized] == [3, 6]


# --- Libreswan's addconn --------------------------------------------------------------------------

def _soname_package(soname: str) -> str:
    """Debian policy 8.1: libfoo.so.N is in libfooN, libfoo-1.2.so.N (a name ending in a digit) in libfoo-1.2-N."""
    stem, version = re.match(r"^(.*)\.so\.(\d+)", soname).groups()
    return f"{stem}-{version}" if stem[-1].isdigit() else f"{stem}{version}"


def _library_path(root: Path) -> str:
    return ":".join(sorted({str(p.parent) for p in root.rglob("*.so*")}))


def _missing_libraries(addconn: Path, root: Path) -> list[str]:
    done = subprocess.run(["ldd", str(addconn)], capture_output=True, text=True, timeout=TIMEOUT,
                          env=dict(os.environ, LD_LIBRARY_PATH=_library_path(root)))
    return re.findall(r"^\s*(\S+) => not found", done.stdout, re.M)


def _download(packages: list[str], into: Path) -> None:
    done = subprocess.run(["apt-get", "download", *packages], cwd=into, capture_output=True, text=True,
                          timeout=TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"apt-get download {' '.join(packages)} failed: {done.stderr.strip()[-500:]}")
    for deb in into.glob("*.deb"):
        subprocess.run(["dpkg", "-x", str(deb), str(into / "root")], check=True, timeout=TIMEOUT)
        deb.unlink()


@pytest.fixture(scope="module")
def addconn() -> Iterator:
    """Libreswan's addconn, unpacked (never installed) under the temp directory, kept between runs."""
    binary = LIBRESWAN_CACHE / "root" / "usr" / "libexec" / "ipsec" / "addconn"
    if not binary.exists():
        work = Path(tempfile.mkdtemp(prefix="xcheck-libreswan-", dir=LIBRESWAN_CACHE.parent))
        try:
            _download(["libreswan"], work)
            for _ in range(5):  # a fetched library may need another
                missing = _missing_libraries(work / binary.relative_to(LIBRESWAN_CACHE), work / "root")
                if not missing:
                    break
                _download([_soname_package(name) for name in missing], work)
            try:
                work.rename(LIBRESWAN_CACHE)
            except OSError:  # another run was quicker: use its copy
                shutil.rmtree(work, ignore_errors=True)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            shutil.rmtree(work, ignore_errors=True)
            if os.environ.get("CI"):
                raise
            pytest.skip(f"Libreswan's addconn not available: {e}")
    assert not _missing_libraries(binary, LIBRESWAN_CACHE / "root"), "addconn still misses libraries"
    env = dict(os.environ, LD_LIBRARY_PATH=_library_path(LIBRESWAN_CACHE / "root"))

    def run(path: Path, *args: str) -> tuple[int, str]:
        done = subprocess.run(["unshare", "--net", "--mount", str(binary), "--config", path.name, *args],
                              cwd=path.parent, capture_output=True, text=True, timeout=TIMEOUT, env=env)
        return done.returncode, done.stdout + done.stderr

    yield run


@pytest.mark.parametrize("path", LIBRESWAN_FILES, ids=_id)
def test_addconn_accepts_each_libreswan_fixture_and_lists_the_conns_xcheck_reads(addconn, path):
    assert addconn(path, "--checkconfig") == (0, "")
    rc, out = addconn(path, "--listall")
    assert rc == 0
    connections, statuses = read_ipsec_conf(str(path))
    assert [s.status for s in statuses] == [ParseState.PARSED, ParseState.PARSED]
    assert statuses[0].kind == LIBRESWAN  # guessed right
    assert out.split() == [c.name for c in connections]


def test_addconn_and_xcheck_both_refuse_an_unknown_keyword(addconn):
    path = FIXTURES / "hostile" / "libreswan-unknown-keyword.conf"
    rc, out = addconn(path, "--checkconfig")
    assert rc == 3 and f"{path.name}:9: syntax error [ikelifetme]" in out
    connections, [status] = read_ipsec_conf(str(path), LIBRESWAN)
    assert connections == [] and status.detail.startswith("line 9: syntax error: unknown keyword 'ikelifetme'")


def test_an_include_loop_addconn_accepts_silently_and_xcheck_refuses(addconn):
    path = FIXTURES / "hostile" / "libreswan-include-loop.conf"
    assert addconn(path, "--checkconfig") == (0, "")  # it stops at its include depth without a word
    connections, [status] = read_ipsec_conf(str(path), LIBRESWAN)
    assert connections == [] and status.status == ParseState.FAILED and "include loop" in status.detail


def test_addconn_drops_a_conn_with_a_key_set_twice_as_xcheck_does(addconn, tmp_path):
    path = tmp_path / "ipsec.conf"
    path.write_text("conn a\n    left=%defaultroute\n    right=203.0.113.10\n    also=b\n"
                    "conn b\n    right=203.0.113.11\nconn c\n    left=%defaultroute\n    right=203.0.113.12\n")
    rc, out = addconn(path, "--checkconfig")
    assert "duplicate key 'right' in conn a while processing def b" in out
    connections, [status] = read_ipsec_conf(str(path), LIBRESWAN)
    assert [c.name for c in connections] == ["b", "c"]
    assert ["duplicate key 'right'" in u.text for u in status.unrecognized] == [True]


def test_every_libreswan_fix_is_a_line_libreswan_parses(addconn):
    """The audit's fixes for Libreswan connections are written in Libreswan's words: each ike= and esp=
    it suggests is parsed by Libreswan's own algparse (strongSwan's `aes256gcm16` or `modp1024` are not)."""
    import re

    from agent.audit.ipsec.rules import IpsecContext, judge_ipsec
    from agent.verdicts import load_ruleset

    algparse = LIBRESWAN_CACHE / "root" / "usr" / "libexec" / "ipsec" / "algparse"
    env = dict(os.environ, LD_LIBRARY_PATH=_library_path(LIBRESWAN_CACHE / "root"))
    context = IpsecContext(gateways=("203.0.113.10",), gateway_type="route-based")
    suggested = set()
    for path in LIBRESWAN_FILES:
        connections, _ = read_ipsec_conf(str(path))
        for finding in judge_ipsec(connections, load_ruleset("azure-current").audit, context):
            suggested |= set(re.findall(r"\b((?:ike|esp)=[^\s,)]+)", finding.fix))
    assert any(s.startswith("esp=") for s in suggested) and any(s.startswith("ike=") for s in suggested), suggested
    for line in sorted(suggested):
        done = subprocess.run([str(algparse), "-v2", line], capture_output=True, text=True, timeout=TIMEOUT, env=env)
        assert done.returncode == 0 and "not" not in done.stdout + done.stderr, (line, done.stdout + done.stderr)
