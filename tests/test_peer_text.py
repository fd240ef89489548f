"""Peer text is data: rich markup and control characters from the wire stay inert text in the text
and Markdown renderings, every string a check keeps is bounded in one place (the runner), and the
JSON report keeps the peer's words as they came, strictly as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import socket
import threading
import unicodedata

import pytest
from conftest import run_xcheck, validate_report
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from test_report import sample_report

from agent.render import render_json, render_markdown, render_text
from agent.runner import run_checks
from agent.text import MAX_TEXT_CHARS, markdown, markdown_code, visible
from checks.protocols import stun
from checks.contract import Check, Outcome, Scope
from checks.targets import Targets

INVISIBLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}
HOSTILE = "[/x][bold]\x1b[2J\x1b]8;;http://x.example/\x07\u202eevil\x9b31m\x00\r\n|*_a_*|<b>&amp;"
# Every character there is: surrogates and controls included.
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=200)
_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[nrt])")
_NAMED = {"n": "\n", "r": "\r", "t": "\t"}


def hostile_report(text: str = HOSTILE) -> dict:
    report = json.loads(json.dumps(sample_report()))
    report["host"]["hostname"] = text
    report["checks"][1]["detail"] = text
    report["facts"]["nat"]["mapping"] = None
    report["options"]["s2s"]["reasons"][0]["text"] = text
    report["options"]["s2s"]["title"] = text
    return report


# ---------------------------------------------------------------- the sanitiser

@settings(max_examples=500)
@given(any_text)
def test_visible_leaves_no_invisible_character_and_hides_nothing(text):
    shown = visible(text)
    assert not {unicodedata.category(char) for char in shown} & INVISIBLE
    shown.encode("utf-8")  # a lone surrogate would make writing the report fail
    if "\\" not in text:  # the escapes read back to exactly what came
        assert _ESCAPE.sub(lambda m: _NAMED.get(m.group(1)) or chr(int(m.group(1)[1:], 16)), shown) == text
    if not {unicodedata.category(char) for char in text} & INVISIBLE:
        assert shown == text


def test_visible_examples():
    assert visible("a\x1b[2Jb\nc\td\x9b\u202ee\ud800") == "a\\x1b[2Jb\\nc\\td\\x9b\\u202ee\\ud800"
    assert visible("Name or service not known [Errno -2]") == "Name or service not known [Errno -2]"


_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])


@settings(max_examples=500)
@given(any_text)
def test_markdown_cell_is_one_cell_of_plain_text(text):
    """Through a real CommonMark parser: one row of two cells, the second exactly `visible(text)`
    and nothing but text (no emphasis, link, image, HTML, code or line break)."""
    tokens = _MARKDOWN.parse(f"| a | b |\n|---|---|\n| x | {markdown(text)} |\n")
    rows = [t for t in tokens if t.type == "tr_open"]
    cells = [t for t in tokens if t.type == "inline"]
    assert len(rows) == 2 and len(cells) == 4
    assert {child.type for child in cells[3].children} <= {"text"}
    assert "".join(child.content for child in cells[3].children) == visible(text).strip()


@given(any_text)
def test_markdown_leaves_no_bare_link(text):
    shown = markdown(text)
    assert not re.search(r"[A-Za-z0-9+.-]://", shown) and not re.search(r"(?i)(?<![a-z0-9\\])www\.", shown)


@given(any_text.filter(bool))
def test_markdown_code_span_holds_any_text(text):
    [paragraph] = [t for t in _MARKDOWN.parse(f"x {markdown_code(text)} y") if t.type == "inline"]
    assert [child.type for child in paragraph.children] == ["text", "code_inline", "text"]
    assert paragraph.children[1].content == visible(text)


# ---------------------------------------------------------------- the renderings

@pytest.mark.parametrize("color", [False, True])
def test_text_shows_markup_and_escapes_as_text(color):
    shown = render_text(hostile_report(), color=color)  # "[/x]" crashed rich's markup parser
    assert "[/x][bold]" in shown and "\\x1b[2J" in shown and "\\u202eevil" in shown
    assert "\x1b[2J" not in shown and "\x1b]8" not in shown and "\x9b" not in shown and "\u202e" not in shown
    if not color:
        assert "\x1b" not in shown


@settings(max_examples=100, deadline=None)
@given(any_text)
def test_text_rendering_never_fails_nor_writes_invisible_characters(text):
    shown = render_text(hostile_report(text))
    assert not {unicodedata.category(char) for char in shown.replace("\n", "")} & INVISIBLE


def test_markdown_keeps_tables_whole():
    shown = render_markdown(hostile_report())
    checks = shown.split("### Checks")[1].split("###")[0]
    rows = [line for line in checks.splitlines() if line.startswith("|")]
    assert all(len(re.findall(r"(?<!\\)\|", row)) == 6 for row in rows), rows  # five cells each
    assert "\x1b" not in shown and "\\[/x\\]" in shown and "\\<b\\>" in shown and "\\x1b" in shown


def test_json_keeps_the_peer_text_as_it_came_and_is_strict():
    report = hostile_report()
    assert json.loads(render_json(report))["checks"][1]["detail"] == HOSTILE
    assert "\x1b" not in render_json(report)  # JSON escapes it: \u001b
    for number in (math.nan, math.inf):
        report["checks"][1]["duration_seconds"] = number
        with pytest.raises(ValueError):
            render_json(report)


# ---------------------------------------------------------------- the runner bounds every string

def _run(probe):
    check = Check(name="talkative", summary="talkative", scope=Scope.HOST, probe=probe, evidence=dict)
    [run] = asyncio.run(run_checks([check], Targets(), 2.0))
    return list(run.results)


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from _strings(item)


def test_the_runner_bounds_every_string_a_check_keeps():
    long = "peer " * 100_000

    async def talkative(ctx):
        return Outcome.ok({long: [long, (long, 7)], "nested": {"deep": [{"x": long}]}, "short": "kept", "n": 1.5},
                          detail=long)

    [result] = _run(talkative)
    strings = list(_strings(result.to_dict()))
    assert max(map(len, strings)) == MAX_TEXT_CHARS
    assert result.detail.startswith("peer peer") and result.detail.endswith(f"[cut: {len(long)} characters]")
    assert result.evidence["short"] == "kept" and result.evidence["n"] == 1.5
    assert result.evidence["nested"]["deep"][0]["x"] == result.detail
    [(key, value)] = [(k, v) for k, v in result.evidence.items() if k.startswith("peer")]
    assert value[1] == (result.detail, 7)


def test_a_crash_with_a_huge_message_is_bounded_too():
    async def crashes(ctx):
        raise ValueError("x" * 50_000)

    [result] = _run(crashes)
    assert len(result.detail) == MAX_TEXT_CHARS and result.detail.startswith("ValueError: xxx")


def test_a_checks_log_line_reaches_the_terminal_inert(caplog):
    async def logs(ctx):
        ctx.logger.debug("server said %r then %s", "ok", "\x1b[2J\x1b]0;pwned\x07")
        return Outcome.ok({})

    with caplog.at_level(logging.DEBUG, logger="xcheck"):
        _run(logs)
    [record] = [r for r in caplog.records if r.name.endswith("talkative")]
    assert record.getMessage() == "server said 'ok' then \\x1b[2J\\x1b]0;pwned\\x07"


# ---------------------------------------------------------------- xcheck run against a hostile peer

@contextlib.contextmanager
def stun_error_server(reason: str):
    """A loopback STUN server that answers every Binding request with error 400 and `reason`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()
    phrase = reason.encode("utf-8", "surrogatepass")
    value = bytes([0, 0, 4, 0]) + phrase

    def answer() -> None:
        while not stop.is_set():
            try:
                data, source = sock.recvfrom(4096)
            except TimeoutError:
                continue
            if len(data) >= stun.HEADER_LENGTH:
                sock.sendto(stun.encode_message(stun.BINDING, stun.MessageClass.ERROR_RESPONSE, data[8:20],
                                                [(stun.Attribute.ERROR_CODE, value)]), source)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        sock.close()


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_xcheck_run_against_a_stun_server_whose_reason_is_markup_and_escapes(fmt):
    # Words apart, so that the table wraps between them: each is looked for whole.
    words = {"[/x]": "\\[/x\\]", "\x1b[2J": "\\\\x1b\\[2J", "\x1b]0;owned\x07": "\\\\x1b\\]0;owned\\\\x07",
             "[bold]\u202e": "\\[bold\\]\\\\u202e", "|*x*|": "\\|\\*x\\*\\|"}
    reason = " ".join(words)
    with stun_error_server(reason) as port:
        completed, report = run_xcheck("run", "--stun", f"127.0.0.1:{port}", "--timeout", "1", "--format", fmt)
    assert completed.returncode == 0, completed.stderr  # was exit 3 (MarkupError) and no report
    assert "Traceback" not in completed.stderr and "internal error" not in completed.stderr
    out = completed.stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    if fmt == "json":
        binding = next(c for c in validate_report(report)["checks"] if c["name"] == "stun_binding")
        # A valid STUN error response: the peer's own error, its reason phrase kept as it came.
        assert binding["reason"] == "peer_error" and binding["detail"].endswith(f"error 400 {reason}")
        return
    for word, in_markdown in words.items():
        assert (visible(word) if fmt == "text" else in_markdown) in out
    assert "stun_binding" in out and "Verdicts" in out and "Recommendation" in out


