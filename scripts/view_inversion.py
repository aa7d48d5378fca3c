"""How much identity a learned inverter gets back from a candidate *view* of the face - the bound
on any anonymiser whose generator sees only that view (``anonymiser.networks.limited_view``).

Proxy of ``refacex bench attacks``'s inversion row, on aligned crops only (no detection, dlib port
only): the same inverter (``bench.attacks.train_inverter``) trained on "train" identities, match
rate of its output against the original at dlib distance 0.544 (FAR 0.1 %) on "val" identities.

    python scripts/view_inversion.py --data ../shared/data/lfw --view blur:1 --view blur:2
    python scripts/view_inversion.py --data ../shared/data/lfw --view mask:1 --view blur:3 --steps 1500 --faces 300
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from refacex_plugin.anonymisers import blur_faces, mask_faces, pixelate_faces
from refacex_plugin.bench.attacks import AttackConfig, _frozen_identity_model, train_inverter
from refacex_plugin.geometry import AlignConfig, face_mask, pool_to
from refacex_plugin.anonymiser.networks import RES, blend
from refacex_plugin.training.anonymiser import MATCH_DISTANCE
from refacex_plugin.training.data import prepare_crops

VIEWS = {"blur": blur_faces, "pixelate": pixelate_faces,
         # the context alone: the face under the mask one flat colour (strength ignored) - the bound
         # no view for G can go under, since the pipeline keeps what lies outside the mask
         "mask": lambda x, strength: mask_faces(x, strength, face_mask(AlignConfig(size=x.shape[-1])).to(x))}


def view_of(name: str, strength: float, crops: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 256, 256)`` float crops -> the view at ``RES``: the method under the face mask."""
    mask = face_mask(AlignConfig())
    out = []
    for i in range(0, len(crops), 64):
        x = crops[i : i + 64].float() / 255
        out.append(pool_to(blend(x, VIEWS[name](x, strength), mask), RES))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--view", action="append", required=True, help="METHOD:STRENGTH, e.g. blur:2")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--faces", type=int, default=150)
    args = ap.parse_args()
    train = prepare_crops(args.data, "train", args.train, 256, 0)
    val = prepare_crops(args.data, "val", args.faces, 256, 1)
    idm = _frozen_identity_model()
    mask = face_mask(AlignConfig(size=RES))
    orig_train = pool_to(train.float() / 255, RES)
    orig_val = pool_to(val.float() / 255, RES)
    with torch.no_grad():
        e_val = idm(orig_val)
    cfg = AttackConfig(steps=args.steps)
    for spec in args.view:
        name, strength = spec.split(":")
        anon_train, anon_val = view_of(name, float(strength), train), view_of(name, float(strength), val)
        net, info = train_inverter(anon_train, orig_train, 16, cfg, progress=False)
        with torch.no_grad():
            m = mask.expand(len(anon_val), -1, -1, -1)
            rec = net(anon_val, torch.zeros(len(anon_val), net.unet.cond[0].in_features), m)
            d_view = (idm(anon_val) - e_val).norm(dim=1)
            d_rec = (idm(rec) - e_val).norm(dim=1)
        result = {"view_match": float((d_view < MATCH_DISTANCE).float().mean()), "inverted_match": float((d_rec < MATCH_DISTANCE).float().mean()),
                  "faces": len(val), "steps": args.steps, "train_s": info["train_s"]}
        print(spec, json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
