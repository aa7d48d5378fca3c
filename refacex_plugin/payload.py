"""The recovery payload: a K-bit code, sealed with keyed authenticated encryption, then BCH-coded.

Format, version 2 - the learned recovery code (all lengths in bits; published constants below)::

    plaintext P   = version (4) | kind (4) | code (CODE_BITS = 128)               136
    binding B     = robust hash of the face it is sealed for (associated data,      0
                    not transmitted: see :mod:`refacex_plugin.binding`)
    tag T         = HMAC-SHA256(k_mac, "refacex/payload/v2" | len(B) | B | P)[:32]  32
    ciphertext C  = P xor AES-256-CTR(k_enc, counter block = T | 0^96)            136
    key hint H    = HMAC-SHA256(k_hint, T)[:8]                                      8
    message M     = H | T | C                                                      176
    channel bits  = BCH(m=8, t=10) codeword of M (corrects 10 bit errors)          252

Format, version 3 - a vault reference (the same construction with a 64-bit record id, so the
message is shorter and the same 252 channel bits carry more parity)::

    plaintext P   = version (4) | kind (4) | record id (REF_BITS = 64)              72
    tag T         = HMAC-SHA256(k_mac, "refacex/payload/v3" | len(B) | B | P)[:32]  32
    message M     = H | T | C                                                      112
    channel bits  = BCH(m=8, t=21) codeword of M (corrects 21 bit errors)          252

This is SIV (synthetic IV) authenticated encryption built from standard primitives in the
``cryptography`` package (HKDF, HMAC-SHA256, AES-CTR): without the key every channel bit is a
pseudo-random function output, so payloads look like random bits and do not link images that
share a key; a wrong key or any tampering fails the 32-bit tag and is refused. The key hint
is blinded by the tag, so it links nothing either, yet tells a reader holding several keys which
one to try; a message whose hint is not the key's is refused unchecked (8 more bits against a
chance opening: the reader's soft decoding hands on several candidate messages per reading).
Equal codes under one key give equal payloads (SIV is deterministic); codes are never equal for
different faces in practice, and vault references are random. A reader tries both layouts; each
has its own tag domain, so neither opens as the other.

The binding (versions 2 and 3) makes a payload moved into another image fail: the reader
recomputes the hash from the face it reads and tries its most likely variants
(:data:`~refacex_plugin.binding.CANDIDATES` of them); the tag opens only for the hash the payload
was sealed with. Version-1 payloads are not opened: being unbound, one would open wherever it was copied.

``kind`` says what the code is: :data:`KIND_RECOVERY_CODE` (the learned recovery code, version 2)
or :data:`KIND_VAULT_REF` (a random record id in an exact-recovery vault: version 3; version-2
vault references of 128 bits, written before version 3 existed, still open).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import ecc
from .keys import key_id

VERSION = 2
CODE_BITS = 128
TAG_BITS = 32
HINT_BITS = 8
PLAINTEXT_BITS = 4 + 4 + CODE_BITS
MESSAGE_BITS = HINT_BITS + TAG_BITS + PLAINTEXT_BITS
ECC = ecc.BchCode(data_bits=MESSAGE_BITS, t=10)
#: Bits the watermark must carry per face.
CHANNEL_BITS = ECC.coded_bits  # 252

KIND_RECOVERY_CODE = 0
KIND_VAULT_REF = 1
#: The kinds' names in reports, JSON and command lines.
KIND_NAMES = {KIND_RECOVERY_CODE: "recovery-code", KIND_VAULT_REF: "vault-ref"}

#: Version 3 (vault references): a shorter code, so BCH corrects 21 errors in the same channel.
REF_VERSION = 3
REF_BITS = 64
REF_MESSAGE_BITS = HINT_BITS + TAG_BITS + 4 + 4 + REF_BITS  # 112
REF_ECC = ecc.BchCode(data_bits=REF_MESSAGE_BITS, t=21)  # 140 parity bits: 252 coded bits

_DOMAIN = b"refacex/payload/v2"  # also the key derivation's info (both versions share the subkeys)


@dataclass(frozen=True)
class _Layout:
    version: int
    code_bits: int
    ecc: ecc.BchCode
    domain: bytes  # the tag's domain separation


assert REF_ECC.coded_bits == CHANNEL_BITS
_LAYOUTS = {VERSION: _Layout(VERSION, CODE_BITS, ECC, _DOMAIN), REF_VERSION: _Layout(REF_VERSION, REF_BITS, REF_ECC, b"refacex/payload/v3")}


@dataclass(frozen=True)
class _SubKeys:
    mac: bytes
    enc: bytes
    hint: bytes


def code_bits(kind: int) -> int:
    """How many code bits :func:`seal` takes for ``kind`` (its current layout)."""
    return REF_BITS if kind == KIND_VAULT_REF else CODE_BITS


def _subkeys(key: bytes) -> _SubKeys:
    okm = HKDF(algorithm=hashes.SHA256(), length=96, salt=None, info=_DOMAIN).derive(key)
    return _SubKeys(okm[:32], okm[32:64], okm[64:])


def _mac_prefix(k: _SubKeys, domain: bytes) -> hmac.HMAC:
    """The tag's HMAC state after the domain (copied per binding when a reader tries many)."""
    return hmac.new(k.mac, domain, hashlib.sha256)


