"""Recovery with the key, through the real channel: anonymise with a key (the face's recovery code
sealed and watermarked into it), optionally re-encode, re-detect, read and open the payload,
reconstruct with the recovery network, and compare with the original.

Also two controls on the same anonymised faces: ``code_direct``, the recovery network given each
face's true code without the watermark channel (the networks' quality on their own), and
``random_code``, the network with *random* codes (what anyone holding our public weights but not
the key gets).
"""

from __future__ import annotations

import numpy as np
import torch

from .. import operators, payload
from ..distortions import DISTORTIONS
from ..geometry import alignment_matrices, extract_crops, paste_crops, warp_mask_to_image
from ..image_io import read_image
from ..keys import generate_key
from . import metrics
from .progress import progress as _progress

ROWS = ("none", "jpeg_q75")


def evaluate_recovery(method: str, probes: list[int], orig, recognizers, calib, device="cpu", progress=True, seed=0) -> dict:
    from ..reader import make_reader
    from ..writer import make_writer

    key = generate_key()
    pipe = make_writer(method, key=key, device=device, donor_seed=seed)
    reader = make_reader(key, device=device)
    g = np.random.default_rng(seed)
    emb = {row: {r.name: [] for r in recognizers} for row in (*ROWS, "code_direct", "random_code")}
    direct_psnr = []
    restored = {row: [] for row in ROWS}
    face_psnr = {row: [] for row in ROWS}
    image_ssim = {row: [] for row in ROWS}
    used = []
    for i in _progress(probes, f"recovery {method}", progress):
        rgb = read_image(orig.paths[i]).rgb
        dets = orig.detections(i)
        res = pipe.anonymise_image(rgb, dets)
        if not res.faces or res.codes is None:
            continue
        lm = np.asarray([f.landmarks for f in res.faces], np.float32)
        marked = pipe.embed_codes(res.image, lm, res.codes, payload.KIND_RECOVERY_CODE).image
        mask = (warp_mask_to_image(alignment_matrices(dets.landmarks, pipe.align), pipe.align, *rgb.shape[:2]) > 0.5).astype(np.uint8)
        used.append(i)
        for row in ROWS:
            x = DISTORTIONS[row](marked)
            rec = reader.recover_image(x)
            ok = bool(rec.restored)
            out = rec.image if ok else x
            restored[row].append(ok)
            face_psnr[row].append(metrics.psnr(out, rgb, mask))
            image_ssim[row].append(metrics.ssim(out, rgb))
            for r in recognizers:
                emb[row][r.name].append(r.embed(out, [orig.geometry[r.name][i]])[0])
        # Controls in the anonymisation frames: the true codes without the channel, and random codes.
        m = alignment_matrices(lm, pipe.align)
        crops = extract_crops(marked, m, pipe.align, pipe.device)
        for row, codes in (("code_direct", np.stack(res.codes)), ("random_code", g.integers(0, 2, (len(crops), payload.CODE_BITS)))):
            with torch.inference_mode():
                guess = operators.recover(crops, codes)
            out = paste_crops(marked, guess, m, pipe.align)
            if row == "code_direct":
                direct_psnr.append(metrics.psnr(out, rgb, mask))
            for r in recognizers:
                emb[row][r.name].append(r.embed(out, [orig.geometry[r.name][i]])[0])
    result: dict = {"available": True, "faces": len(used), "channel": reader.watermark.name}
    for row in (*ROWS, "code_direct", "random_code"):
        ident = {}
        for r in recognizers:
            a = np.asarray(emb[row][r.name], np.float32)
            o = orig.embedding[r.name][used]
            sim = metrics.paired_similarity(a, o, r.metric)
            ident[r.name] = {"match_rate": float((sim >= calib[r.name]["threshold"]).mean()), "mean_similarity": float(sim.mean())}
        entry = {"identity": ident}
        if row in ROWS:
            entry.update(
                {
                    "payload_restored_rate": float(np.mean(restored[row])),
                    "face_psnr_db": float(np.mean(face_psnr[row])),
                    "image_ssim": float(np.mean(image_ssim[row])),
                }
            )
        result[row] = entry
    result["code_direct"]["face_psnr_db"] = float(np.mean(direct_psnr)) if direct_psnr else None
    return result
