"""How small a face can be and still carry a mark a reader opens (the default carrier).

LFW images are shrunk (area interpolation) so that their central face's eyes lie ``--eyes`` pixels
apart; each face is marked as the benchmark marks it (a bound 128-bit recovery code under a seeded
key, in its settled frame) and read as the key's holder reads it, unchanged and after ``--rows``.
Prints per eye distance the faces still detected, the faces opened per row, and the mean reading
time.

    python research/watermark_min_face.py --faces 15 --eyes 8,12,16,20,24,32
"""

from __future__ import annotations

import argparse
import glob
import random
import time

import cv2
import numpy as np

from refacex_plugin import payload as P
from refacex_plugin.bench.originals import central_face
from refacex_plugin.bench.robustness import read_central_face
from refacex_plugin.channel import embed_codes
from refacex_plugin.detection import DEFAULT_DETECTOR, load_detector, reader_config
from refacex_plugin.distortions import DISTORTIONS
from refacex_plugin.geometry import AlignConfig
from refacex_plugin.image_io import read_image
from refacex_plugin.watermark import load_watermark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=15)
    ap.add_argument("--eyes", default="8,12,16,20,24,32", help="eye distances in pixels, comma-separated")
    ap.add_argument("--rows", default="none,jpeg_q75", help="distortions, comma-separated")
    ap.add_argument("--watermark", default="dct-qim-low")
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    wm, align = load_watermark(args.watermark), AlignConfig()
    det, reader = load_detector(DEFAULT_DETECTOR), load_detector(DEFAULT_DETECTOR, reader_config())
    files = random.Random(args.seed).sample(sorted(glob.glob(f"{args.data}/*/*.jpg")), args.faces)
    rows = args.rows.split(",")
    rng = np.random.default_rng(0)
    for eyes in (float(e) for e in args.eyes.split(",")):
        detected, opened, times = 0, dict.fromkeys(rows, 0), []
        for f in files:
            rgb = read_image(f).rgb
            d = det(rgb)
            c = central_face(d, *rgb.shape[:2])
            if c is None:
                continue
            s = eyes / float(np.linalg.norm(d.landmarks[c][0] - d.landmarks[c][1]))
            host = cv2.resize(rgb, (max(round(rgb.shape[1] * s), 8), max(round(rgb.shape[0] * s), 8)), interpolation=cv2.INTER_AREA)
            d = det(host)
            c = central_face(d, *host.shape[:2])
            if c is None:
                continue
            detected += 1
            key, code = rng.bytes(32), rng.integers(0, 2, P.CODE_BITS).astype(np.uint8)
            marked = embed_codes(host, d.landmarks[c : c + 1], [code], key, P.KIND_RECOVERY_CODE, wm, reader, align).image
            for row in rows:
                x = DISTORTIONS[row](marked)
                t0 = time.perf_counter()
                read = read_central_face(x, key, wm, reader, align)
                times.append(time.perf_counter() - t0)
                if read is not None and read[1] is not None:
                    opened[row] += bool(np.array_equal(read[1].code, code))
        shown = ", ".join(f"{row} {n} / {detected}" for row, n in opened.items())
        print(
            f"eyes {eyes:.0f} px: detected {detected} / {len(files)}; opened {shown}; reading {np.mean(times) if times else 0:.2f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
