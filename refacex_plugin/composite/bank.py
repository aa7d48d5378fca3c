"""Donor banks: real donor faces in a shape-normalised frame, with what donors are matched on.

A bank holds, per donor, a texture (the face warped onto the bank's mean mesh), the donor's own
mesh (similarity-normalised to the mean), its pose and expression features and its skin tone.
``build_bank`` makes one from face images; ``blend=2`` (the shipped bank) averages two people per
donor in the normalised frame, so no single real person's face is shipped or pasted.

Stored as one ``.npz`` (no pickles): textures as JPEG bytes, the rest as arrays.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..attributes import AGE_BAND_NAMES, AGE_BANDS, Attributes, age_band
from ..face68 import BROWS, LEFT_EYE, OUTER_LIPS, RIGHT_EYE
from .config import CompositeConfig
from .mesh import CropLandmarks, mirror, piecewise_affine_maps, pose_expression, similarity_to, triangulate

BANK_VERSION = 2
#: Texture side in pixels; the texture frame is the crop frame scaled by ``texture_size / crop_size``.
TEXTURE_SIZE = 192
#: Donor features are compared after dividing by these spreads (yaw, pitch, roll, mouth open,
#: eye open, L, a, b): a unit of distance is a visible difference in each.
FEATURE_SCALE = np.array([0.05, 0.05, 0.08, 0.04, 0.03, 12.0, 4.0, 4.0], np.float32)


@dataclass
class DonorBank:
    """``textures (N, T, T, 3) uint8`` in the mean-mesh frame; ``shapes (N, 78, 2)`` crop pixels;
    ``features (N, 8)`` pose, expression and Lab skin tone; ``attributes (N, 4)`` apparent gender,
    age and skin tone (:class:`~refacex_plugin.attributes.Attributes`, the mean of the people
    blended, who share gender and age band); ``sources``: where each donor came from."""

    mean_shape: np.ndarray
    triangles: np.ndarray
    textures: np.ndarray
    shapes: np.ndarray
    features: np.ndarray
    sources: list[str]
    attributes: np.ndarray
    crop_size: int = 256
    origin: str = ""

    def __len__(self) -> int:
        return len(self.textures)

    @property
    def texture_scale(self) -> float:
        return self.textures.shape[1] / self.crop_size

    # Every donor is offered twice, as photographed and mirrored (index + len(bank)): that
    # covers both directions of head turn with one set of faces.
    @property
    def choices(self) -> int:
        return 2 * len(self)

    def choice_features(self) -> np.ndarray:
        """``(2N, 8)`` features of every choice (mirrored: yaw and roll negated); computed once."""
        if getattr(self, "_choice_features", None) is None:
            flipped = self.features.copy()
            flipped[:, [0, 2]] *= -1
            self._choice_features = np.concatenate([self.features, flipped])
        return self._choice_features

    def choice(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Choice ``index`` -> its texture ``(T, T, 3)``, the mesh the texture is laid on ``(78, 2)`` in
        texture pixels, and the donor's own layout ``(78, 2)`` in crop pixels."""
        donor, flipped = index % len(self), index >= len(self)
        mesh = self.mean_shape * self.texture_scale
        if not flipped:
            return self.textures[donor], mesh, self.shapes[donor]
        return self.textures[donor][:, ::-1], mirror(mesh, self.textures.shape[2]), mirror(self.shapes[donor], self.crop_size)

    def source(self, index: int) -> str:
        return self.sources[index % len(self)]

    def save(self, path) -> None:
        blobs = [cv2.imencode(".jpg", t[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 93])[1].tobytes() for t in self.textures]
        offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        buf = io.BytesIO()
        np.savez(
            buf,
            version=BANK_VERSION,
            mean_shape=self.mean_shape,
            triangles=self.triangles,
            jpeg=np.frombuffer(b"".join(blobs), np.uint8),
            offsets=offsets,
            shapes=self.shapes.astype(np.float32),
            features=self.features.astype(np.float32),
            attributes=self.attributes.astype(np.float32),
            sources=np.array(self.sources),
            crop_size=self.crop_size,
            origin=np.array(self.origin),
        )
        Path(path).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path) -> DonorBank:
        from ..errors import ModelNotAvailableError

        try:
            z = np.load(path, allow_pickle=False)
            if int(z["version"]) != BANK_VERSION:
                raise ModelNotAvailableError(
                    f"{path}: donor bank version {int(z['version'])}, expected {BANK_VERSION}: rebuild it with 'refacex donors build'"
                )
            jpeg, off = z["jpeg"], z["offsets"]
            textures = np.stack([cv2.imdecode(jpeg[off[i] : off[i + 1]], cv2.IMREAD_COLOR)[:, :, ::-1] for i in range(len(off) - 1)])
            return cls(
                z["mean_shape"],
                z["triangles"],
                np.ascontiguousarray(textures),
                z["shapes"],
                z["features"],
                [str(s) for s in z["sources"]],
                z["attributes"],
                int(z["crop_size"]),
                str(z["origin"]),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelNotAvailableError(f"{path}: not a readable donor bank ({exc})") from None


def cheek_lab(crop: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Mean Lab colour ``(3,)`` of the cheeks and nose bridge of ``crop (S, S, 3) uint8`` (OpenCV's 8-bit
    Lab): the colour part of the features donors are ranked on, stored in every bank as built. The
    face's skin tone as an attribute (median L* of bare skin) is :func:`~refacex_plugin.attributes.skin_tone`."""
    poly = np.round(pts[[1, 2, 3, 31, 35, 13, 14, 15, 45, 27, 36]]).astype(np.int32)
    mask = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(mask, [cv2.convexHull(poly)], 1)
    for group in (RIGHT_EYE, LEFT_EYE, OUTER_LIPS):  # not the eyes or the mouth
        cv2.fillPoly(mask, [cv2.convexHull(np.round(pts[list(group)]).astype(np.int32))], 0)
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).reshape(-1, 3)[mask.ravel() > 0]
    return lab.mean(0).astype(np.float32) if len(lab) else np.array([128, 128, 128], np.float32)


def is_grey(crop: np.ndarray) -> bool:
    """Whether ``crop (S, S, 3) uint8`` is a grayscale picture stored as RGB."""
    c = crop.astype(np.int16)
    return bool(np.abs(c[..., 0] - c[..., 1]).max() <= 2 and np.abs(c[..., 1] - c[..., 2]).max() <= 2)


def donor_features(crop: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.concatenate([pose_expression(pts), cheek_lab(crop, pts)]).astype(np.float32)


#: Donors whose forehead is not bare skin (hair, hats) or whose eyes are framed (glasses) paste
#: those onto other people. Chosen by eye on LFW single-photo faces: above 1.15 most faces wear
#: spectacles, above 60 most foreheads are under a fringe or a hat; the median limits (50, 1.11)
#: kept only 254 of 905 women, leaving older women without donors.
MAX_FOREHEAD_SCORE = 60.0
MAX_GLASSES_SCORE = 1.15


def _region_masks(mean: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Forehead, cheeks, under-eye and nose-bridge masks ``(size, size) bool`` in the mean-mesh frame."""

    def hull(pts):
        m = np.zeros((size, size), np.uint8)
        cv2.fillPoly(m, [np.round(cv2.convexHull(pts.astype(np.float32))).astype(np.int32)], 1)
        return m > 0

    forehead = hull(mean[[*BROWS, *range(68, 78)]]) & (np.arange(size)[:, None] < mean[17:27, 1].min() - 3)
    cheeks = hull(mean[[1, 2, 3, 31, 35, 13, 14, 15, 45, 27, 36]])
    for group in (RIGHT_EYE, LEFT_EYE, OUTER_LIPS):
        cheeks &= ~hull(mean[list(group)])
    eye_dist = float(np.linalg.norm(mean[42:48].mean(0) - mean[36:42].mean(0)))
    frames = np.zeros((size, size), bool)
    for group in (RIGHT_EYE, LEFT_EYE):  # where a spectacle rim crosses the upper cheek
        e = mean[list(group)]
        y0 = e[:, 1].max() + 0.08 * eye_dist
        frames[int(y0) : int(y0 + 0.3 * eye_dist), int(e[:, 0].min() - 0.1 * eye_dist) : int(e[:, 0].max() + 0.1 * eye_dist)] = True
    bridge = np.zeros((size, size), bool)
    bridge[
        int(mean[27, 1] - 0.1 * eye_dist) : int(mean[28, 1]), int(mean[39, 0] + 0.05 * eye_dist) : int(mean[42, 0] - 0.05 * eye_dist)
    ] = True
    return {"forehead": forehead, "cheeks": cheeks, "frames": frames, "bridge": bridge}


def donor_quality(texture: np.ndarray, masks: dict[str, np.ndarray]) -> tuple[float, float]:
    """``(forehead, glasses)`` scores of a mean-frame texture: the forehead's Lab distance from the
    cheeks plus its lightness spread, and the edge energy where spectacle rims and bridges sit
    relative to the cheeks'."""
    lab = cv2.cvtColor(texture, cv2.COLOR_RGB2LAB).astype(np.float32)
    grey = cv2.cvtColor(texture, cv2.COLOR_RGB2GRAY).astype(np.float32)
    edges = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    forehead, cheeks = lab[masks["forehead"]], lab[masks["cheeks"]]
    fh = float(np.linalg.norm(forehead.mean(0) - cheeks.mean(0)) + forehead[:, 0].std())
    gl = float((edges[masks["frames"]].mean() + edges[masks["bridge"]].mean()) / 2 / (edges[masks["cheeks"]].mean() + 1))
    return fh, gl


def mean_mesh(meshes: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Generalised Procrustes mean of ``(N, 78, 2)`` meshes, kept at their average placement."""
    mean = meshes.mean(0)
    for _ in range(iterations):
        mean = np.mean([similarity_to(m, mean) for m in meshes], 0)
    return mean.astype(np.float32)


def to_mean_frame(crop: np.ndarray, mesh: np.ndarray, mean: np.ndarray, triangles: np.ndarray, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Warp ``crop``'s face from its ``mesh`` onto ``mean`` (crop pixels), sampled at ``size`` px."""
    scale = size / crop.shape[0]
    map_x, map_y, _ = piecewise_affine_maps(mesh, mean * scale, triangles, size)
    return cv2.remap(crop, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@dataclass
class DonorFace:
    crop: np.ndarray
    mesh: np.ndarray
    source: str


def collect_faces(paths, progress=None, skipped: dict[str, int] | None = None) -> list[DonorFace]:
    """The central face of each image, aligned and meshed. Images without a usable face are
    skipped and counted in ``skipped`` (``unreadable``, ``no face``, ``turned``) when given."""
    skipped = {} if skipped is None else skipped
    for reason in ("unreadable", "no face", "turned"):
        skipped.setdefault(reason, 0)
    from ..detection import central_face, load_detector
    from ..geometry import AlignConfig, alignment_matrices, extract_crops
    from ..image_io import read_image

    det, align, marks, out = load_detector(), AlignConfig(), CropLandmarks(), []
    for n, p in enumerate(paths):
        if progress:
            progress(n)
        try:
            rgb = read_image(p).rgb
        except Exception:  # noqa: BLE001 - a bad donor image is skipped (and counted), never fatal
            skipped["unreadable"] += 1
            continue
        d = det(rgb)
        c = central_face(d, *rgb.shape[:2]) if len(d) else None
        if c is None:
            skipped["no face"] += 1
            continue
        crop = extract_crops(rgb, alignment_matrices(d.landmarks[c : c + 1], align), align)[0]
        crop = np.round(crop.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        mesh = marks(crop)
        if abs(pose_expression(mesh)[0]) > 0.35:  # strongly turned faces make poor donors
            skipped["turned"] += 1
            continue
        out.append(DonorFace(crop, mesh, str(p)))
    return out


def build_bank(faces: list[DonorFace], blend: int = 1, origin: str = "", seed: int = 0, screen: bool = True) -> DonorBank:
    """A bank from meshed donor faces; ``blend`` people are averaged per donor (paired by look-alike
    textures, pose and expression, so the average is a plausible face). ``screen`` leaves out faces
    with a covered forehead or glasses (:func:`donor_quality`)."""
    from ..errors import RefacexError

    if len(faces) < max(blend, 1):
        raise RefacexError(f"a donor bank needs at least {max(blend, 1)} usable face(s); found {len(faces)}")
    from ..attributes import AttributeEstimator

    people = np.stack([a.as_array() for a in AttributeEstimator()([(f.crop, f.mesh) for f in faces])])
    meshes = np.stack([f.mesh for f in faces])
    mean = mean_mesh(meshes)
    triangles = triangulate(mean)
    textures = np.stack([to_mean_frame(f.crop, f.mesh, mean, triangles) for f in faces])
    if screen:
        masks = _region_masks(mean * (TEXTURE_SIZE / faces[0].crop.shape[0]), TEXTURE_SIZE)
        scores = np.array([donor_quality(t, masks) for t in textures])
        grey = np.array([is_grey(f.crop) for f in faces])  # a grayscale donor gives colour faces flat skin
        keep = (scores[:, 0] <= MAX_FOREHEAD_SCORE) & (scores[:, 1] <= MAX_GLASSES_SCORE) & ~grey
        if keep.sum() < max(blend, 1):
            raise RefacexError(f"no usable donor: all {len(faces)} faces have hair or a hat on the forehead, glasses, or no colour")
        faces, meshes, textures, people = [f for f, k in zip(faces, keep) if k], meshes[keep], textures[keep], people[keep]
    shapes = np.stack([similarity_to(m, mean) for m in meshes])
    feats = np.stack([donor_features(f.crop, f.mesh) for f in faces])
    groups = [[i] for i in range(len(faces))] if blend <= 1 else _pair_up(textures, feats, people, blend, seed)
    return DonorBank(
        mean_shape=mean,
        triangles=triangles,
        textures=np.stack([np.round(textures[g].astype(np.float32).mean(0)).astype(np.uint8) for g in groups]),
        shapes=np.stack([shapes[g].mean(0) for g in groups]).astype(np.float32),
        features=np.stack([feats[g].mean(0) for g in groups]).astype(np.float32),
        sources=["|".join(Path(faces[i].source).name for i in g) for g in groups],
        attributes=np.stack([people[g].mean(0) for g in groups]).astype(np.float32),
        crop_size=faces[0].crop.shape[0],
        origin=origin,
    )


def _pair_up(textures: np.ndarray, feats: np.ndarray, people: np.ndarray, size: int, seed: int) -> list[list[int]]:
    """Greedy groups of ``size`` look-alikes of one apparent gender and age band (``people (N, 4)``
    :class:`~refacex_plugin.attributes.Attributes` arrays): distance = small grey thumbnails +
    scaled features. A face left without a mate of its own kind is left out: an average of a man
    and a woman, or of a child and an adult, is neither."""

    thumbs = np.stack([cv2.resize(cv2.cvtColor(t, cv2.COLOR_RGB2GRAY), (16, 16), interpolation=cv2.INTER_AREA) for t in textures]).reshape(
        len(textures), -1
    )
    thumbs = (thumbs - thumbs.mean(1, keepdims=True)) / (thumbs.std(1, keepdims=True) + 1e-6)
    desc = np.concatenate([thumbs / 4.0, feats / FEATURE_SCALE], 1)
    kind = (people[:, 0] >= 0.5).astype(int) * 10 + np.array([age_band(a) for a in people[:, 1]])
    order = np.random.default_rng(seed).permutation(len(textures))
    free = np.ones(len(textures), bool)
    groups = []
    for i in order:
        if not free[i]:
            continue
        free[i] = False
        d = np.linalg.norm(desc - desc[i], axis=1)
        d[~free | (kind != kind[i])] = np.inf
        mates = list(np.argsort(d)[: size - 1])
        if len(mates) < size - 1 or not np.all(np.isfinite(d[mates])):
            continue
        free[mates] = False
        groups.append([int(i), *map(int, mates)])
    return groups


@dataclass
class DonorChooser:
    """Keyed donor choice among the ``pool`` donors nearest a face in pose, expression and skin tone.

    ``random``: the key and the face's pixels decide (the same face under the same key gets the
    same donors; without a key a per-run secret, or ``seed``, stands in). ``consistent``: faces of
    one person (dlib descriptors within ``same_person``) rank donors by HMAC(key, person number),
    so a person keeps their donors under one key and the choice cannot be linked across keys.
    """

    bank: DonorBank
    policy: str = "random"
    key: bytes | None = field(default=None, repr=False)
    seed: int | None = None
    config: CompositeConfig = field(default_factory=CompositeConfig)
    same_person: float = 0.5
    _people: list[np.ndarray] = field(default_factory=list, repr=False)

    def __post_init__(self):
        if self.policy not in ("random", "consistent"):
            raise ValueError("policy must be 'random' or 'consistent'")
        if self.key is not None:
            self._secret = hmac.new(self.key, b"refacex/donor-choice/v2", hashlib.sha256).digest()
        elif self.seed is not None:
            self._secret = hashlib.sha256(b"refacex/donor-seed|%d" % self.seed).digest()
        else:
            import secrets

            self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._scaled = self.bank.choice_features() / FEATURE_SCALE
        # every choice's kind, once: mirrored choices are their donor's
        self._kinds = np.concatenate([self.bank.attributes, self.bank.attributes])
        self._bands = np.searchsorted(AGE_BANDS, self._kinds[:, 1], side="right") - 1

    def eligible(self, person: Attributes) -> tuple[np.ndarray, str | None]:
        """Which choices fit a face of ``person``'s kind: the same apparent gender and age band (a
        neighbouring band's donors within ``config.age_slack`` years where the band is thin, never
        for a child), skin lightness within ``config.lightness_slack`` where enough are that close.
        Returns the ``(2N,)`` bool mask and, when fewer than the chooser needs fit, why."""
        attrs = self._kinds
        same = (attrs[:, 0] >= 0.5) == (person.female >= 0.5)
        band = person.age_band
        fit = same & (self._bands == band)
        cfg = self.config
        if fit.sum() < cfg.pool and person.age >= cfg.child_age:
            fit = same & (np.abs(attrs[:, 1] - person.age) <= cfg.age_slack)
        close = fit & (np.abs(attrs[:, 2] - person.lightness) <= cfg.lightness_slack)
        if close.sum() >= cfg.pool:
            fit = close
        # a child gets no donor unless the bank holds a whole pool of children: a few adults the
        # estimator reads as young are no stand-in for a child's face. Adults puffing their
        # cheeks or in soft light read as 10-12, so only a clearly young face counts as a child.
        if fit.sum() < (cfg.pool if person.age < cfg.child_age else cfg.minimum_donors):
            return fit, f"no fitting donor ({person.gender}, age {AGE_BAND_NAMES[band]})"
        return fit, None

    def candidates(self, features: np.ndarray, person: Attributes | None = None) -> np.ndarray:
        """Indices (:meth:`DonorBank.choice`) of the ``pool`` fitting donors (:meth:`eligible`)
        nearest ``features (8,)`` and ``person``'s age and skin lightness, nearest first."""
        d = np.linalg.norm(self._scaled - features / FEATURE_SCALE, axis=1)
        if person is not None:
            attrs = self._kinds
            cfg = self.config
            d = np.hypot(d, np.hypot((attrs[:, 1] - person.age) / cfg.age_scale, (attrs[:, 2] - person.lightness) / cfg.lightness_scale))
            d[~self.eligible(person)[0]] = np.inf
        order = np.argsort(d)[: min(self.config.pool, len(d))]
        return order[np.isfinite(d[order])]

    def person(self, descriptor: np.ndarray) -> int:
        """The run's number for the person behind a dlib ``descriptor (128,)`` (new people get the next)."""
        with self._lock:
            if self._people:
                d = np.linalg.norm(np.stack(self._people) - descriptor, axis=1)
                if d.min() < self.same_person:
                    return int(d.argmin())
            self._people.append(np.asarray(descriptor, np.float32))
            return len(self._people) - 1

    def grain_seed(self, face_bytes: bytes) -> bytes:
        """8 bytes that seed a face's film grain: the key (or seed) and the face decide, as for donors."""
        return hmac.new(self._secret, b"grain|" + hashlib.sha256(face_bytes).digest(), hashlib.sha256).digest()[:8]

    def choose(
        self, features: np.ndarray, k: int, face_bytes: bytes = b"", person: int | None = None, attributes: Attributes | None = None
    ) -> np.ndarray:
        """``k`` donor indices for one face (of ``attributes``' kind when given).

        A keyed weighted draw without replacement from the pool (Efraimidis & Spirakis 2006: the
        ``k`` largest ``u ** (1 / w)``, ``u`` uniform from HMAC(key, face, donor)): every pool donor
        can be drawn, so the pool stays wide for privacy, but donors whose skin is far lighter or
        darker than the face's are rarely drawn (``w``: a Gaussian of ``config.skin_draw_spread`` L*)."""
        pool = self.candidates(features, attributes)
        salt = b"person|%d" % person if person is not None else b"face|" + hashlib.sha256(face_bytes).digest()
        u = np.array(
            [int.from_bytes(hmac.new(self._secret, salt + b"|%d" % int(i), hashlib.sha256).digest()[:8], "big") for i in pool], np.float64
        )
        u = (u + 1.0) / 2.0**64
        weight = np.ones(len(pool))
        if attributes is not None:
            lightness = self.bank.attributes[pool % len(self.bank), 2]
            weight = np.exp(-0.5 * ((lightness - attributes.lightness) / self.config.skin_draw_spread) ** 2) + 1e-6
        return pool[np.argsort(-np.log(u) / weight, kind="stable")[:k]]
