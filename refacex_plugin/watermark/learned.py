"""Learned watermark (encoder/decoder CNNs), trained with differentiable distortions and
alignment jitter so it reads payloads from re-detected, re-aligned, re-encoded faces.

Both networks work on the aligned crop pooled to ``RES = 128`` pixels; the encoder's residual is
normalised to a fixed RMS inside the face mask (the strength knob: RMS 0.01 is about 40 dB) and
upsampled back to the crop size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry import AlignConfig, face_mask, pool_to
from ..payload import CHANNEL_BITS

RES = 128


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


class WatermarkEncoder(nn.Module):
    """``(B, 3, RES, RES)`` crops in [0, 1] + ``(B, bits)`` 0/1 -> residual ``(B, 3, RES, RES)`` (unnormalised)."""

    def __init__(self, bits: int = CHANNEL_BITS, width: int = 32):
        super().__init__()
        self.msg = nn.Linear(bits, 16 * 16 * 16)
        self.inc = _block(3, width)
        self.down1 = _block(width, 2 * width, 2)  # 64
        self.down2 = _block(2 * width, 2 * width, 2)  # 32
        self.down3 = _block(2 * width + 16, 4 * width, 2)  # 16, message joins here
        self.up3 = _block(4 * width + 16, 2 * width)
        self.up2 = _block(4 * width, 2 * width)
        self.up1 = _block(4 * width, width)
        self.out = nn.Conv2d(2 * width, 3, 1)

    def forward(self, x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        m = self.msg(bits * 2 - 1).view(-1, 16, 16, 16)
        x0 = self.inc(x * 2 - 1)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x3 = self.down3(torch.cat([x2, F.interpolate(m, size=x2.shape[-2:], mode="nearest")], 1))
        y = self.up3(torch.cat([x3, m], 1))
        y = self.up2(torch.cat([F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False), x2], 1))
        y = self.up1(torch.cat([F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False), x1], 1))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return self.out(torch.cat([y, x0], 1))


class WatermarkDecoder(nn.Module):
    """``(B, 3, RES, RES)`` crops -> ``(B, bits)`` logits."""

    def __init__(self, bits: int = CHANNEL_BITS, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            _block(3, width),
            _block(width, 2 * width, 2),
            _block(2 * width, 2 * width, 2),
            _block(2 * width, 4 * width, 2),
            _block(4 * width, 4 * width, 2),
            _block(4 * width, 4 * width, 1),
        )
        self.head = nn.Linear(4 * width * 8 * 8, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x * 2 - 1).flatten(1))


def normalise_residual(r: torch.Tensor, mask: torch.Tensor, rms: float) -> torch.Tensor:
    """Scale each residual so its RMS over the mask is ``rms``; zero outside the mask.

    Args:
        r: ``(B, 3, H, W)``; mask: ``(B, 1, H, W)`` in [0, 1].
    """
    r = r * mask
    energy = (r**2).sum((1, 2, 3)) / (3 * mask.sum((1, 2, 3))).clamp_min(1.0)
    return r * (rms / energy.clamp_min(1e-12).sqrt()).view(-1, 1, 1, 1)


class LearnedWatermark(nn.Module):
    """The two-call API on aligned crops of any size ``S`` (pooled to ``RES`` internally)."""

    name = "learned"
    bits = CHANNEL_BITS
    variable_strength = True  # the residual's RMS scales; the decoder reads any strength
    embed_passes = 1  # no quantiser lattice for resampling to move the mark off: one pass
    carrier_window = None  # the residual spans the face mask, and the decoder reads the whole crop

    def __init__(self, width: int = 32, rms: float = 0.01, align: AlignConfig = AlignConfig()):
        super().__init__()
        self.encoder = WatermarkEncoder(self.bits, width)
        self.decoder = WatermarkDecoder(self.bits, width)
        self.rms = rms
        self.register_buffer("mask_res", face_mask(AlignConfig(size=RES, zoom=align.zoom, feather=align.feather)), persistent=False)

    @staticmethod
    def _to_res(crops: torch.Tensor) -> torch.Tensor:
        return pool_to(crops, RES)

    def residual(self, crops_res: torch.Tensor, bits: torch.Tensor, rms: float) -> torch.Tensor:
        mask = self.mask_res.to(crops_res).expand(crops_res.shape[0], -1, -1, -1)
        return normalise_residual(self.encoder(crops_res, bits), mask, rms)

    def embed(self, crops: torch.Tensor, bits: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        r = self.residual(self._to_res(crops), bits.to(crops), self.rms * strength)
        if crops.shape[-1] != RES:
            r = F.interpolate(r, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        return (crops + r).clamp(0.0, 1.0)

    def extract(self, crops: torch.Tensor) -> torch.Tensor:
        return self.decoder(self._to_res(crops))


def load_learned_watermark(name: str = "watermark-learned") -> LearnedWatermark:
    from ..zoo import manifest, weights_path

    path = weights_path(name)
    entry = manifest()[name]
    model = LearnedWatermark(width=entry.get("width", 32), rms=entry.get("rms", 0.01))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"] if "model" in state else state)
    # weights not (yet) marked as the shipped default: usable by name only (load_watermark)
    model.experimental = not entry.get("default", False)
    return model.eval()
