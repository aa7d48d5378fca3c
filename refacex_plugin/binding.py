"""Binding a payload to the face it is embedded in, so that a moved payload fails.

A payload is public bits: anyone can read a face's channel bits with the public decoder and
embed them in another image with the public encoder. So the payload's tag also covers a short
robust hash of the anonymised face it was sealed for (associated data: it costs no channel
bits, see :mod:`refacex_plugin.payload`). The reader recomputes the hash from the face it reads
and presents its :data:`CANDIDATES` most likely variants; the tag opens only for the hash the
payload was sealed with.

The hash: :data:`HASH_BITS` signs of the lowest-frequency AC coefficients of the 32x32 DCT of
the aligned crop's grey levels (context included), each centred on its mean over aligned faces
and scaled by how much it moves under the robustness suite's distortions (:data:`_MEAN`,
:data:`_SCALE`). A candidate's cost is the summed scaled magnitude of the bits it flips.

Measured (``python research/binding_hash.py --data ../shared/data/lfw --images 300``, refacex
-anonymised LFW faces, docs/benchmarks/payload-binding.md): a moved payload passes for 0.066 % of
(face, other image) pairs; the hash stays among the reader's candidates after JPEG, WebP,
colour changes and blur for 99.7-100 % of faces, after a 10 % crop and noise for 97.6 %, after
resize x0.5 / x1.5 for 94.9 / 94.2 %.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .geometry import AlignConfig, alignment_matrices, extract_crops

HASH_BITS = 24
#: Hash variants the reader tries per face (each is one more tag comparison, so a forger's
#: chance per try is ``CANDIDATES * 2**-32`` instead of ``2**-32``).
CANDIDATES = 1024
_WEAK = 14  # candidates flip only among this many least reliable bits
_SIDE = 32
# the 24 lowest-frequency AC positions of the 32x32 DCT, in zig-zag order
_POSITIONS = sorted(((u, v) for u in range(8) for v in range(8) if (u, v) != (0, 0)), key=lambda t: (t[0] + t[1], t[0]))[:HASH_BITS]
# per-coefficient mean over aligned faces, and its spread under distortion: from 295 refacex-anonymised
# LFW faces (research/binding_hash.py --fit), crops in [0, 1]
_MEAN = np.array(
    [
        -0.058,
        0.004,
        -1.242,
        0.035,
        -0.853,
        0.001,
        0.09,
        -0.03,
        0.03,
        0.415,
        0.041,
        0.672,
        0.034,
        -0.389,
        0.074,
        0.1,
        -0.026,
        0.463,
        0.004,
        -0.274,
        0.221,
        0.029,
        -0.034,
        0.023,
    ],
    np.float32,
)
_SCALE = np.array(
    [
        0.216,
        0.204,
        0.284,
        0.16,
        0.166,
        0.155,
        0.157,
        0.117,
        0.132,
        0.152,
        0.115,
        0.139,
        0.097,
        0.115,
        0.113,
        0.11,
        0.101,
        0.127,
        0.099,
        0.111,
        0.112,
        0.098,
        0.103,
        0.091,
    ],
    np.float32,
)
_SUBSETS = ((np.arange(2**_WEAK)[:, None] >> np.arange(_WEAK)) & 1).astype(np.float32)  # (2^14, 14)


#: The grey the hash reads: the mean of the three channels.
GREY = (1 / 3, 1 / 3, 1 / 3)


def dct_features(crops: torch.Tensor) -> np.ndarray:
    """Raw (uncentred) hash coefficients of aligned crops: ``(N, 3, S, S)`` in [0, 1], or their
    :data:`GREY` ``(N, 1, S, S)`` -> ``(N, HASH_BITS)``."""
    grey = crops.float().mean(1).cpu().numpy()
    out = np.zeros((len(grey), HASH_BITS), np.float32)
    for i, g in enumerate(grey):
        small = cv2.resize(g, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)
        d = cv2.dct(small - small.mean())
        out[i] = [d[u, v] for u, v in _POSITIONS]
    return out


def face_signatures(rgb: np.ndarray, landmarks: np.ndarray, align: AlignConfig = AlignConfig()) -> np.ndarray:
    """Centred, scaled hash coefficients of each face: ``rgb (H, W, 3)``, ``landmarks (N, 5, 2)`` -> ``(N, HASH_BITS)``.

    Compute them in the frame a reader will find the face in (a re-detection of the image)."""
    landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    if len(landmarks) == 0:
        return np.zeros((0, HASH_BITS), np.float32)
    greys = extract_crops(rgb, alignment_matrices(landmarks, align), align, "cpu", luma=GREY)  # warping is linear: the warped grey
    return (dct_features(greys) - _MEAN) / _SCALE


def _pack(bits: np.ndarray) -> bytes:
    return np.packbits(bits.astype(np.uint8)).tobytes()


def face_hash(signature: np.ndarray) -> bytes:
    """The binding a writer seals with: ``(HASH_BITS,)`` signature -> 3 bytes."""
    return _pack(np.asarray(signature) > 0)


def candidate_hashes(signature: np.ndarray, limit: int = CANDIDATES) -> list[bytes]:
    """The reader's ``limit`` most likely writer hashes for a ``(HASH_BITS,)`` signature, most likely first
    (the first is :func:`face_hash`): flips of the least reliable bits, cheapest summed magnitude first."""
    sig = np.asarray(signature, np.float32)
    weak = np.argsort(np.abs(sig), kind="stable")[:_WEAK]
    order = np.argsort(_SUBSETS @ np.abs(sig[weak]), kind="stable")[:limit]
    flips = np.zeros((len(order), len(sig)), bool)
    flips[:, weak] = _SUBSETS[order].astype(bool)
    return [row.tobytes() for row in np.packbits((sig > 0) ^ flips, axis=1)]


def bound_sealer(
    rgb: np.ndarray, codes: list[np.ndarray], key: bytes, kind: int, align: AlignConfig = AlignConfig(), sealed: list[bytes] | None = None
):
    """The ``seal`` that :func:`~refacex_plugin.channel.embed_in_image` takes for bound payloads:
    given the frames ``(N, 5, 2)`` a reader will find the faces of ``rgb`` (the unmarked image) in,
    it hashes each face there and seals ``codes[i]`` under ``key`` bound to face ``i``'s hash.
    Returns ``(channel bits per face, hashes)``; every hash it seals with is also appended to
    ``sealed`` if given (the embedder may seal again, for the frames its rounds found)."""
    from .payload import seal as seal_payload

    def seal(frames: np.ndarray):
        hashes = [face_hash(s) for s in face_signatures(rgb, frames, align)]
        if sealed is not None:
            sealed.extend(hashes)
        return [seal_payload(c, key, kind, h) for c, h in zip(codes, hashes)], hashes

    return seal
