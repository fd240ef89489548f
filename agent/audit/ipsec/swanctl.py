"""strongSwan's swanctl.conf into the model, read as swanctl and charon read it (5.9.8).

The syntax is strongswan.conf(5)'s settings syntax, scanned as settings_lexer.l and parsed as
settings_parser.y do: `name { ... }` sections, `key = value` settings ending at a newline, `#`
comments, "quoted strings" with escapes (and newlines), `name : ref1, ref2 { ... }` sections that
inherit from others, and `include PATTERN` anywhere, whose files' text continues the token stream
where the include stands (so settings of an included file land in the enclosing section). Sections
of the same name merge and a later value replaces an earlier one; an empty value clears it.
A syntax error anywhere makes swanctl load nothing: the file is FAILED and no connection returned.

Each `connections.NAME` becomes a `Connection` with its `children`, checked as charon's vici plugin
checks it (vici_config.c): an unknown option or section, or a value charon cannot parse, makes
charon discard that connection; it is left out and said so on the line. PSKs come from the
`secrets.ike*` sections (their length only: see secrets.py).

Connection.lines maps, for evidence: the model's field names ("ike_proposals", "dpd_delay_seconds"),
the keys as written ("proposals", "dpd_delay"), and for a child "children.CHILD.FIELD" and
"children.CHILD.KEY" ("children.net.esp_proposals", "children.net.rekey_time"), each to the line
that set the value in effect, when that line is in the connection's own file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from agent.audit.findings import ParseStatus
from agent.audit.ipsec.model import Child, Connection
from agent.audit.ipsec.proposals import ESP, IKE, ProposalError, parse_strongswan_list
from agent.audit.ipsec.secrets import SharedSecret, identity, key_length, psk_for
from agent.audit.sources import SourceError, Sources, StatusBook

KIND = "swanctl"
MAX_SECTION_DEPTH = 32  # swanctl.conf needs 5; strongSwan's parser stops near 10,000 (bison's stack)

# vici_config.c's rules (5.9.8): the keys charon takes in a connection, a child and an auth round
CONNECTION_KEYS = frozenset({
    "local_addrs", "remote_addrs", "proposals", "vips", "pools", "version", "aggressive", "pull", "dscp", "encap",
    "mobike", "dpd_delay", "dpd_timeout", "fragmentation", "childless", "send_certreq", "send_cert", "keyingtries",
    "unique", "local_port", "remote_port", "reauth_time", "rekey_time", "over_time", "rand_time", "ppk_id",
    "ppk_required", "if_id_in", "if_id_out", "mediation", "mediated_by", "mediation_peer"})
CHILD_KEYS = frozenset({
    "ah_proposals", "esp_proposals", "local_ts", "remote_ts", "updown", "hostaccess", "mode", "policies",
    "policies_fwd_out", "replay_window", "rekey_time", "life_time", "rand_time", "rekey_bytes", "life_bytes",
    "rand_bytes", "rekey_packets", "life_packets", "rand_packets", "dpd_action", "start_action", "close_action",
    "ipcomp", "inactivity", "reqid", "mark_in", "mark_in_sa", "mark_out", "set_mark_in", "set_mark_out",
    "tfc_padding", "priority", "interface", "hw_offload", "sha256_96", "copy_df", "copy_ecn", "copy_dscp",
    "if_id_in", "if_id_out", "label", "label_mode"})
AUTH_KEYS = frozenset({"groups", "cert_policy", "certs", "cacerts", "pubkeys", "auth", "id", "ca_id", "aaa_id",
                       "eap_id", "xauth_id", "revocation", "round"})
TOP_SECTIONS = frozenset({"connections", "secrets", "pools", "authorities"})
_BOOLS = {"yes": True, "true": True, "enabled": True, "1": True, "no": False, "false": False, "disabled": False,
          "0": False}
_ACTIONS = {"start": "start", "restart": "start", "route": "trap", "trap": "trap", "none": "none", "clear": "none"}
_DPD_ACTIONS = {"start": "restart", "restart": "restart", "route": "trap", "trap": "trap", "none": "clear",
                "clear": "clear"}
_MODES = {"tunnel": "tunnel", "transport": "transport", "transport_proxy": "transport", "beet": "beet",
          "drop": "drop", "pass": "pass"}


class _Refused(Exception):
    """charon would discard the connection; str() says why, for the line it names."""

    def __init__(self, line: int, file: str, why: str):
        super().__init__(why)
        self.line, self.file = line, file


# --- the settings syntax -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Token:
    kind: str  # NAME, STRING, NEWLINE, or one of { } . , : =
    text: str
    file: str
    line: int


class _SyntaxError(Exception):
    def __init__(self, file: str, line: int, why: str):
        super().__init__(why)
        self.file, self.line = file, line


_NAME = re.compile(r'[^#{}:.,="\r\n\t ]+')
_REF_NAME = re.compile(r'[^#{}:.,="\r\n\t ]+(?:\.[^#{}:.,="\r\n\t ]+)*')
_VALUE_PART = re.compile(r'[^#}"\r\n\t ]+')
_BLANKS = re.compile(r"[\t\r ]+")
_INCLUDE = re.compile(r"include([\t ]+)")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


class _Lexer:
    """settings_lexer.l over one file's text: tokens, and ("include", pattern) where one stands."""

    def __init__(self, text: str, file: str):
        self.text, self.file, self.pos, self.line = text, file, 0, 1

    def _string(self) -> str:
        """After an opening quote: the string's text, escapes resolved (<str> state)."""
        text, out, start = self.text, [], self.line
        while True:
            if self.pos >= len(text):
                raise _SyntaxError(self.file, start, "unterminated string (it runs to the end of the file)")
            c = text[self.pos]
            if c == '"':
                self.pos += 1
                return "".join(out)
            if c == "\\":
                nxt = text[self.pos + 1: self.pos + 2]
                if not nxt:
                    raise _SyntaxError(self.file, start, "unterminated string (it runs to the end of the file)")
                if text.startswith("\r\n", self.pos + 1) or nxt == "\n":
                    self.pos += 3 if nxt == "\r" else 2  # an escaped newline joins the lines
                    self.line += 1
                    continue
                out.append(_ESCAPES.get(nxt, nxt))
                self.pos += 2
                continue
            if c == "\r":
                self.pos += 1
                continue
            end = self.pos
            while end < len(text) and text[end] not in '"\\\r':
                end += 1
            chunk = text[self.pos:end]
            self.line += chunk.count("\n")
            out.append(chunk)
            self.pos = end

    def _include(self) -> str:
        """After `include` and its blanks: the pattern (<inc> state)."""
        text, out = self.text, []
        while self.pos < len(text):
            c = text[self.pos]
            if c in "#}\n\t ":
                break
            if c == "\r":
                self.pos += 1
            elif c == '"':
                self.pos += 1
                out.append(self._string())
                break  # a quoted include ends with its string
            elif c == "\\" and text[self.pos + 1: self.pos + 2] in ('"', "#", "}", " "):
                out.append(text[self.pos + 1])
                self.pos += 2
            else:
                end = self.pos
                while end < len(text) and text[end] not in '"\\#}\r\n\t ':
                    end += 1
                out.append(text[self.pos:max(end, self.pos + 1)])
                self.pos = max(end, self.pos + 1)
        return "".join(out)

    def _token(self, kind: str, value: str = "") -> _Token:
        return _Token(kind, value, self.file, self.line)

    def tokens(self) -> Iterator[_Token | tuple[str, str, int]]:
        text = self.text
        state = "initial"
        while True:
            if state == "val":
                blanks = _BLANKS.match(text, self.pos)
                if blanks:
                    self.pos = blanks.end()
                if self.pos >= len(text) or text[self.pos] in "#}\n":
                    state = "initial"
                    yield self._token("NEWLINE")
                elif text[self.pos] == '"':
                    self.pos += 1
                    line = self.line
                    yield _Token("STRING", self._string(), self.file, line)
                else:
                    part = _VALUE_PART.match(text, self.pos)
                    self.pos = part.end()
                    yield self._token("NAME", part.group())
                continue
            if self.pos >= len(text):
                return
            c = text[self.pos]
            if state == "ref":
                if c in "\t\r ":
                    self.pos += 1
                elif c == "\n":
                    self.pos, self.line = self.pos + 1, self.line + 1
                elif c == "#":
                    self._skip_comment()
                elif c == ",":
                    self.pos += 1
                    yield self._token(",")
                else:
                    name = _REF_NAME.match(text, self.pos)
                    if name:
                        self.pos = name.end()
                        yield self._token("NAME", name.group())
                    else:
                        state = "initial"
                continue
            if c in "\t\r ":
                self.pos = _BLANKS.match(text, self.pos).end()
            elif c == "\n":
                self.pos, self.line = self.pos + 1, self.line + 1
            elif c == "#":
                self._skip_comment()
            elif c in "{}.,":
                self.pos += 1
                yield self._token(c)
            elif c in ":=":
                self.pos += 1
                state = "ref" if c == ":" else "val"
                yield self._token(c)
            elif c == '"':
                raise _SyntaxError(self.file, self.line, "unexpected string")
            else:
                include = _INCLUDE.match(text, self.pos)
                name = _NAME.match(text, self.pos)
                # flex's longest match counts the trailing context [^=] of `include[\t ]+/[^=]`
                if include and name.end() == self.pos + len("include"):
                    blanks = include.group(1)
                    after = include.end()
                    if after < len(text) and text[after] != "=":
                        self.pos = after
                    elif len(blanks) > 1 and after < len(text):
                        self.pos = after - 1  # the last blank is the context: an empty pattern
                    else:
                        include = None
                    if include:
                        line = self.line
                        yield ("include", self._include(), line)
                        continue
                self.pos = name.end()
                yield self._token("NAME", name.group())

    def _skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end


