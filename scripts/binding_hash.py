"""Would a short robust hash of the anonymised face bind a payload to its image? (issue 9, transplant)

Design under test: the sealed payload's tag also covers ``BITS`` hash bits of the anonymised
aligned crop (signs of low-frequency DCT coefficients of its grey levels, context included); the
reader recomputes the hash and tries the ``2**FLIPS`` variants that flip its own least reliable
bits. Measured here, on LFW images anonymised by the public pipeline:

* *kept*: share of faces whose hash, read back after each distortion of the robustness suite,
  is among the reader's variants (the payload would still open);
* *moved*: share of (face, another image's face) pairs that pass (a transplant would go undetected).

    python scripts/binding_hash.py --data ../shared/data/lfw --images 100 --method refacex
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from refacex_plugin.channel import match_faces
from refacex_plugin.distortions import DISTORTIONS
from refacex_plugin.geometry import alignment_matrices, extract_crops
from refacex_plugin.image_io import read_image
from refacex_plugin.pipeline import Pipeline

BITS, FLIPS = 16, 4  # defaults; --bits / --flips change them
# the lowest-frequency AC coefficients of a 32x32 DCT (zig-zag order, DC left out)
_ZIGZAG = sorted(((u, v) for u in range(8) for v in range(8) if (u, v) != (0, 0)), key=lambda t: (t[0] + t[1], t[0]))


def face_hash(rgb: np.ndarray, landmarks: np.ndarray, pipe: Pipeline) -> tuple[np.ndarray, np.ndarray]:
    """``(BITS,)`` hash bits and ``(BITS,)`` reliabilities (|coefficient|) of each face's aligned crop."""
    crops = extract_crops(rgb, alignment_matrices(landmarks[None], pipe.align), pipe.align, "cpu")
    grey = crops[0].mean(0).numpy().astype(np.float32)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    d = cv2.dct(small - small.mean())
    c = np.array([d[u, v] for u, v in _ZIGZAG[:BITS]])
    return (c > 0).astype(np.uint8), np.abs(c)


def passes(stored: np.ndarray, read: np.ndarray, reliability: np.ndarray) -> bool:
    """True when ``stored`` is one of the reader's variants: every differing bit among its FLIPS least reliable."""
    weak = set(np.argsort(reliability)[:FLIPS].tolist())
    return set(np.flatnonzero(stored != read).tolist()) <= weak


def main() -> None:
    global BITS, FLIPS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--method", default="refacex")
    ap.add_argument("--bits", type=int, default=BITS)
    ap.add_argument("--flips", type=int, default=FLIPS)
    args = ap.parse_args()
    BITS, FLIPS = args.bits, args.flips
    files = sorted(args.data.glob("*/*.jpg"))
    files = [files[i] for i in np.random.default_rng(0).choice(len(files), args.images, replace=False)]
    pipe = Pipeline(method=args.method, donor_seed=0)
    faces = []  # (anonymised image, its face's landmarks, stored hash)
    for f in files:
        res = pipe.anonymise_image(read_image(f).rgb)
        found = pipe.detect(res.image)
        if not res.faces or len(found) == 0:
            continue
        j = match_faces(np.asarray([res.faces[0].landmarks], np.float32), found)[0]
        if j is None:
            continue
        faces.append((res.image, found.landmarks[j], face_hash(res.image, found.landmarks[j], pipe)[0]))
    print(f"{len(faces)} anonymised faces ({args.method}), hash of {BITS} bits, reader tries {2**FLIPS} variants\n")
    print("| distortion | kept (payload still opens) | faces re-detected |\n| --- | --- | --- |")
    for name, fn in DISTORTIONS.items():
        kept = seen = 0
        for img, lm, stored in faces:
            out = fn(img)
            found = pipe.detect(out)
            if name.startswith("crop"):  # same scale, shifted by half the removed border
                scale, shift = 1.0, (np.array(img.shape[1::-1]) - np.array(out.shape[1::-1])) / 2
            else:
                scale, shift = out.shape[1] / img.shape[1], 0.0
            j = match_faces(np.asarray([(lm - shift) * scale], np.float32), found)[0]
            if j is None:
                continue
            seen += 1
            read, rel = face_hash(out, found.landmarks[j], pipe)
            kept += passes(stored, read, rel)
        print(f"| {name} | {kept / max(seen, 1):.1%} | {seen} / {len(faces)} |")
    moved = total = 0
    for a in range(len(faces)):
        for b in range(len(faces)):
            if a != b:
                read, rel = face_hash(faces[b][0], faces[b][1], pipe)
                moved += passes(faces[a][2], read, rel)
                total += 1
    print(f"\nmoved: {moved} of {total} (face, other image) pairs pass = {moved / total:.2%}")


if __name__ == "__main__":
    main()
