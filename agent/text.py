"""Text from the wire, kept bounded in the report and made inert where it meets a person.

The report keeps what a peer sent as it came, only cut to a bounded length (`bounded`, applied
by the runner to every string a check returns): JSON escapes control characters itself, and a
reader of the JSON wants the peer's own words. Where text meets a terminal or Markdown,
`visible` shows every control, format and line-separator character as an escape, and
`markdown` also escapes what Markdown would read as syntax.
"""

from __future__ import annotations

import logging
import re
import unicodedata

# A STUN reason phrase or SOFTWARE, an HTTP status line, an iperf3 error or a certificate name is
# far shorter; a peer that sends more gets no more room in the report, nor on the terminal.
MAX_TEXT_CHARS = 1024

# C0 and C1 controls and DEL (Cc), format characters such as the bidi overrides that reorder what
# is shown (Cf), surrogates that no terminal encoding can write (Cs), and line/paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

# Markdown syntax inside a line: emphasis, code, links and images, raw HTML and entities, table
# cells, and GitHub's strikethrough, math, mentions and issue references. The backslash too, so
# that a peer's own escapes stay text. An underscore between two letters or digits is no emphasis
# (CommonMark's flanking rules): `stun_binding` stays as it is.
_MARKDOWN_SYNTAX = re.compile(r"[\\`*\[\]<>|~&$@#]|(?<![^\W_])_|_(?![^\W_])")
# What GFM links without any syntax: "scheme://..." and "www.".
_BARE_LINK = re.compile(r"(?i)(?<=[a-z0-9+.-])://|(?<![a-z0-9])www\.")


def bounded(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` if it fits in `limit` characters, else its start and a note of how long it was."""
    if len(text) <= limit:
        return text
    marker = f"… [cut: {len(text)} characters]"
    return text[: limit - len(marker)] + marker


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """One line of inert text: each invisible character as a Python-style escape: `\\n` for a
    newline, `\\x1b` for ESC, `\\u202e` for a bidi override. A backslash stays as it is."""
    if text.isprintable():  # the common case, and much faster than looking at each character
        return text
    return "".join(_escape(char) if unicodedata.category(char) in _INVISIBLE else char for char in text)


def inert_log_record(record: logging.LogRecord) -> bool:
    """A logging filter: a log line that quotes a peer reaches the terminal as inert text."""
    try:
        record.msg, record.args = visible(record.getMessage()), None
    except (TypeError, ValueError):
        pass  # a malformed log call: logging reports it itself when the record is formatted
    return True


def markdown(text: str) -> str:
    """`visible(text)` as Markdown text that renders as itself inside a line or a table cell."""
    escaped = _MARKDOWN_SYNTAX.sub(lambda match: "\\" + match.group(), visible(text))
    return _BARE_LINK.sub(lambda match: match.group().replace(":", "\\:").replace(".", "\\."), escaped)


def markdown_code(text: str) -> str:
    """`visible(text)` as a Markdown code span, its fence longer than any run of backticks in it."""
    shown = visible(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", shown)), default=0) + 1)
    # CommonMark takes one space off each end of a span that has one at both: pad what would
    # lose a space or merge a backtick with the fence.
    pad = " " if shown.strip(" ") and (shown[0] in "` " or shown[-1] in "` ") else ""
    return f"{fence}{pad}{shown}{pad}{fence}"
