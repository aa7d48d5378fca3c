"""How far re-detection misplaces a face's crop, and what the reader's search recovers (dct-qim).

``--misplacement``: for LFW faces anonymised by ``--host``, the similarity between the crop
aligned on the detection in the clean image and on the re-detection after each geometric or
noisy distortion (mapped back through the known geometry): zoom, turn and centre shift; and the
same between the two images' settled landmarks (:mod:`refacex_plugin.registration`).

``--decode``: faces embedded as ``FaceWriter.embed_codes`` does (bound payloads) with dct-qim at
``--step`` in ``--passes`` passes; per distortion, the median wrong channel bits read at the
re-detected frame (plain), in the exact frame the mark was embedded in (for distortions that keep
the geometry: what a perfect search would read) and by the reader's search, the share of reads
within 21 wrong bits (BCH t of a vault reference) in that frame and by the search, and the
share whose payload opens exactly; plus the face-region PSNR of the mark.

    python research/watermark_sync.py --misplacement --host refacex --faces 30
    python research/watermark_sync.py --misplacement --host blur --faces 40 --seed 3
    python research/watermark_sync.py --decode --host none --faces 40 --step 32 --passes 2
    python research/watermark_sync.py --decode --host none --faces 25 --rows none,jpeg_q75,jpeg_q50,webp_q80,blur_1,noise_0.02
    python research/watermark_sync.py --decode --host blur --faces 30 --block 16 --coeffs 01,10,11,02,20,12,21,03,30,22 --step 48
"""

from __future__ import annotations

import argparse
import glob
import random

import numpy as np

from refacex_plugin import payload as P
from refacex_plugin.bench.metrics import psnr
from refacex_plugin.bench.originals import central_face
from refacex_plugin.binding import candidate_hashes, face_signatures
from refacex_plugin.channel import embed_codes, face_logits, read_marks
from refacex_plugin.detection import load_detector
from refacex_plugin.distortions import DISTORTIONS
from refacex_plugin.geometry import AlignConfig, alignment_matrices, warp_mask_to_image
from refacex_plugin.image_io import read_image
from refacex_plugin.keys import generate_key
from refacex_plugin.watermark.classical import DctQimWatermark

DECODE_ROWS = ["none", "jpeg_q90", "jpeg_q75", "resize_1.5", "crop_10pct", "brightness_-20", "contrast_+20", "saturation_+30", "noise_0.02"]
GEOMETRY = {"resize_0.5": (0.5, 0.0), "resize_1.5": (1.5, 0.0), "crop_10pct": (1.0, 0.05)}


def _hosts(args):
    from refacex_plugin.writer import make_writer

    files = random.Random(args.seed).sample(sorted(glob.glob(f"{args.data}/*/*.jpg")), args.faces)
    pipe = make_writer(args.host) if args.host != "none" else None
    for f in files:
        rgb = read_image(f).rgb
        yield pipe.anonymise_image(rgb).image if pipe else rgb


MISPLACEMENT_ROWS = ["jpeg_q50", "webp_q80", "resize_0.5", "resize_1.5", "crop_10pct", "blur_1", "brightness_+20", "noise_0.02"]


def misplacement(args) -> None:
    from refacex_plugin.detection import reader_config
    from refacex_plugin.geometry import frame_offset
    from refacex_plugin.registration import settled_landmarks

    det, align = load_detector(cfg=reader_config()), AlignConfig()
    rows = {k: {"re-detected": [], "settled": []} for k in (args.rows.split(",") if args.rows else MISPLACEMENT_ROWS)}
    offset = lambda a, b: frame_offset(alignment_matrices(a, align), alignment_matrices(b, align), align.size / 2)[0]  # noqa: E731
    for host in _hosts(args):
        d = det(host)
        c = central_face(d, *host.shape[:2])
        if c is None:
            continue
        before = d.landmarks[c : c + 1]
        settled = settled_landmarks(host, before, det)
        for k in rows:
            x = DISTORTIONS[k](host)
            found = det(x)
            j = central_face(found, *x.shape[:2]) if len(found) else None
            if j is None:
                continue
            scale, crop = GEOMETRY.get(k, (1.0, 0.0))
            back = lambda lm, scale=scale, crop=crop, host=host: (
                (lm + 0.5) / scale - 0.5 + np.array([round(host.shape[1] * crop), round(host.shape[0] * crop)])
            ).astype(np.float32)  # noqa: E731
            rows[k]["re-detected"].append(offset(before, back(found.landmarks[j : j + 1])))
            rows[k]["settled"].append(offset(settled, back(settled_landmarks(x, found.landmarks[j : j + 1], det))))
    print(f"host {args.host}, {args.faces} LFW faces (seed {args.seed}); offset from the clean image's landmarks: median / 90th percentile")
    print(f"{'distortion':15s} {'landmarks':12s} {'faces':>5s} {'zoom':>15s} {'turn (deg)':>15s} {'shift (crop px)':>16s}")
    for k, kinds in rows.items():
        for kind, v in kinds.items():
            a = np.array(v).reshape(-1, 3)
            if len(a):
                print(
                    f"{k:15s} {kind:12s} {len(a):5d} "
                    + " ".join(f"{np.median(a[:, i]):6.3f} / {np.percentile(a[:, i], 90):6.3f}" for i in range(3))
                )