@dataclass
class _Value:
    text: str | None  # None: cleared (`key =`), the default applies
    file: str
    line: int


@dataclass
class _Section:
    name: str
    file: str
    line: int
    keys: dict[str, _Value] = field(default_factory=dict)
    sections: dict[str, _Section] = field(default_factory=dict)
    refs: list[str] = field(default_factory=list)


class _Abort(Exception):
    """The reading stops: a file of it failed, its status already says why."""

    def __init__(self, file: str):
        super().__init__(file)
        self.file = file


class _Tree:
    """Reads a file and its includes into sections, as settings_parser.y builds them."""

    def __init__(self, sources: Sources, book: StatusBook):
        self.sources, self.book = sources, book

    def _stream(self, path: str, including: str | None = None, line: int = 0) -> Iterator[_Token]:
        """The tokens of `path`, those of its includes spliced in where they stand."""
        try:
            with self.sources.nested(path, line):
                source = self.sources.read(path)
                self.book.opened(path, KIND, source.note)
                for token in _Lexer("\n".join(source.lines), path).tokens():
                    if isinstance(token, tuple):
                        if token[1]:  # an empty pattern: "no include pattern specified, ignored"
                            for included in self.sources.include(token[1], path):
                                yield from self._stream(included, path, token[2])
                    else:
                        yield token
        except SourceError as e:
            if including is not None and (e.missing or e.not_file):
                self.book.unrecognized(including, line, f"include {path}: {e} (swanctl skips it)")
                return
            self.book.failed(path, KIND, str(e))
            if including is not None and e.denied:
                return  # strongSwan skips a file it cannot open (parser_helper.c file_next())
            raise _Abort(path) from None

    def parse(self, path: str) -> _Section:
        root = _Section("", path, 0)
        stack = [root]
        tokens = self._stream(path)

        def next_token() -> _Token | None:
            return next(tokens, None)

        while True:
            token = next_token()
            if token is None:
                if len(stack) > 1:
                    raise _SyntaxError(stack[-1].file, stack[-1].line,
                                       f"section '{stack[-1].name}' is never closed (unexpected end of file)")
                return root
            if token.kind == "NEWLINE":
                continue
            if token.kind == "}":
                if len(stack) == 1:
                    raise _SyntaxError(token.file, token.line, "syntax error, unexpected '}'")
                stack.pop()
                continue
            if token.kind != "NAME":
                raise _SyntaxError(token.file, token.line, f"syntax error, unexpected {_describe(token)}")
            follow = next_token()
            if follow is None:
                raise _SyntaxError(token.file, token.line, "syntax error, unexpected end of file after a name")
            if follow.kind == "=":
                parts = []
                while True:
                    part = next_token()
                    if part is None or part.kind == "NEWLINE":
                        break
                    parts.append(part.text)
                stack[-1].keys[token.text] = _Value(" ".join(parts) if parts else None, token.file, token.line)
                continue
            refs: list[str] = []
            if follow.kind == ":":
                while True:
                    ref = next_token()
                    if ref is None or ref.kind != "NAME":
                        raise _SyntaxError(token.file, token.line, "syntax error in the references of a section")
                    refs.append(ref.text)
                    follow = next_token()
                    if follow is None or follow.kind != ",":
                        break
            if follow is None or follow.kind != "{":
                where = follow or token
                raise _SyntaxError(where.file, where.line,
                                   f"syntax error, unexpected {_describe(follow)}, expecting '{{' or '='")
            if len(stack) > MAX_SECTION_DEPTH:
                raise _SyntaxError(token.file, token.line,
                                   f"sections nested deeper than {MAX_SECTION_DEPTH} levels: xcheck stops here")
            section = stack[-1].sections.get(token.text)
            if section is None:
                section = stack[-1].sections[token.text] = _Section(token.text, token.file, token.line)
            section.refs += refs
            stack.append(section)


