"""A contact sheet for a person to judge: varied LFW faces (women, children, darker skin, glasses,
beards, turned heads, several faces) beside what each method makes of them, each tile labelled
with what the face's record says (fallback, sunglasses kept, eyewear replaced).

python research/contact_sheet.py --data ../shared/data/lfw --faces 48 --seed 3 -o docs/images/contact-sheet.jpg

Faces are drawn from people with two or more photos (never donors), stratified by the estimated
gender, age band and skin lightness of the face so thin groups are not drowned out; with a key
file or ``--seed`` the sheet is reproducible.
"""

import argparse
import random
from pathlib import Path

import cv2
import numpy as np

from refacex_plugin.attributes import AttributeEstimator
from refacex_plugin.composite.mesh import CropLandmarks
from refacex_plugin.detection import load_detector
from refacex_plugin.geometry import AlignConfig, alignment_matrices, extract_crops
from refacex_plugin.image_io import read_image
from refacex_plugin.writer import make_writer


def varied(data: Path, n: int, seed: int, scan: int = 1500) -> list[Path]:
    """``n`` photos spread over (gender, age band, lighter/darker skin, several faces)."""
    rng = random.Random(seed)
    multi = sorted(d for d in data.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= 2)
    files = [rng.choice(sorted(d.glob("*.jpg"))) for d in rng.sample(multi, min(scan, len(multi)))]
    det, marks, est, align = load_detector(), CropLandmarks(), AttributeEstimator(), AlignConfig()
    groups: dict[tuple, list[Path]] = {}
    for f in files:
        rgb = read_image(f).rgb
        d = det(rgb)
        if not len(d):
            continue
        crop = extract_crops(rgb, alignment_matrices(d.landmarks[:1], align), align)[0]
        crop = np.round(crop.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        a = est([(crop, marks(crop))])[0]
        key = (a.gender, min(a.age_band, 3) if a.age_band > 1 else 0, a.darker, len(d) > 1)
        groups.setdefault(key, []).append(f)
    out, keys = [], sorted(groups)
    while len(out) < n and any(groups.values()):
        for k in keys:
            if groups[k] and len(out) < n:
                out.append(groups[k].pop(0))
    return out


def label(tile: np.ndarray, text: str) -> np.ndarray:
    if text:
        cv2.rectangle(tile, (0, tile.shape[0] - 14), (tile.shape[1], tile.shape[0]), (0, 0, 0), -1)
        cv2.putText(tile, text[:30], (2, tile.shape[0] - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, help="identity folders; people with two or more photos are drawn")
    ap.add_argument("--images", nargs="*", type=Path, default=[])
    ap.add_argument("--faces", type=int, default=48)
    ap.add_argument("--methods", default="refacex")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--columns", type=int, default=4, help="original+result pairs per row")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    files = list(args.images) + (varied(args.data, args.faces - len(args.images), args.seed) if args.data else [])
    writers = [make_writer(m, donor_seed=args.seed) for m in args.methods.split(",")]
    tiles = []
    for f in files:
        rgb = read_image(f).rgb
        row = [label(cv2.resize(rgb, (args.size, args.size), interpolation=cv2.INTER_AREA), f.stem[:24])]
        for w in writers:
            res = w.anonymise_image(rgb)
            said = [x.fallback and "fallback" for x in res.faces] + [
                n.split(":")[0] for x in res.faces for n in x.notes if "fallback" not in n
            ]
            row.append(label(cv2.resize(res.image, (args.size, args.size), interpolation=cv2.INTER_AREA), ", ".join(s for s in said if s)))
        tiles.append(np.concatenate(row, 1))
    cols = args.columns
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.concatenate([np.concatenate(tiles[i : i + cols], 1) for i in range(0, len(tiles), cols)], 0)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), sheet[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"{len(files)} photos -> {args.output}")


if __name__ == "__main__":
    main()
