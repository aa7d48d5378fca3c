"""The donor-composite anonymiser: real donor pixels warped onto each face's dense geometry.

Per aligned crop: mesh the face (68 points + forehead) and estimate its apparent gender, age and
skin tone (:mod:`~refacex_plugin.attributes`); refuse what the bank cannot stand in for
(:mod:`.fallback`: a mosaic instead); choose donors of the face's kind near it in pose,
expression and skin tone (keyed: :class:`~refacex_plugin.composite.bank.DonorChooser`); move the
inner features (brows, eyes, nose, mouth) toward the donors' layout - each feature keeps its own
shape, so expression stays while the identity-bearing layout changes - warp the donors' textures
onto that mesh, give them the face's skin tone, lighting and grain (:mod:`.blend`) and blend them
in with a multi-band blend inside the face outline. Jaw line, forehead outline, hair, background
and sunglasses stay; a grayscale face stays grayscale.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import torch

from ..anonymised import Anonymised
from ..attributes import AttributeEstimator, Attributes, skin_mask
from ..face68 import BROWS, MOUTH
from .bank import DonorBank, DonorChooser, donor_features, is_grey
from .blend import match_colour, match_detail, multiband_blend
from .config import CompositeConfig
from .fallback import mosaic, refusal
from .mesh import FEATURE_GROUPS, CropLandmarks, hull_indices, piecewise_affine_maps, similarity_to
from .occluders import occlusion_notes, sunglasses


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


#: With several donors, the first gives the eyes and brows, the last the mouth and chin, and the
#: one in between (or the last) the rest: a face whose parts come from different people looks
#: like none of them as a whole, and each part keeps a real donor's detail (an average would not).
PART_POINTS = {"eyes": [*BROWS, *range(36, 48)], "mouth": [*range(5, 12), *MOUTH]}


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
        self.chooser = chooser or DonorChooser(bank, config=config)
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
        return CompositeAnonymiser(bank, config, DonorChooser(bank, policy, key, seed, config=config))

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

    def anonymise(self, crops: torch.Tensor, strength: float = 1.0, scores: torch.Tensor | None = None) -> Anonymised:
        """``crops (B, 3, S, S)`` in [0, 1] (``scores (B,)``: the detector's confidence) -> their
        :class:`~refacex_plugin.anonymised.Anonymised` (masks: where each composite differs from its
        crop; ``fallbacks``: why a face got a mosaic)."""
        arr = np.round(crops.detach().cpu().permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        if self._landmarks is None:
            self._landmarks, self._attributes = CropLandmarks(), AttributeEstimator()
        meshes = [self._landmarks(crop) for crop in arr]
        kinds = self._attributes(list(zip(arr, meshes)))
        people = self._people(crops) if self.chooser.policy == "consistent" else [None] * len(arr)
        outs, masks, donors, notes, fallbacks = [], [], [], [], []
        for i, (crop, mesh, kind, person) in enumerate(zip(arr, meshes, kinds, people)):
            score = None if scores is None else float(scores[i])
            reason, chosen = refusal(mesh, crop.shape[0], score, self.config), []
            if reason is None:
                chosen, reason = self.donors_for(crop, mesh, person, kind)
            if reason is not None:
                out = mosaic(crops[i : i + 1].detach().cpu().float(), strength, self.config.fallback_blocks)[0].permute(1, 2, 0).numpy()
                outs.append(np.round(out * 255).astype(np.uint8))
                masks.append(np.ones(crop.shape[:2], np.float32))  # the writer's whole face mask
                donors.append([])
                notes.append([f"fallback: {reason}"])
                fallbacks.append(reason)
                continue
            out, mask, face_notes = self.composite_one(crop, mesh, chosen, strength)
            outs.append(out)
            masks.append(mask)
            notes.append(face_notes)
            donors.append([int(i) for i in chosen])  # choice indices: >= len(bank) is mirrored
            fallbacks.append(None)
        new = torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2).to(crops) / 255.0
        return Anonymised(new, torch.from_numpy(np.stack(masks))[:, None].to(crops), donors, notes, fallbacks)

    def _people(self, crops: torch.Tensor) -> list[int]:
        from ..identity import IdentityModel

        if self._identity is None:
            self._identity = IdentityModel()
        with torch.inference_mode():
            desc = self._identity(crops.float().cpu()).numpy()
        return [self.chooser.person(d) for d in desc]

    def donors_for(
        self, crop: np.ndarray, mesh: np.ndarray, person: int | None = None, kind: Attributes | None = None
    ) -> tuple[np.ndarray, str | None]:
        """The donors for one face (of ``kind``'s gender, age and skin when given), or why none fits."""
        if kind is not None:
            reason = self.chooser.eligible(kind)[1]
            if reason is not None:
                return np.zeros(0, int), reason
        features = donor_features(crop, mesh)
        chosen = self.chooser.choose(features, self.config.donors, crop[::4, ::4].tobytes(), person, kind)
        if self.config.mix == "parts" and len(chosen) > 1:
            # the mouth is the part whose opening shows most (teeth, tongue): its donor is the chosen
            # one whose mouth is opened most like this face's
            gap = np.abs(self.bank.choice_features()[chosen, 3] - features[3])
            last = int(np.argmin(gap))
            chosen = np.r_[np.delete(chosen, last), chosen[last]]
        return chosen, None

    def composite_one(
        self, crop: np.ndarray, mesh: np.ndarray, chosen: np.ndarray, strength: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """One ``(S, S, 3) uint8`` crop meshed as ``mesh (78, 2)`` and its ``chosen`` donors -> the
        composite ``(S, S, 3) uint8``, the mask ``(S, S) float32`` outside which it equals the crop,
        and what covered the face (:func:`~.occluders.occlusion_notes`)."""
        s = crop.shape[0]
        bank = self.bank
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
        # tone from bare skin only: the donors' at their new places, the face's at its own
        donor_skin = (skin_mask((s, s), geometry) & inside)[box]
        face_skin = skin_mask((s, s), mesh)[box] & region
        warped = [match_colour(w[box], face, donor_skin, face_skin, region).astype(np.float32) for w in warped]
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
        rng = np.random.default_rng(int.from_bytes(self.chooser.grain_seed(crop[::4, ::4].tobytes()), "big"))
        warped = match_detail(warped, face, face_skin, rng, self.config.soften_sigmas)
        # feather inward only: the blend ends at the face outline, which stays the original's
        edge = max(3, s // 40)
        core = cv2.erode(region.astype(np.uint8), np.ones((edge, edge), np.uint8)).astype(np.float32)
        lenses = sunglasses(crop, mesh, self.config)
        if lenses is not None:  # dark lenses hide the eyes anyway: they and their frame stay
            core *= 1.0 - cv2.dilate(lenses[box].astype(np.uint8), np.ones((edge, edge), np.uint8))
        mask = cv2.GaussianBlur(core, (0, 0), edge / 2) * region
        front = np.where(region[..., None], warped, face.astype(np.float32))
        blended = multiband_blend(front, face.astype(np.float32), mask.astype(np.float32), self.config.blend_levels)
        if lenses is not None:  # the blend's coarse bands reach under the lenses: put them back exactly
            keep = np.maximum(lenses[box].astype(np.float32), cv2.GaussianBlur(lenses[box].astype(np.float32), (0, 0), edge / 2))
            blended = blended * (1 - keep[..., None]) + face.astype(np.float32) * keep[..., None]
        if is_grey(crop):
            blended = np.repeat(cv2.cvtColor(np.clip(blended, 0, 255).astype(np.float32), cv2.COLOR_RGB2GRAY)[..., None], 3, 2)
        out = crop.copy()
        out[box] = np.clip(np.round(blended), 0, 255)
        paste = np.zeros((s, s), np.float32)
        grown = cv2.dilate(region.astype(np.uint8), np.ones((edge * 3, edge * 3), np.uint8)).astype(np.float32)
        paste[box] = np.clip(cv2.GaussianBlur(grown, (0, 0), edge) * 1.5, 0, 1)
        return out, paste, occlusion_notes(crop, mesh, lenses is not None, self.config)