def decode(args) -> None:
    import refacex_plugin.watermark as W

    coeffs = tuple((int(c[0]), int(c[1])) for c in args.coeffs.split(","))
    wm = DctQimWatermark(step=args.step, block=args.block, coeffs=coeffs)
    wm.embed_passes = args.passes
    if args.gains_first:
        wm.gains_first = True
    W.WATERMARKS.register("dct-qim", lambda: wm)
    det, align = load_detector(), AlignConfig()
    rng = np.random.default_rng(args.seed)
    rows = args.rows.split(",") if args.rows else DECODE_ROWS
    res = {k: {"plain": [], "frame": [], "search": [], "open": []} for k in rows}
    face_psnr = []
    for host in _hosts(args):
        d = det(host)
        c = central_face(d, *host.shape[:2])
        if c is None:
            continue
        key, code = generate_key(), rng.integers(0, 2, P.CODE_BITS).astype(np.uint8)

        emb = embed_codes(host, d.landmarks[c : c + 1], [code], key, P.KIND_RECOVERY_CODE, wm, det, align)
        bits = emb.bits[0]
        mask = warp_mask_to_image(alignment_matrices(d.landmarks[c : c + 1], align), align, *host.shape[:2])
        face_psnr.append(psnr(emb.image, host, (mask > 0.5).astype(np.uint8)))
        for k in rows:
            x = DISTORTIONS[k](emb.image)
            found, logits, frames = read_marks(x, wm, det, align)
            j = central_face(found, *x.shape[:2]) if len(found) else None
            if j is None:
                for v in res[k].values():
                    v.append(None)
                continue
            plain, _ = face_logits(x, alignment_matrices(found.landmarks[j : j + 1], align), wm, align, sync=False)
            res[k]["plain"].append(int(((plain[0] > 0) != bits).sum()))
            if k not in GEOMETRY:
                own, _ = face_logits(x, alignment_matrices(emb.frames, align), wm, align, sync=False)
                res[k]["frame"].append(int(((own[0] > 0) != bits).sum()))
            res[k]["search"].append(int(((logits[j] > 0) != bits).sum()))
            opened = P.open_payload(logits[j], key, bindings=candidate_hashes(face_signatures(x, frames[j : j + 1], align)[0]))
            res[k]["open"].append(opened is not None and bool(np.array_equal(opened.code, code)))
    print(
        f"host {args.host}, {len(face_psnr)} LFW faces, block {args.block}, coefficients {args.coeffs}, step {args.step}, "
        f"{args.passes} pass(es): face PSNR {np.mean(face_psnr):.1f} dB"
    )
    print(
        f"{'distortion':16s} {'plain median errors':>20s} {'own-frame median':>17s} {'search median':>14s} "
        f"{'own frame <= 21':>16s} {'search <= 21':>13s} {'opens exactly':>14s}"
    )
    for k, v in res.items():
        med = {
            m: np.median([e for e in v[m] if e is not None]) if any(e is not None for e in v[m]) else float("nan")
            for m in ("plain", "frame", "search")
        }
        within = {
            m: np.mean([e is not None and e <= 21 for e in v[m]]) if v[m] and not (m == "frame" and k in GEOMETRY) else float("nan")
            for m in ("frame", "search")
        }
        print(
            f"{k:16s} {med['plain']:20.0f} {med['frame']:17.0f} {med['search']:14.0f} {within['frame']:15.0%} "
            f"{within['search']:12.0%} {np.mean([bool(o) for o in v['open']]):13.0%}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--misplacement", action="store_true")
    ap.add_argument("--decode", action="store_true")
    ap.add_argument("--host", default="refacex", help="anonymisation method of the host faces, or 'none' (originals)")
    ap.add_argument("--faces", type=int, default=30)
    ap.add_argument("--step", type=float, default=32.0)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--block", type=int, default=8, help="DCT block side in crop pixels")
    ap.add_argument("--coeffs", default="01,10,11,02,20", help="carrier coefficients (u, v) of each block")
    ap.add_argument(
        "--gains-first",
        action="store_true",
        help="have the search try gains from its first stage (automatic when every carrier has u + v <= 1)",
    )
    ap.add_argument("--rows", default="", help="comma-separated distortions [default: a representative nine]")
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.misplacement:
        misplacement(args)
    if args.decode:
        decode(args)


if __name__ == "__main__":
    main()
