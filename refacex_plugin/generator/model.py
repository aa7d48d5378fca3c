"""The trained refacex anonymiser as one object: ``anonymise``, ``codes`` and ``recover`` on aligned
crops of any size. The networks run at ``RES`` px; inside the face mask their output, upsampled,
*replaces* the crop (adding an upsampled edit instead would carry the original's detail above
``RES`` px into the anonymised face), and outside it the crop keeps its own pixels.

Weights come from the zoo entry ``refacex-anonymiser`` (G, E, R) and ``refacex-donors`` (the
synthetic donor bank); see ``models/manifest.json``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from ..anonymised import Anonymised
from ..errors import ModelNotAvailableError
from ..geometry import AlignConfig, face_mask, pool_to
from .donors import DonorAssigner, DonorBank
from .networks import RES, VIEW_BLUR, CodeEncoder, Generator, RecoveryNet

WEIGHTS = "refacex-anonymiser"
DONORS = "refacex-donors"


def _to_res(crops: torch.Tensor) -> torch.Tensor:
    return pool_to(crops, RES)


def _paste(crops: torch.Tensor, small_out: torch.Tensor, mask_small: torch.Tensor) -> torch.Tensor:
    """``crops (B, 3, S, S)`` with ``small_out (B, 3, RES, RES)`` put in under the face mask
    (``mask_small (1, 1, RES, RES)``, resized with it)."""
    if crops.shape[-1] != RES:
        small_out = F.interpolate(small_out, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        mask_small = F.interpolate(mask_small, size=crops.shape[-2:], mode="bilinear", align_corners=False)
    return (crops + mask_small * (small_out - crops)).clamp(0, 1)


class GeneratorModel(torch.nn.Module):
    """G, E and R with the donor bank. ``policy``: ``random`` or ``consistent`` (keyed by ``key``)."""

    name = "generator"
    reversible = True
    #: the pipeline can move the drawn face's features onto the original's 68 landmarks
    #: (``make_writer(keep_landmarks=True)``, landmarks.py)
    warp_to_landmarks = True
    #: Usable by name only (see :mod:`~refacex_plugin.registry`); the loader reads it from the manifest.
    experimental = False

    def __init__(
        self,
        width: int = 32,
        code_bits: int = 128,
        bank: DonorBank | None = None,
        align: AlignConfig = AlignConfig(),
        view_blur: float = VIEW_BLUR,
    ):
        super().__init__()
        self.G = Generator(width, view_blur)
        self.E = CodeEncoder(code_bits, width)
        self.R = RecoveryNet(code_bits, width)
        self.bank = bank
        self.register_buffer("mask", face_mask(AlignConfig(size=RES, zoom=align.zoom, feather=align.feather)), persistent=False)
        self.assigner: DonorAssigner | None = None
        self._identity = None

    def set_policy(self, policy: str = "random", key: bytes | None = None, seed: int | None = None) -> None:
        if self.bank is None:
            raise ModelNotAvailableError("no donor bank loaded")
        self.assigner = DonorAssigner(self.bank, policy, key, seed=seed)

    def with_donors(
        self, bank: DonorBank | None = None, policy: str = "random", key: bytes | None = None, seed: int | None = None
    ) -> GeneratorModel:
        """A view sharing this model's networks that draws donors from ``bank`` under ``policy``."""
        view = copy.copy(self)  # shares the networks (``_modules``), not the donor draw
        view.assigner = DonorAssigner(bank if bank is not None else self.bank, policy, key, seed=seed)
        return view

    def anonymise(self, crops: torch.Tensor, strength: float = 1.0, scores: torch.Tensor | None = None) -> Anonymised:
        return Anonymised(self(crops, None, strength))

    def identities(self, crops: torch.Tensor) -> np.ndarray:
        """``(B, 128)`` identity embeddings of original crops (what the ``consistent`` policy keys on)."""
        return self._identities(_to_res(crops))

    def _identities(self, small: torch.Tensor) -> np.ndarray:
        from ..identity import IdentityModel

        if self._identity is None:
            self._identity = IdentityModel().to(small.device)
        with torch.no_grad():
            return self._identity(small).cpu().numpy()

    def donors_for(self, crops_small: torch.Tensor) -> torch.Tensor:
        if self.assigner is None:
            self.set_policy("random")
        ids = self._identities(crops_small) if self.assigner.policy == "consistent" else np.zeros((len(crops_small), 128), np.float32)
        return self.assigner.vectors(ids).to(crops_small)

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor, donors: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
        """Anonymise ``(B, 3, S, S)`` crops; ``donors (B, 128)`` or None for the policy's choice."""
        small = _to_res(crops)
        donors = self.donors_for(small) if donors is None else donors.to(small)
        face = self.G(small, donors, self.mask.to(small).expand(len(small), -1, -1, -1))
        if crops.shape[-1] != RES:
            face = F.interpolate(face, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        # Like the blur baseline, the whole crop is replaced and the pipeline's paste keeps the part
        # under the face mask; ``strength`` < 1 blends back some of the original face.
        return (crops + min(max(strength, 0.0), 1.0) * (face - crops)).clamp(0, 1)

    @torch.no_grad()
    def codes(self, crops: torch.Tensor) -> np.ndarray:
        """``(B, 3, S, S)`` original crops -> ``(B, code_bits)`` uint8 recovery codes."""
        return (self.E(_to_res(crops)) > 0).to(torch.uint8).cpu().numpy()

    @torch.no_grad()
    def recover(self, crops: torch.Tensor, codes) -> torch.Tensor:
        """``(B, 3, S, S)`` anonymised crops + ``(B, code_bits)`` codes -> reconstructed originals."""
        small = _to_res(crops)
        bits = torch.as_tensor(np.asarray(codes), dtype=small.dtype, device=small.device)
        out = self.R(small, bits, self.mask.to(small).expand(len(small), -1, -1, -1))
        return _paste(crops, out, self.mask.to(small))


def load_generator() -> GeneratorModel:
    """The shipped model; ``experimental`` unless the manifest makes it the default method."""
    from ..zoo import manifest, weights_path

    path = weights_path(WEIGHTS)
    entry = manifest()[WEIGHTS]
    bank = DonorBank.load(weights_path(DONORS))
    if "view_blur" not in entry:  # the blur its G was trained to see is part of the weights' contract
        raise ModelNotAvailableError(
            f"manifest entry {WEIGHTS} lacks view_blur (the blur strength its generator was trained on); "
            "re-register it with `refacex models add ... --set view_blur=VALUE`"
        )
    model = GeneratorModel(entry.get("width", 32), entry.get("code_bits", 128), bank, view_blur=float(entry["view_blur"]))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"] if "model" in state else state, strict=True)
    model.experimental = not entry.get("default", False)
    return model.eval()
