"""How much of a face's identity a K-bit code can carry: the signs of its dlib descriptor in a fixed
basis (PCA of the training faces' descriptors, or a random rotation), decoded back to a descriptor.

A measurement for the recovery code's design (issue 5): if the decoded descriptor still lies within
the recogniser's match distance of the original's, the code is not what limits recovery - the
network that must draw a face with that identity is. Counts, on "val" people's faces:

* ``match``: decoded descriptor within dlib's FAR-0.1 % distance (0.544) of the face's own;
* ``rank1``: among every val face's original descriptor, the nearest to the decoded one is the
  face's own (so the code names one person, not "a face");
* ``other_match``: decoded descriptor within 0.544 of another face of the sample (all pairs; the
  sample may hold a person twice), beside ``other_match_originals``, the same count between the
  original descriptors: a code that named "a face" rather than a person would raise the first.

    python research/identity_code_capacity.py --data ../shared/data/lfw --bits 128 64 32
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from refacex_plugin.generator.networks import RES
from refacex_plugin.identity import IdentityModel
from refacex_plugin.training.anonymiser import MATCH_DISTANCE, identity_embeddings
from refacex_plugin.training.data import prepare_crops


def sign_code(e: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` descriptors -> ``(N, K)`` bits: signs of their centred projections on ``basis (D, K)``."""
    return ((e - mean) @ basis > 0).float()


def decode(bits: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` bits -> ``(N, D)`` descriptors: each sign times the mean magnitude of its projection."""
    return mean + ((bits * 2 - 1) * scale) @ basis.T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--bits", type=int, nargs="+", default=[128, 64, 32])
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--faces", type=int, default=500)
    args = ap.parse_args()
    idm = IdentityModel().eval()
    e_tr = identity_embeddings(idm, prepare_crops(args.data, "train", args.train, RES, 0))
    e_va = identity_embeddings(idm, prepare_crops(args.data, "val", args.faces, RES, 0))
    mean = e_tr.mean(0)
    pca = torch.linalg.svd(e_tr - mean, full_matrices=False)[2].T  # (D, D), columns by variance
    rot = torch.linalg.qr(torch.randn(e_tr.shape[1], e_tr.shape[1], generator=torch.Generator().manual_seed(0)))[0]
    other = ~torch.eye(len(e_va), dtype=torch.bool)
    base = float((torch.cdist(e_va, e_va)[other] < MATCH_DISTANCE).float().mean())
    for k in args.bits:
        for name, full in (("pca", pca), ("random_rotation", rot)):
            basis = full[:, :k]
            scale = ((e_tr - mean) @ basis).abs().mean(0)
            dec = decode(sign_code(e_va, mean, basis), mean, basis, scale)
            dist = torch.cdist(dec, e_va)
            own = dist.diagonal()
            print(
                json.dumps(
                    {
                        "bits": k,
                        "basis": name,
                        "faces": len(e_va),
                        "mean_distance": round(float(own.mean()), 4),
                        "match": round(float((own < MATCH_DISTANCE).float().mean()), 4),
                        "rank1": round(float((dist.argmin(1) == torch.arange(len(e_va))).float().mean()), 4),
                        "other_match": round(float((dist[other] < MATCH_DISTANCE).float().mean()), 5),
                        "other_match_originals": round(base, 5),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
