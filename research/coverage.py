"""Faces left behind: of the faces a second, independent detector finds confidently in the
originals, how many does the writer leave unchanged?

The judge is dlib's HOG frontal-face detector (upsampled once, score >= --min-score), which the
writer never uses to decide what to anonymise (it detects with CenterFace). A judged face counts
as left unchanged when fewer than 5 % of the pixels of its box's central half changed.

python research/coverage.py --data ../shared/data/lfw --images 2000 --method refacex
"""

import argparse
import random
import sys
import time
from pathlib import Path

import dlib
import numpy as np

from refacex_plugin.image_io import read_image
from refacex_plugin.writer import make_writer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--method", default="refacex")
    ap.add_argument("--min-score", type=float, default=0.5, help="the judge's confidence (dlib HOG score) for a face to count")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    files = sorted(args.data.glob("*/*.jpg"))
    files = random.Random(args.seed).sample(files, min(args.images, len(files)))
    judge = dlib.get_frontal_face_detector()
    writer = make_writer(args.method, donor_seed=args.seed)
    seen = left = fallback = faces = 0
    left_names = []
    t0 = time.time()
    for n, f in enumerate(files):
        rgb = read_image(f).rgb
        rects, scores, _ = judge.run(rgb, 1, args.min_score)
        res = writer.anonymise_image(rgb)
        faces += len(res.faces)
        fallback += sum(x.fallback is not None for x in res.faces)
        changed = np.any(res.image != rgb, axis=2)
        for r in rects:
            x0, y0, x1, y1 = max(r.left(), 0), max(r.top(), 0), min(r.right(), rgb.shape[1]), min(r.bottom(), rgb.shape[0])
            w, h = x1 - x0, y1 - y0
            if w <= 4 or h <= 4:
                continue
            seen += 1
            core = changed[y0 + h // 4 : y1 - h // 4, x0 + w // 4 : x1 - w // 4]
            if core.mean() < 0.05:
                left += 1
                left_names.append(f.name)
        if n % 200 == 0:
            print(f"{n}/{len(files)} images, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    print(
        f"method {args.method}: {len(files)} images; the judge (dlib HOG, score >= {args.min_score}) saw {seen} faces, "
        f"{left} left unchanged ({100 * left / max(seen, 1):.2f} %); the writer anonymised {faces} faces, {fallback} with the fallback mosaic"
    )
    if left_names:
        print("left unchanged in: " + ", ".join(left_names[:30]))


if __name__ == "__main__":
    main()
