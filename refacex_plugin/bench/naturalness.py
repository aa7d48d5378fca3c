"""Naturalness: how well a small CNN tells anonymised face crops from real ones.

Per method and crop size, the same classifier is trained from scratch (same seed, same steps) on
face crops of one set of people - originals as "real", the method's outputs as "anonymised" - and
tested on people it never saw. Both sides pass through the same alignment, resize and JPEG, so only
the faces differ. Test accuracy 0.5 means indistinguishable; 1.0, always caught.

Two crop sizes, the same faces cut once and resized to each (:data:`PATCHES`): 64 px, the figure the
section has reported from the start (``accuracy``), and 128 px (``accuracy_128``), where finer
texture, blending seams and resampling show. The 128-px network is the 64-px one with one more
strided block, so both end on the same 4 x 4 grid before the pooled head.
"""

from __future__ import annotations

import hashlib
import sys
import time

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry import AlignConfig, alignment_matrices, extract_crops

#: Crop side of the figure reported as ``accuracy`` (the section's first and, at first, only size),
#: and the JPEG quality both sides are stored at.
PATCH = 64
JPEG_QUALITY = 90
#: Crop sides measured, each by its own classifier on the same faces, seed and steps.
PATCHES = (PATCH, 128)


def accuracy_key(size: int) -> str:
    """The result key of the classifier at ``size`` px: ``accuracy`` at :data:`PATCH` (as ever),
    ``accuracy_<size>`` at any other size."""
    return "accuracy" if size == PATCH else f"accuracy_{size}"


def face_patches(
    rgb: np.ndarray, landmarks5: np.ndarray, sizes: tuple[int, ...] = PATCHES, align: AlignConfig = AlignConfig()
) -> dict[int, np.ndarray]:
    """The aligned face of ``rgb`` (one 256-px crop) resized to each of ``sizes`` px, each after its
    own JPEG round trip: ``{size: (size, size, 3) uint8}``."""
    crop = extract_crops(rgb, alignment_matrices(landmarks5[None], align), align)[0]
    crop = np.round(crop.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out = {}
    for size in sizes:
        small = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        out[size] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    return out


def face_patch(rgb: np.ndarray, landmarks5: np.ndarray, align: AlignConfig = AlignConfig(), size: int = PATCH) -> np.ndarray:
    """The aligned face of ``rgb`` at ``size`` px after a JPEG round trip: ``(size, size, 3) uint8``."""
    return face_patches(rgb, landmarks5, (size,), align)[size]


class RealOrAnonymised(nn.Module):
    """Strided conv blocks and a linear head on their pooled features: ``(B, 3, size, size)`` ->
    ``(B,)`` logits (> 0: anonymised). Four blocks at 64 px; one more per doubling of ``size``
    (``64 * 2**k``), so every size ends on a 4 x 4 grid."""

    def __init__(self, width: int = 16, size: int = PATCH):
        super().__init__()
        extra = (size // PATCH).bit_length() - 1
        if size < PATCH or size != PATCH << extra:
            raise ValueError(f"crop size must be {PATCH} px times a power of two, not {size}")
        chans = [3, width, 2 * width, 4 * width, 4 * width] + [4 * width] * extra
        self.blocks = nn.Sequential(
            *[
                nn.Sequential(
                    nn.Conv2d(a, b, 3, 2, 1),
                    nn.BatchNorm2d(b),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(b, b, 3, 1, 1),
                    nn.BatchNorm2d(b),
                    nn.ReLU(inplace=True),
                )
                for a, b in zip(chans, chans[1:])
            ]
        )
        self.head = nn.Linear(chans[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean((2, 3))).squeeze(1)


def held_out(label: str, fraction: float = 0.3) -> bool:
    """Whether a person is a test person (a stable hash of the name: the same people for every method)."""
    return int(hashlib.sha256(label.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def classifier_accuracy(
    real: np.ndarray, fake: np.ndarray, test: np.ndarray, steps: int, seed: int = 0, progress: bool = True, desc: str = ""
) -> dict:
    """Train on the non-``test`` rows of ``real`` and ``fake`` ``(N, P, P, 3) uint8`` (row ``i`` of both
    is one person's face) a :class:`RealOrAnonymised` for ``P`` px, test on the ``test (N,) bool``
    rows. Returns accuracy and counts."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    def to_t(a: np.ndarray) -> torch.Tensor:  # per batch: at 128 px all N faces as float would be 4x the bytes
        return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255.0

    train = np.nonzero(~test)[0]
    model = RealOrAnonymised(size=real.shape[1])
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    t0 = time.time()
    for step in range(steps):
        b = rng.choice(train, 32)
        x = torch.cat([to_t(real[b]), to_t(fake[b])])
        if rng.random() < 0.5:
            x = x.flip(3)
        y = torch.cat([torch.zeros(len(b)), torch.ones(len(b))])
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step + 1) % 100 == 0:
            print(
                f"naturalness {desc}: step {step + 1}/{steps}, loss {loss.item():.3f}, {time.time() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    model.eval()
    tests = np.nonzero(test)[0]
    with torch.no_grad():
        pr = torch.cat([model(to_t(real[tests[i : i + 128]])) for i in range(0, len(tests), 128)])
        pf = torch.cat([model(to_t(fake[tests[i : i + 128]])) for i in range(0, len(tests), 128)])
    correct = int((pr <= 0).sum()) + int((pf > 0).sum())
    return {"accuracy": correct / (2 * len(tests)), "train_faces": int(len(train)), "test_faces": int(len(tests)), "steps": steps}


def measure_naturalness(
    methods: list[str],
    files: list,
    labels: list[str],
    detections,
    device: str = "cpu",
    seed: int = 0,
    steps: int = 600,
    progress: bool = True,
    sizes: tuple[int, ...] = PATCHES,
) -> dict:
    """Per method, the classifiers' test accuracy (see the module docstring): ``{method: {accuracy,
    train_faces, test_faces, steps, accuracy_128}}``, one ``accuracy_key(size)`` per size of ``sizes``.

    Args:
        files: image paths; ``labels``: their people; ``detections``: per file, its
            :class:`~refacex_plugin.detection.Detections` and the index of the face to judge.
    """
    from ..image_io import read_image
    from ..writer import make_writer

    test = np.array([held_out(lab) for lab in labels])
    originals = [read_image(f).rgb for f in files]
    real_p = [face_patches(rgb, det.landmarks[c], sizes) for rgb, (det, c) in zip(originals, detections)]
    real = {s: np.stack([p[s] for p in real_p]) for s in sizes}
    out = {}
    for method in methods:
        writer = make_writer(method, device=device, donor_seed=seed)
        t0, fake_p = time.time(), []
        for n, (rgb, (det, c)) in enumerate(zip(originals, detections)):
            fake_p.append(face_patches(writer.anonymise_image(rgb, det).image, det.landmarks[c], sizes))
            if progress and (n + 1) % 100 == 0:
                print(f"naturalness {method}: {n + 1}/{len(files)} anonymised, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        res: dict = {}
        for size in sizes:
            fake = np.stack([p[size] for p in fake_p])
            r = classifier_accuracy(real[size], fake, test, steps, seed, progress, f"{method} {size} px")
            res = {accuracy_key(size): r.pop("accuracy"), **r} if not res else {**res, accuracy_key(size): r["accuracy"]}
        out[method] = res
    return out
