"""How much identity a learned inverter gets back from a candidate *view* of the face - the bound
on any anonymiser whose generator sees only that view (``generator.networks.limited_view``).

Proxy of ``refacex bench attacks``'s inversion row, on aligned crops only (no detection): the same
inverter (``bench.identity_attacks.train_inverter``) trained on "train" identities, match rate of its output
against the original on "val" identities at dlib distance 0.544 and, when the MobileFaceNet judge
sits in ../shared/models, at its cosine 0.3326 (both FAR 0.1 %, the full attack run's calibration),
read from the crop's ArcFace frame. ``--id-weight 0`` trains the inverter on pixels alone (no
identity loss through the dlib port): what is left of its dlib matches is not dlib's own blind spots.
``--id-loss judge`` takes the identity loss through the judge instead (``bench.onnx_torch``).

    python research/view_inversion.py --data ../shared/data/lfw --view blur:1 --view blur:2
    python research/view_inversion.py --data ../shared/data/lfw --view mask:1 --view blur:3 --steps 1500 --faces 300
    python research/view_inversion.py --data ../shared/data/lfw --view mask:1 --steps 1500 --faces 300 --mask-axes 54 66
    python research/view_inversion.py --data ../shared/data/lfw --view mask:1 --steps 1500 --faces 300 --id-weight 0
    python research/view_inversion.py --data ../shared/data/lfw --view mask:1 --steps 1500 --faces 300 --id-loss judge
    python research/view_inversion.py --data ../shared/data/lfw --view refacex:1 --steps 1500 --faces 300 --id-loss judge
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from refacex_plugin import geometry
from refacex_plugin.baselines import blur_faces, mask_faces, pixelate_faces
from refacex_plugin.bench.attack_config import AttackConfig
from refacex_plugin.bench.identity_attacks import _frozen_identity_model, train_inverter
from refacex_plugin.bench.onnx_torch import ArcFaceCropEmbedder
from refacex_plugin.generator.networks import RES, blend
from refacex_plugin.geometry import AlignConfig, face_mask, pool_to
from refacex_plugin.training.anonymiser import MATCH_DISTANCE
from refacex_plugin.training.data import prepare_crops


def refacex_faces(x: torch.Tensor, strength: float) -> torch.Tensor:
    """The shipped refacex anonymiser's output (random donors, seeded; strength ignored): not a
    view for G but the whole method, so the proxy can also attack what the pipeline publishes."""
    global _DONORS
    from refacex_plugin.anonymisers import get_anonymiser
    from refacex_plugin.generator.donors import DonorAssigner
    from refacex_plugin.operators import anonymise

    if _DONORS is None:
        _DONORS = DonorAssigner(get_anonymiser("refacex").bank, "random", None, seed=0)
    with torch.inference_mode():
        return anonymise(x, _DONORS.vectors(np.zeros((len(x), 128), np.float32)), "refacex")


_DONORS = None
VIEWS = {
    "blur": blur_faces,
    "pixelate": pixelate_faces,
    "refacex": refacex_faces,
    # the context alone: the face under the mask one flat colour (strength ignored) - the bound
    # no view for G can go under, since the pipeline keeps what lies outside the mask
    "mask": lambda x, strength: mask_faces(x, strength, face_mask(AlignConfig(size=x.shape[-1])).to(x)),
}


def view_of(name: str, strength: float, crops: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 256, 256)`` float crops -> the view at ``RES``: the method under the face mask."""
    mask = face_mask(AlignConfig())
    out = []
    for i in range(0, len(crops), 64):
        x = crops[i : i + 64].float() / 255
        out.append(pool_to(blend(x, VIEWS[name](x, strength), mask), RES))
    return torch.cat(out)


#: The judge's cosine threshold at FAR 0.1 % (docs/benchmarks/attacks-refacex-full.md's calibration).
MFN_MATCH = 0.3326
MFN_PATH = Path(__file__).resolve().parents[2] / "shared/models/mobilefacenet_ms1m.onnx"


def mfn_embeddings(judge, crops: torch.Tensor) -> torch.Tensor:
    """``(N, 3, RES, RES)`` canonical crops -> the judge's ``(N, 128)`` unit embeddings of their ArcFace frame."""
    with torch.no_grad():
        return torch.cat([judge(crops[i : i + 64].clamp(0, 1)) for i in range(0, len(crops), 64)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--view", action="append", required=True, help="METHOD:STRENGTH, e.g. blur:2")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--faces", type=int, default=150)
    ap.add_argument("--id-loss", choices=("dlib", "judge"), default="dlib", help="the recogniser the inverter's identity loss goes through")
    ap.add_argument(
        "--id-weight", type=float, default=AttackConfig.id_weight, help="the inverter's dlib identity loss weight (0: pixels alone)"
    )
    ap.add_argument(
        "--mask-axes",
        type=float,
        nargs=2,
        metavar=("AX", "AY"),
        help="the face ellipse's semi-axes in ArcFace-112 units (a candidate mask; default: geometry's)",
    )
    args = ap.parse_args()
    if args.mask_axes:  # before any mask is built: every face_mask() of this run uses the candidate
        geometry._FACE_AXES_112 = tuple(args.mask_axes)
    print("mask axes", geometry._FACE_AXES_112, flush=True)
    train = prepare_crops(args.data, "train", args.train, 256, 0)
    val = prepare_crops(args.data, "val", args.faces, 256, 1)
    idm = _frozen_identity_model()
    mask = face_mask(AlignConfig(size=RES))
    orig_train = pool_to(train.float() / 255, RES)
    orig_val = pool_to(val.float() / 255, RES)
    with torch.no_grad():
        e_val = idm(orig_val)
    judge = ArcFaceCropEmbedder(MFN_PATH).eval().requires_grad_(False) if MFN_PATH.is_file() else None
    m_val = mfn_embeddings(judge, orig_val) if judge is not None else None
    if args.id_loss == "judge" and judge is None:
        raise SystemExit(f"--id-loss judge needs the judge at {MFN_PATH}")
    loss_model = judge if args.id_loss == "judge" else None  # None: train_inverter's default, the dlib port
    cfg = AttackConfig(steps=args.steps, id_weight=args.id_weight)
    for spec in args.view:
        name, strength = spec.split(":")
        anon_train, anon_val = view_of(name, float(strength), train), view_of(name, float(strength), val)
        net, info = train_inverter(anon_train, orig_train, 16, cfg, progress=False, idm=loss_model)
        with torch.no_grad():
            m = mask.expand(len(anon_val), -1, -1, -1)
            rec = net(anon_val, torch.zeros(len(anon_val), net.unet.cond[0].in_features), m)
            d_view = (idm(anon_val) - e_val).norm(dim=1)
            d_rec = (idm(rec) - e_val).norm(dim=1)
        result = {
            "view_match": float((d_view < MATCH_DISTANCE).float().mean()),
            "inverted_match": float((d_rec < MATCH_DISTANCE).float().mean()),
            "faces": len(val),
            "steps": args.steps,
            "id_weight": args.id_weight,
            "id_loss": args.id_loss,
            "train_s": info["train_s"],
        }
        if m_val is not None:
            for what, x in (("view", anon_val), ("inverted", rec)):
                result[f"{what}_match_mfn"] = float(((mfn_embeddings(judge, x) * m_val).sum(1) >= MFN_MATCH).float().mean())
        print(spec, json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
