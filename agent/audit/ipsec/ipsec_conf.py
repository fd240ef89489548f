"""ipsec.conf into the model: strongSwan's legacy one (starter, 5.9.8) and Libreswan's (4.10).

Both have `config setup` and `conn NAME` sections whose settings are indented `key=value` lines,
`conn %default`, `also=` and `include`. They differ in what they accept, and this reader follows
each as its parser does:

- strongSwan (src/starter: parser/lexer.l, parser.y, conf_parser.c, confread.c, args.c): a value may
  be several words or a quoted string; a section named twice is one; `also=` sections are
  linearized (an unknown one or a loop makes the whole configuration invalid); an unknown keyword
  is a non-fatal error (the connection still loads), a bad value makes starter ignore the
  connection. Without a trailing "!", ike=/esp= get charon's default proposals appended.
- Libreswan (lib/libipsecconf: parser.lex, parser.y, keywords.c, confread.c): one value per key,
  keywords case-insensitive, an unknown keyword a syntax error that refuses the whole file, a key
  set twice (also through also=, with another value) keeps the connection from loading, also= loops
  are tolerated (each section is included once), a time it cannot read leaves the key unset.
  Relative includes: addconn 4.10 globs them against its working directory, not the including
  file's as its manual says; they are read from the including file's directory and said so.

The dialect is guessed, when not given, from the keywords only one of them knows (and proposal
syntax: ";" is Libreswan's, a trailing "!" strongSwan's); the guess is said in the status detail.
PSKs come from ipsec.secrets beside the file (Libreswan: `secretsfile=`), their length only.

Connection.lines maps the model's field names and the keys as written (lower case) to the line in
effect when it is in the connection's file; a conn is one child, whose fields are also mapped as
"children.NAME.FIELD".
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from agent.audit.findings import ParseStatus
from agent.audit.ipsec.model import Child, Connection, Proposal
from agent.audit.ipsec.proposals import (ESP, IKE, ProposalError, implementation_default, libreswan_default,
                                          parse_libreswan_list, parse_strongswan_list)
from agent.audit.ipsec.secrets import ANY, SharedSecret, psk_for, read_ipsec_secrets
from agent.audit.ipsec.swanctl import read_swanctl
from agent.audit.sources import SourceError, Sources, StatusBook

STRONGSWAN = "strongswan-ipsec.conf"
LIBRESWAN = "libreswan-ipsec.conf"
DIALECTS = (STRONGSWAN, LIBRESWAN)
SECRETS_KIND = "ipsec.secrets"

# src/starter/keywords.txt (5.9.8), the deprecated ones included: starter knows them
STRONGSWAN_KEYWORDS = frozenset("""
charondebug uniqueids cachecrls strictcrlpolicy keyexchange type compress installpolicy aggressive authby
eap_identity aaa_identity mobike forceencaps fragmentation ikedscp ikelifetime lifetime keylife rekeymargin
margintime lifebytes marginbytes lifepackets marginpackets keyingtries rekeyfuzz rekey reauth ike esp ah dpddelay
dpdtimeout dpdaction closeaction sha256_96 inactivity modeconfig xauth xauth_identity mediation mediated_by
me_peerid reqid replay_window mark mark_in mark_out tfc cacert crluri crluri1 crluri2 ocspuri ocspuri1 ocspuri2
certuribase left leftikeport leftsubnet leftsubnetwithin leftprotoport leftsourceip leftdns leftfirewall
lefthostaccess leftallowany leftupdown leftauth leftauth2 leftid leftid2 leftsigkey leftrsasigkey leftcert
leftcert2 leftcertpolicy leftsendcert leftca leftca2 leftgroups leftgroups2 right rightikeport rightsubnet
rightsubnetwithin rightprotoport rightsourceip rightdns rightfirewall righthostaccess rightallowany rightupdown
rightauth rightauth2 rightid rightid2 rightsigkey rightrsasigkey rightcert rightcert2 rightcertpolicy
rightsendcert rightca rightca2 rightgroups rightgroups2 also auto interfaces dumpdir charonstart plutostart
klipsdebug plutodebug prepluto postpluto plutostderrlog fragicmp packetdefault hidetos overridemtu
crlcheckinterval nocrsend nat_traversal keep_alive force_keepalive virtual_private pkcs11module pkcs11initargs
pkcs11keepstate pkcs11proxy ldaphost ldapbase pfs pfsgroup eap leftnexthop rightnexthop
""".split())
_STRONGSWAN_SETUP = frozenset("charondebug uniqueids cachecrls strictcrlpolicy".split())

# lib/libipsecconf/keywords.c (4.10): config setup keywords, conn keywords, and those that take a
# left/right prefix (the bare "" entry is left= and right= themselves)
_LIBRESWAN_SETUP = frozenset("""
ikev1-policy curl-iface curl-timeout myvendorid syslog plutodebug logfile plutostderrlog logtime logappend logip
audit-log dnssec-enable dnssec-rootkey-file dnssec-anchors dumpdir ipsecdir nssdir secretsfile statsbin uniqueids
shuntlifetime global-redirect global-redirect-to crl-strict crlcheckinterval ocsp-strict ocsp-enable ocsp-uri
ocsp-timeout ocsp-trustname ocsp-cache-size ocsp-cache-min-age ocsp-cache-max-age ocsp-method ddos-mode seccomp
ddos-ike-threshold max-halfopen-ike ike-socket-bufsize ike-socket-errqueue nflog-all xfrmlifetime virtual-private
virtual_private seedbits keep-alive listen-tcp listen-udp listen protostack nhelpers drop-oppo-null
ikev1-secctx-attr-type secctx-attr-type interfaces
""".split())
_LIBRESWAN_SIDED = ("", "subnet", "subnets", "sourceip", "ikeport", "vti", "nexthop", "updown", "id", "rsasigkey",
                    "ecdsakey", "pubkey", "cert", "ckaid", "sendcert", "ca", "xauthserver", "xauthclient",
                    "modecfgserver", "modecfgclient", "username", "xauthusername", "addresspool", "auth", "cat",
                    "protoport", "autheap")
# "dns-match-id," is spelled with its comma in 4.10's table: "dns-match-id" is a syntax error there
_LIBRESWAN_CONN = frozenset("""
auto also alsoflip ike hostaddrfamily clientaddrfamily type authby keyexchange ikev2 ppk intermediate esn decap-dscp
nopmtudisc fragmentation mobike narrowing pam-authorize send-redirect redirect-to accept-redirect
accept-redirect-to pfs nat-keepalive initial-contact cisco-unity send-no-esp-tfc fake-strongswan send-vendorid
sha2-truncbug ms-dh-downgrade require-id-on-certificate dns-match-id, ipsec-max-bytes ipsec-lifetime keylife
lifetime salifetime ipsec-max-packets retransmit-timeout retransmit-interval ikepad nat-ikev1-method policy-label
sec-label remote-peer-type remote_peer_type nm-configured xauthby xauthfail modecfgpull modecfgdns modecfgdomains
modecfgbanner ignore-peer-dns mark mark-in mark-out vti-interface vti-routing vti-shared ipsec-interface
nic-offload encapsulation forceencaps overlapip reauth rekey rekeymargin rekeyfuzz keyingtries replay-window
ikelifetime failureshunt negotiationshunt enable-tcp tcp-remoteport connalias esp ah phase2alg phase2 compress
metric dpddelay dpdtimeout dpdaction sendca mtu priority tfc reqid nflog aggressive aggrmode
""".split()) | {f"{side}{name}" for name in _LIBRESWAN_SIDED for side in ("left", "right")} | set(_LIBRESWAN_SIDED[1:])
LIBRESWAN_KEYWORDS = _LIBRESWAN_SETUP | _LIBRESWAN_CONN
_LIBRESWAN_LOWER = frozenset(k.lower() for k in LIBRESWAN_KEYWORDS)  # parser_find_keyword() ignores case
# kt_bool and kt_invertbool keywords: any other value is a syntax error
_LIBRESWAN_BOOLS = frozenset("""
logtime logappend logip audit-log dnssec-enable uniqueids crl-strict ocsp-strict ocsp-enable ike-socket-errqueue
listen-tcp listen-udp drop-oppo-null intermediate decap-dscp nopmtudisc mobike narrowing pam-authorize pfs
nat-keepalive initial-contact cisco-unity send-no-esp-tfc fake-strongswan send-vendorid sha2-truncbug
ms-dh-downgrade require-id-on-certificate ikepad nm-configured modecfgpull ignore-peer-dns vti-routing vti-shared
overlapip reauth rekey compress aggressive aggrmode
""".split()) | {f"{side}{name}" for name in ("xauthserver", "xauthclient", "modecfgserver", "modecfgclient", "cat")
                for side in ("left", "right")}
_LIBRESWAN_TRUE, _LIBRESWAN_FALSE = ("y", "yes", "true", "on"), ("n", "no", "false", "off")
ALSO_LIMIT = 32  # Libreswan's (include/ipsecconf/confread.h)
MAX_ALSO_DEPTH = 100  # strongSwan has no bound; a chain this long is no configuration

_STRONGSWAN_ONLY = STRONGSWAN_KEYWORDS - _LIBRESWAN_LOWER
_LIBRESWAN_ONLY = _LIBRESWAN_LOWER - STRONGSWAN_KEYWORDS


@dataclass
class _Setting:
    key: str  # as written
    value: str | None  # None: `key=` without a value
    file: str
    line: int


@dataclass
class _Section:
    kind: str  # "config", "conn" or "ca"
    name: str
    file: str
    line: int
    settings: list[_Setting] = field(default_factory=list)


class _Invalid(Exception):
    """The whole configuration is refused; str() says why."""

    def __init__(self, file: str, line: int | None, why: str):
        super().__init__(why)
        self.file, self.line = file, line


# --- lines into sections -----------------------------------------------------------------------

_STRONGSWAN_TOKEN = re.compile(r'\s*(?:(#.*)|(=)|"((?:[^"\\]|\\.)*)("?)|([^"#=\s]+))', re.S)
_LIBRESWAN_KEYVALUE = re.compile(
    r'^[\t ]+(?P<key>[^"=\s]+)[\t ]*=[\t ]*(?:"(?P<quoted>[^"\n]*)"|\{(?P<braced>[^"\n]*)\}|(?P<bare>[^"\s]+))?'
    r'[\t ]*(?:#.*)?$')
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t"}


def _strongswan_words(text: str, file: str, line: int) -> list[str | None]:
    """The tokens of a strongSwan line (None stands for "="), quoted strings unescaped."""
    words: list[str | None] = []
    pos = 0
    while pos < len(text):
        m = _STRONGSWAN_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        if m.group(1) is not None:
            break  # a comment ends the line
        if m.group(2):
            words.append(None)
        elif m.group(3) is not None or m.group(4) is not None:
            if m.group(4) != '"':
                raise _Invalid(file, line, "unterminated string")
            words.append(re.sub(r"\\(.)", lambda e: _UNESCAPE.get(e.group(1), e.group(1)), m.group(3)))
        elif m.group(5):
            words.append(m.group(5))
    return words


class _Files:
    """Reads a file and its includes into sections, line by line, as one of the two parsers."""

    def __init__(self, dialect: str, sources: Sources, book: StatusBook):
        self.dialect, self.sources, self.book = dialect, sources, book
        self.sections: list[_Section] = []
        self.current: _Section | None = None

    def read(self, path: str, including: str | None = None, line: int = 0) -> None:
        try:
            with self.sources.nested(path, line):
                source = self.sources.read(path)
                self.book.opened(path, self.dialect, source.note)
                lines = source.lines
                number = 0
                while number < len(lines):
                    text = lines[number].rstrip("\r")
                    number += 1
                    if self.dialect == STRONGSWAN:
                        # a quoted string (not one in a comment) may go on over the next lines
                        first, joined = number, [text]
                        odd = text.count('"') % 2 and "#" not in text.split('"', 1)[0]
                        while odd and number < len(lines):
                            joined.append(lines[number].rstrip("\r"))
                            odd ^= joined[-1].count('"') % 2
                            number += 1
                        self._strongswan_line("\n".join(joined), path, first)
                    else:
                        self._libreswan_line(text, path, number)
        except SourceError as e:
            if including is not None and (e.missing or e.not_file and self.dialect == STRONGSWAN):
                self.book.unrecognized(including, line, f"include {path}: {e} ({self._who()} skips it)")
                return
            self.book.failed(path, self.dialect, str(e))
            if including is not None and e.denied and self.dialect == STRONGSWAN:
                return  # starter skips a file it cannot open
            raise _Invalid(path, None, str(e)) from None

    def _who(self) -> str:
        return "starter" if self.dialect == STRONGSWAN else "addconn"

    def _include(self, pattern: str, path: str, line: int) -> None:
        if self.dialect == LIBRESWAN and not os.path.isabs(pattern):
            self.book.unrecognized(path, line, f"include {pattern}: Libreswan 4 resolves a relative include against "
                                               "addconn's working directory, not this file's: use an absolute path")
        for included in self.sources.include(pattern, path):
            self.read(included, path, line)

    def _section(self, kind: str, name: str, path: str, line: int) -> None:
        self.current = _Section(kind, name, path, line)
        self.sections.append(self.current)

    def _strongswan_line(self, text: str, path: str, line: int) -> None:
        if re.match(r"^[\t ]*version\b", text):
            return  # "eat legacy version declaration"
        indented = text[:1] in ("\t", " ")
        words = _strongswan_words(text, path, line)
        if not words:
            return
        if words[0] == "include" and len(words) > 1 and words[1] is not None:
            self._include(words[1], path, line)
            words = words[2:]
            if not words:
                return
        if not indented:
            if text.startswith("config setup") and words[:2] == ["config", "setup"] and len(words) == 2:
                self._section("config", "setup", path, line)
            elif words[0] in ("conn", "ca") and text.startswith(words[0]):
                if len(words) != 2 or words[1] is None:
                    raise _Invalid(path, line, "section name missing" if len(words) == 1 else "syntax error")
                self._section(words[0], words[1], path, line)
            else:
                raise _Invalid(path, line, "syntax error, unexpected text outside an indented setting")
            return
        if len(words) < 2 or words[0] is None or words[1] is not None:
            raise _Invalid(path, line, "missing value for a setting" if len(words) == 1 else "syntax error")
        if any(w is None for w in words[2:]):
            raise _Invalid(path, line, "syntax error, a second '='")
        if self.current is not None:  # starter drops settings before the first section
            value = " ".join(w for w in words[2:] if w is not None) or None
            self.current.settings.append(_Setting(words[0], value, path, line))

    def _libreswan_line(self, text: str, path: str, line: int) -> None:
        if not text.strip() or text.lstrip().startswith("#"):
            return
        if text[:1] in ("\t", " "):
            comment = re.match(r"^[\t ]+([xX][-_][^\"=\s]*)[\t ]*=(.*)$", text)
            if comment and self.current is not None:  # x-KEY= takes the rest of the line (COMMENT_VALUE)
                self.current.settings.append(_Setting(comment.group(1), comment.group(2).strip() or None, path, line))
                return
            m = _LIBRESWAN_KEYVALUE.match(text)
            if self.current is None or not m:
                raise _Invalid(path, line, "syntax error")
            key = m.group("key")
            if key.lower() not in _LIBRESWAN_LOWER:
                raise _Invalid(path, line, f"syntax error: unknown keyword '{key}'")
            value = next((m.group(g) for g in ("quoted", "braced", "bare") if m.group(g) is not None), None)
            boolean = key.lower() in _LIBRESWAN_BOOLS
            if boolean and value is not None and value not in _LIBRESWAN_TRUE + _LIBRESWAN_FALSE:
                raise _Invalid(path, line, f"syntax error: {key} takes yes or no")
            allowed = _LIBRESWAN_ENUMS.get(key.lower())
            if allowed and value is not None and value.lower() not in allowed:
                raise _Invalid(path, line, f"keyword {key}, invalid value: {value}")
            self.current.settings.append(_Setting(key, value or None, path, line))
            return
        words = text.split("#", 1)[0].split()
        if words == ["config", "setup"]:
            self._section("config", "setup", path, line)
        elif words[:1] == ["conn"] and len(words) == 2:
            self._section("conn", words[1].strip('"'), path, line)
        elif words[:1] == ["include"] and len(words) == 2:
            self.current = None
            self._include(words[1].strip('"'), path, line)
        elif words[:1] == ["version"] and len(words) == 2 and not self.sections:
            return
        else:
            raise _Invalid(path, line, "syntax error")


# --- the dialect ---------------------------------------------------------------------------------

def guess_dialect(sections: list[_Section], fallback: str | None = None) -> tuple[str, str]:
    """(dialect, why) from the keywords only one of them knows and the proposal syntax; without any,
    `fallback` (the implementation installed here), else strongSwan's."""
    votes: dict[str, list[str]] = {STRONGSWAN: [], LIBRESWAN: []}
    for section in sections:
        for s in section.settings:
            key = s.key.lower()
            where = f"{s.key} ({os.path.basename(s.file)}:{s.line})"
            if key in _STRONGSWAN_ONLY:
                votes[STRONGSWAN].append(where)
            elif key in _LIBRESWAN_ONLY:
                votes[LIBRESWAN].append(where)
            if key in ("ike", "esp", "phase2alg") and s.value:
                if ";" in s.value:
                    votes[LIBRESWAN].append(f"{s.key} with ';' ({os.path.basename(s.file)}:{s.line})")
                elif s.value.endswith("!"):
                    votes[STRONGSWAN].append(f"{s.key} ending in '!' ({os.path.basename(s.file)}:{s.line})")
    if len(votes[LIBRESWAN]) > len(votes[STRONGSWAN]):
        dialect = LIBRESWAN
    elif votes[STRONGSWAN]:
        dialect = STRONGSWAN
    elif fallback is not None:
        name = "Libreswan" if fallback == LIBRESWAN else "strongSwan"
        return fallback, (f"dialect guessed: no keyword only one of strongSwan and Libreswan knows; read as "
                          f"{name}'s, the implementation installed here")
    else:
        return STRONGSWAN, ("dialect guessed: no keyword only one of strongSwan and Libreswan knows; "
                            "read as strongSwan's")
    name = "Libreswan" if dialect == LIBRESWAN else "strongSwan"
    shown = ", ".join(votes[dialect][:3]) + (" ..." if len(votes[dialect]) > 3 else "")
    return dialect, f"dialect guessed: {name}'s, from {shown}"


