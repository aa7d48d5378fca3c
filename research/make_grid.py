"""The README's pictures: originals beside their anonymised versions, whole images through the pipeline.

python research/make_grid.py --data ../shared/data/lfw -o docs/images/refacex-grid.png
python research/make_grid.py --images examples/Serena_Williams_0001.jpg --methods refacex,pixelate,blur,mask -o docs/images/first-example.png
"""

import argparse
import random
from pathlib import Path

import cv2
import numpy as np

from refacex_plugin.image_io import read_image
from refacex_plugin.writer import make_writer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, help="identity folders; people with two or more photos (never donors) are drawn")
    ap.add_argument("--images", nargs="*", type=Path, default=[])
    ap.add_argument("--people", type=int, default=8)
    ap.add_argument("--methods", default="refacex")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    files = list(args.images)
    if args.data:
        multi = sorted(d for d in args.data.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= 2)
        files += [sorted(d.glob("*.jpg"))[0] for d in random.Random(args.seed).sample(multi, args.people)]
    pipes = [make_writer(m, donor_seed=args.seed) for m in args.methods.split(",")]
    tiles = []
    for f in files:
        rgb = read_image(f).rgb
        row = [rgb] + [p.anonymise_image(rgb).image for p in pipes]
        tiles.append(np.concatenate([cv2.resize(t, (args.size, args.size), interpolation=cv2.INTER_AREA) for t in row], 1))
    per_row = 2 if len(pipes) == 1 and len(tiles) > 3 else 1
    rows = [np.concatenate(tiles[i : i + per_row], 1) for i in range(0, len(tiles) - len(tiles) % per_row, per_row)]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), np.concatenate(rows, 0)[:, :, ::-1])
    print(f"wrote {args.output} ({len(files)} images, methods {args.methods})")


if __name__ == "__main__":
    main()
