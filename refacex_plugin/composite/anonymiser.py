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

from ..anonymisers import Anonymised
from .bank import DonorBank, DonorChooser, donor_features
from .mesh import FEATURE_GROUPS, CropLandmarks, hull_indices, piecewise_affine_maps, similarity_to


@dataclass(frozen=True)
class CompositeConfig:
    """``donors``: donors per face (``mix`` says how they combine). ``layout_push``: at strength 1,
    how far the inner features' identity layout moves toward the donors' (1: all the way; beyond
    1 it overshoots, away from the original). ``pool``: donors near the face that the key chooses
    among. ``blend_levels``: multi-band blend pyramid depth.

    The defaults are the measured operating point (docs/decisions/0001-donor-composite.md)."""

    donors: int = 3
    layout_push: float = 1.5
    pool: int = 12
    blend_levels: int = 4
    layout_model: str = "identity"  # identity: the pose/expression-free residual (:mod:`.shape`); groups: :func:`push_layout`
    mix: str = "parts"  # several donors: parts (eyes and brows, mouth and chin, the rest each from one) or average


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
    """Give ``donor (H, W, 3) uint8`` the target's lighting: per Lab channel, swap the donor's
    best-fitting plane over ``region (H, W) bool`` for the target's and match the lightness spread."""
    ys, xs = np.nonzero(region)
    if len(xs) < 50:
        return donor
    step = max(1, len(xs) // 4000)  # a plane is fitted as well from a few thousand pixels
    ys, xs = ys[::step], xs[::step]
    s = float(max(region.shape))
    xn, yn = xs / s - 0.5, ys / s - 0.5
    lab_d = cv2.cvtColor(donor, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab_t = cv2.cvtColor(target, cv2.COLOR_RGB2LAB)[ys, xs].astype(np.float32)
    pd, pt = _plane_fit(lab_d[ys, xs], xn, yn), _plane_fit(lab_t, xn, yn)
    gy, gx = np.mgrid[0 : region.shape[0], 0 : region.shape[1]].astype(np.float32) / s - 0.5
    basis = np.stack([np.ones_like(gx), gx, gy], -1)
    residual = lab_d - basis @ pd.astype(np.float32)
    std_d = residual[ys, xs, 0].std()
    std_t = (lab_t[:, 0] - np.stack([np.ones_like(xn), xn, yn], 1) @ pt[:, 0]).std()
    residual[..., 0] *= float(np.clip(std_t / max(std_d, 1e-6), 0.7, 1.4))
    out = residual + basis @ pt.astype(np.float32)
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


#: With several donors, the first gives the eyes and brows, the last the mouth and chin, and the
#: one in between (or the last) the rest: a face whose parts come from different people looks
#: like none of them as a whole, and each part keeps a real donor's detail (an average would not).
PART_POINTS = {"eyes": [*range(17, 27), *range(36, 48)], "mouth": [*range(5, 12), *range(48, 68)]}


def part_donors(k: int) -> dict[str, int]:
    """Donor position (in the chosen list) for each part and for the rest (``"base"``)."""
    return {"eyes": 0, "base": min(1, k - 1), "mouth": k - 1}


def mixed_layout(shapes: list[np.ndarray], k_parts: dict[str, int]) -> np.ndarray:
    """The donors' layouts ``(78, 2)`` combined part by part (all are in the bank's mean frame)."""
    out = shapes[k_parts["base"]].copy()
    for part in ("eyes", "mouth"):
        out[PART_POINTS[part]] = shapes[k_parts[part]][PART_POINTS[part]]
    return out


def part_weights(geometry: np.ndarray, shape: tuple[int, int], feather: float) -> dict[str, np.ndarray]:
    """Soft masks ``shape float32`` of the eyes and mouth parts on a mesh, summing to at most 1."""
    out = {}
    for part, idx in PART_POINTS.items():
        m = np.zeros(shape, np.float32)
        cv2.fillConvexPoly(
            m, np.round(cv2.convexHull(geometry[idx].astype(np.float32)) * 16).astype(np.int32), 1.0, lineType=cv2.LINE_8, shift=4
        )
        out[part] = cv2.GaussianBlur(m, (0, 0), feather)
    total = np.maximum(out["eyes"] + out["mouth"], 1.0)
    return {part: w / total for part, w in out.items()}


def occlusion_notes(crop: np.ndarray, mesh: np.ndarray) -> list[str]:
    """What covers this face that the composite replaces with donor skin: the donor bank's own
    screening scores (:func:`~refacex_plugin.composite.bank.donor_quality`) on the face itself."""
    from .bank import MAX_FOREHEAD_SCORE, MAX_GLASSES_SCORE, _region_masks, donor_quality

    masks = _region_masks(mesh, crop.shape[0])
    if not all(m.any() for m in masks.values()):
        return []
    forehead, glasses = donor_quality(crop, masks)
    notes = []
    if glasses > MAX_GLASSES_SCORE * 1.15:
        notes.append("eyewear likely: replaced by donor eyes")
    if forehead > MAX_FOREHEAD_SCORE * 1.4:
        notes.append("forehead likely covered (hair or hat): replaced by donor skin")
    return notes


class CompositeAnonymiser:
    """``(crops, donors, strength) -> crops`` over a :class:`DonorBank` (see the module docstring).

    ``strength`` scales how far the features move toward the donors' layout (0: the face's own
    geometry exactly, donor texture only).
    """

    name = "refacex"
    reversible = False
    experimental = False

    def __init__(self, bank: DonorBank, config: CompositeConfig = CompositeConfig(), chooser: DonorChooser | None = None):
        self.bank = bank
        self.config = config
        self.chooser = chooser or DonorChooser(bank, pool=config.pool)
        self._landmarks = None  # loaded on first use (100 MB)
        self._shape_model = None
        self._identity = None

    def with_donors(
        self,
        bank: DonorBank | None = None,
        policy: str = "random",
        key: bytes | None = None,
        seed: int | None = None,
        config: CompositeConfig | None = None,
    ) -> CompositeAnonymiser:
        """A copy choosing from ``bank`` (default: this one's) under ``policy`` and ``key``."""
        bank = bank or self.bank
        config = config or self.config
        return CompositeAnonymiser(bank, config, DonorChooser(bank, policy, key, seed, pool=config.pool))

    def configured(self, **changes) -> CompositeAnonymiser:
        """A copy with some :class:`CompositeConfig` fields changed (same chooser)."""
        return CompositeAnonymiser(self.bank, replace(self.config, **changes), self.chooser)

    @property
    def shape_model(self):
        if self._shape_model is None:
            from .shape import ShapeModel

            shapes = np.stack([self.bank.choice(i)[2] for i in range(self.bank.choices)])
            self._shape_model = ShapeModel.fit(shapes, self.bank.mean_shape)
        return self._shape_model

    def __call__(self, crops: torch.Tensor, donors: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
        return self.anonymise(crops, strength).crops

    def anonymise(self, crops: torch.Tensor, strength: float = 1.0) -> Anonymised:
        """``crops (B, 3, S, S)`` in [0, 1] -> their :class:`~refacex_plugin.anonymisers.Anonymised` (masks: where each composite differs from its crop)."""
        arr = np.round(crops.detach().cpu().permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        people = self._people(crops) if self.chooser.policy == "consistent" else [None] * len(arr)
        outs, masks, donors, notes = [], [], [], []
        for crop, person in zip(arr, people):
            out, mask, chosen, face_notes = self.composite_one(crop, strength, person)
            outs.append(out)
            masks.append(mask)
            notes.append(face_notes)
            donors.append([int(i) for i in chosen])  # choice indices: >= len(bank) is mirrored
        new = torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2).to(crops) / 255.0
        return Anonymised(new, torch.from_numpy(np.stack(masks))[:, None].to(crops), donors, notes)

    def _people(self, crops: torch.Tensor) -> list[int]:
        from ..identity import IdentityModel

        if self._identity is None:
            self._identity = IdentityModel()
        with torch.inference_mode():
            desc = self._identity(crops.float().cpu()).numpy()
        return [self.chooser.person(d) for d in desc]

    def donors_for(self, crop: np.ndarray, mesh: np.ndarray, person: int | None = None) -> np.ndarray:
        features = donor_features(crop, mesh)
        chosen = self.chooser.choose(features, self.config.donors, crop[::4, ::4].tobytes(), person)
        if self.config.mix == "parts" and len(chosen) > 1:
            # the mouth is the part whose opening shows most (teeth, tongue): its donor is the chosen
            # one whose mouth is opened most like this face's
            gap = np.abs(self.bank.choice_features()[chosen, 3] - features[3])
            last = int(np.argmin(gap))
            chosen = np.r_[np.delete(chosen, last), chosen[last]]
        return chosen

    def composite_one(
        self, crop: np.ndarray, strength: float = 1.0, person: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """One ``(S, S, 3) uint8`` crop -> its composite ``(S, S, 3) uint8``, the mask ``(S, S) float32``
        outside which it equals the crop, the donor indices used and :func:`occlusion_notes`."""
        s = crop.shape[0]
        bank = self.bank
        if self._landmarks is None:
            self._landmarks = CropLandmarks()
        mesh = self._landmarks(crop)
        chosen = self.donors_for(crop, mesh, person)
        donors = [bank.choice(int(i)) for i in chosen]
        parts = part_donors(len(donors)) if self.config.mix == "parts" else None
        shapes = [shape for _, _, shape in donors]
        layout = (mixed_layout(shapes, parts) if parts else np.mean(shapes, 0)) * (s / bank.crop_size)
        amount = float(np.clip(self.config.layout_push * strength, 0.0, 1.5))
        if self.config.layout_model == "groups":
            geometry = push_layout(mesh, layout, min(amount, 1.0))
        else:
            geometry = self.shape_model.push(mesh, layout, amount)
        warped, maps = [], {}
        for index, (texture, src, _) in zip(chosen, donors):
            flipped = bool(index >= len(bank))  # donors share the mean mesh, mirrored ones its mirror image
            if flipped not in maps:
                maps[flipped] = piecewise_affine_maps(src, geometry, bank.triangles, s)
            map_x, map_y, inside = maps[flipped]
            warped.append(cv2.remap(np.ascontiguousarray(texture), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
        # everything below happens inside the outline's bounding box (plus the blend's reach)
        reach = 2 ** (self.config.blend_levels + 1)
        x0, y0 = (np.floor(geometry.min(0)).astype(int) - reach) // reach * reach
        x1, y1 = (np.ceil(geometry.max(0)).astype(int) + 2 * reach) // reach * reach
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, s), min(y1, s)
        box = (slice(y0, y1), slice(x0, x1))
        outline = np.zeros((s, s), np.uint8)
        cv2.fillPoly(outline, [np.round(mesh[hull_indices()] * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        region = ((outline > 0) & inside)[box]
        face = crop[box]
        skin = cv2.erode(region.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        warped = [match_colour(w[box], face, skin).astype(np.float32) for w in warped]  # each to the face's lighting
        if parts and len(warped) > 1:
            weights = part_weights(geometry - [x0, y0], (y1 - y0, x1 - x0), s / 64)
            rest = 1.0 - weights["eyes"] - weights["mouth"]
            warped = (
                warped[parts["eyes"]] * weights["eyes"][..., None]
                + warped[parts["mouth"]] * weights["mouth"][..., None]
                + warped[parts["base"]] * rest[..., None]
            )
        else:
            warped = np.mean(warped, 0)
        # feather inward only: the blend ends at the face outline, which stays the original's
        edge = max(3, s // 40)
        core = cv2.erode(region.astype(np.uint8), np.ones((edge, edge), np.uint8))
        mask = cv2.GaussianBlur(core.astype(np.float32), (0, 0), edge / 2) * region
        front = np.where(region[..., None], warped, face.astype(np.float32))
        out = crop.copy()
        out[box] = np.clip(
            np.round(multiband_blend(front, face.astype(np.float32), mask.astype(np.float32), self.config.blend_levels)), 0, 255
        )
        paste = np.zeros((s, s), np.float32)
        grown = cv2.dilate(region.astype(np.uint8), np.ones((edge * 3, edge * 3), np.uint8)).astype(np.float32)
        paste[box] = np.clip(cv2.GaussianBlur(grown, (0, 0), edge) * 1.5, 0, 1)
        return out, paste, chosen, occlusion_notes(crop, mesh)
