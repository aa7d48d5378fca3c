"""The recovery payload: a K-bit code, sealed with keyed authenticated encryption, then BCH-coded.

Format, version 2 (all lengths in bits; published constants below)::

    plaintext P   = version (4) | kind (4) | code (CODE_BITS = 128)               136
    binding B     = robust hash of the face it is sealed for (associated data,      0
                    not transmitted: see :mod:`refacex_plugin.binding`)
    tag T         = HMAC-SHA256(k_mac, "refacex/payload/v2" | len(B) | B | P)[:32]  32
    ciphertext C  = P xor AES-256-CTR(k_enc, counter block = T | 0^96)            136
    key hint H    = HMAC-SHA256(k_hint, T)[:8]                                      8
    message M     = H | T | C                                                      176
    channel bits  = BCH(m=8, t=10) codeword of M (corrects 10 bit errors)          252

This is SIV (synthetic IV) authenticated encryption built from standard primitives in the
``cryptography`` package (HKDF, HMAC-SHA256, AES-CTR): without the key every channel bit is a
pseudo-random function output, so payloads look like random bits and do not link images that
share a key; a wrong key or any tampering fails the 32-bit tag and is refused. The key hint
is blinded by the tag, so it links nothing either, yet lets an admin holding several keys try
the right one first. Equal codes under one key give equal payloads (SIV is deterministic);
codes are never equal for different faces in practice, and vault references are random.

The binding (new in version 2) makes a payload moved into another image fail: the reader
recomputes the hash from the face it reads and tries its most likely variants
(:data:`~refacex_plugin.binding.CANDIDATES` of them); the tag opens only for the hash the payload
was sealed with. Version-1 payloads (unbound; pre-release) are no longer opened.

``kind`` says what the code is: :data:`KIND_RECOVERY_CODE` (the learned recovery code) or
:data:`KIND_VAULT_REF` (a random record id in an exact-recovery vault).
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

_DOMAIN = b"refacex/payload/v2"


@dataclass(frozen=True)
class _SubKeys:
    mac: bytes
    enc: bytes
    hint: bytes


def _subkeys(key: bytes) -> _SubKeys:
    okm = HKDF(algorithm=hashes.SHA256(), length=96, salt=None, info=_DOMAIN).derive(key)
    return _SubKeys(okm[:32], okm[32:64], okm[64:])


def _mac_prefix(k: _SubKeys) -> hmac.HMAC:
    """The tag's HMAC state after the domain (copied per binding when a reader tries many)."""
    return hmac.new(k.mac, _DOMAIN, hashlib.sha256)


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

    code: np.ndarray  # (CODE_BITS,) uint8 0/1
    kind: int
    version: int
    key_id: str
    binding: bytes = b""  # the face hash it was sealed for (public: a function of the image)


def seal(code: np.ndarray, key: bytes, kind: int = KIND_RECOVERY_CODE, binding: bytes = b"") -> np.ndarray:
    """Encrypt, authenticate and error-correct a ``(CODE_BITS,)`` 0/1 code. Returns ``(CHANNEL_BITS,)`` uint8.

    ``binding``: associated data the tag covers but the payload does not carry (the hash of the
    face it is embedded in, :func:`refacex_plugin.binding.face_hash`); the reader must present it."""
    code = np.asarray(code, np.uint8).reshape(-1)
    if code.shape != (CODE_BITS,) or code.max(initial=0) > 1:
        raise ValueError(f"code must be {CODE_BITS} bits of 0/1")
    if not 0 <= kind < 16:
        raise ValueError("kind is 4 bits")
    k = _subkeys(key)
    plaintext = bytes([(VERSION << 4) | kind]) + ecc.bits_to_bytes(code)
    tag = _tag(_mac_prefix(k), plaintext, binding)
    message = _hint(k, tag) + tag + _keystream_xor(k, tag, plaintext)
    return ECC.encode(ecc.bytes_to_bits(message))


def _open_message(bits: np.ndarray, subkeys: list[tuple[bytes, _SubKeys]], bindings: Sequence[bytes]) -> Payload | None:
    msg = ecc.bits_to_bytes(bits)
    hint, tag, ct = msg[:1], msg[1:5], msg[5:]
    for key, k in sorted(subkeys, key=lambda kk: _hint(kk[1], tag) != hint):  # keys whose hint matches go first
        plaintext = _keystream_xor(k, tag, ct)  # the keystream depends on the tag only
        prefix = _mac_prefix(k)
        for binding in bindings:
            if hmac.compare_digest(_tag(prefix, plaintext, binding), tag):
                version, kind = plaintext[0] >> 4, plaintext[0] & 0x0F
                if version != VERSION:
                    return None
                return Payload(ecc.bytes_to_bits(plaintext[1:], CODE_BITS), kind, version, key_id(key), binding)
    return None


def open_payload(logits: np.ndarray, keys: list[bytes] | bytes, chase_depth: int = 6, bindings: Sequence[bytes] = (b"",)) -> Payload | None:
    """Error-correct and authenticate channel bit logits (> 0 means 1) with any of ``keys``.

    ``bindings``: the candidate hashes of the face the bits were read from, most likely first
    (:func:`refacex_plugin.binding.candidate_hashes`); the default opens only unbound payloads.
    Each candidate is one more tag comparison, so n candidates leave a forger 32 - log2(n) bits.

    Returns the :class:`Payload`, or None when nothing authenticates (no payload, a wrong key,
    too many errors, tampering, or a payload sealed for another face): never a guess.
    """
    keys = [keys] if isinstance(keys, bytes) else list(keys)
    if not keys:
        return None
    subkeys = [(key, _subkeys(key)) for key in keys]
    bindings = list(bindings)
    return ecc.decode(ECC, np.asarray(logits, np.float32), lambda bits: _open_message(bits, subkeys, bindings), chase_depth)


def bits_to_logits(bits: np.ndarray) -> np.ndarray:
    """Hard 0/1 bits as logits of equal reliability (+1 / -1)."""
    return np.asarray(bits, np.float32) * 2.0 - 1.0
