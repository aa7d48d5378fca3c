"""Quick check of a watermark through the real channel on a few LFW faces: embed in the decoder's
frame, distort with real encoders, re-detect, read, open the payload. Prints the face-region PSNR
and, per distortion, the mean bit accuracy and the exact-decode rate.

    python research/watermark_check.py --weights runs/wm_cpu/checkpoint.pt --rms 0.03 --faces 10
    python research/watermark_check.py --watermark dct-qim --faces 10
    python research/watermark_check.py --weights runs/s13/wm_ft/watermark-learned.pt --faces 20 --payload vault-ref
"""

from __future__ import annotations

import argparse
import glob
import random

import numpy as np
import torch

from refacex_plugin import payload as P
from refacex_plugin.bench.metrics import psnr
from refacex_plugin.bench.originals import central_face
from refacex_plugin.channel import embed_in_image, read_from_image
from refacex_plugin.detection import load_detector
from refacex_plugin.distortions import DISTORTIONS
from refacex_plugin.geometry import AlignConfig, alignment_matrices, warp_mask_to_image
from refacex_plugin.image_io import read_image
from refacex_plugin.keys import generate_key

ROWS = ["none", "jpeg_q90", "jpeg_q75", "jpeg_q50", "resize_0.5", "blur_1", "brightness_+20", "noise_0.02"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", help="learned watermark weights or training checkpoint")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--rms", type=float, default=0.01)
    ap.add_argument("--watermark", default="learned", help="'learned' (with --weights) or a registered name")
    ap.add_argument("--faces", type=int, default=10)
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument(
        "--payload",
        choices=list(P.KIND_NAMES.values()),
        default="recovery-code",
        help="a 128-bit recovery code (BCH t = 10) or a 64-bit vault reference (t = 21)",
    )
    args = ap.parse_args()
    if args.weights:
        from refacex_plugin.watermark.learned import LearnedWatermark

        wm = LearnedWatermark(width=args.width, rms=args.rms)
        state = torch.load(args.weights, map_location="cpu", weights_only=False)
        wm.load_state_dict({k: v.float() for k, v in state["model"].items()})
        wm.eval()
    else:
        from refacex_plugin.watermark import load_watermark

        wm = load_watermark(args.watermark)
    det, align = load_detector(), AlignConfig()
    files = random.Random(args.seed).sample(sorted(glob.glob(f"{args.data}/*/*.jpg")), args.faces)
    rng = np.random.default_rng(args.seed)
    ps, acc, ok, errs = [], {r: [] for r in ROWS}, {r: [] for r in ROWS}, {r: [] for r in ROWS}
    for f in files:
        rgb = read_image(f).rgb
        d = det(rgb)
        c = central_face(d, *rgb.shape[:2])
        if c is None:
            continue
        key = generate_key()
        kind = next(k for k, n in P.KIND_NAMES.items() if n == args.payload)
        channel = P.seal(rng.integers(0, 2, P.code_bits(kind)).astype(np.uint8), key, kind)
        marked = embed_in_image(rgb, d.landmarks[c : c + 1], [channel], wm, det, align).image
        mask = warp_mask_to_image(alignment_matrices(d.landmarks[c : c + 1], align), align, *rgb.shape[:2]) > 0.5
        ps.append(psnr(marked, rgb, mask.astype(np.uint8)))
        for r in ROWS:
            x = DISTORTIONS[r](marked)
            found, logits = read_from_image(x, wm, det, align)
            j = central_face(found, *x.shape[:2]) if len(found) else None
            acc[r].append(float(((logits[j] > 0) == channel).mean()) if j is not None else 0.5)
            ok[r].append(j is not None and P.open_payload(logits[j], key) is not None)
            errs[r].append(int(((logits[j] > 0) != channel).sum()) if j is not None else len(channel))
    print(f"faces {len(ps)}, face-region PSNR {np.mean(ps):.1f} dB")
    for r in ROWS:
        print(
            f"{r:16s} bit accuracy {np.mean(acc[r]):.3f}  exact decode {np.mean(ok[r]):.1%}  "
            f"bit errors: median {np.median(errs[r]):.0f}, within BCH's t = {P.ECC.t} / {P.REF_ECC.t} in "
            f"{np.mean(np.array(errs[r]) <= P.ECC.t):.1%} / {np.mean(np.array(errs[r]) <= P.REF_ECC.t):.1%} of faces"
        )


if __name__ == "__main__":
    with torch.no_grad():
        main()