def _describe(token: _Token | None) -> str:
    # never the token's text: it may be part of a secret
    if token is None:
        return "end of file"
    return {"NAME": "name", "STRING": "string", "NEWLINE": "end of line"}.get(token.kind, f"'{token.kind}'")


class _View:
    """A section with what it inherits: its own settings first, then those of the sections it
    references, left to right (strongswan.conf(5) "REFERENCING OTHER SECTIONS")."""

    def __init__(self, root: _Section, sections: list[_Section]):
        self.root, self.sections = root, sections

    @classmethod
    def of(cls, root: _Section, sections: list[_Section]) -> _View:
        """The sections, each followed by those it references (depth first, as settings.c looks
        them up), each once: a loop of references ends where it comes back."""
        expanded: list[_Section] = []
        seen: set[int] = set()
        todo = list(reversed(sections))
        while todo:  # no recursion: a chain of references may be as long as the file
            section = todo.pop()
            if id(section) in seen:
                continue
            seen.add(id(section))
            expanded.append(section)
            targets = []
            for ref in section.refs:
                target: _Section | None = root
                for part in ref.split("."):
                    target = target.sections.get(part) if target else None
                if target is not None:
                    targets.append(target)
            todo.extend(reversed(targets))
        return cls(root, expanded)

    def value(self, key: str) -> _Value | None:
        for section in self.sections:
            if key in section.keys:
                return section.keys[key]
        return None

    def keys(self) -> dict[str, _Value]:
        out: dict[str, _Value] = {}
        for section in self.sections:
            for key, value in section.keys.items():
                out.setdefault(key, value)
        return {key: value for key, value in out.items() if value.text is not None}

    def names(self) -> list[str]:
        return list(dict.fromkeys(name for section in self.sections for name in section.sections))

    def sub(self, name: str) -> _View:
        return _View.of(self.root, [s.sections[name] for s in self.sections if name in s.sections])


