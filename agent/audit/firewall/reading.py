"""What both firewall readers share: bounded input, a bounded list of what was not understood,
and the parse status they end with."""

from __future__ import annotations

from agent.audit.findings import ParseState, ParseStatus, Unrecognized

MAX_INPUT_CHARS = 32 * 1024 * 1024  # a 5,000-rule ruleset is about 2 MiB as nft JSON
MAX_UNRECOGNIZED = 50  # listed in the parse status; the rest only counted
MAX_QUOTE_CHARS = 300  # of a rule or an expression quoted in a message


def quote(text: str) -> str:
    """A rule or expression as a message may show it: one line, bounded."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_QUOTE_CHARS else flat[:MAX_QUOTE_CHARS - 3] + "..."


def bounded_text(text: str | bytes) -> tuple[str | None, str]:
    """The input as text, or None and why it cannot be a ruleset listing (too large, binary)."""
    if len(text) > MAX_INPUT_CHARS:
        return None, f"too large: {len(text)} bytes, more than the {MAX_INPUT_CHARS} a ruleset listing may have"
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"binary, not text: byte {exc.start} is not UTF-8"
    if "\x00" in text:
        return None, f"binary, not text: a NUL character at offset {text.index(chr(0))}"
    return text, ""


class Unknowns:
    """What a reader did not understand, in the order met: the first MAX_UNRECOGNIZED kept."""

    def __init__(self) -> None:
        self.kept: list[Unrecognized] = []
        self.count = 0

    def add(self, line: int | None, text: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_UNRECOGNIZED:
            self.kept.append(Unrecognized(line, quote(text)))

    def status(self, file: str, kind: str, detail: str) -> ParseStatus:
        if not self.count:
            return ParseStatus(file, kind, ParseState.PARSED, detail)
        more = self.count - len(self.kept)
        detail = f"{detail}; {self.count} not understood" + (f" ({more} more not listed)" if more else "")
        return ParseStatus(file, kind, ParseState.PARTIALLY_UNRECOGNIZED, detail, tuple(self.kept))


def failed(file: str, kind: str, why: str) -> ParseStatus:
    return ParseStatus(file, kind, ParseState.FAILED, why)