def _tag(prefix: hmac.HMAC, plaintext: bytes, binding: bytes) -> bytes:
    if len(binding) > 255:
        raise ValueError("a binding is at most 255 bytes")
    mac = prefix.copy()
    mac.update(bytes([len(binding)]) + binding + plaintext)
    return mac.digest()[: TAG_BITS // 8]


def _keystream_xor(k: _SubKeys, tag: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(k.enc), modes.CTR(tag + bytes(16 - len(tag)))).encryptor()
    return enc.update(data) + enc.finalize()


def _hint(k: _SubKeys, tag: bytes) -> bytes:
    return hmac.new(k.hint, tag, hashlib.sha256).digest()[: HINT_BITS // 8]


@dataclass(frozen=True)
class Payload:
    """An opened (authenticated, decrypted) payload."""

    code: np.ndarray  # (CODE_BITS,) uint8 0/1; (REF_BITS,) for a version-3 vault reference
    kind: int
    version: int
    key_id: str
    binding: bytes = b""  # the face hash it was sealed for (public: a function of the image)


def seal(code: np.ndarray, key: bytes, kind: int = KIND_RECOVERY_CODE, binding: bytes = b"", version: int | None = None) -> np.ndarray:
    """Encrypt, authenticate and error-correct a code. Returns ``(CHANNEL_BITS,)`` uint8.

    ``code``: 0/1 bits, ``(CODE_BITS,)`` for a recovery code (version 2) or ``(REF_BITS,)`` for a
    vault reference (``kind=KIND_VAULT_REF``: version 3); ``version`` picks the layout explicitly
    (2 for a 128-bit vault reference written before version 3 existed).
    ``binding``: associated data the tag covers but the payload does not carry (the hash of the
    face it is embedded in, :func:`refacex_plugin.binding.face_hash`); the reader must present it."""
    layout = _LAYOUTS.get(version if version is not None else REF_VERSION if kind == KIND_VAULT_REF else VERSION)
    if layout is None:
        raise ValueError(f"unknown payload version {version}")
    code = np.asarray(code, np.uint8).reshape(-1)
    if code.shape != (layout.code_bits,) or code.max(initial=0) > 1:
        raise ValueError(f"a version-{layout.version} code must be {layout.code_bits} bits of 0/1")
    if not 0 <= kind < 16:
        raise ValueError("kind is 4 bits")
    k = _subkeys(key)
    plaintext = bytes([(layout.version << 4) | kind]) + ecc.bits_to_bytes(code)
    tag = _tag(_mac_prefix(k, layout.domain), plaintext, binding)
    message = _hint(k, tag) + tag + _keystream_xor(k, tag, plaintext)
    return layout.ecc.encode(ecc.bytes_to_bits(message))


def _open_message(bits: np.ndarray, subkeys: list[tuple[bytes, _SubKeys]], bindings: Sequence[bytes], layout: _Layout) -> Payload | None:
    msg = ecc.bits_to_bytes(bits)
    hint, tag, ct = msg[:1], msg[1:5], msg[5:]
    for key, k in subkeys:
        if _hint(k, tag) != hint:  # a payload sealed under this key always carries its hint: 8 more bits against forgery
            continue
        plaintext = _keystream_xor(k, tag, ct)  # the keystream depends on the tag only
        prefix = _mac_prefix(k, layout.domain)
        for binding in bindings:
            if hmac.compare_digest(_tag(prefix, plaintext, binding), tag):
                version, kind = plaintext[0] >> 4, plaintext[0] & 0x0F
                if version != layout.version:
                    return None
                return Payload(ecc.bytes_to_bits(plaintext[1:], layout.code_bits), kind, version, key_id(key), binding)
    return None


def open_payload(
    logits: np.ndarray, keys: list[bytes] | bytes, chase_depth: int = 6, bindings: Sequence[bytes] = (b"",), osd_order: int = 2
) -> Payload | None:
    """Error-correct and authenticate channel bit logits (> 0 means 1) with any of ``keys``.

    Both layouts are tried (version 2, then 3), each by soft-decision decoding (:func:`ecc.decode`:
    hard, Chase over ``chase_depth`` weak bits, then ordered statistics of ``osd_order``).
    ``bindings``: the candidate hashes of the face the bits were read from, most likely first
    (:func:`refacex_plugin.binding.candidate_hashes`); the default opens only unbound payloads.
    A decoded message must carry the key's 8-bit hint and then its 32-bit tag; each decoded
    message (ordered statistics hand on 4 per layout, Chase rarely any for unmarked pixels) times
    each binding is one 40-bit comparison, so a reading of unmarked pixels opens under a given key
    with odds of about ``8 * len(bindings) * 2^-40``, and a forger gets as many tries per reading.

    Returns the :class:`Payload`, or None when nothing authenticates (no payload, a wrong key,
    too many errors, tampering, or a payload sealed for another face): never a guess.
    """
    keys = [keys] if isinstance(keys, bytes) else list(keys)
    if not keys:
        return None
    subkeys = [(key, _subkeys(key)) for key in keys]
    bindings = list(bindings)
    logits = np.asarray(logits, np.float32)
    for layout in _LAYOUTS.values():
        opened = ecc.decode(
            layout.ecc, logits, lambda bits, layout=layout: _open_message(bits, subkeys, bindings, layout), chase_depth, osd_order
        )
        if opened is not None:
            return opened
    return None


def correct_channel(bits: np.ndarray) -> np.ndarray | None:
    """The error-free channel word nearest to hard ``(CHANNEL_BITS,)`` 0/1 ``bits`` in either
    layout, or None if neither decodes. Needs no key: it says a payload is probably present
    (the code is public), never that it is authentic.

    The all-zero word is no payload: it is a codeword of every linear code, and it is what QIM
    reads where there is no mark (flat or clipped pixels, a search's point off the face), so any
    reading with at most 21 ones decoded to it (the vault layout's radius): a search was seen to
    stop at such a reading, 8 px off a mark it had read with 0 wrong bits. A
    sealed message (112 or 176 bits, encrypted) is all zeros with odds of 2^-112 at most."""
    bits = np.asarray(bits, np.uint8)
    for layout in _LAYOUTS.values():
        out = layout.ecc.decode_hard(bits)
        if out is not None and out[0].any():
            return layout.ecc.encode(out[0])
    return None


def bits_to_logits(bits: np.ndarray) -> np.ndarray:
    """Hard 0/1 bits as logits of equal reliability (+1 / -1)."""
    return np.asarray(bits, np.float32) * 2.0 - 1.0
