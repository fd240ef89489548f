"""Pre-shared keys: which one a connection would use, and its length; never the key itself.

A key is read only long enough to count its characters (or bytes, for 0x hex and 0s base64) and
forgotten: no object, message or repr holds it, and a line of a secrets file is never quoted.
The key a connection uses is chosen as charon's credential sets choose it (mem_cred.c shared_filter
and the best match of the credential manager): a key whose owners name the local or remote
identity perfectly beats one owned by %any; a key without owners belongs to %any; a key whose
owners match neither side is not a candidate. Libreswan picks its PSK the same way.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from agent.audit.sources import SourceError, Sources, StatusBook

ANY = "%any"
_PERFECT, _ANY = 3, 1  # id_match_t's ID_MATCH_PERFECT and ID_MATCH_ANY
NOT_QUOTED = "an entry xcheck does not understand (not quoted: it may hold a secret)"


@dataclass(frozen=True)
class SharedSecret:
    """A PSK's owners and length, where it was written; the key is not kept."""

    owners: tuple[str, ...]  # normalized identities; (ANY,) for a key of any peer
    length: int
    file: str
    line: int


def identity(text: str) -> str:
    """An IKE identity as compared: addresses canonical, names without "@" and case."""
    text = text.strip().strip('"')
    if text.lower() in ("%any", "%any6", "0.0.0.0", "::", "%"):
        return ANY
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if text.startswith("@") and not text.startswith("@#"):
        text = text[1:]
    return text.lower()


def key_length(value: str) -> int | None:
    """The length of a key as written: characters, or bytes of 0x hex and 0s base64; None if those
    do not decode (charon then refuses it)."""
    if value[:2].lower() == "0x":
        digits = value[2:]
        return len(digits) // 2 if re.fullmatch(r"(?:[0-9a-fA-F]{2})*", digits) else None
    if value[:2].lower() == "0s":
        try:
            return len(base64.b64decode(value[2:], validate=True))
        except (binascii.Error, ValueError):
            return None
    return len(value)


def psk_for(secrets: Iterable[SharedSecret], local_ids: Iterable[str],
            remote_ids: Iterable[str]) -> SharedSecret | None:
    """The PSK a connection with these identities would use, None if none fits."""
    local, remote = {identity(i) for i in local_ids}, {identity(i) for i in remote_ids}
    best, best_score = None, 0
    for secret in secrets:
        owners = set(secret.owners)

        def match(ids: set[str], owners: set[str] = owners) -> int:
            return _PERFECT if ids & owners - {ANY} else _ANY if ANY in owners else 0

        score = match(local) + match(remote)
        if score > best_score:
            best, best_score = secret, score
    return best


# --- ipsec.secrets (strongSwan ipsec.secrets(5), Libreswan ipsec.secrets(5)) --------------------

# "[selectors] : PSK secret": the ":" that ends the selectors stands alone (an IPv6 address holds ":")
_ENTRY = re.compile(r"^(?P<ids>.*?)(?:^|\s):\s+(?P<type>[A-Za-z0-9]+)(?:\s+(?P<secret>.*))?$")
_QUOTED = re.compile(r'^(?P<q>["\'])(?P<body>.*?)(?P=q)')


def _secret_length(text: str) -> int | None:
    text = text.strip()
    quoted = _QUOTED.match(text)
    if quoted:
        return len(quoted.group("body"))
    if not text or text[0] in "\"'":  # nothing, or a quote never closed
        return None
    return key_length(text.split()[0])


def read_ipsec_secrets(path: str, kind: str, sources: Sources, book: StatusBook,
                       line: int = 0) -> list[SharedSecret]:
    """The PSKs of an ipsec.secrets file and its includes (stroke_cred.c load_secrets() of 5.9.8;
    Libreswan reads the same shape). Entries of other types (RSA, EAP...) are skipped, with the
    multi-line `{ ... }` blocks of Libreswan's RSA keys; a line that is no entry stops the reading,
    as it stops charon's, and is noted without being quoted."""
    try:
        with sources.nested(path, line):
            source = sources.read(path)
            book.opened(path, kind, source.note)
            return _secrets_of(source.lines, path, kind, sources, book)
    except SourceError as e:
        book.failed(path, kind, str(e))
        return []


def _secrets_of(lines: tuple[str, ...], path: str, kind: str, sources: Sources, book: StatusBook) -> list[SharedSecret]:
    secrets: list[SharedSecret] = []
    in_block = False
    for number, text in enumerate(lines, 1):
        stripped = text.strip()
        if in_block:
            in_block = "}" not in stripped
            continue
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("include "):
            for included in sources.include(stripped.split()[1], path):
                secrets += read_ipsec_secrets(included, kind, sources, book, number)
            continue
        entry = _ENTRY.match(stripped)
        if entry is None:
            book.unrecognized(path, number, f"{NOT_QUOTED}; the rest of the file is not read")
            break
        rest = entry.group("secret") or ""
        if entry.group("type").upper() != "PSK":
            in_block = "{" in rest and "}" not in rest
            continue
        length = _secret_length(rest)
        if length is None:
            book.unrecognized(path, number, "a PSK entry whose key does not decode (not quoted)")
            continue
        owners = tuple(identity(i) for i in entry.group("ids").split()) or (ANY,)
        secrets.append(SharedSecret(owners, length, path, number))
    return secrets
