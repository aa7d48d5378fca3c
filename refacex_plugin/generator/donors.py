"""Donor identities: who an anonymised face becomes.

The default bank holds *synthetic* identities - vectors drawn from a Gaussian fitted to real
identity embeddings (dlib descriptor space) of the training people - so no real person is a
donor. ``DonorBank.from_images`` builds a bank from consenting real donors' face images instead.

Policies (:class:`DonorAssigner`):

* ``random``: a fresh donor for every face.
* ``consistent``: within one run, the same person gets the same donor (faces whose original
  identity embeddings lie within ``same_person`` of a face seen before), so tracking and
  re-identification *within* the anonymised dataset still work. The n-th new person's donor is
  chosen by HMAC(key, n), so donors cannot be linked across keys; without a key it is random.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class DonorBank:
    """``vectors``: ``(N, 128)`` float32 donor identity embeddings."""

    vectors: np.ndarray
    source: str = "synthetic"

    def __len__(self) -> int:
        return len(self.vectors)

    @classmethod
    def synthetic(cls, embeddings: np.ndarray, n: int = 1024, seed: int = 0, shrink: float = 1.0) -> DonorBank:
        """Sample ``n`` identities from the Gaussian fitted to ``embeddings (M, 128)`` (one row per
        real person is best); ``shrink`` < 1 pulls samples toward the mean."""
        mu = embeddings.mean(0)
        cov = np.cov(embeddings, rowvar=False) + 1e-6 * np.eye(embeddings.shape[1])
        z = np.random.default_rng(seed).multivariate_normal(np.zeros_like(mu), cov, size=n)
        return cls((mu + shrink * z).astype(np.float32), "synthetic")

    @classmethod
    def from_images(cls, paths, identity=None) -> DonorBank:
        """A bank of real donors (with their consent): the central face of each image."""
        from ..detection import central_face, load_detector
        from ..errors import RefacexError
        from ..geometry import AlignConfig, alignment_matrices, extract_crops
        from ..identity import IdentityModel
        from ..image_io import read_image

        identity = identity or IdentityModel()
        det, align, out = load_detector(), AlignConfig(), []
        for p in paths:
            rgb = read_image(p).rgb
            d = det(rgb)
            c = central_face(d, *rgb.shape[:2]) if len(d) else None
            if c is None:
                raise RefacexError(f"{p}: no donor face found")
            with torch.no_grad():
                out.append(identity(extract_crops(rgb, alignment_matrices(d.landmarks[c : c + 1], align), align))[0].numpy())
        if not out:
            raise RefacexError("no donor images given")
        return cls(np.stack(out).astype(np.float32), "images")

    def save(self, path) -> None:
        np.save(path, self.vectors.astype(np.float16))

    @classmethod
    def load(cls, path) -> DonorBank:
        return cls(np.load(path).astype(np.float32))


@dataclass
class DonorAssigner:
    """Picks a donor index per face under a policy (see the module docstring)."""

    bank: DonorBank
    policy: str = "random"
    key: bytes | None = field(default=None, repr=False)
    # dlib distance below which two originals are one person. Measured on 1,400 LFW people with two
    # photos each (the benchmark's full split): 0.40 / 0.45 / 0.50 / 0.544 / 0.60 keep the donor for
    # the second photo 33 / 58 / 77 / 74 / 53 % of the time and merge 0.1 / 1.2 / 4.8 / 21 / 58 % of
    # distinct people into an earlier one.
    same_person: float = 0.5
    seed: int | None = None
    _seen: list[np.ndarray] = field(default_factory=list, repr=False)
    _donor_of: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self):
        if self.policy not in ("random", "consistent"):
            raise ValueError("policy must be 'random' or 'consistent'")
        self._rng = np.random.default_rng(self.seed)
        self._lock = threading.Lock()  # a folder run's threads share one assigner

    def _new_donor(self) -> int:
        if self.policy == "consistent" and self.key is not None:
            mac = hmac.new(self.key, b"refacex/donor/v1|%d" % len(self._donor_of), hashlib.sha256).digest()
            return int.from_bytes(mac[:8], "big") % len(self.bank)
        return int(self._rng.integers(len(self.bank)))

    def assign(self, identities: np.ndarray) -> np.ndarray:
        """``(N, 128)`` original identity embeddings -> ``(N,)`` donor indices (one image's faces
        at a time: threads share the people seen so far)."""
        with self._lock:
            return self._assign(identities)

    def _assign(self, identities: np.ndarray) -> np.ndarray:
        out = []
        for e in np.asarray(identities, np.float32):
            if self.policy == "random":
                out.append(self._new_donor())
                continue
            if self._seen:
                d = np.linalg.norm(np.stack(self._seen) - e, axis=1)
                j = int(np.argmin(d))
                if d[j] < self.same_person:
                    out.append(self._donor_of[j])
                    continue
            idx = self._new_donor()
            self._seen.append(e)
            self._donor_of.append(idx)
            out.append(idx)
        return np.asarray(out, np.int64)

    def vectors(self, identities: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.bank.vectors[self.assign(identities)])