# --- values, as vici_config.c parses them ---------------------------------------------------------

def _c_number(text: str) -> tuple[int, str] | None:
    """strtoul(text, &end, 0): a decimal, 0x hex or 0 octal number and what follows it."""
    m = re.match(r"\s*(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if not m:
        return None
    digits = m.group(1)
    base = 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") and len(digits) > 1 else 10
    return int(digits, base), text[m.end():].lstrip(" ")


_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_BYTE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def _scaled(text: str, units: dict[str, int]) -> int | None:
    # vici_stringify() copies a value into 16 bytes: a longer one does not parse
    parsed = _c_number(text) if len(text) <= 15 else None
    if parsed is None:
        return None
    factor = units.get(parsed[1].lower())
    return None if factor is None else parsed[0] * factor


def parse_time(text: str) -> int | None:
    """Seconds, with an s, m, h or d suffix (vici_config.c parse_time); None when charon refuses it."""
    return _scaled(text, _TIME_UNITS)


def parse_bytes(text: str) -> int | None:
    """Bytes, with a k, m or g suffix (binary: 1024; vici_config.c parse_bytes)."""
    return _scaled(text, _BYTE_UNITS)


def _list(text: str) -> tuple[str, ...]:
    """A comma-separated list as swanctl sends it (enumerator_create_token: empty items dropped)."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _all_refs(section: _Section) -> Iterator[str]:
    yield from section.refs
    for sub in section.sections.values():
        yield from _all_refs(sub)


class _Reader:
    def __init__(self, path: str, root: _Section, book: StatusBook):
        self.path, self.root, self.book = path, root, book

    def secrets(self) -> list[SharedSecret]:
        view = _View.of(self.root, [self.root]).sub("secrets")
        out = []
        for name in view.names():
            if not name.startswith("ike"):
                continue
            secret = view.sub(name)
            value = secret.value("secret")
            if value is None or value.text is None:
                continue  # "missing secret in 'ike...', ignored"
            length = key_length(value.text)
            if length is None:
                self.book.unrecognized(value.file, value.line, f"secret of {name}: does not decode (not quoted)")
                continue
            owners = tuple(identity(v.text) for k, v in secret.keys().items() if k.startswith("id"))
            out.append(SharedSecret(owners or ("%any",), length, value.file, value.line))
        return out

    def connections(self) -> list[Connection]:
        top = _View.of(self.root, [self.root])
        referenced = {ref.split(".")[0] for ref in _all_refs(self.root)}
        for name in top.names():
            if name not in TOP_SECTIONS and name not in referenced:  # a template is referenced
                section = self.root.sections[name]
                self.book.unrecognized(section.file, section.line,
                                       f"section '{name}': not one swanctl reads (connections, secrets, pools, "
                                       "authorities) nor referenced by one; ignored")
        secrets = self.secrets()
        conns = top.sub("connections")
        out = []
        for name in conns.names():
            view = conns.sub(name)
            first = view.sections[0]
            try:
                out.append(self._connection(name, view, first, secrets))
            except _Refused as e:
                self.book.unrecognized(e.file, e.line, f"connection '{name}': {e} (charon refuses to load it)")
        return out

    def _value(self, view: _View, key: str, parse, what: str):
        """The parsed value of `key` in effect and its _Value, or (None, None) when unset."""
        value = view.value(key)
        if value is None or value.text is None:
            return None, None
        parsed = parse(value.text)
        if parsed is None:
            raise _Refused(value.line, value.file, f"invalid value for {key}: '{value.text}' is not {what}")
        return parsed, value

    def _check_keys(self, view: _View, known: frozenset[str], where: str) -> None:
        for key, value in view.keys().items():
            if key not in known:
                raise _Refused(value.line, value.file, f"unknown option '{key}'{where}")

    def _connection(self, name: str, view: _View, first: _Section, secrets: list[SharedSecret]) -> Connection:
        lines: dict[str, int] = {}

        def note(value: _Value | None, *keys: str) -> None:
            if value is not None and value.file == first.file:
                for key in keys:
                    lines[key] = value.line

        self._check_keys(view, CONNECTION_KEYS, "")
        version, v = self._value(view, "version", lambda t: int(t) if t.strip() in ("0", "1", "2") else None,
                                 "0, 1 or 2")
        note(v, "ike_version", "version")
        local_addrs, v = self._value(view, "local_addrs", _list, "a list")
        note(v, "local_addrs")
        remote_addrs, v = self._value(view, "remote_addrs", _list, "a list")
        note(v, "remote_addrs")
        ike_proposals, v = self._proposals(view, "proposals", IKE)
        note(v, "ike_proposals", "proposals")
        encap, v = self._value(view, "encap", lambda t: _BOOLS.get(t.lower()), "yes or no")
        note(v, "encap")
        dpd_delay, v = self._value(view, "dpd_delay", parse_time, "a time")
        note(v, "dpd_delay_seconds", "dpd_delay")
        dpd_timeout, v = self._value(view, "dpd_timeout", parse_time, "a time")
        note(v, "dpd_timeout_seconds", "dpd_timeout")
        rekey, rekey_v = self._value(view, "rekey_time", parse_time, "a time")
        reauth, reauth_v = self._value(view, "reauth_time", parse_time, "a time")
        note(rekey_v, "rekey_time")
        note(reauth_v, "reauth_time")
        # The IKE SA is renewed at rekey_time (a reauthentication at reauth_time when rekeying is off)
        if rekey:
            ike_lifetime = rekey
            note(rekey_v, "ike_lifetime_seconds")
        elif reauth:
            ike_lifetime = reauth
            note(reauth_v, "ike_lifetime_seconds")
        else:
            ike_lifetime = 0 if rekey_v or reauth_v else None
            note(rekey_v or reauth_v, "ike_lifetime_seconds")
        for key, value in view.keys().items():
            note(value, key)
        auth, local_ids, remote_ids = self._auth(view, note)
        children = []
        for section in view.names():
            lower = section.lower()
            if lower == "children":
                children_view = view.sub(section)
                for child in children_view.names():
                    children.append(self._child(child, children_view.sub(child), first, lines))
            elif not (lower.startswith("local") or lower.startswith("remote")):
                sub = view.sub(section).sections[0]
                raise _Refused(sub.line, sub.file, f"invalid section '{section}'")
        psk = None
        if auth == "psk":
            psk = psk_for(secrets, local_ids or local_addrs or ("%any",), remote_ids or remote_addrs or ("%any",))
            if psk is not None and psk.file == first.file:
                lines["psk_length"] = psk.line
        return Connection(
            name=name, file=first.file, line=first.line, dialect=KIND,
            ike_version=version or None, local_addrs=local_addrs, remote_addrs=remote_addrs,
            ike_proposals=ike_proposals, ike_lifetime_seconds=ike_lifetime, dpd_delay_seconds=dpd_delay,
            dpd_timeout_seconds=dpd_timeout, encap=encap, auth=auth, psk_length=psk.length if psk else None,
            children=tuple(children), lines=tuple(lines.items()))

    def _proposals(self, view: _View, key: str, protocol: str):
        value = view.value(key)
        if value is None or value.text is None:
            return None, None
        try:
            return parse_strongswan_list(value.text, protocol), value
        except ProposalError as e:
            raise _Refused(value.line, value.file, f"invalid value for {key}: {e}") from None

    def _auth(self, view: _View, note) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
        """The local side's first authentication round, and the identities of both sides."""
        rounds: dict[str, list[tuple[int, _View]]] = {"local": [], "remote": []}
        for section in view.names():
            side = "local" if section.lower().startswith("local") else "remote" if section.lower().startswith(
                "remote") else None
            if side is None:
                continue
            sub = view.sub(section)
            for key, value in sub.keys().items():
                if key not in AUTH_KEYS and not key.startswith(("cert", "cacert")):
                    raise _Refused(value.line, value.file, f"unknown option '{key}' in {section}")
            round_number, _ = self._value(sub, "round", lambda t: int(t) if t.isdigit() else None, "a number")
            rounds[side].append((round_number or 0, sub))
        auth = None
        if rounds["local"]:
            local = min(rounds["local"], key=lambda r: r[0])[1]
            value = local.value("auth")
            text = (value.text or "pubkey").lower() if value else "pubkey"
            auth = "psk" if text == "psk" else "eap" if text.startswith("eap") else (
                "xauth" if text.startswith("xauth") else "pubkey")
            note(value, "auth")

        def ids(side: str) -> tuple[str, ...]:
            return tuple(v.text for _, sub in rounds[side] if (v := sub.value("id")) and v.text)

        return auth, ids("local"), ids("remote")

    def _child(self, name: str, view: _View, first: _Section, lines: dict[str, int]) -> Child:
        def note(value: _Value | None, *fields: str) -> None:
            if value is not None and value.file == first.file:
                for f in fields:
                    lines[f"children.{name}.{f}"] = value.line

        where = f" in child '{name}'"
        self._check_keys(view, CHILD_KEYS, where)
        if view.names():
            sub = view.sub(view.names()[0]).sections[0]
            raise _Refused(sub.line, sub.file, f"invalid section '{view.names()[0]}'{where}")
        for key, value in view.keys().items():
            note(value, key)
        esp, v = self._proposals(view, "esp_proposals", ESP)
        note(v, "esp_proposals")
        local_ts, v = self._value(view, "local_ts", _list, "a list")
        note(v, "local_ts")
        remote_ts, v = self._value(view, "remote_ts", _list, "a list")
        note(v, "remote_ts")
        rekey, rekey_v = self._value(view, "rekey_time", parse_time, "a time")
        life, life_v = self._value(view, "life_time", parse_time, "a time")
        # the SA is renewed at rekey_time; life_time is when it dies if that failed
        lifetime, v = (rekey, rekey_v) if rekey_v else (life, life_v)
        note(v, "lifetime_seconds")
        rekey_bytes, rekey_bytes_v = self._value(view, "rekey_bytes", parse_bytes, "a number of bytes")
        life_bytes, life_bytes_v = self._value(view, "life_bytes", parse_bytes, "a number of bytes")
        life_bytes, v = (rekey_bytes, rekey_bytes_v) if rekey_bytes_v else (life_bytes, life_bytes_v)
        note(v, "life_bytes")
        mode, v = self._value(view, "mode", lambda t: _MODES.get(t.lower()), "a mode")
        note(v, "mode")
        start, v = self._value(view, "start_action", lambda t: _ACTIONS.get(t.lower()), "an action")
        note(v, "start_action")
        dpd, v = self._value(view, "dpd_action", lambda t: _DPD_ACTIONS.get(t.lower()), "an action")
        note(v, "dpd_action")
        return Child(name=name, line=view.sections[0].line, local_ts=local_ts, remote_ts=remote_ts,
                     esp_proposals=esp, lifetime_seconds=lifetime, life_bytes=life_bytes, mode=mode,
                     start_action=start, dpd_action=dpd)


def read_swanctl(path: str) -> tuple[list[Connection], list[ParseStatus]]:
    """The connections of a swanctl.conf and its includes, and one parse status per file read."""
    return read_swanctl_with(path, Sources())


def read_swanctl_with(path: str, sources: Sources) -> tuple[list[Connection], list[ParseStatus]]:
    book = StatusBook()
    try:
        root = _Tree(sources, book).parse(path)
    except (_SyntaxError, _Abort) as e:
        if isinstance(e, _SyntaxError):
            book.failed(e.file, KIND, f"line {e.line}: {e}")
        if e.file != path:
            book.failed(path, KIND, f"not loaded: {e.file}, which it includes, failed")
        return [], book.statuses()
    return _Reader(path, root, book).connections(), book.statuses()
