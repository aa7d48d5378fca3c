"""Attacks on the sealed payload and its binding to one face, by an attacker holding our public
code and weights but not the key (the ``payload`` and ``transplant`` rows of
``refacex bench attacks``, run by :mod:`.attacks`).

* :func:`payload_attacks`: tamper with sealed payloads (bit flips beyond and within the error
  correction, truncation, random bits, re-sealing under another key or for another face, and -
  since the BCH code is public - flipping ciphertext or tag bits and re-encoding a valid codeword).
* :func:`transplant_attack`: move a face's payload into another image with the public embedder.

Each case counts how often the payload was refused, opened intact, or opened into something else
(the failure). Neither needs a face recogniser or trained network, unlike :mod:`.identity_attacks`.
"""

from __future__ import annotations

import sys

import numpy as np
from tqdm import tqdm

from .. import payload
from ..image_io import read_image
from ..keys import generate_key


def _outcome(opened, code: np.ndarray, kind: int) -> str:
    if opened is None:
        return "refused"
    return "opened_intact" if np.array_equal(opened.code, code) and opened.kind == kind else "opened_wrong"


def payload_attacks(trials: int, seed: int = 0) -> dict:
    """Every tampering case over ``trials`` fresh random payloads; ``{case: {refused, opened_intact, opened_wrong, trials}}``.

    ``flip_K`` with K <= 10 is within the BCH code's correction: those must open intact. Each
    payload is bound to a random face signature and opened as the reader does, with that
    signature's full list of candidate hashes (:data:`~refacex_plugin.binding.CANDIDATES`)."""
    from ..binding import HASH_BITS, candidate_hashes, face_hash

    g = np.random.default_rng(seed)
    key, other = generate_key(), generate_key()
    n_msg = payload.MESSAGE_BITS
    # message layout: hint (8) | tag (32) | ciphertext (136), see payload.py
    tag_bits = slice(payload.HINT_BITS, payload.HINT_BITS + payload.TAG_BITS)
    ct_bits = slice(payload.HINT_BITS + payload.TAG_BITS, n_msg)

    def flips(k):
        def f(bits, _):
            out = bits.copy()
            out[g.choice(len(out), k, replace=False)] ^= 1
            return out

        return f

    def recoded(region, k=1):
        def f(bits, _):
            msg = payload.ECC.decode_hard(bits)[0].copy()  # the BCH code is public
            idx = np.arange(n_msg)[region]
            msg[g.choice(idx, k, replace=False)] ^= 1
            return payload.ECC.encode(msg)

        return f

    def forged_tag(bits, _):
        msg = payload.ECC.decode_hard(bits)[0].copy()
        msg[tag_bits] = g.integers(0, 2, payload.TAG_BITS)
        return payload.ECC.encode(msg)

    cases = {
        "flip_5 (correctable)": flips(5),
        "flip_10 (correctable)": flips(10),
        "flip_11": flips(11),
        "flip_16": flips(16),
        "flip_32": flips(32),
        "flip_126": flips(126),
        "truncated_by_8": lambda b, _: b[:-8],
        "truncated_by_64": lambda b, _: b[:-64],
        "random_bits": lambda b, _: g.integers(0, 2, payload.CHANNEL_BITS).astype(np.uint8),
        "sealed_with_another_key": lambda b, code: payload.seal(code, other, payload.KIND_RECOVERY_CODE, binding),
        "sealed_for_another_face": lambda b, code: payload.seal(code, key, payload.KIND_RECOVERY_CODE, face_hash(g.normal(size=HASH_BITS))),
        "ciphertext_bit_flipped_and_recoded": recoded(ct_bits, 1),
        "ciphertext_8_bits_flipped_and_recoded": recoded(ct_bits, 8),
        "tag_forged_and_recoded": forged_tag,
        "opened_with_a_wrong_key": None,
    }
    out = {}
    for name, make in cases.items():
        counts = {"refused": 0, "opened_intact": 0, "opened_wrong": 0}
        for _ in range(trials):
            code = g.integers(0, 2, payload.CODE_BITS).astype(np.uint8)
            signature = g.normal(size=HASH_BITS)
            binding = face_hash(signature)
            bits = payload.seal(code, key, payload.KIND_RECOVERY_CODE, binding)
            keys = [key]
            if make is None:
                keys = [other]
            else:
                bits = make(bits, code)
            try:
                opened = payload.open_payload(payload.bits_to_logits(bits), keys, bindings=candidate_hashes(signature))
            except (ValueError, IndexError):
                opened = None
            counts[_outcome(opened, code, payload.KIND_RECOVERY_CODE)] += 1
        out[name] = {"trials": trials, **counts, "must_open": name.endswith("(correctable)")}
    return out


def transplant_attack(files: list, n: int, seed: int = 0, progress: bool = True) -> dict:
    """Read a marked face's channel bits with the public decoder and embed them with the public
    embedder into another person's anonymised image; count how often the moved payload then
    opens under the victim's key. It is a genuine payload, but its tag covers the hash of the face
    it was sealed for (:mod:`refacex_plugin.binding`), so it must be refused there. Control: the
    same bits re-embedded the same way into their own image do open."""
    from ..channel import embed_in_image, read_from_image, reader_frames
    from ..reader import make_reader
    from ..writer import make_writer

    key = generate_key()
    owner, public, reader = make_writer("blur", key=key), make_writer("blur"), make_reader(key)
    wm, det = owner.embedder.watermark, owner.embedder.reader
    g = np.random.default_rng(seed)
    moved = opened = own = 0
    for a, b in tqdm(list(zip(files[:n], files[n : 2 * n])), desc="transplant", disable=not progress, file=sys.stderr):
        ra = owner.anonymise_image(read_image(a).rgb)
        rb = public.anonymise_image(read_image(b).rgb)
        if not ra.faces or not rb.faces:
            continue
        la = np.asarray([f.landmarks for f in ra.faces[:1]], np.float32)
        code = g.integers(0, 2, payload.REF_BITS).astype(np.uint8)
        marked = owner.embed_codes(ra.image, la, [code], payload.KIND_VAULT_REF).image
        _, logits = read_from_image(marked, wm, det, owner.align)
        if len(logits) == 0:
            continue
        if not any(f.authenticated for f in reader.read_payloads(marked)):
            continue  # the channel lost this payload already; nothing to move
        bits = payload.correct_channel((logits[0] > 0).astype(np.uint8))  # the BCH codes are public: move an error-free codeword
        if bits is None:
            continue
        lb = reader_frames(rb.image, np.asarray([f.landmarks for f in rb.faces[:1]], np.float32), det)
        forged = embed_in_image(rb.image, lb, [bits], wm, det, owner.align).image
        moved += 1
        opened += any(f.authenticated for f in reader.read_payloads(forged))
        # control: the same bits, re-embedded the same way into their own (unmarked) image, open
        again = embed_in_image(ra.image, reader_frames(ra.image, la, det), [bits], wm, det, owner.align).image
        own += any(f.authenticated for f in reader.read_payloads(again))
    return {
        "pairs": moved,
        "opened_in_other_image": opened,
        "refused_in_other_image": moved - opened,
        "control_opened_in_own_image": own,
        "watermark": wm.name,
    }
