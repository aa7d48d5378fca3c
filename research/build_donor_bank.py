"""Build the shipped donor bank from LFW people who have a single photo.

Those people are never probes in `refacex bench` (it probes people with two or more photos), so
no benchmarked face can receive its own donor. Each shipped donor blends two such people of one
apparent gender and age band; the coverage per group is printed (and by `refacex donors info`).

    python research/build_donor_bank.py --data ../shared/data/lfw --blend 2 -o models/refacex-donor-bank.npz
"""

import argparse
import random
import sys
import time
from pathlib import Path

from refacex_plugin.composite.bank import build_bank, collect_faces


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--people", type=int, default=0, help="0: all of them")
    ap.add_argument("--blend", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    singles = sorted(d for d in args.data.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) == 1)
    chosen = random.Random(args.seed).sample(singles, args.people) if 0 < args.people < len(singles) else singles
    paths = [next(d.glob("*.jpg")) for d in sorted(chosen)]
    t0 = time.time()
    faces = collect_faces(
        paths, progress=lambda n: n % 200 == 0 and print(f"{n}/{len(paths)} images, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    )
    bank = build_bank(
        faces,
        blend=args.blend,
        seed=args.seed,
        origin=f"LFW (deep-funneled) people with one photo; {args.blend} people of one apparent gender and age band averaged per donor",
    )
    bank.save(args.output)
    from refacex_plugin.composite.coverage import coverage_table

    print(coverage_table(bank))
    print(
        f"{len(paths)} images, {len(faces)} faces -> {len(bank)} donors, {args.output.stat().st_size / 1e6:.1f} MB, {time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
