"""What the reader's re-detection at other image scales buys after a resize (dct-qim).

Embeds a 128-bit recovery code (payload version 2, BCH t = 10) with a fixed key in the central
face of ``--images`` original LFW images, as ``Pipeline.embed_codes`` does, resizes each marked
image by every ``--factors`` entry (OpenCV, area when shrinking, cubic when enlarging) and counts
the images whose payload ``Pipeline.read_payloads`` opens, with the shipped
:data:`refacex_plugin.channel.RESCALED_STARTS` and without any, and the mean read time of each.

    python scripts/rescaled_starts.py --images 40 --factors 0.67,0.8,1.25,1.5,2
"""

from __future__ import annotations

import argparse
import glob
import random
import time

import numpy as np

import refacex_plugin.channel as C
from refacex_plugin import payload as P
from refacex_plugin.bench.originals import central_face
from refacex_plugin.distortions import resize
from refacex_plugin.image_io import read_image
from refacex_plugin.pipeline import Pipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--factors", default="0.67,0.8,1.25,1.5,2")
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    pipe = Pipeline(method="blur", key=bytes(range(32)), watermark="dct-qim")
    files = random.Random(args.seed).sample(sorted(glob.glob(f"{args.data}/*/*.jpg")), args.images)
    code = (np.arange(P.CODE_BITS) % 3 == 0).astype(np.uint8)
    marked = []
    for f in files:
        rgb = read_image(f).rgb
        det = pipe.reader(rgb)
        c = central_face(det, *rgb.shape[:2])
        if c is not None:
            marked.append(pipe.embed_codes(rgb, det.landmarks[c : c + 1], [code], P.KIND_RECOVERY_CODE).image)
    shipped = C.RESCALED_STARTS
    print(f"{len(marked)} original LFW faces, recovery codes; opened with RESCALED_STARTS = "
          f"{tuple(round(s, 3) for s in shipped)} / with none; mean read time")
    for factor in (float(x) for x in args.factors.split(",")):
        row = []
        for starts in (shipped, ()):
            C.RESCALED_STARTS = starts
            t0 = time.perf_counter()
            opened = sum(any(face.authenticated for face in pipe.read_payloads(resize(m, factor))) for m in marked)
            row.append((opened, (time.perf_counter() - t0) / len(marked)))
        C.RESCALED_STARTS = shipped
        print(f"x{factor:<5g} {row[0][0]:3d} / {row[1][0]:3d} opened   {row[0][1] * 1000:5.0f} / {row[1][1] * 1000:5.0f} ms")


if __name__ == "__main__":
    main()
