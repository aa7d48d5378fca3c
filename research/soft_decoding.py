"""What each stage of the payload's soft decoding opens, on the reader's real readings (dct-qim).

LFW originals are marked as ``FaceWriter.embed_codes`` does (bound 128-bit recovery codes, a fresh
key each, drawn from ``--seed``), distorted, and read by the reader (``read_marks``: re-detection,
search, fallbacks); each reading (and, for distortions that keep the geometry, the reading in the
exact frame the mark was embedded in) is then opened with the key by hard BCH decoding only, with
Chase (6 weak bits), and with Chase then ordered statistics (order 2, 4 codewords: the default).

    python research/soft_decoding.py --faces 100 --rows jpeg_q50,webp_q80,resize_0.5,blur_1 --seed 8
"""

from __future__ import annotations

import argparse
import glob
import random

import numpy as np

from refacex_plugin import payload as P
from refacex_plugin.bench.originals import central_face
from refacex_plugin.binding import candidate_hashes, face_signatures
from refacex_plugin.channel import embed_codes, face_logits, read_marks
from refacex_plugin.detection import load_detector
from refacex_plugin.distortions import DISTORTIONS
from refacex_plugin.geometry import AlignConfig, alignment_matrices
from refacex_plugin.image_io import read_image
from refacex_plugin.watermark import load_watermark

DECODERS = {"hard": dict(chase_depth=0, osd_order=0), "chase": dict(chase_depth=6, osd_order=0), "chase + osd": {}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=100)
    ap.add_argument("--rows", default="jpeg_q50,webp_q80,resize_0.5,blur_1")
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--seed", type=int, default=8)
    args = ap.parse_args()
    wm, det, align = load_watermark("dct-qim"), load_detector(), AlignConfig()
    rng = np.random.default_rng(args.seed)
    rows = args.rows.split(",")
    opened = {(r, w, d): 0 for r in rows for w in ("search", "own") for d in DECODERS}
    counted = {(r, w): 0 for r in rows for w in ("search", "own")}
    faces = 0
    for f in random.Random(args.seed).sample(sorted(glob.glob(f"{args.data}/*/*.jpg")), args.faces):
        host = read_image(f).rgb
        d = det(host)
        c = central_face(d, *host.shape[:2])
        if c is None:
            continue
        faces += 1
        key, code = rng.bytes(32), rng.integers(0, 2, P.CODE_BITS).astype(np.uint8)

        emb = embed_codes(host, d.landmarks[c : c + 1], [code], key, P.KIND_RECOVERY_CODE, wm, det, align)
        for r in rows:
            x = DISTORTIONS[r](emb.image)
            found, logits, frames = read_marks(x, wm, det, align)
            j = central_face(found, *x.shape[:2]) if len(found) else None
            readings = {"search": None if j is None else logits[j]}
            if not r.startswith(("resize", "crop")):
                readings["own"] = face_logits(x, alignment_matrices(emb.frames, align), wm, align, sync=False)[0][0]
            bindings = candidate_hashes(face_signatures(x, (frames[j : j + 1] if j is not None else emb.frames), align)[0])
            for w, reading in readings.items():
                counted[r, w] += 1
                if reading is None:
                    continue
                for name, kw in DECODERS.items():
                    out = P.open_payload(reading, key, bindings=bindings, **kw)
                    opened[r, w, name] += out is not None and bool(np.array_equal(out.code, code))
    print(f"{faces} LFW faces, 128-bit recovery codes (t = 10), fresh keys from seed {args.seed}; share opened exactly")
    print(f"{'distortion':14s} {'reading':8s} " + " ".join(f"{d:>12s}" for d in DECODERS))
    for r in rows:
        for w in ("search", "own"):
            if counted[r, w]:
                print(f"{r:14s} {w:8s} " + " ".join(f"{opened[r, w, d] / counted[r, w]:12.1%}" for d in DECODERS))


if __name__ == "__main__":
    main()
