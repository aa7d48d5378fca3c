"""Naturalness: how well a small CNN tells anonymised face crops from real ones.

Per method, the same classifier is trained from scratch (same seed, same steps) on face crops of
one set of people - originals as "real", the method's outputs as "anonymised" - and tested on
people it never saw. Both sides pass through the same alignment, resize and JPEG, so only the
faces differ. Test accuracy 0.5 means indistinguishable; 1.0, always caught.
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

#: Crop side the classifier sees, and the JPEG quality both sides are stored at.
PATCH = 64
JPEG_QUALITY = 90


def face_patch(rgb: np.ndarray, landmarks5: np.ndarray, align: AlignConfig = AlignConfig()) -> np.ndarray:
    """The aligned face of ``rgb`` at ``PATCH`` px after a JPEG round trip: ``(PATCH, PATCH, 3) uint8``."""
    crop = extract_crops(rgb, alignment_matrices(landmarks5[None], align), align)[0]
    crop = np.round(crop.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    small = cv2.resize(crop, (PATCH, PATCH), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


class RealOrAnonymised(nn.Module):
    """Four strided conv blocks and a linear head: ``(B, 3, 64, 64)`` -> ``(B,)`` logits (> 0: anonymised)."""

    def __init__(self, width: int = 16):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
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
    is one person's face), test on the ``test (N,) bool`` rows. Returns accuracy and counts."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    xr, xf = to_t(real), to_t(fake)
    train = np.nonzero(~test)[0]
    model = RealOrAnonymised()
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    t0 = time.time()
    for step in range(steps):
        b = rng.choice(train, 32)
        x = torch.cat([xr[b], xf[b]])
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
        pr = torch.cat([model(xr[tests[i : i + 128]]) for i in range(0, len(tests), 128)])
        pf = torch.cat([model(xf[tests[i : i + 128]]) for i in range(0, len(tests), 128)])
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
) -> dict:
    """Per method, the classifier's test accuracy (see the module docstring).

    Args:
        files: image paths; ``labels``: their people; ``detections``: per file, its
            :class:`~refacex_plugin.detection.Detections` and the index of the face to judge.
    """
    from ..image_io import read_image
    from ..writer import make_writer

    test = np.array([held_out(lab) for lab in labels])
    originals = [read_image(f).rgb for f in files]
    real = np.stack([face_patch(rgb, det.landmarks[c]) for rgb, (det, c) in zip(originals, detections)])
    out = {}
    for method in methods:
        writer = make_writer(method, device=device, donor_seed=seed)
        t0, fake = time.time(), []
        for n, (rgb, (det, c)) in enumerate(zip(originals, detections)):
            fake.append(face_patch(writer.anonymise_image(rgb, det).image, det.landmarks[c]))
            if progress and (n + 1) % 100 == 0:
                print(f"naturalness {method}: {n + 1}/{len(files)} anonymised, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        out[method] = classifier_accuracy(real, np.stack(fake), test, steps, seed, progress, method)
    return out
