"""The donor-composite anonymiser: real donor pixels warped onto each face's dense geometry.

Per aligned crop: mesh the face (68 points + forehead), choose donors near it in pose, expression
and skin tone (keyed: :class:`~refacex_plugin.composite.bank.DonorChooser`), move the inner
features (brows, eyes, nose, mouth) part of the way toward the donors' layout - each feature keeps
its own shape, so expression stays while the identity-bearing layout changes - warp the donors'
textures onto that mesh, match their colour to the face's lighting with a plane per Lab channel
(three numbers a channel: no low frequencies of the original are copied), and blend them in with
a multi-band blend inside the face outline. Jaw line, forehead outline, hair and background stay.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from .bank import DonorBank, DonorChooser, donor_features
from .mesh import FEATURE_GROUPS, CropLandmarks, hull_indices, piecewise_affine_maps, similarity_to


@dataclass(frozen=True)
class CompositeConfig:
    """``donors``: textures averaged per face. ``layout_push``: at strength 1, the fraction of the way
    each inner feature moves (and grows or shrinks) toward the donors' layout. ``pool``: donors
    near the face that the key chooses among. ``blend_levels``: multi-band blend pyramid depth."""

    donors: int = 1
    layout_push: float = 0.6
    pool: int = 12
    blend_levels: int = 4


def push_layout(target: np.ndarray, donor: np.ndarray, amount: float) -> np.ndarray:
    """Move ``target (78, 2)``'s feature groups ``amount`` of the way toward ``donor (78, 2)``'s layout.

    The donor mesh is first laid on the target by a similarity; each group then moves its centroid
    and scales its size toward the donor's, keeping the target's own shape of that feature (how
    open the mouth and eyes are, the smile). Jaw and forehead stay where they are.
    """
    if amount == 0:
        return target.copy()
    donor = similarity_to(donor, target)
    out = target.astype(np.float64).copy()
    for idx in FEATURE_GROUPS.values():
        idx = list(idx)
        ct, cd = target[idx].mean(0), donor[idx].mean(0)
        st = np.sqrt(((target[idx] - ct) ** 2).sum(1).mean())
        sd = np.sqrt(((donor[idx] - cd) ** 2).sum(1).mean())
        scale = (sd / max(st, 1e-6)) ** amount
        out[idx] = (target[idx] - ct) * scale + ct + amount * (cd - ct)
    return out.astype(np.float32)


def _plane_fit(values: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Least-squares ``c0 + c1 x + c2 y`` per channel of ``values (n, C)``: ``(3, C)``."""
    a = np.stack([np.ones_like(xs), xs, ys], 1)
    return np.linalg.lstsq(a, values, rcond=None)[0]


