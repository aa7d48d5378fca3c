"""Classical baseline: dither-modulation QIM on low-frequency block-DCT coefficients of luminance.

Works on the aligned crop: 8x8 blocks that lie wholly inside the face mask's flat top carry the
channel bits, each bit repeated over several (block, coefficient) slots spread by a fixed public
permutation; soft decoding sums each slot's signed distance to the two quantiser lattices.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import AlignConfig, face_mask
from ..payload import CHANNEL_BITS

_LUMA = torch.tensor([0.299, 0.587, 0.114])


def dct_matrix(n: int = 8, dtype=torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``(n, n)``: ``coeffs = D @ block @ D.T``."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    x = torch.arange(n, dtype=torch.float64)[None]
    d = torch.cos(math.pi * (2 * x + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype)


class DctQimWatermark:
    name = "dct-qim"
    bits = CHANNEL_BITS
    # The reader quantises with the step at strength 1: another strength moves the lattice, and
    # half the bits (e.g. every 1 at strength 2) would read wrong.
    variable_strength = False

    def __init__(self, align: AlignConfig = AlignConfig(), step: float = 30.0, seed: int = 20261128, block: int = 8,
                 coeffs: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0))):
        """``step``: QIM step in grey levels (on the 0-255 scale) at strength 1; ``block``: DCT
        block size in crop pixels; ``coeffs``: the (u, v) coefficients of each block that carry bits.

        Step 30 puts the face-region PSNR at ~42.8 dB (the invisibility bar is 40 dB). Measured on
        24 LFW faces (exact decode, no distortion / JPEG Q90 / Q75 / saturation +30 %): step 14
        (49.1 dB) 62 / 4 / 0 / 33 %; step 30 71 / 33 / 17 / 58 %; step 38 (40.7 dB) 54 / 42 / 17 /
        50 %. Blocks of 16 px leave too few slots (215 with 5 coefficients); 3 coefficients per
        8-px block (624 slots) decode less (42 / 33 / 0 / 38 % at step 38)."""
        self.align = align
        self.step = step
        self.block = block
        self.coeffs = tuple(coeffs)
        s, b = align.size, self.block
        m = face_mask(align)[0, 0]
        inner = F.avg_pool2d((m >= 0.999).float()[None, None], b)[0, 0] == 1.0  # blocks wholly inside
        self.block_idx = torch.nonzero(inner.flatten()).flatten()  # (nblocks,)
        n_slots = len(self.block_idx) * len(self.coeffs)
        if n_slots < self.bits:
            raise ValueError(f"only {n_slots} slots for {self.bits} bits; use a larger crop")
        rng = np.random.default_rng(seed)
        self.slot_bit = torch.as_tensor(rng.permutation(np.arange(n_slots) % self.bits))  # (nslots,)
        self.dct = dct_matrix(b)
        self.grid = s // b

    def _blocks(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, S, S)`` -> DCT coefficients of the carrier blocks ``(B, nblocks, 8, 8)``."""
        b = self.block
        blocks = y.unfold(1, b, b).unfold(2, b, b).reshape(y.shape[0], -1, b, b)[:, self.block_idx]
        d = self.dct.to(y)
        return d @ blocks @ d.T

    def _slots(self, coeffs: torch.Tensor) -> torch.Tensor:
        return torch.stack([coeffs[:, :, u, v] for u, v in self.coeffs], dim=-1).reshape(coeffs.shape[0], -1)

    def embed(self, crops: torch.Tensor, bits: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """``crops (B, 3, S, S)`` in [0, 1], ``bits (B, CHANNEL_BITS)`` 0/1 -> watermarked crops.
        ``strength`` must be 1 (see ``variable_strength``)."""
        if strength != 1.0:
            raise ValueError("dct-qim has a fixed strength (its reader quantises with the shipped step)")
        step = self.step
        y = (crops * _LUMA.to(crops).view(1, 3, 1, 1)).sum(1) * 255.0
        c = self._blocks(y)
        slots = self._slots(c)
        want = bits.to(crops)[:, self.slot_bit.to(crops.device)]  # (B, nslots)
        dither = want * step / 2
        q = torch.round((slots - dither) / step) * step + dither
        delta_slots = (q - slots).reshape(c.shape[0], c.shape[1], len(self.coeffs))
        delta = torch.zeros_like(c)
        for k, (u, v) in enumerate(self.coeffs):
            delta[:, :, u, v] = delta_slots[:, :, k]
        d = self.dct.to(crops)
        delta_px = d.T @ delta @ d  # (B, nblocks, 8, 8)
        full = torch.zeros(crops.shape[0], self.grid * self.grid, self.block, self.block, dtype=crops.dtype, device=crops.device)
        full[:, self.block_idx] = delta_px
        full = full.reshape(crops.shape[0], self.grid, self.grid, self.block, self.block).permute(0, 1, 3, 2, 4)
        full = full.reshape(crops.shape[0], 1, self.grid * self.block, self.grid * self.block) / 255.0
        return (crops + full).clamp(0.0, 1.0)

    def extract(self, crops: torch.Tensor) -> torch.Tensor:
        """Soft bit logits ``(B, CHANNEL_BITS)``: mean over each bit's slots of the QIM decision margin."""
        step = self.step
        y = (crops * _LUMA.to(crops).view(1, 3, 1, 1)).sum(1) * 255.0
        slots = self._slots(self._blocks(y))
        d0 = torch.abs(slots - torch.round(slots / step) * step)
        d1 = torch.abs(slots - (torch.round((slots - step / 2) / step) * step + step / 2))
        margin = (d0 - d1) / (step / 2)  # +1: surely 1, -1: surely 0
        idx = self.slot_bit.to(crops.device).expand_as(margin)
        out = torch.zeros(crops.shape[0], self.bits, dtype=crops.dtype, device=crops.device)
        out.scatter_add_(1, idx, margin)
        counts = torch.bincount(self.slot_bit, minlength=self.bits).to(out)
        return out / counts
