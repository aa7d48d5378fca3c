"""How many payloads a reader opens, by the embedder's round settings (searchable watermarks).

For LFW images anonymised by ``--host`` (every detected face, small background faces included),
each setting of :attr:`~refacex_plugin.channel.EmbedConfig.search_start` and
:attr:`~refacex_plugin.channel.EmbedConfig.max_rounds` embeds a vault reference in every face as
``FaceWriter.embed_codes`` does (:func:`~refacex_plugin.channel.embed_codes`) and counts the faces
``FaceReader.read_payloads`` then opens, unchanged and after JPEG Q75, with the embedding time,
and how many faces the embedder called ``embedded`` that a reader of the unchanged image did not
open (the status's own error).

    python research/embed_rounds.py --host pixelate --images 100
"""

from __future__ import annotations

import argparse
import glob
import random
import time

import numpy as np

from refacex_plugin import payload as P
from refacex_plugin.channel import EmbedConfig, embed_codes
from refacex_plugin.distortions import DISTORTIONS
from refacex_plugin.geometry import alignment_matrices, frame_offset
from refacex_plugin.image_io import read_image
from refacex_plugin.keys import generate_key
from refacex_plugin.reader import make_reader
from refacex_plugin.writer import make_writer

SETTINGS = [((0.04, 2.0, 4.0), 3), ((0.04, 2.0, 4.0), 2), ((0.06, 3.0, 6.0), 3), ((0.06, 3.0, 6.0), 2), (None, 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="pixelate")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    files = random.Random(args.seed).sample(sorted(glob.glob(f"{args.data}/*/*.jpg")), args.images)
    key = generate_key()
    pipe = make_writer(args.host, key=key)
    face_reader = make_reader(key)
    hosts = []
    for f in files:
        res = pipe.anonymise_image(read_image(f).rgb)
        if res.faces:
            hosts.append((res.image, np.asarray([x.landmarks for x in res.faces], np.float32)))
    print(
        f"host {args.host}, {len(hosts)} images, {sum(len(lm) for _, lm in hosts)} faces; reader threshold {face_reader.detector.cfg.threshold}"
    )
    for start, rounds in SETTINGS:
        config = EmbedConfig(search_start=start or (np.inf, np.inf, np.inf), max_rounds=rounds)
        faces, opened, took, called, wrong = 0, {"none": 0, "jpeg_q75": 0}, 0.0, 0, 0
        for image, lm in hosts:
            t = time.perf_counter()
            codes = [np.zeros(P.code_bits(P.KIND_VAULT_REF), np.uint8)] * len(lm)
            emb = embed_codes(
                image, lm, codes, key, P.KIND_VAULT_REF, face_reader.watermark, face_reader.detector, pipe.align, config=config
            )
            took += time.perf_counter() - t
            faces += len(lm)
            for row in opened:
                read = [x for x in face_reader.read_payloads(DISTORTIONS[row](emb.image)) if x.authenticated]
                opened[row] += len(read)
                if row == "none":
                    at = alignment_matrices(emb.frames, pipe.align)
                    for i, status in enumerate(emb.status):
                        if status == "embedded":
                            called += 1
                            wrong += not any(
                                frame_offset(at[i : i + 1], alignment_matrices(x.frame[None], pipe.align), pipe.align.size / 2)[0, 2] < 2
                                for x in read
                            )
        label = "one round" if start is None else f"start {start}, {rounds} rounds"
        print(
            f"{label:32s} embed {1000 * took / len(hosts):4.0f} ms/img  "
            + "  ".join(f"{k} {100 * v / faces:5.1f} %" for k, v in opened.items())
            + f"  called embedded {called}, of which not opened {wrong}",
            flush=True,
        )


if __name__ == "__main__":
    main()
