"""Which detection score threshold a payload reader should take candidates down to.

For LFW images anonymised by each ``--host`` and marked as ``FaceWriter.embed_codes`` does (a vault
reference in every face), the share of the faces CenterFace finds in the marked image at each
threshold (matched to the faces that were anonymised), and the candidates it finds that match
none (each costs the reader one search).

    python research/reader_threshold.py --images 150
"""

from __future__ import annotations

import argparse
import glob
import random

import numpy as np

from refacex_plugin import payload as P
from refacex_plugin.channel import match_faces
from refacex_plugin.detection import DetectorConfig, load_detector
from refacex_plugin.image_io import read_image
from refacex_plugin.keys import generate_key
from refacex_plugin.writer import make_writer

THRESHOLDS = (0.5, 0.35, 0.2, 0.1, 0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", action="append", help="anonymisation method(s) [default: pixelate, blur, refacex]")
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    files = random.Random(args.seed).sample(sorted(glob.glob(f"{args.data}/*/*.jpg")), args.images)
    detectors = {t: load_detector(cfg=DetectorConfig(threshold=t)) for t in THRESHOLDS}
    for host in args.host or ["pixelate", "blur", "refacex"]:
        pipe = make_writer(host, key=generate_key())
        faces, found, other = 0, dict.fromkeys(THRESHOLDS, 0), dict.fromkeys(THRESHOLDS, 0)
        for f in files:
            res = pipe.anonymise_image(read_image(f).rgb)
            if not res.faces:
                continue
            lm = np.asarray([x.landmarks for x in res.faces], np.float32)
            marked = pipe.embed_codes(res.image, lm, [np.zeros(P.code_bits(P.KIND_VAULT_REF), np.uint8)] * len(lm), P.KIND_VAULT_REF).image
            faces += len(lm)
            for t, det in detectors.items():
                d = det(marked)
                hits = sum(j is not None for j in match_faces(lm, d))
                found[t] += hits
                other[t] += len(d) - hits
        print(
            f"{host}: {faces} faces; found at " + ", ".join(f"{t}: {100 * found[t] / faces:.1f} % (+{other[t]} other)" for t in THRESHOLDS),
            flush=True,
        )


if __name__ == "__main__":
    main()
