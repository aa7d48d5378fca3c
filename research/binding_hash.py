"""How well does the payload binding (refacex_plugin.binding) hold, and how well does it detect transplants?

On LFW images anonymised by the public pipeline, each face's binding hash is taken where a reader
re-detects it in the unmarked anonymised image (as ``FaceWriter.embed_codes`` does), then:

* *kept*: share of faces whose hash is among the reader's candidates after each distortion of the
  robustness suite, re-detection and re-alignment (the payload can still open);
* *moved*: share of (face, another image's face) pairs where the first's hash is among the
  second's candidates (a transplant would go undetected).

``--fit`` also prints the raw coefficients' mean and their spread under the distortions: the
constants ``binding._MEAN`` / ``binding._SCALE`` were fitted this way on 300 images.

    python research/binding_hash.py --data ../shared/data/lfw --images 300
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from refacex_plugin import binding as B
from refacex_plugin.channel import match_faces
from refacex_plugin.distortions import DISTORTIONS
from refacex_plugin.geometry import alignment_matrices, extract_crops
from refacex_plugin.image_io import read_image
from refacex_plugin.writer import FaceWriter, make_writer


def raw(rgb: np.ndarray, lm: np.ndarray, pipe: FaceWriter) -> np.ndarray:
    return B.dct_features(extract_crops(rgb, alignment_matrices(lm[None], pipe.align), pipe.align, "cpu"))[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--method", default="refacex")
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--transplant", type=int, default=0, help="also run the attack suite's transplant on this many pairs")
    ap.add_argument("--tamper-trials", type=int, default=0, help="also run the attack suite's payload tampering cases")
    args = ap.parse_args()
    files = sorted(args.data.glob("*/*.jpg"))
    files = [files[i] for i in np.random.default_rng(0).choice(len(files), args.images, replace=False)]
    pipe = make_writer(args.method, donor_seed=0)
    names = list(DISTORTIONS)
    feats = []  # per face: raw coefficients where stored, then per distortion (nan: not re-detected)
    for f in files:
        res = pipe.anonymise_image(read_image(f).rgb)
        found = pipe.detect(res.image)
        if not res.faces or len(found) == 0:
            continue
        j = match_faces(np.asarray([res.faces[0].landmarks], np.float32), found)[0]
        if j is None:
            continue
        img, lm = res.image, found.landmarks[j]
        row = np.full((1 + len(names), B.HASH_BITS), np.nan, np.float32)
        row[0] = raw(img, lm, pipe)
        for d, (name, fn) in enumerate(DISTORTIONS.items(), 1):
            out = fn(img)
            again = pipe.detect(out)
            if name.startswith("crop"):  # same scale, shifted by half the removed border
                scale, shift = 1.0, (np.array(img.shape[1::-1]) - np.array(out.shape[1::-1])) / 2
            else:
                scale, shift = out.shape[1] / img.shape[1], 0.0
            k = match_faces(np.asarray([(lm - shift) * scale], np.float32), again)[0]
            if k is not None:
                row[d] = raw(out, again.landmarks[k], pipe)
        feats.append(row)
    feats = np.stack(feats)
    if args.fit:
        spread = np.sqrt(np.nanmean((feats[:, 1:] - feats[:, :1]) ** 2, axis=(0, 1)))
        print("mean:", np.array2string(feats[:, 0].mean(0), precision=3, separator=", "))
        print("scale:", np.array2string(spread, precision=3, separator=", "))
    sig = (feats - B._MEAN) / B._SCALE
    stored = [B.face_hash(s) for s in sig[:, 0]]
    print(f"{len(feats)} anonymised faces ({args.method}); {B.HASH_BITS}-bit hash, the reader tries {B.CANDIDATES} candidates\n")
    print("| distortion | kept (the payload can still open) | faces re-detected |\n| --- | --- | --- |")
    for d, name in enumerate(names, 1):
        seen = [i for i in range(len(sig)) if not np.isnan(sig[i, d, 0])]
        kept = sum(stored[i] in set(B.candidate_hashes(sig[i, d])) for i in seen)
        print(f"| {name} | {kept / max(len(seen), 1):.1%} | {len(seen)} / {len(sig)} |")
    lists = [set(B.candidate_hashes(s)) for s in sig[:, 0]]
    moved = sum(stored[a] in lists[b] for a in range(len(sig)) for b in range(len(sig)) if a != b)
    total = len(sig) * (len(sig) - 1)
    print(f"\nmoved: {moved} of {total} (face, other image) pairs pass = {moved / total:.3%}")
    if args.transplant:
        from refacex_plugin.bench.payload_attacks import transplant_attack

        others = [f for f in sorted(args.data.glob("*/*.jpg")) if f not in set(files)]
        pick = [others[i] for i in np.random.default_rng(1).choice(len(others), 2 * args.transplant, replace=False)]
        print("\ntransplant:", transplant_attack(pick, args.transplant, progress=False))
    if args.tamper_trials:
        from refacex_plugin.bench.payload_attacks import payload_attacks

        print("\n| tampering case | trials | refused | opened intact | opened wrong |\n| --- | --- | --- | --- | --- |")
        for case, r in payload_attacks(args.tamper_trials).items():
            print(f"| {case} | {r['trials']} | {r['refused']} | {r['opened_intact']} | {r['opened_wrong']} |")


if __name__ == "__main__":
    main()