# --- values ---------------------------------------------------------------------------------------

def strongswan_time(text: str) -> int | None:
    """args.c ARG_TIME: digits and one of s, m, h, d (lower case only)."""
    m = re.fullmatch(r"(\d+)([smhd]?)", text)
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)] if m else None


def libreswan_time(text: str) -> int | None:
    """ttodeltatime(): digits and ms, s, m, h, d or w, any case; seconds here (rounded down)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)?", text, re.I)
    if not m:
        return None
    millis = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
    return int(m.group(1)) * millis[(m.group(2) or "s").lower()] // 1000


def libreswan_bytes(text: str) -> int | None:
    """ttobinary() with "B": digits and KiB, MiB, GiB, TiB, PiB or EiB, any case."""
    m = re.fullmatch(r"(\d+)([kmgtpe]ib)?", text, re.I)
    if not m:
        return None
    return int(m.group(1)) * 1024 ** ("_kmgtpe".index(m.group(2)[0].lower()) if m.group(2) else 0)


@dataclass
class _Conn:
    """A conn with what it inherits: the setting in effect per (lower-case) key."""

    section: _Section
    settings: dict[str, _Setting]


_AUTH = {"psk": "psk", "secret": "psk", "xauthpsk": "psk", "pubkey": "pubkey", "rsasig": "pubkey", "rsa": "pubkey",
         "ecdsasig": "pubkey", "ecdsa": "pubkey", "xauthrsasig": "pubkey", "rsa-sha1": "pubkey", "never": "never",
         "null": "null", "eap": "eap"}


class _Reader:
    def __init__(self, dialect: str, path: str, files: _Files, book: StatusBook):
        self.dialect, self.path, self.files, self.book = dialect, path, files, book
        self.conns = [s for s in files.sections if s.kind == "conn"]
        self.setup = [s for s in files.sections if s.kind == "config"]
        self._linear: dict[str, list[_Section]] = {}

    # strongSwan --------------------------------------------------------------------------------
    def strongswan(self) -> list[_Conn]:
        merged: dict[str, _Section] = {}
        for section in self.conns:  # a section named twice is one (conf_parser.c add_section())
            if section.name in merged:
                merged[section.name].settings += section.settings
            else:
                merged[section.name] = replace(section, settings=list(section.settings))
        for section in self.setup + list(merged.values()):
            for s in section.settings:
                if s.key != "also" and s.key not in STRONGSWAN_KEYWORDS:
                    self.book.unrecognized(s.file, s.line, f"unknown keyword '{s.key}' (starter ignores it)")
                elif section.kind == "conn" and s.key in _STRONGSWAN_SETUP:
                    self.book.unrecognized(s.file, s.line, f"'{s.key}' belongs in config setup (ignored here)")
        default = merged.pop("%default", None)
        out = []
        for name, section in merged.items():
            order = self._linearize(section, merged, [])
            settings: dict[str, _Setting] = {}
            for source in [section] + order + ([default] if default else []):
                for s in reversed(source.settings):  # the last of a key in a section wins
                    if s.key != "also":
                        settings.setdefault(s.key, s)
            out.append(_Conn(section, settings))
        return out

    def _linearize(self, section: _Section, sections: dict[str, _Section], stack: list[str]) -> list[_Section]:
        """conf_parser.c resolve_also_single(): parents depth-first, the last also= first, each
        kept at its last place; an unknown section or a loop invalidates the configuration.
        Each section's order is computed once (starter keeps it in section->parents too)."""
        if section.name in self._linear:
            return self._linear[section.name]
        if len(stack) > MAX_ALSO_DEPTH:
            raise _Invalid(section.file, section.line, f"also= nested deeper than {MAX_ALSO_DEPTH}: xcheck stops here")
        parents: list[_Section] = []
        alsos = [s for s in section.settings if s.key == "also" and s.value and s.value != "%default"]
        for also in reversed(alsos):
            parent = sections.get(also.value)
            if parent is None:
                raise _Invalid(also.file, also.line, f"section '{also.value}' referenced in section "
                                                     f"'{section.name}' not found")
            if parent.name in stack + [section.name]:
                chain = " -> ".join(stack + [section.name, parent.name])
                raise _Invalid(also.file, also.line, f"also= loop: {chain}")
            parents += [parent] + self._linearize(parent, sections, stack + [section.name])
        order = [p for i, p in enumerate(parents) if all(p is not q for q in parents[i + 1:])]
        self._linear[section.name] = order
        return order

    # Libreswan ---------------------------------------------------------------------------------
    def libreswan(self) -> list[_Conn]:
        for section in self.setup:
            for s in section.settings:
                if s.key.lower() not in _LIBRESWAN_SETUP and not s.key.lower().startswith(("x-", "x_")):
                    raise _Invalid(s.file, s.line, f"unexpected keyword '{s.key}' in section 'config setup'")
        by_name: dict[str, _Section] = {}  # also= finds the first of a name
        loaded: dict[str, _Section] = {}  # pluto keeps the last one added
        for section in self.conns:
            earlier = loaded.get(section.name)
            if earlier is not None:
                self.book.unrecognized(earlier.file, earlier.line, f"conn '{section.name}' is defined again at "
                                                                   f"line {section.line}, which replaces it")
            by_name.setdefault(section.name, section)
            loaded[section.name] = section
        default = by_name.pop("%default", None)
        loaded.pop("%default", None)
        default_also = next((s for s in default.settings if s.key.lower() == "also"), None) if default else None
        out = []
        for name, section in loaded.items():
            if default_also:
                self.book.unrecognized(default_also.file, default_also.line,
                                       f"also= is not valid in section '%default': conn '{name}' does not load")
                continue
            try:
                out.append(_Conn(section, self._libreswan_settings(section, by_name, default)))
            except _Refused as e:
                self.book.unrecognized(e.file, e.line, f"conn '{name}': {e} (the conn is not loaded)")
        return out

    def _libreswan_settings(self, section: _Section, by_name: dict[str, _Section],
                            default: _Section | None) -> dict[str, _Setting]:
        """confread.c load_conn(): the conn's keys, then those of its also= sections breadth first
        (a key set again with another value is an error), then %default's for what is left."""
        settings: dict[str, _Setting] = {}
        alsos: list[_Setting] = []
        seen = {section.name}

        def take(source: _Section) -> None:
            for s in source.settings:
                key = s.key.lower()
                if key == "also":
                    alsos.extend(_Setting(s.key, name, s.file, s.line) for name in (s.value or "").split())
                    continue
                if key not in _LIBRESWAN_CONN and not key.startswith(("x-", "x_")):
                    raise _Refused(s.file, s.line, f"keyword '{s.key}' is not valid in a conn")
                earlier = settings.get(key)
                if earlier is not None and earlier.value != s.value and key != "auto":
                    raise _Refused(s.file, s.line, f"duplicate key '{s.key}' (also set at line {earlier.line})")
                settings.setdefault(key, s)

        take(section)
        done = 0
        while done < len(alsos):
            also = alsos[done]
            done += 1
            if len(alsos) >= ALSO_LIMIT:
                raise _Refused(also.file, also.line, f"more than {ALSO_LIMIT} also= in its chain")
            parent = by_name.get(also.value or "")
            if parent is None:
                raise _Refused(also.file, also.line, f"cannot find conn '{also.value}' it includes with also=")
            if parent.name in seen:
                if parent.name == section.name or any(a.value == section.name for a in alsos[:done - 1]):
                    self.book.unrecognized(also.file, also.line,
                                           f"also= loop back to conn '{parent.name}': Libreswan includes it once")
                continue
            seen.add(parent.name)
            take(parent)
        for s in default.settings if default else ():
            settings.setdefault(s.key.lower(), s)
        return settings


