"""False detections of a watermark over many unmarked LFW images, with a running count.

The same measurement as ``refacex bench robustness``'s false-detection count
(:func:`refacex_plugin.bench.robustness.unmarked_readings`: every face a reader finds is read with
the full reader, fallbacks included, as the holder of a fresh random key reads it - every reading
of the search tried with the key - and opened against its recomputed bindings), but it prints the cumulative count every ``--every`` images, so a run cut short still
reports how many faces it covered.

    OMP_NUM_THREADS=1 python research/false_detections.py --watermark dct-qim-low --images 7800 > runs/fd.log

``--skip`` continues a count (or splits it between processes) over the same seeded order of images.
"""

from __future__ import annotations

import argparse
import glob
import random
import time

from refacex_plugin.bench.robustness import unmarked_readings
from refacex_plugin.watermark import load_watermark


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--watermark", default="dct-qim-low")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--skip", type=int, default=0, help="start this far into the seed's order (runs that continue or share a count)")
    args = ap.parse_args()
    # random.sample draws this population by its pool method, whose first k draws do not depend on
    # how many follow: --skip S --images N covers draws S .. S + N - 1 of --seed's one order.
    files = random.Random(args.seed).sample(sorted(glob.glob(f"{args.data}/*/*.jpg")), args.skip + args.images)[args.skip :]
    faces = authenticated = 0
    t0 = time.time()
    for i, (n, opened) in enumerate(unmarked_readings(load_watermark(args.watermark), files), 1):
        faces, authenticated = faces + n, authenticated + opened
        if i % args.every == 0 or i == len(files):
            print(f"images {i} faces {faces} authenticated {authenticated} elapsed_s {time.time() - t0:.0f}", flush=True)


if __name__ == "__main__":
    main()
