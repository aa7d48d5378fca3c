"""What the reader's fallbacks and options buy: faces whose search found no codeword are searched
again from a re-detection at other image scales (``rescaled``) and in an estimate of what
clipping took (``unclipped``) and deblurred (``deblurred``) - see :func:`refacex_plugin.channel.read_marks`; the search's last
stage also tries low-pass falloffs of the carriers' gains (``falloff``: :attr:`~refacex_plugin.channel.ReaderConfig.sync_falloffs`).

Embeds a 128-bit recovery code (payload version 2, BCH t = 10) with a fixed key in the central
face of ``--images`` LFW images (original, or anonymised by ``--host``), as
``FaceWriter.embed_codes`` does, applies each row (a distortion of the robustness suite, or ``xF``:
a resize by F, area when shrinking, cubic when enlarging) and counts the images whose payload
:func:`~refacex_plugin.channel.read_payloads` opens (as ``FaceReader.read_payloads`` reads a named
watermark) with the default :class:`~refacex_plugin.channel.ReaderConfig` and with the fallback off,
with the mean read time of each.

    python research/reader_fallbacks.py --fallback rescaled --images 40 --rows x0.67,x0.8,x1.25,x1.5,x2
    python research/reader_fallbacks.py --fallback unclipped --images 200 --seed 3 --rows brightness_+20,contrast_+20
    python research/reader_fallbacks.py --fallback falloff --host refacex --images 100 --rows jpeg_q50,webp_q80,resize_0.5,blur_1
    python research/reader_fallbacks.py --fallback deblurred --watermark dct-qim-low --images 60 --rows resize_0.5,blur_1
"""

from __future__ import annotations

import argparse
import glob
import random
import time
from dataclasses import replace

import numpy as np

from refacex_plugin import payload as P
from refacex_plugin.bench.originals import central_face
from refacex_plugin.channel import ReaderConfig, read_payloads
from refacex_plugin.distortions import DISTORTIONS, resize
from refacex_plugin.image_io import read_image
from refacex_plugin.reader import make_reader
from refacex_plugin.writer import make_writer


def _without(*names: str):
    """The reader with the fallbacks ``names`` (:attr:`~refacex_plugin.channel.ReaderConfig.fallbacks`) off."""
    return lambda reader: replace(reader, fallbacks=tuple(n for n in reader.fallbacks if n not in names))


#: Each fallback (or option) and the reader that goes without it.
FALLBACKS = {
    "rescaled": _without("rescaled"),
    "unclipped": _without("unclipped"),
    "deblurred": _without("deblurred", "deblurred_redetected"),
    "falloff": lambda reader: replace(reader, sync_falloffs=((1.0,), (0.0,))),
}


def _distortion(row: str):
    return (lambda x: resize(x, float(row[1:]))) if row.startswith("x") else DISTORTIONS[row]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fallback", choices=sorted(FALLBACKS), required=True)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--rows", default="x0.67,x0.8,x1.25,x1.5,x2")
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--watermark", default="dct-qim")
    ap.add_argument("--host", default="none", help="anonymise the faces with this method first (none: original faces)")
    args = ap.parse_args()
    key = bytes(range(32))
    pipe = make_writer("blur", key=key, watermark=args.watermark)
    face_reader = make_reader(key, watermark=args.watermark)
    host = None if args.host == "none" else make_writer(args.host)
    files = random.Random(args.seed).sample(sorted(glob.glob(f"{args.data}/*/*.jpg")), args.images)
    code = (np.arange(P.CODE_BITS) % 3 == 0).astype(np.uint8)
    marked = []
    for f in files:
        rgb = read_image(f).rgb
        rgb = host.anonymise_image(rgb).image if host is not None else rgb
        det = face_reader.detector(rgb)
        c = central_face(det, *rgb.shape[:2])
        if c is not None:
            marked.append(pipe.embed_codes(rgb, det.landmarks[c : c + 1], [code], P.KIND_RECOVERY_CODE).image)
    shipped = ReaderConfig()
    off = FALLBACKS[args.fallback](shipped)
    print(
        f"{len(marked)} LFW faces (seed {args.seed}, {'original' if host is None else args.host + '-anonymised'}), recovery codes, fixed key; "
        f"opened with / without the {args.fallback} fallback; mean read time"
    )
    for row in args.rows.split(","):
        distort, result = _distortion(row), []
        for reader in (shipped, off):
            t0 = time.perf_counter()
            opened = sum(
                any(
                    face.authenticated
                    for face in read_payloads(distort(m), [key], face_reader.watermark, face_reader.detector, pipe.align, config=reader)
                )
                for m in marked
            )
            result.append((opened, (time.perf_counter() - t0) / len(marked)))
        print(f"{row:16s} {result[0][0]:4d} / {result[1][0]:4d} opened   {result[0][1] * 1000:5.0f} / {result[1][1] * 1000:5.0f} ms")


if __name__ == "__main__":
    main()