class _Refused(Exception):
    """One connection does not load; str() says why."""

    def __init__(self, file: str, line: int, why: str):
        super().__init__(why)
        self.file, self.line = file, line


# --- settings into the model ----------------------------------------------------------------------

class _Builder:
    """One conn's settings in effect into a Connection, for one dialect."""

    def __init__(self, dialect: str, conn: _Conn):
        self.dialect, self.conn = dialect, conn
        self.lines: dict[str, int] = {}
        self.file = conn.section.file

    def get(self, *keys: str) -> _Setting | None:
        """The setting in effect of the first of `keys` set (aliases: lifetime, keylife ...)."""
        for key in keys:
            s = self.conn.settings.get(key)
            if s is not None and s.value is not None:
                return s
        return None

    def value(self, fields: tuple[str, ...], keys: tuple[str, ...], parse: Callable[[str], object], what: str):
        s = self.get(*keys)
        if s is None:
            return None
        parsed = parse(s.value)
        if parsed is None:
            if self.dialect == STRONGSWAN:  # starter: "bad argument value", the conn is ignored
                raise _Refused(s.file, s.line, f"bad value {s.key}={s.value}: not {what}")
            raise _Unset(s, what)
        self.note(s, *fields)
        return parsed

    def note(self, s: _Setting | None, *fields: str) -> None:
        if s is not None and s.file == self.file:
            for f in fields:
                self.lines[f] = s.line