def match_colour(donor: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Give ``donor (S, S, 3) uint8`` the target's lighting: per Lab channel, swap the donor's
    best-fitting plane over ``region (S, S) bool`` for the target's and match the lightness spread."""
    ys, xs = np.nonzero(region)
    if len(xs) < 50:
        return donor
    s = float(region.shape[0])
    xn, yn = xs / s - 0.5, ys / s - 0.5
    lab_d = cv2.cvtColor(donor, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab_t = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    pd, pt = _plane_fit(lab_d[ys, xs], xn, yn), _plane_fit(lab_t[ys, xs], xn, yn)
    gy, gx = np.mgrid[0 : region.shape[0], 0 : region.shape[1]].astype(np.float32) / s - 0.5
    basis = np.stack([np.ones_like(gx), gx, gy], -1)
    residual = lab_d - basis @ pd
    std_d = residual[ys, xs, 0].std()
    std_t = (lab_t[ys, xs, 0] - np.stack([np.ones_like(xn), xn, yn], 1) @ pt[:, 0]).std()
    residual[..., 0] *= float(np.clip(std_t / max(std_d, 1e-6), 0.7, 1.4))
    out = residual + basis @ pt
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def multiband_blend(front: np.ndarray, back: np.ndarray, mask: np.ndarray, levels: int) -> np.ndarray:
    """Laplacian-pyramid blend (Burt & Adelson 1983): fine detail switches at the mask's edge,
    broad shading over a wider band. ``front, back (S, S, 3) float32``, ``mask (S, S)`` in [0, 1]."""
    gf, gb, gm = [front], [back], [mask]
    for _ in range(levels):
        gf.append(cv2.pyrDown(gf[-1]))
        gb.append(cv2.pyrDown(gb[-1]))
        gm.append(cv2.pyrDown(gm[-1]))
    out = gf[-1] * gm[-1][..., None] + gb[-1] * (1 - gm[-1][..., None])
    for i in range(levels - 1, -1, -1):
        size = gf[i].shape[1::-1]
        lf = gf[i] - cv2.pyrUp(gf[i + 1], dstsize=size)
        lb = gb[i] - cv2.pyrUp(gb[i + 1], dstsize=size)
        out = cv2.pyrUp(out, dstsize=size) + lf * gm[i][..., None] + lb * (1 - gm[i][..., None])
    return out


@dataclass
class Composites:
    """``crops (B, 3, S, S)``; ``masks (B, 1, S, S)``: outside them each composite equals its crop;
    ``donors``: per face, the bank indices of the donors used."""

    crops: torch.Tensor
    masks: torch.Tensor
    donors: list[list[int]]


class CompositeAnonymiser:
    """``(crops, donors, strength) -> crops`` over a :class:`DonorBank` (see the module docstring).

    ``strength`` scales how far the features move toward the donors' layout (0: the face's own
    geometry exactly, donor texture only).
    """

    name = "refacex"
    reversible = False

    def __init__(self, bank: DonorBank, config: CompositeConfig = CompositeConfig(), chooser: DonorChooser | None = None):
        self.bank = bank
        self.config = config
        self.chooser = chooser or DonorChooser(bank, pool=config.pool)
        self._landmarks = None  # loaded on first use (100 MB)
        self._identity = None

    def with_donors(self, bank: DonorBank | None = None, policy: str = "random", key: bytes | None = None,
                    seed: int | None = None, config: CompositeConfig | None = None) -> "CompositeAnonymiser":
        """A copy choosing from ``bank`` (default: this one's) under ``policy`` and ``key``."""
        bank = bank or self.bank
        config = config or self.config
        return CompositeAnonymiser(bank, config, DonorChooser(bank, policy, key, seed, pool=config.pool))

    def configured(self, **changes) -> "CompositeAnonymiser":
        """A copy with some :class:`CompositeConfig` fields changed (same chooser)."""
        return CompositeAnonymiser(self.bank, replace(self.config, **changes), self.chooser)

    def __call__(self, crops: torch.Tensor, donors: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
        return self.anonymise(crops, strength).crops

    def anonymise(self, crops: torch.Tensor, strength: float = 1.0) -> Composites:
        """``crops (B, 3, S, S)`` in [0, 1] -> their :class:`Composites`."""
        arr = np.round(crops.detach().cpu().permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        people = self._people(crops) if self.chooser.policy == "consistent" else [None] * len(arr)
        outs, masks, donors = [], [], []
        for crop, person in zip(arr, people):
            out, mask, chosen = self.composite_one(crop, strength, person)
            outs.append(out)
            masks.append(mask)
            donors.append([int(i) for i in chosen])  # choice indices: >= len(bank) is mirrored
        new = torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2).to(crops) / 255.0
        return Composites(new, torch.from_numpy(np.stack(masks))[:, None].to(crops), donors)

    def _people(self, crops: torch.Tensor) -> list[int]:
        from ..identity import IdentityModel

        if self._identity is None:
            self._identity = IdentityModel()
        with torch.inference_mode():
            desc = self._identity(crops.float().cpu()).numpy()
        return [self.chooser.person(d) for d in desc]

    def donors_for(self, crop: np.ndarray, mesh: np.ndarray, person: int | None = None) -> np.ndarray:
        return self.chooser.choose(donor_features(crop, mesh), self.config.donors, crop.tobytes(), person)

    def composite_one(self, crop: np.ndarray, strength: float = 1.0, person: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One ``(S, S, 3) uint8`` crop -> its composite ``(S, S, 3) uint8``, the mask ``(S, S) float32``
        outside which it equals the crop, and the donor indices used."""
        s = crop.shape[0]
        bank = self.bank
        if self._landmarks is None:
            self._landmarks = CropLandmarks()
        mesh = self._landmarks(crop)
        chosen = self.donors_for(crop, mesh, person)
        donors = [bank.choice(int(i)) for i in chosen]
        layout = np.mean([shape for _, _, shape in donors], 0) * (s / bank.crop_size)
        geometry = push_layout(mesh, layout, float(np.clip(self.config.layout_push * strength, 0.0, 1.0)))
        warped = []
        for texture, src, _ in donors:
            map_x, map_y, inside = piecewise_affine_maps(src, geometry, bank.triangles, s)
            warped.append(cv2.remap(np.ascontiguousarray(texture), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
        warped = np.mean(warped, 0).astype(np.uint8) if len(warped) > 1 else warped[0]
        outline = np.zeros((s, s), np.uint8)
        cv2.fillPoly(outline, [np.round(mesh[hull_indices()] * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        region = (outline > 0) & inside
        warped = match_colour(warped, crop, cv2.erode(region.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
        # feather inward only: the blend ends at the face outline, which stays the original's
        edge = max(3, s // 40)
        core = cv2.erode(region.astype(np.uint8), np.ones((edge, edge), np.uint8))
        mask = cv2.GaussianBlur(core.astype(np.float32), (0, 0), edge / 2) * region
        front = np.where(region[..., None], warped, crop).astype(np.float32)
        out = multiband_blend(front, crop.astype(np.float32), mask.astype(np.float32), self.config.blend_levels)
        paste = cv2.GaussianBlur(cv2.dilate(region.astype(np.uint8), np.ones((edge * 3, edge * 3), np.uint8)).astype(np.float32), (0, 0), edge)
        return np.clip(np.round(out), 0, 255).astype(np.uint8), np.clip(paste * 1.5, 0, 1).astype(np.float32), chosen
