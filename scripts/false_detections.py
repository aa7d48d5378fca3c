"""False detections of a watermark over many unmarked LFW images, with a running count.

The same measurement as ``refacex bench robustness``'s false-detection count
(:func:`refacex_plugin.bench.robustness.false_detections`: every face a reader finds is read with
the full reader, fallbacks included, and opened with a fresh random key against its recomputed
bindings), but it prints the cumulative count every ``--every`` images, so a run cut short still
reports how many faces it covered.

    OMP_NUM_THREADS=1 python scripts/false_detections.py --watermark dct-qim-low --images 7800 > runs/fd.log
"""

from __future__ import annotations

import argparse
import glob
import random
import time

from refacex_plugin import payload as P
from refacex_plugin.binding import candidate_hashes, face_signatures
from refacex_plugin.channel import read_marks
from refacex_plugin.detection import DEFAULT_DETECTOR, load_detector, reader_config
from refacex_plugin.geometry import AlignConfig
from refacex_plugin.image_io import read_image
from refacex_plugin.keys import generate_key
from refacex_plugin.watermark import load_watermark


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--watermark", default="dct-qim-low")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--every", type=int, default=100)
    args = ap.parse_args()
    files = random.Random(args.seed).sample(sorted(glob.glob(f"{args.data}/*/*.jpg")), args.images)
    wm = load_watermark(args.watermark)
    det = load_detector(DEFAULT_DETECTOR, reader_config())
    align = AlignConfig()
    faces = authenticated = 0
    t0 = time.time()
    for i, f in enumerate(files, 1):
        rgb = read_image(f).rgb
        _, logits, frames = read_marks(rgb, wm, det, align)
        for row, sig in zip(logits, face_signatures(rgb, frames, align)):
            faces += 1
            opened = P.open_payload(row, generate_key(), bindings=candidate_hashes(sig))
            authenticated += opened is not None
        if i % args.every == 0 or i == len(files):
            print(f"images {i} faces {faces} authenticated {authenticated} elapsed_s {time.time() - t0:.0f}", flush=True)


if __name__ == "__main__":
    main()