class _Unset(Exception):
    """Libreswan could not read a value and leaves the key unset."""

    def __init__(self, setting: _Setting, what: str):
        super().__init__(what)
        self.setting = setting


def _enum(table: dict[str, object], dialect: str) -> Callable[[str], object]:
    # starter compares with streq(); Libreswan's parser_enum_list() ignores case
    return (lambda text: table.get(text)) if dialect == STRONGSWAN else (lambda text: table.get(text.lower()))


_SS_IKE_VERSION = {"ike": 0, "ikev1": 1, "ikev2": 2}
_SS_AUTHBY = ("psk", "secret", "pubkey", "rsa", "rsasig", "ecdsa", "ecdsasig", "xauthpsk", "xauthrsasig", "never")
_LS_IKEV2 = {"never": 1, "no": 1, "permit": 1, "propose": 2, "yes": 2, "insist": 2, "always": 2}
_SS_AUTO = {"ignore": "ignore", "add": "none", "route": "trap", "start": "start"}
_LS_AUTO = {"ignore": "ignore", "add": "none", "ondemand": "trap", "route": "trap", "start": "start", "up": "start",
            "keep": "start"}
_SS_DPD = {"none": "none", "clear": "clear", "hold": "trap", "restart": "restart"}
_LS_DPD = {"hold": "trap", "clear": "clear", "restart": "restart", "restart_by_peer": "restart"}
# starter's KW_TYPE (confread.c) and Libreswan's kw_type_list; only starter knows transport_proxy
_TYPES = {"tunnel": "tunnel", "transport": "transport", "transport_proxy": "transport", "passthrough": "pass",
          "pass": "pass", "drop": "drop", "reject": "drop"}
