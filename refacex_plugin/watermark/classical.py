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

from ..geometry import LUMA, AlignConfig, face_mask
from ..payload import CHANNEL_BITS

_LUMA = torch.tensor(LUMA)


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
    #: Embedding passes into the image (:func:`refacex_plugin.channel.embed_in_image`): two put
    #: back what pasting and re-reading the crop moved off the lattice (face PSNR 42.8 -> 40.3 dB).
    embed_passes = 2

    def __init__(
        self,
        align: AlignConfig = AlignConfig(),
        step: float = 32.0,
        seed: int = 20261128,
        block: int = 8,
        coeffs: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0)),
        name: str = "dct-qim",
    ):
        """``step``: QIM step in grey levels (on the 0-255 scale) at strength 1; ``block``: DCT
        block size in crop pixels; ``coeffs``: the (u, v) coefficients of each block that carry bits;
        ``name``: the registry's name for this layout (a reader must use the writer's).

        Step 32, embedded in two passes (:attr:`embed_passes`), puts the
        face-region PSNR at ~40.3 dB (the invisibility bar is 40 dB). Measured on 40 original LFW
        faces with the first, whole-pixel version of the reader's search (an ad hoc forerunner of
        ``research/watermark_sync.py --decode``; exact decode, no distortion / JPEG Q90 / Q75 / resize x1.5 / noise
        0.02): step 32 in two passes 100 / 93 / 65 / 78 / 47 %; step 30 in three passes (40.6 dB)
        88 / 90 / 55 / 62 / 25 %; step 36 in three passes (38.9 dB) 93 / 90 / 80 / 88 / 60 %.
        Blocks of 16 px leave too few slots (215 with 5 coefficients; with 10 coefficients and step
        48, 41.1 dB, 20 originals, a whole-pixel search: no distortion 80 %, JPEG Q50 20 %,
        blur 0 %). Filtering weakens the mark rather than erasing it: read in the exact frame it was
        embedded in, 84 / 72 % of 25 original faces come back within 21 wrong bits after JPEG Q50 /
        WebP Q80 (blur sigma 1: none, median 66 wrong bits; ``research/watermark_sync.py --decode``,
        the own-frame columns); finding that frame is the reader's
        search's job (:mod:`refacex_plugin.channel.search`)."""
        self.name = name
        #: Whether the reader's search must try gains from its first stage on (up to
        #: :attr:`~refacex_plugin.channel.ReaderConfig.gains_first_readings`): true when every carrier is one of a block's two lowest, the
        #: largest coefficients of a face, which a wrong gain moves off the lattice everywhere.
        self.gains_first = all(u + v <= 1 for u, v in coeffs)
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
        # Each carrier coefficient (u, v) as a b x b correlation kernel: conv2d(luma, kernels)[.., c, i, j]
        # is coefficient c of the block whose top-left corner is (i, j), for every (i, j) at once.
        # (Measured on 25 crops: 61 ms; as two separable 1-D passes 158 ms, as sliding-window matmuls 198 ms.)
        self.kernels = torch.stack([self.dct[u][:, None] * self.dct[v][None, :] for u, v in self.coeffs])[:, None]
        rows, cols = self.block_idx // self.grid * b, self.block_idx % self.grid * b
        self.block_corners = torch.stack([rows, cols])  # (2, nblocks)
        #: ``(y0, y1, x0, x1)``: the part of the crop the carrier blocks cover (all that embed changes and extract reads)
        self.carrier_window = (int(rows.min()), int(rows.max()) + b, int(cols.min()), int(cols.max()) + b)
        #: ``(C,)`` each carrier's squared frequency ``u^2 + v^2``: a low-pass distortion scales
        #: carrier ``c`` by about ``falloff ** carrier_order[c]`` (:meth:`carrier_gains`)
        self.carrier_order = torch.tensor([float(u * u + v * v) for u, v in self.coeffs])
        # (nslots, CHANNEL_BITS): 1 / (the bit's slot count) where a slot carries that bit
        counts = torch.bincount(self.slot_bit, minlength=self.bits).float()
        self.averaging = torch.zeros(n_slots, self.bits)
        self.averaging[torch.arange(n_slots), self.slot_bit] = 1.0 / counts[self.slot_bit]

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
        y = (crops * _LUMA.to(crops).view(1, 3, 1, 1)).sum(1) * 255.0
        return self._logits(self._slots(self._blocks(y)))

    def carrier_gains(self, gain: float, falloff: float = 1.0) -> torch.Tensor:
        """``(C,)`` the factor each carrier coefficient went through: ``gain`` (brightness and
        contrast scale every coefficient alike) times ``falloff ** (u^2 + v^2)``.

        Why: a gaussian blur of ``sigma`` crop pixels scales the coefficient of frequency
        ``(u, v)`` by ``exp(-sigma^2 (pi / block)^2 (u^2 + v^2) / 2)``, i.e. ``falloff ** (u^2 + v^2)``,
        and a quantiser's lattice does not survive a scaling: after blur sigma 1 (40 blur-anonymised
        LFW faces, read in the mark's own frame, an ad hoc script) the carriers'
        best single gains were 0.83-0.86 for (0, 1) and (1, 0) and 0.46 for (0, 2) and (2, 0)
        (medians); read with one gain for all, the median face had 50 of 252 bits wrong, read with
        its most confident ``(gain, falloff)``, none. (Textured original faces gain less: a blur
        there also mixes neighbouring blocks' content into a carrier.)"""
        return gain * falloff**self.carrier_order

    def extract_shifted(self, crops: torch.Tensor, shifts: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Logits as :meth:`extract` would give them were each crop translated by each of ``shifts``
        (integer crop pixels): the block grid is read at every offset at once.

        Args:
            crops: ``(B, 3, S, S)`` in [0, 1], or their luminance ``(B, 1, S, S)``.
            shifts: ``(T, 2)`` integer ``(dx, dy)``: read the mark as if it lay at ``crop position
                + shift`` (``translate_after(m, -dx, -dy)`` re-centres the crop on it).
            gain: the factor the carriers went through (brightness and contrast changes scale the
                coefficients, and with them the quantiser's lattice): a number, ``(C,)`` one per
                carrier coefficient (:meth:`carrier_gains`), or ``(P, C)``: P such readings at once.

        Returns:
            ``(B, T, CHANNEL_BITS)`` logits, ``(B, T, P, CHANNEL_BITS)`` for ``(P, C)`` gains.
        """
        y = (crops if crops.shape[1] == 1 else (crops * _LUMA.to(crops).view(1, 3, 1, 1)).sum(1, keepdim=True)) * 255.0
        slots = self._shifted_slots(y[:, 0], shifts.to(device=crops.device, dtype=torch.long))  # (B, T, nslots)
        logits = self._logits(slots.reshape(-1, slots.shape[-1]), gain)
        return logits.reshape(crops.shape[0], len(shifts), *logits.shape[1:])

    def _shifted_slots(self, y: torch.Tensor, shifts: torch.Tensor, gather: bool | None = None) -> torch.Tensor:
        """``y (B, S, S)`` luminance (0-255), ``shifts (T, 2)`` -> slot coefficients ``(B, T, nslots)``
        (slot = block * C + c) of the carrier blocks moved by each shift (clamped to the crop).

        Many shifts: one correlation of the span the blocks cover with the carriers' kernels gives
        every block position at once. Few shifts (the search's finer stages): only the blocks read
        are gathered and transformed (``gather``: force one way; 9 crops on one core of this CPU,
        gathered vs correlated: 9 shifts 3.2 vs 3.9 ms, 25: 9.5 vs 5.5 ms, 289: 183 vs 16 ms)."""
        b, s = self.block, y.shape[-1]
        corners = self.block_corners.to(y.device)
        rows = (corners[0][None] + shifts[:, 1:2]).clamp(0, s - b)  # (T, nblocks)
        cols = (corners[1][None] + shifts[:, 0:1]).clamp(0, s - b)
        c = self.kernels.shape[0]
        positions = (int(rows.max()) - int(rows.min()) + 1) * (int(cols.max()) - int(cols.min()) + 1)
        if gather if gather is not None else 4 * len(shifts) * rows.shape[1] < positions:
            ij = torch.arange(b, device=y.device)
            pix = ((rows[..., None, None] + ij[:, None]) * s + cols[..., None, None] + ij[None, :]).reshape(-1)  # (T*nblocks*b*b,)
            patches = y.reshape(y.shape[0], -1)[:, pix].reshape(y.shape[0], len(shifts), rows.shape[1], b * b)
            return (patches @ self.kernels.reshape(c, b * b).T.to(y)).reshape(y.shape[0], len(shifts), -1)
        r0, c0 = int(rows.min()), int(cols.min())  # only the span the blocks read
        part = y[:, None, r0 : int(rows.max()) + b, c0 : int(cols.max()) + b]
        resp = F.conv2d(part, self.kernels.to(y))  # (B, C, ., .): coefficient c of the block at (r0 + i, c0 + j)
        vals = resp[:, :, rows - r0, cols - c0]  # (B, C, T, nblocks)
        return vals.permute(0, 2, 3, 1).reshape(y.shape[0], len(shifts), -1)

    def _logits(self, slots: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        """``(B, nslots)`` coefficients -> ``(B, CHANNEL_BITS)`` mean QIM decision margins
        (``(B, P, CHANNEL_BITS)`` for ``(P, C)`` per-carrier gains; see :meth:`extract_shifted`).

        A slot's margin is ``(d0 - d1) / (step / 2)`` with ``d0``, ``d1`` its distances to the 0- and
        1-lattices; the two interleave, so ``d0 + d1 = step / 2`` and the margin is the triangle
        wave ``4 |u - round(u)| - 1`` of ``u = slot / step`` (+1: surely 1, -1: surely 0)."""
        if isinstance(gain, torch.Tensor) and gain.dim() > 0:
            g = gain.to(slots).reshape(-1, 1, len(self.coeffs))  # (P, 1, C); slot = block * C + c
            u = (slots.reshape(slots.shape[0], 1, -1, len(self.coeffs)) / (self.step * g)).flatten(2)  # (B, P, nslots)
            if gain.dim() == 1:
                u = u[:, 0]
        else:
            u = slots / (self.step * float(gain))
        margin = (u - torch.round(u)).abs_().mul_(4.0).sub_(1.0)
        return margin @ self.averaging.to(margin)
