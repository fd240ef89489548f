"""Proposal strings, as strongSwan and Libreswan read them, into the model's `Proposal`.

strongSwan (swanctl `proposals`/`esp_proposals`, ipsec.conf `ike=`/`esp=`): proposals separated by
commas, each a list of algorithm keywords joined by "-" (`aes256-sha256-modp2048`,
`aes256gcm16-prfsha384-ecp384`, several per type: `aes128-aes256-sha256-modp2048-ecp256`), checked
as libstrongswan's proposal_create_from_string() and check_proposal() do (5.9.8): an unknown
keyword, an IKE proposal without DH group or PRF, classic and AEAD ciphers mixed, each refuses the
whole connection. `default` is strongSwan's default proposals; in ipsec.conf a list without a
trailing `!` gets them appended too (stroke's add_proposals()).

Libreswan (`ike=`/`esp=`, `phase2alg=`): proposals separated by commas, `ENCR[-INTEG|-PRF][;DH]`
with `+` between alternatives (`aes256-sha2_256;modp2048`, `aes_gcm256-null`, `3des-sha1;dh2`),
read as lib/libswan/v2_proposals.c (4.10) does, missing parts filled from its defaults.

Names map to the model's vocabulary (agent/audit/ipsec/model.py); DH groups are IANA numbers, 0 for
"none" (in an ESP proposal: no PFS is acceptable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.audit.ipsec.model import Proposal

IKE = "ike"
ESP = "esp"


class ProposalError(ValueError):
    """A proposal the implementation refuses; str() says why (no secret can be in a proposal)."""


# --- strongSwan: src/libstrongswan/crypto/proposal/proposal_keywords_static.txt (5.9.8) -------------

_ENCR, _INTEG, _PRF, _DH, _ESN = "encryption", "integrity", "prf", "dh", "esn"


# an AEAD's ICV length as written, in bytes (8, 12, 16) or bits (64, 96, 128), and its model name
_ICV_NAMES = (("8", "8"), ("64", "8"), ("12", "12"), ("96", "12"), ("16", "16"), ("128", "16"))


def _aes_family() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {"aes": (_ENCR, "aes128")}
    for bits in (128, 192, 256):
        table[f"aes{bits}"] = (_ENCR, f"aes{bits}")
        table[f"aes{bits}ctr"] = (_ENCR, f"aes{bits}ctr")
        for mode in ("gcm", "ccm"):
            for icv, name in _ICV_NAMES + (("", "16"),):
                table[f"aes{bits}{mode}{icv}"] = (_ENCR, f"aes{bits}{mode}{name}")
        table[f"aes{bits}gmac"] = (_ENCR, f"aes{bits}gmac")
        table[f"camellia{bits}"] = (_ENCR, f"camellia{bits}")
        table[f"camellia{bits}ctr"] = (_ENCR, f"camellia{bits}ctr")
        for icv, name in _ICV_NAMES:
            table[f"camellia{bits}ccm{icv}"] = (_ENCR, f"camellia{bits}ccm{name}")
        for cipher in ("blowfish", "serpent", "twofish"):
            table[f"{cipher}{bits}"] = (_ENCR, f"{cipher}{bits}")
    for cipher in ("camellia", "blowfish", "serpent", "twofish"):
        table[cipher] = (_ENCR, f"{cipher}128")
    return table


STRONGSWAN_KEYWORDS: dict[str, tuple[str, str | int]] = {
    **_aes_family(),
    "null": (_ENCR, "null"), "des": (_ENCR, "des"), "3des": (_ENCR, "3des"), "cast128": (_ENCR, "cast128"),
    "chacha20poly1305": (_ENCR, "chacha20poly1305"), "chacha20poly1305compat": (_ENCR, "chacha20poly1305"),
    "sha": (_INTEG, "sha1"), "sha1": (_INTEG, "sha1"), "sha1_160": (_INTEG, "sha1_160"),
    "sha256": (_INTEG, "sha256"), "sha2_256": (_INTEG, "sha256"),
    "sha256_96": (_INTEG, "sha256_96"), "sha2_256_96": (_INTEG, "sha256_96"),
    "sha384": (_INTEG, "sha384"), "sha2_384": (_INTEG, "sha384"),
    "sha512": (_INTEG, "sha512"), "sha2_512": (_INTEG, "sha512"),
    "md5": (_INTEG, "md5"), "md5_128": (_INTEG, "md5_128"),
    "aesxcbc": (_INTEG, "aesxcbc"), "camelliaxcbc": (_INTEG, "camelliaxcbc"), "aescmac": (_INTEG, "aescmac"),
    "prfsha1": (_PRF, "sha1"), "prfsha256": (_PRF, "sha256"), "prfsha384": (_PRF, "sha384"),
    "prfsha512": (_PRF, "sha512"), "prfmd5": (_PRF, "md5"), "prfaesxcbc": (_PRF, "aesxcbc"),
    "prfcamelliaxcbc": (_PRF, "camelliaxcbc"), "prfaescmac": (_PRF, "aescmac"),
    # IANA "Transform Type 4" numbers; MODP_NULL, NTRU and NewHope are strongSwan's private ones
    "none": (_DH, 0), "modpnone": (_DH, 0), "modpnull": (_DH, 1024),
    "modp768": (_DH, 1), "modp1024": (_DH, 2), "modp1536": (_DH, 5), "modp2048": (_DH, 14),
    "modp3072": (_DH, 15), "modp4096": (_DH, 16), "modp6144": (_DH, 17), "modp8192": (_DH, 18),
    "ecp256": (_DH, 19), "ecp384": (_DH, 20), "ecp521": (_DH, 21), "modp1024s160": (_DH, 22),
    "modp2048s224": (_DH, 23), "modp2048s256": (_DH, 24), "ecp192": (_DH, 25), "ecp224": (_DH, 26),
    "ecp224bp": (_DH, 27), "ecp256bp": (_DH, 28), "ecp384bp": (_DH, 29), "ecp512bp": (_DH, 30),
    "curve25519": (_DH, 31), "x25519": (_DH, 31), "curve448": (_DH, 32), "x448": (_DH, 32),
    "ntru112": (_DH, 1030), "ntru128": (_DH, 1031), "ntru192": (_DH, 1032), "ntru256": (_DH, 1033),
    "newhope128": (_DH, 1040),
    "esn": (_ESN, "esn"), "noesn": (_ESN, "noesn"),
}

# IKE proposals without a PRF take it from the integrity algorithm (proposal.c's integ_prf_map)
_PRF_OF_INTEGRITY = {"sha1": "sha1", "md5": "md5", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512",
                     "aesxcbc": "aesxcbc", "camelliaxcbc": "camelliaxcbc", "aescmac": "aescmac"}


def is_aead(encryption: str) -> bool:
    """GCM, CCM, GMAC and ChaCha20-Poly1305 carry their own integrity."""
    return any(mode in encryption for mode in ("gcm", "ccm", "gmac", "poly1305"))


def _unique(names: list) -> tuple:
    return tuple(dict.fromkeys(names))


def parse_strongswan(text: str, protocol: str) -> Proposal:
    """One strongSwan proposal ("aes256-sha256-modp2048"); ProposalError as charon refuses it."""
    parts: dict[str, list] = {_ENCR: [], _INTEG: [], _PRF: [], _DH: [], _ESN: []}
    tokens = [token.strip() for token in text.split("-")]
    if not any(tokens):
        raise ProposalError("an empty proposal")
    for token in tokens:
        if not token:
            continue  # enumerator_create_token() skips empty tokens
        known = STRONGSWAN_KEYWORDS.get(token.lower())
        if known is None:
            raise ProposalError(f"algorithm '{token}' not recognized")
        parts[known[0]].append(known[1])
    encryption, integrity, prf, dh = parts[_ENCR], parts[_INTEG], parts[_PRF], parts[_DH]
    if not encryption:
        raise ProposalError(f"an encryption algorithm is mandatory in {protocol.upper()} proposals")
    aead = [is_aead(name) for name in encryption]
    if any(aead) and not all(aead):
        raise ProposalError("classic and combined-mode (AEAD) encryption algorithms can't be in the same proposal")
    if all(aead):
        integrity = []  # check_proposal() removes them
    if protocol == IKE:
        if not prf and not any(name in _PRF_OF_INTEGRITY for name in integrity):
            raise ProposalError("a PRF algorithm is mandatory in IKE proposals")
        dh = [group for group in dh if group != 0]
        if not dh:
            raise ProposalError("a DH group is mandatory in IKE proposals")
        if not all(aead) and not integrity:
            raise ProposalError("an integrity algorithm is mandatory in IKE proposals with classic encryption")
    else:
        prf = []  # check_proposal() removes PRFs from ESP proposals
    return Proposal(text.strip(), _unique(encryption), _unique(integrity), _unique(prf), _unique(dh))


# proposal_create_default() and _default_aead() of 5.9.8 with Debian 12's default plugins (openssl,
# aes, des, sha1, sha2, md5, gmp, curve25519, xcbc, cmac, ...): what `default` and an unset
# proposals setting stand for.
_SS_DEFAULT_DH = (19, 20, 21, 28, 29, 30, 31, 32, 15, 16, 17, 18, 14)
STRONGSWAN_DEFAULT = {
    IKE: (
        Proposal("default", ("aes128", "aes192", "aes256", "aes128ctr", "aes192ctr", "aes256ctr", "camellia128",
                             "camellia192", "camellia256", "camellia128ctr", "camellia192ctr", "camellia256ctr",
                             "3des"),
                 ("sha256", "sha384", "sha512", "aesxcbc", "aescmac", "sha1"),
                 ("sha256", "sha384", "sha512", "aesxcbc", "aescmac", "sha1"), _SS_DEFAULT_DH),
        Proposal("default", ("aes128gcm16", "aes192gcm16", "aes256gcm16", "aes128ccm16", "aes192ccm16",
                             "aes256ccm16", "chacha20poly1305", "aes128gcm12", "aes192gcm12", "aes256gcm12",
                             "aes128gcm8", "aes192gcm8", "aes256gcm8", "aes128ccm12", "aes192ccm12", "aes256ccm12",
                             "aes128ccm8", "aes192ccm8", "aes256ccm8"),
                 (), ("sha256", "sha384", "sha512", "aesxcbc", "aescmac", "sha1"), _SS_DEFAULT_DH),
    ),
    ESP: (
        Proposal("default", ("aes128", "aes192", "aes256"), ("sha256", "sha384", "sha512", "sha1", "aesxcbc"), (), ()),
        Proposal("default", ("aes128gcm16", "aes192gcm16", "aes256gcm16"), (), (), ()),
    ),
}


def parse_strongswan_list(value: str, protocol: str, *, legacy: bool = False) -> tuple[Proposal, ...]:
    """A comma-separated list (swanctl; `legacy`: ipsec.conf, where without a trailing "!" charon
    appends its defaults). ProposalError on the first proposal charon refuses."""
    text = value.strip()
    strict = not legacy
    if legacy and text.endswith("!"):
        text, strict = text[:-1], True
    proposals: list[Proposal] = []
    for item in text.split(","):
        item = item.strip()
        if legacy and not item:
            raise ProposalError("an empty proposal")
        if not legacy and not item:
            continue  # swanctl's list splitting drops empty items
        if not legacy and item.lower() == "default":
            proposals.extend(STRONGSWAN_DEFAULT[protocol])
        else:
            proposals.append(parse_strongswan(item, protocol))
    if not proposals:
        raise ProposalError("no proposal")
    if not strict:
        proposals.extend(STRONGSWAN_DEFAULT[protocol])
    return tuple(proposals)


# --- Libreswan: lib/libswan/ike_alg_*.c names (4.10) ----------------------------------------------

@dataclass(frozen=True)
class _Cipher:
    family: str  # the model's name stem, "{bits}" replaced by the key length
    key_bits: tuple[int, ...]  # valid lengths; () for a cipher without one
    default_bits: tuple[int, ...] = (128, 256)  # keydeflen and the largest: what no length proposes


_AES = (128, 192, 256)
_LIBRESWAN_CIPHERS = {
    **{name: _Cipher("aes{bits}", _AES) for name in ("aes", "aes_cbc")},
    **{name: _Cipher("aes{bits}ctr", _AES) for name in ("aesctr", "aes_ctr")},
    **{name: _Cipher("aes{bits}gcm8", _AES) for name in ("aes_gcm_8", "aes_gcm_a")},
    **{name: _Cipher("aes{bits}gcm12", _AES) for name in ("aes_gcm_12", "aes_gcm_b")},
    **{name: _Cipher("aes{bits}gcm16", _AES) for name in ("aes_gcm", "aes_gcm_16", "aes_gcm_c")},
    **{name: _Cipher("aes{bits}ccm8", _AES) for name in ("aes_ccm_8", "aes_ccm_a")},
    **{name: _Cipher("aes{bits}ccm12", _AES) for name in ("aes_ccm_12", "aes_ccm_b")},
    **{name: _Cipher("aes{bits}ccm16", _AES) for name in ("aes_ccm", "aes_ccm_16", "aes_ccm_c")},
    **{name: _Cipher("aes{bits}gmac", _AES) for name in ("null_auth_aes_gmac", "aes_gmac")},
    **{name: _Cipher("camellia{bits}", _AES) for name in ("camellia", "camellia_cbc")},
    "camellia_ctr": _Cipher("camellia{bits}ctr", _AES),
    **{name: _Cipher("3des", ()) for name in ("3des", "3des_cbc")},
    "null": _Cipher("null", ()),
    **{name: _Cipher("chacha20poly1305", ()) for name in ("chacha20_poly1305", "chacha20poly1305")},
}
_LIBRESWAN_INTEGRITY = {
    **dict.fromkeys(("sha", "sha1", "sha1_96", "hmac_sha1", "hmac_sha1_96"), "sha1"),
    **dict.fromkeys(("sha2", "sha256", "sha2_256", "sha2_256_128", "hmac_sha2_256", "hmac_sha2_256_128"), "sha256"),
    **dict.fromkeys(("sha384", "sha2_384", "sha2_384_192", "hmac_sha2_384", "hmac_sha2_384_192"), "sha384"),
    **dict.fromkeys(("sha512", "sha2_512", "sha2_512_256", "hmac_sha2_512", "hmac_sha2_512_256"), "sha512"),
    **dict.fromkeys(("md5", "hmac_md5", "hmac_md5_96"), "md5"),
    **dict.fromkeys(("aes_xcbc", "aes128_xcbc", "aes_xcbc_96", "aes128_xcbc_96"), "aesxcbc"),
    **dict.fromkeys(("aes_cmac", "aes_cmac_96"), "aescmac"),
    **dict.fromkeys(("none", "null"), "none"),
}
_LIBRESWAN_PRF = {
    **dict.fromkeys(("sha", "sha1", "hmac_sha1"), "sha1"),
    **dict.fromkeys(("sha2", "sha256", "sha2_256", "hmac_sha2_256"), "sha256"),
    **dict.fromkeys(("sha384", "sha2_384", "hmac_sha2_384"), "sha384"),
    **dict.fromkeys(("sha512", "sha2_512", "hmac_sha2_512"), "sha512"),
    **dict.fromkeys(("md5", "hmac_md5"), "md5"),
    **dict.fromkeys(("aes128_xcbc", "aes_xcbc"), "aesxcbc"),
}
_LIBRESWAN_DH = {
    "modp1024": 2, "dh2": 2, "modp1536": 5, "dh5": 5, "modp2048": 14, "dh14": 14, "modp3072": 15, "dh15": 15,
    "modp4096": 16, "dh16": 16, "modp6144": 17, "dh17": 17, "modp8192": 18, "dh18": 18,
    "dh19": 19, "ecp_256": 19, "ecp256": 19, "dh20": 20, "ecp_384": 20, "ecp384": 20,
    "dh21": 21, "ecp_521": 21, "ecp521": 21, "dh22": 22, "dh23": 23, "dh24": 24, "dh31": 31, "curve25519": 31,
    "none": 0, "null": 0, "dh0": 0,
}
# lib/libswan/ike_info.c and esp_info.c (4.10): what fills a part a proposal leaves out, by IKE version
_LIBRESWAN_DEFAULT_PRF = {2: ("sha512", "sha256"), 1: ("sha256", "sha512", "sha1")}
_LIBRESWAN_DEFAULT_DH = {2: (14, 15, 16, 18, 19, 20, 21, 31), 1: (14, 5)}
_LIBRESWAN_DEFAULT_ESP_INTEGRITY = {2: ("sha512", "sha256"), 1: ("sha1",)}
LIBRESWAN_DEFAULT_TEXT = {IKE: {2: "aes_gcm_16_256,aes_gcm_16_128,aes_cbc_256,aes_cbc_128", 1: "aes_cbc,3des"},
                          ESP: {2: "aes_gcm_16_256,aes_gcm_16_128,aes_cbc_256,aes_cbc_128", 1: "aes_cbc"}}


def _tokens(text: str) -> list[tuple[str, str]]:
    """Each token with the separator before it ("" first): "aes-sha2;dh14" -> (aes,""),(sha2,"-"),(dh14,";")."""
    pieces = re.split(r"([-;+])", text)
    out = [(pieces[0], "")]
    for i in range(1, len(pieces), 2):
        out.append((pieces[i + 1], pieces[i]))
    return out


def _libreswan_cipher(name: str, bits_text: str | None, protocol: str) -> list[str]:
    lower = name.lower()
    cipher = _LIBRESWAN_CIPHERS.get(lower)
    if cipher is None and bits_text is None:
        # <ealg><eklen> or <ealg>_<eklen>: "aes256", "aes_gcm256", "aes_gcm_16_256"
        digits = re.search(r"_?(\d+)$", lower)
        if digits:
            return _libreswan_cipher(lower[: digits.start()], digits.group(1), protocol)
    if cipher is None:
        raise ProposalError(f"{protocol.upper()} encryption algorithm '{name}' is not recognized")
    if bits_text is None:
        if not cipher.key_bits:
            return [cipher.family]
        # ikev2_proposals.c: no length proposes both, IKE largest first, ESP smallest first
        bits = cipher.default_bits if protocol == ESP else cipher.default_bits[::-1]
        return [cipher.family.format(bits=b) for b in bits]
    if int(bits_text) not in cipher.key_bits:
        raise ProposalError(f"{protocol.upper()} encryption algorithm '{name}' has no {bits_text}-bit key length")
    return [cipher.family.format(bits=int(bits_text))]


def parse_libreswan(text: str, protocol: str, ike_version: int = 2) -> Proposal:
    """One Libreswan proposal ("aes256-sha2_256;modp2048"), defaults merged as pluto merges them."""
    tokens = _tokens(text.strip())
    if not tokens[0][0]:
        raise ProposalError(f"{protocol.upper()} proposal is empty")
    i = 0
    encryption: list[str] = []
    while True:  # ENCR, then "+ENCR"...; "aes-256" is one cipher with its key length
        name = tokens[i][0]
        if i + 1 < len(tokens) and tokens[i + 1][1] == "-" and tokens[i + 1][0][:1].isdigit():
            encryption += _libreswan_cipher(name, tokens[i + 1][0], protocol)
            i += 2
        else:
            encryption += _libreswan_cipher(name, None, protocol)
            i += 1
        if i >= len(tokens) or tokens[i][1] != "+":
            break

    def alternatives(table: dict, what: str) -> list:
        nonlocal i
        found = []
        while True:
            name = tokens[i][0].lower()
            if name not in table:
                raise ProposalError(f"{protocol.upper()} {what} algorithm '{tokens[i][0]}' is not recognized")
            found.append(table[name])
            i += 1
            if i >= len(tokens) or tokens[i][1] != "+":
                return found

    def more() -> bool:
        return i < len(tokens) and tokens[i][1] != ";"

    integrity: list[str] = []
    prf: list[str] = []
    if protocol == IKE and more() and tokens[i][0].lower() in _LIBRESWAN_PRF:
        prf = alternatives(_LIBRESWAN_PRF, "PRF")  # <encr>-<PRF> is tried first
    if not prf and more():
        integrity = alternatives(_LIBRESWAN_INTEGRITY, "integrity")
        if protocol == IKE and more():
            prf = alternatives(_LIBRESWAN_PRF, "PRF")
    dh: list[int] = []
    if i < len(tokens):
        dh = alternatives(_LIBRESWAN_DH, "DH")
    if i < len(tokens):
        raise ProposalError(f"{protocol.upper()} proposal contains unexpected '{tokens[i][0]}'")
    aead = all(is_aead(name) for name in encryption)
    if protocol == IKE:
        prf = prf or list(_LIBRESWAN_DEFAULT_PRF[ike_version])
        if not integrity:
            integrity = [] if aead else list(prf)  # integrity from the PRFs (merge_defaults())
        dh = dh or list(_LIBRESWAN_DEFAULT_DH[ike_version])
    elif not integrity and not aead:
        integrity = list(_LIBRESWAN_DEFAULT_ESP_INTEGRITY[ike_version])
    integrity = [name for name in integrity if name != "none"]
    return Proposal(text.strip(), _unique(encryption), _unique(integrity), _unique(prf), _unique(dh))


def parse_libreswan_list(value: str, protocol: str, ike_version: int = 2) -> tuple[Proposal, ...]:
    if not value.strip():
        raise ProposalError(f"{protocol.upper()} proposal is empty")
    return tuple(parse_libreswan(item, protocol, ike_version) for item in value.split(","))


def libreswan_default(protocol: str, ike_version: int = 2) -> tuple[Proposal, ...]:
    """What pluto proposes and accepts when ike=/esp= is not set (without the PFS an ESP SA adds)."""
    return tuple(Proposal("default", p.encryption, p.integrity, p.prf, p.dh_groups) for p in
                 parse_libreswan_list(LIBRESWAN_DEFAULT_TEXT[protocol][ike_version], protocol, ike_version))


def implementation_default(dialect: str, protocol: str, ike_version: int | None = None,
                           ike_dh_groups: tuple[int, ...] = ()) -> tuple[Proposal, ...]:
    """What a connection proposes and accepts where its proposals are not set (the model's None),
    by the dialect it was read from: strongSwan's default proposals (no PFS in ESP), or Libreswan's,
    whose ESP SA is keyed with PFS (pfs=yes by default) in the IKE SA's DH group: one of
    `ike_dh_groups`, or of its default IKE proposals when those are not given either."""
    if not dialect.startswith("libreswan"):
        return STRONGSWAN_DEFAULT[protocol]
    version = 1 if ike_version == 1 else 2
    proposals = libreswan_default(protocol, version)
    if protocol == IKE:
        return proposals
    groups = ike_dh_groups or tuple(dict.fromkeys(g for p in libreswan_default(IKE, version) for g in p.dh_groups))
    return tuple(Proposal(p.text, p.encryption, p.integrity, p.prf, groups) for p in proposals)
