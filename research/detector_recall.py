"""Recall and speed of every registered detector on an identity-labelled folder (LFW layout).

A hit is a detection whose box covers the image centre (LFW centres the labelled face).

    python research/detector_recall.py ../shared/data/lfw --sample 1000 --seed 0
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from refacex_plugin.detection import DetectorConfig, detector_names, load_detector
from refacex_plugin.image_io import read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--sample", type=int, default=1000, help="0 = every image")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=DetectorConfig.threshold)
    args = ap.parse_args()
    files = sorted(args.data.glob("*/*.jpg"))
    if args.sample:
        files = random.Random(args.seed).sample(files, min(args.sample, len(files)))
    images = [read_image(f).rgb for f in files]
    print(f"{len(images)} images from {args.data} (seed {args.seed}), threshold {args.threshold}")
    print(f"{'detector':<12}{'recall':>9}{'ms/img':>9}{'faces/img':>11}")
    for name in detector_names():
        det = load_detector(name, DetectorConfig(threshold=args.threshold))
        det(images[0])
        hits = faces = 0
        t0 = time.perf_counter()
        for rgb in images:
            d = det(rgb)
            h, w = rgb.shape[:2]
            faces += len(d)
            hits += any(b[0] < w / 2 < b[2] and b[1] < h / 2 < b[3] for b in d.boxes)
        ms = (time.perf_counter() - t0) / len(images) * 1000
        print(f"{name:<12}{hits / len(images):>9.4f}{ms:>9.1f}{faces / len(images):>11.2f}")


if __name__ == "__main__":
    main()
