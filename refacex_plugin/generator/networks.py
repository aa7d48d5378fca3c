"""The refacex networks, on aligned face crops pooled to ``RES = 128`` pixels.

* :class:`Generator` ``G(face, donor) -> face``: a U-Net whose features are modulated (FiLM) by a
  donor identity vector. It never sees the face itself, only its *information-limited view*
  (:func:`limited_view`: the face blurred with the ``blur`` baseline's function at strength
  :data:`VIEW_BLUR`, the context outside the mask untouched), and draws a new face inside the mask
  from that view and the donor. So whatever an attacker with our public weights learns from
  ``G``'s output, they could learn from the blurred face (data processing: the donor is
  independent of the person) - the learned inversion of ``G`` is bounded by the inversion of that
  blur, whatever ``G`` learns. :func:`blend` puts the drawn face under the mask.
* :class:`CodeEncoder` ``E(face) -> (B, K)`` logits of the K-bit recovery code, quantised with a
  straight-through sign (:func:`binarise`).
* :class:`RecoveryNet` ``R(anonymised, code) -> face``: the same U-Net shape, modulated by the code.

All take and return ``(B, 3, RES, RES)`` images in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..baselines import blur_faces

RES = 128
ID_DIM = 128  # dlib descriptor space


def binarise(logits: torch.Tensor) -> torch.Tensor:
    """Straight-through quantisation: forward ``{0, 1}`` bits, backward the gradient of ``sigmoid``."""
    soft = torch.sigmoid(logits)
    return (logits > 0).to(logits) + soft - soft.detach()


class _Conv(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU(inplace=True))


class _FiLMBlock(nn.Module):
    """Residual block whose normalised features are scaled and shifted by a condition vector."""

    def __init__(self, ch: int, cond: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, 1, 1)
        self.norm = nn.GroupNorm(8, ch, affine=False)
        self.film = nn.Linear(cond, 2 * ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(c).unsqueeze(-1).unsqueeze(-1).chunk(2, 1)
        h = self.norm(self.conv1(x)) * (1 + gamma) + beta
        return x + self.conv2(F.silu(h))


class ConditionalUNet(nn.Module):
    """``(B, 3, RES, RES)`` image + ``(B, cond)`` condition -> ``(B, 3, RES, RES)`` residual in [-1, 1]."""

    def __init__(self, cond: int, width: int = 32, cond_hidden: int = 256):
        super().__init__()
        w = width
        self.cond = nn.Sequential(nn.Linear(cond, cond_hidden), nn.SiLU(), nn.Linear(cond_hidden, cond_hidden))
        self.inc = _Conv(3, w)
        self.d1, self.d2, self.d3 = _Conv(w, 2 * w, 2), _Conv(2 * w, 4 * w, 2), _Conv(4 * w, 8 * w, 2)  # 64, 32, 16
        self.mid = nn.ModuleList([_FiLMBlock(8 * w, cond_hidden) for _ in range(3)])
        self.f32 = _FiLMBlock(4 * w, cond_hidden)
        self.f64 = _FiLMBlock(2 * w, cond_hidden)
        self.u3, self.u2, self.u1 = _Conv(12 * w, 4 * w), _Conv(6 * w, 2 * w), _Conv(3 * w, w)
        self.out = nn.Conv2d(w, 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.cond(cond)
        x0 = self.inc(x * 2 - 1)
        x1 = self.d1(x0)
        x2 = self.d2(x1)
        h = self.d3(x2)
        for block in self.mid:
            h = block(h, c)
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        h = self.f32(self.u3(torch.cat([up(h), x2], 1)), c)
        h = self.f64(self.u2(torch.cat([up(h), x1], 1)), c)
        h = self.u1(torch.cat([up(h), x0], 1))
        return torch.tanh(self.out(h))


def blend(x: torch.Tensor, face: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with ``face`` under ``mask``: the anonymised crop as the pipeline's paste makes it."""
    return x + mask * (face - x)


VIEW_BLUR = 3.0
"""Strength of the blur ``G`` sees (``blur_faces``: sigma 15 % of the crop side, 19.2 px at
:data:`RES`). Why this wide: with sigma 10 % (2.0), ``refacex bench attacks``' 1,500-step inverters
got 6.7 % of identities back through ``G``, over the 5 % an attacker may get; ``G`` sees nothing
else of the person, so a narrower view is the only way identity leaks (docs/decisions/0003).
Saved weights carry their own ``view_blur``."""


def limited_view(x: torch.Tensor, mask: torch.Tensor, strength: float = VIEW_BLUR) -> torch.Tensor:
    """What ``G`` may see of a face: ``(B, 3, S, S)`` crops with the region under ``mask (B, 1, S, S)``
    replaced by ``blur_faces(x, strength)`` (gaussian, sigma ``5 % * strength`` of the crop side)."""
    return blend(x, blur_faces(x, strength), mask)


class Generator(nn.Module):
    """``G(face (B, 3, RES, RES), donor (B, ID_DIM), mask (B, 1, RES, RES)) -> (B, 3, RES, RES)``: a
    face drawn from :func:`limited_view` and the donor - the blurred face plus what the network adds
    to it. Meaningful under the mask only (like the blur baseline, the pipeline pastes that part;
    :func:`blend` makes the anonymised crop)."""

    def __init__(self, width: int = 32, view_blur: float = VIEW_BLUR):
        super().__init__()
        self.view_blur = view_blur
        self.unet = ConditionalUNet(ID_DIM, width)

    def forward(self, x: torch.Tensor, donor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        blurred = blur_faces(x, self.view_blur)  # once: the view is this under the mask (limited_view)
        return (blurred + self.unet(blend(x, blurred, mask), donor)).clamp(0, 1)


class CodeEncoder(nn.Module):
    """``(B, 3, RES, RES)`` original face -> ``(B, bits)`` code logits."""

    def __init__(self, bits: int, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _Conv(3, w, 2), _Conv(w, 2 * w, 2), _Conv(2 * w, 4 * w, 2), _Conv(4 * w, 4 * w, 2), _Conv(4 * w, 8 * w, 2)
        )
        self.head = nn.Linear(8 * w * 4 * 4, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x * 2 - 1).flatten(1))


class RecoveryNet(nn.Module):
    """``R(anonymised (B, 3, RES, RES), code bits (B, bits), mask) -> face``."""

    def __init__(self, bits: int, width: int = 32):
        super().__init__()
        self.unet = ConditionalUNet(bits, width)

    def forward(self, y: torch.Tensor, bits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = (y + self.unet(y, bits * 2 - 1)).clamp(0, 1)
        return y + mask * (x - y)


class PatchDiscriminator(nn.Module):
    """Training only: a spectrally normalised PatchGAN scoring ``(B, 3, RES, RES)`` faces per
    ~22 px patch (real > 0 > fake), the naturalness prior that keeps ``G`` off adversarial textures."""

    def __init__(self, width: int = 32):
        super().__init__()
        sn = nn.utils.spectral_norm
        w = width
        self.net = nn.Sequential(
            sn(nn.Conv2d(3, w, 4, 2, 1)),
            nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(w, 2 * w, 4, 2, 1)),
            nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)),
            nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(4 * w, 1, 3, 1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)