_SS_BOOL = {"yes": True, "no": False}
_LS_ENCAP = {"yes": True, "no": False, "auto": None}
# the kt_enum keywords this reader interprets (keywords.c lists; addconn refuses any other value).
# keyexchange= takes only "ike" in 4.10; Libreswan 5 adds ikev1 and ikev2, read here too.
_LIBRESWAN_ENUMS = {"ikev2": tuple(_LS_IKEV2), "auto": tuple(_LS_AUTO),
                    "type": tuple(set(_TYPES) - {"transport_proxy"}),
                    "dpdaction": tuple(_LS_DPD), "encapsulation": tuple(_LS_ENCAP),
                    "keyexchange": ("ike", "ikev1", "ikev2")}


def _split(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _connection(dialect: str, conn: _Conn, secrets: Callable[[], list[SharedSecret]],
                book: StatusBook) -> list[Connection]:
    b = _Builder(dialect, conn)
    strongswan = dialect == STRONGSWAN
    time = strongswan_time if strongswan else libreswan_time

    def tolerant(fields: tuple[str, ...], keys: tuple[str, ...], parse, what: str):
        """A value; Libreswan leaves one it cannot read unset, and so do we, saying so."""
        try:
            return b.value(fields, keys, parse, what)
        except _Unset as e:
            s = e.setting
            book.unrecognized(s.file, s.line, f"{s.key}={s.value}: not {what}; Libreswan ignores it (default applies)")
            return None

    if strongswan:
        version = b.value(("ike_version",), ("keyexchange",), _enum(_SS_IKE_VERSION, dialect), "ike, ikev1 or ikev2")
    else:
        version = tolerant(("ike_version",), ("ikev2",), _enum(_LS_IKEV2, dialect), "a four-valued option")
        keyexchange = b.get("keyexchange")  # Libreswan 5 spells the version this way too
        if keyexchange and keyexchange.value.lower() in ("ikev1", "ikev2"):
            version = int(keyexchange.value[-1])
            b.note(keyexchange, "ike_version")
    left, right = ("left", "right")
    if b.get("right") and b.get("right").value == "%defaultroute" and not (
            b.get("left") and b.get("left").value == "%defaultroute"):
        left, right = right, left  # the side on this host is the one with the default route
    local_addrs = b.value(("local_addrs",), (left,), _split, "an address")
    remote_addrs = b.value(("remote_addrs",), (right,), _split, "an address")
    ike_version_for_defaults = 1 if version == 1 else 2

    def proposals(fields: tuple[str, ...], keys: tuple[str, ...], protocol: str) -> tuple[Proposal, ...] | None:
        s = b.get(*keys)
        if s is None:
            return None
        try:
            parsed = (parse_strongswan_list(s.value, protocol, legacy=True) if strongswan
                      else parse_libreswan_list(s.value, protocol, ike_version_for_defaults))
        except ProposalError as e:
            who = "charon" if strongswan else "pluto"
            raise _Refused(s.file, s.line, f"{s.key}={s.value}: {e}; {who} refuses it") from None
        b.note(s, *fields)
        return parsed

    ike_proposals = proposals(("ike_proposals",), ("ike",), IKE)
    ike_lifetime = tolerant(("ike_lifetime_seconds",), ("ikelifetime",), time, "a time")
    dpd_delay = tolerant(("dpd_delay_seconds",), ("dpddelay",), time, "a time")
    dpd_timeout = tolerant(("dpd_timeout_seconds",), ("dpdtimeout",), time, "a time")
    dpd_action = b.value(("dpd_action",), ("dpdaction",), _enum(_SS_DPD if strongswan else _LS_DPD, dialect),
                         "a DPD action")
    if strongswan and dpd_action in (None, "none") and (dpd_delay is not None or dpd_action == "none"):
        dpd_delay = 0  # starter sends DPD only with a dpdaction other than none
    if dpd_action == "none":
        dpd_action = None
    if strongswan:
        encap = b.value(("encap",), ("forceencaps",), _enum(_SS_BOOL, dialect), "yes or no")
    else:
        encapsulation = b.get("encapsulation")  # its value was checked with the line
        encap = _LS_ENCAP[encapsulation.value.lower()] if encapsulation else None
        b.note(encapsulation, "encap")
        forceencaps = b.get("forceencaps")
        if forceencaps:
            book.unrecognized(forceencaps.file, forceencaps.line,
                              "forceencaps: obsolete, Libreswan 4 ignores it (write encapsulation=yes)")
    if strongswan:  # starter checks authby= against its list; leftauth= is charon's, free-form
        b.value(("auth",), ("authby",), lambda t: t if t in _SS_AUTHBY else None, "an authby= value")
    auth_setting = (b.get(f"{left}auth") if strongswan else None) or b.get("authby")
    auth = None
    if auth_setting:
        first = re.split(r"[|,\s]", auth_setting.value.lower())[0]
        auth = _AUTH.get(first, "eap" if first.startswith("eap") else first)
        b.note(auth_setting, "auth")
    psk = None
    if auth == "psk":
        local_ids = [b.get(f"{left}id").value] if b.get(f"{left}id") else list(local_addrs or (ANY,))
        remote_ids = [b.get(f"{right}id").value] if b.get(f"{right}id") else list(remote_addrs or (ANY,))
        secret = psk_for(secrets(), local_ids, remote_ids)
        psk = secret.length if secret else None
        if secret is not None and secret.file == b.file:
            b.lines["psk_length"] = secret.line

    esp = proposals(("esp_proposals",), ("esp", "phase2alg"), ESP)
    if not strongswan:
        esp = _libreswan_pfs(b, esp, ike_proposals, ike_version_for_defaults)
    lifetime = tolerant(("lifetime_seconds",), ("lifetime", "keylife") if strongswan else
                        ("salifetime", "ipsec-lifetime", "lifetime", "keylife"), time, "a time")
    life_bytes = tolerant(("life_bytes",), ("lifebytes",) if strongswan else ("ipsec-max-bytes",),
                          (lambda t: int(t) if t.isdigit() else None) if strongswan else libreswan_bytes,
                          "a number of bytes")
    mode = b.value(("mode",), ("type",), _enum(_TYPES, dialect), "a connection type")
    start = b.value(("start_action",), ("auto",), _enum(_SS_AUTO if strongswan else _LS_AUTO, dialect),
                    "an auto= value")
    if strongswan:
        local_ts = b.value(("local_ts",), (f"{left}subnet", f"{left}subnetwithin"), _split, "subnets")
        remote_ts = b.value(("remote_ts",), (f"{right}subnet", f"{right}subnetwithin"), _split, "subnets")
        pairs = [("", local_ts, remote_ts)]
    else:
        pairs = _libreswan_selectors(b, left, right)
    for key, s in conn.settings.items():
        b.note(s, key)
    name = conn.section.name
    child_fields = ("local_ts", "remote_ts", "esp_proposals", "lifetime_seconds", "life_bytes", "mode", "start_action",
                    "dpd_action")
    children = []
    for suffix, local_ts, remote_ts in pairs:
        child_name = name + suffix
        children.append(Child(name=child_name, line=conn.section.line, local_ts=local_ts, remote_ts=remote_ts,
                              esp_proposals=esp, lifetime_seconds=lifetime, life_bytes=life_bytes, mode=mode,
                              start_action=start, dpd_action=dpd_action))
        for f in child_fields:
            if f in b.lines:
                b.lines[f"children.{child_name}.{f}"] = b.lines[f]
    return [Connection(
        name=name, file=conn.section.file, line=conn.section.line, dialect=dialect,
        ike_version=version or None, local_addrs=local_addrs, remote_addrs=remote_addrs, ike_proposals=ike_proposals,
        ike_lifetime_seconds=ike_lifetime, dpd_delay_seconds=dpd_delay, dpd_timeout_seconds=dpd_timeout, encap=encap,
        auth=auth, psk_length=psk, children=tuple(children), lines=tuple(b.lines.items()))]


def _libreswan_pfs(b: _Builder, esp: tuple[Proposal, ...] | None, ike: tuple[Proposal, ...] | None,
                   version: int) -> tuple[Proposal, ...] | None:
    """pfs=yes (the default) makes a CHILD_SA (re)key with the IKE SA's DH group when esp= names
    none: Azure's rekey, which offers no PFS, then finds no proposal (libreswan/libreswan#765).
    With neither esp= nor pfs= set, None: proposals.implementation_default() says what applies."""
    pfs = b.get("pfs")
    if esp is None and pfs is None:
        return None
    b.note(pfs, "pfs")
    groups = tuple(dict.fromkeys(g for p in ike or () for g in p.dh_groups))
    if pfs is not None and pfs.value not in _LIBRESWAN_TRUE:
        return esp or libreswan_default(ESP, version)
    with_pfs = implementation_default(LIBRESWAN, ESP, version, groups)
    if esp is None:
        return with_pfs
    return tuple(p if p.dh_groups else replace(p, dh_groups=with_pfs[0].dh_groups) for p in esp)


def _libreswan_selectors(b: _Builder, left: str, right: str) -> list[tuple[str, tuple[str, ...] | None,
                                                                           tuple[str, ...] | None]]:
    """leftsubnet=/rightsubnet= (one prefix each), or leftsubnets=/rightsubnets= ("{a b}" or "a,b"):
    one child per pair, named NAME/LxR as addconn names the connection it makes per pair."""
    def side(which: str) -> list[tuple[str, ...] | None]:
        many = b.get(f"{which}subnets")
        if many:
            b.note(many, "local_ts" if which == left else "remote_ts")
            return [(p,) for p in re.split(r"[\s,]+", many.value.strip("{} ")) if p]
        one = b.get(f"{which}subnet")
        b.note(one, "local_ts" if which == left else "remote_ts")
        return [(one.value,)] if one else [None]
    locals_, remotes = side(left), side(right)
    if len(locals_) == len(remotes) == 1:
        return [("", locals_[0], remotes[0])]
    return [(f"/{i}x{j}", local, remote) for i, local in enumerate(locals_, 1) for j, remote in enumerate(remotes, 1)]


def _secrets(dialect: str, path: str, files: _Files, sources: Sources,
             book: StatusBook) -> Callable[[], list[SharedSecret]]:
    """The PSKs of ipsec.secrets, read once and only when a connection authenticates with one
    (the file is root's alone: no status says it could not be read where it is not needed)."""
    secrets_file = os.path.join(os.path.dirname(path), "ipsec.secrets")
    if dialect == LIBRESWAN:
        for section in files.sections:
            for s in section.settings:
                if section.kind == "config" and s.key.lower() == "secretsfile" and s.value:
                    secrets_file = s.value
    read: list[list[SharedSecret]] = []

    def secrets() -> list[SharedSecret]:
        if not read:
            exists = os.path.lexists(secrets_file)
            read.append(read_ipsec_secrets(secrets_file, SECRETS_KIND, sources, book) if exists else [])
        return read[0]

    return secrets


def read_ipsec_conf(path: str, dialect: str | None = None,
                    fallback: str | None = None) -> tuple[list[Connection], list[ParseStatus]]:
    """The connections of an ipsec.conf (strongSwan's legacy one or Libreswan's) and its includes,
    with the PSK lengths of the ipsec.secrets beside it; one parse status per file read. Without
    `dialect`, it is guessed from the keywords; where none tells, `fallback` is taken."""
    return read_ipsec_conf_with(path, dialect, Sources(), fallback)


def read_ipsec_conf_with(path: str, dialect: str | None, sources: Sources,
                         fallback: str | None = None) -> tuple[list[Connection], list[ParseStatus]]:
    if dialect is not None and dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {dialect!r}")
    book = StatusBook()
    guessed, why = None, ""
    if dialect is None:
        # both read the lines alike enough to tell them apart; the chosen one then reads for real
        probe = _Files(STRONGSWAN, Sources(sources.max_file_bytes, sources.max_total_bytes, sources.max_files,
                                           sources.max_include_depth), StatusBook())
        try:
            probe.read(path)
        except _Invalid:
            pass
        guessed, why = guess_dialect(probe.sections, fallback)
    chosen = dialect or guessed
    files = _Files(chosen, sources, book)
    try:
        files.read(path)
        reader = _Reader(chosen, path, files, book)
        conns = reader.strongswan() if chosen == STRONGSWAN else reader.libreswan()
    except _Invalid as e:
        if e.line is not None:
            book.failed(e.file, chosen, f"line {e.line}: {e}")
        if e.file != path:
            book.failed(path, chosen, f"not loaded: {e.file}, which it includes, failed")
        if why and not (e.file == path and e.line is None):  # the guess means nothing for a file not read
            book.note(path, why)
        return [], book.statuses()
    if why:
        book.note(path, why)
    secrets = _secrets(chosen, path, files, sources, book)
    out: list[Connection] = []
    for conn in conns:
        try:
            out += _connection(chosen, conn, secrets, book)
        except _Refused as e:
            book.unrecognized(e.file, e.line, f"conn '{conn.section.name}': {e} (the conn is not loaded)")
    return out, book.statuses()


HOST_SWANCTL_CONF = "/etc/swanctl/swanctl.conf"  # its stock text includes conf.d/*.conf
HOST_IPSEC_CONF = "/etc/ipsec.conf"


def read_host_ipsec(swanctl_conf: str = HOST_SWANCTL_CONF,
                    ipsec_conf: str = HOST_IPSEC_CONF) -> tuple[list[Connection], list[ParseStatus]]:
    """This host's own IPsec configuration: swanctl.conf and ipsec.conf with their includes,
    whichever exist (neither: nothing to audit, no status)."""
    connections: list[Connection] = []
    statuses: list[ParseStatus] = []
    # An ipsec.conf with no keyword only one implementation knows is read as the one installed here:
    # Libreswan's pluto (whose pfs=yes default decides a rekey) or strongSwan's starter.
    installed = installed_dialect()
    for path, read in ((swanctl_conf, read_swanctl), (ipsec_conf, lambda p: read_ipsec_conf(p, fallback=installed))):
        if os.path.lexists(path):
            found, status = read(path)
            connections += found
            statuses += status
    return connections, statuses


# Where Debian's packages put each implementation's daemon.
_PLUTO = ("/usr/libexec/ipsec/pluto", "/usr/lib/ipsec/pluto")
_STARTER = ("/usr/lib/ipsec/starter", "/usr/libexec/ipsec/starter")


def installed_dialect(pluto: Sequence[str] = _PLUTO, starter: Sequence[str] = _STARTER) -> str | None:
    """The ipsec.conf dialect of the implementation installed on this host; None: neither, or both."""
    has_pluto, has_starter = any(map(os.path.exists, pluto)), any(map(os.path.exists, starter))
    if has_pluto != has_starter:
        return LIBRESWAN if has_pluto else STRONGSWAN
    return None