def test_the_responders_and_verbose_log_lines_reach_stderr_inert():
    """`xcheck responder` logs what its clients send (and `run -v` what servers answer) through the
    handler the CLI installs: a peer's ESC sequence arrives as text."""
    import subprocess
    import sys

    script = ("import logging; from agent.cli import _log_to_stderr; "
              "_log_to_stderr(logging.INFO, 'xcheck responder: %(message)s'); "
              "logging.getLogger('xcheck.responder.tls').info('request %s', '\\x1b]0;pwned\\x07GET /')")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "\x1b" not in completed.stderr and "\x07" not in completed.stderr
    assert "request \\x1b]0;pwned\\x07GET /" in completed.stderr


def test_an_error_message_quoting_a_file_name_is_inert(tmp_path):
    from conftest import run_xcheck

    config = tmp_path / "evil\x1b[31m.toml"
    completed, _ = run_xcheck("run", "--stun", "127.0.0.1:9", "--config", str(config))
    assert completed.returncode == 2
    assert "\x1b" not in completed.stderr and "evil\\x1b[31m.toml" in completed.stderr


def test_the_runner_bounds_strings_inside_typed_evidence():
    """Typed evidence (a frozen dataclass, nested) is bounded as a dict is."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Inner:
        text: str

    @dataclass(frozen=True)
    class Evidence:
        quoted: str
        parts: tuple[Inner, ...]

    long = "peer " * 100_000

    async def typed(ctx):
        return Outcome.ok(Evidence(long, (Inner(long),)), detail="short")

    [result] = _run(typed)
    assert isinstance(result.evidence, Evidence) and isinstance(result.evidence.parts[0], Inner)
    assert len(result.evidence.quoted) == len(result.evidence.parts[0].text) == MAX_TEXT_CHARS
