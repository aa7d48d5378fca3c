"""Attributes: whether anonymisation keeps each face's apparent gender, age band and skin tone.

Each face is cut, at the ORIGINAL's five detector points, from the original and from every
method's output (the same aligned 256-px crop the donor bank is built from, so it is the same face
in both); its 68 points are found on each crop separately (as an observer would), and
:class:`~refacex_plugin.attributes.AttributeEstimator` measures both. The figures are grouped by
the original face's attributes (women, men, age bands, lighter / darker skin).

The judge is refacex's own: the same estimator picks refacex's donors by apparent gender, age and
skin tone, so refacex's figures are an upper bound (it was steered to please this very judge); an
independent estimator, or people, may disagree.

The summaries (:func:`group_masks`, :func:`kept_figures`, :func:`summarise`) are pure functions of
``(N, 4)`` arrays of :meth:`~refacex_plugin.attributes.Attributes.as_array` rows
``(female, age, lightness, ita)``; :func:`measure_attributes` does the measuring.
"""

from __future__ import annotations

import numpy as np

from ..attributes import AGE_BAND_NAMES, AGE_BANDS, DARKER_L

#: A face's cheek lightness "moved" when its L* changed by more than this.
LIGHTNESS_MOVED = 10.0
#: The report's groups, in order (of the ORIGINAL face).
GROUPS = ("all", "women", "men", *(f"age {n}" for n in AGE_BAND_NAMES), "lighter", "darker")
#: What the reference table compares each original with: its own mirror image, the same face to a
#: person, so whatever "changes" there is the estimator's own noise.
REFERENCE = "the original mirrored left-right (the same face to a person: the estimator's own noise)"


def age_bands(ages: np.ndarray) -> np.ndarray:
    """Index into :data:`~refacex_plugin.attributes.AGE_BANDS` of each age in years (vectorised
    :func:`~refacex_plugin.attributes.age_band`)."""
    return np.searchsorted(AGE_BANDS, np.asarray(ages, np.float64), side="right") - 1


def group_masks(orig: np.ndarray) -> dict[str, np.ndarray]:
    """``{group: (N,) bool}`` over :data:`GROUPS` from the originals' ``(N, 4)`` attributes. A face
    whose skin could not be measured (L* nan) is in neither skin group."""
    orig = np.asarray(orig, np.float64).reshape(-1, 4)
    female = orig[:, 0] >= 0.5
    bands = age_bands(orig[:, 1])
    lightness = orig[:, 2]
    out = {"all": np.ones(len(orig), bool), "women": female, "men": ~female}
    for k, name in enumerate(AGE_BAND_NAMES):
        out[f"age {name}"] = bands == k
    with np.errstate(invalid="ignore"):
        out["lighter"] = lightness >= DARKER_L
        out["darker"] = lightness < DARKER_L
    return out


def kept_figures(orig: np.ndarray, anon: np.ndarray, fallback: np.ndarray | None = None) -> dict:
    """How much of ``orig``'s apparent attributes ``anon`` keeps, face by face (row ``i`` of both is
    one face; ``fallback (N,) bool``: the method gave that face its fallback instead of its result).

    ``gender_kept`` and ``age_band_kept`` are shares of all ``faces``, a fallback face counting as
    not kept; ``age_error_years`` (mean absolute), ``lightness_moved`` (share with ``|ΔL*|`` >
    :data:`LIGHTNESS_MOVED`) and ``lightness_shift`` (mean signed ``ΔL*``, anonymised minus original)
    leave fallback faces out (``lightness_faces``: the faces they are over, those with skin measured
    on both sides). Rates and means are None over no face."""
    orig = np.asarray(orig, np.float64).reshape(-1, 4)
    anon = np.asarray(anon, np.float64).reshape(-1, 4)
    n = len(orig)
    fb = np.zeros(n, bool) if fallback is None else np.asarray(fallback, bool)
    measured = ~fb
    gender_same = (orig[:, 0] >= 0.5) == (anon[:, 0] >= 0.5)
    band_same = age_bands(orig[:, 1]) == age_bands(anon[:, 1])
    age_err = np.abs(anon[:, 1] - orig[:, 1])[measured]
    dl = (anon[:, 2] - orig[:, 2])[measured]
    dl = dl[np.isfinite(dl)]

    def rate(x: np.ndarray):
        return float(x.mean()) if len(x) else None

    return {
        "faces": int(n),
        "fallback_faces": int(fb.sum()),
        "gender_kept": rate(gender_same & measured),
        "age_band_kept": rate(band_same & measured),
        "age_error_years": rate(age_err),
        "lightness_faces": int(len(dl)),
        "lightness_moved": rate(np.abs(dl) > LIGHTNESS_MOVED),
        "lightness_shift": rate(dl),
    }


def summarise(orig: np.ndarray, anon: np.ndarray, fallback: np.ndarray | None = None) -> dict:
    """:func:`kept_figures` for every group of :data:`GROUPS` (groups of the ORIGINAL faces)."""
    orig = np.asarray(orig, np.float64).reshape(-1, 4)
    anon = np.asarray(anon, np.float64).reshape(-1, 4)
    fb = np.zeros(len(orig), bool) if fallback is None else np.asarray(fallback, bool)
    return {g: kept_figures(orig[m], anon[m], fb[m]) for g, m in group_masks(orig).items()}


def face_crop(rgb: np.ndarray, landmarks5: np.ndarray, align=None) -> np.ndarray:
    """The aligned crop ``(S, S, 3) uint8`` of ``rgb`` at one face's five points (as the donor bank
    cuts its faces: :func:`~refacex_plugin.composite.bank.collect_faces`)."""
    from ..geometry import AlignConfig, alignment_matrices, extract_crops

    align = align or AlignConfig()
    crop = extract_crops(rgb, alignment_matrices(np.asarray(landmarks5, np.float32)[None], align), align)[0]
    return np.round(crop.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


class _Judge:
    """Crops, meshes and measures faces: ``(rgb, landmarks5) -> (4,)`` attributes array; ``mirror``:
    of the crop's mirror image (the aligned crop's template is left-right symmetric)."""

    def __init__(self) -> None:
        from ..attributes import AttributeEstimator
        from ..composite.mesh import CropLandmarks

        self.estimator, self.marks = AttributeEstimator(), CropLandmarks()

    def __call__(self, rgb: np.ndarray, landmarks5: np.ndarray, mirror: bool = False) -> np.ndarray:
        crop = face_crop(rgb, landmarks5)
        if mirror:
            crop = np.ascontiguousarray(crop[:, ::-1])
        return self.estimator([(crop, self.marks(crop))])[0].as_array()


def measure_attributes(
    methods: list[str],
    files: list,
    detections,
    device: str = "cpu",
    seed: int = 0,
    strength: float = 1.0,
    progress: bool = True,
) -> tuple[dict, dict]:
    """Per method, :func:`summarise` of its outputs against the originals.

    Args:
        files: image paths; ``detections``: per file, its
            :class:`~refacex_plugin.detection.Detections` and the index of the face to judge.

    Returns ``(shared, per_method)``: ``shared`` has the originals' group sizes and the reference
    (each original against its mirror image: :data:`REFERENCE`); ``per_method[m]`` has ``faces``,
    ``fallback_faces`` and ``groups``.
    """
    from ..image_io import read_image
    from ..writer import make_writer
    from .progress import progress as _progress

    judge = _Judge()
    orig, ref = [], []
    for f, (det, c) in _progress(list(zip(files, detections)), "attributes originals", progress):
        rgb = read_image(f).rgb
        orig.append(judge(rgb, det.landmarks[c]))
        ref.append(judge(rgb, det.landmarks[c], mirror=True))
    orig_a = np.stack(orig) if orig else np.zeros((0, 4), np.float32)
    ref_a = np.stack(ref) if ref else np.zeros((0, 4), np.float32)
    shared = {
        "faces": len(orig),
        "original_groups": {g: int(m.sum()) for g, m in group_masks(orig_a).items()},
        "original_skin_unmeasured": int((~np.isfinite(orig_a[:, 2])).sum()),
        "reference": {"what": REFERENCE, "groups": summarise(orig_a, ref_a)},
    }
    per_method = {}
    for method in methods:
        writer = make_writer(method, device=device, donor_seed=seed, strength=strength)
        anon, fallback = [], []
        for f, (det, c) in _progress(list(zip(files, detections)), f"attributes {method}", progress):
            rgb = read_image(f).rgb
            result = writer.anonymise_image(rgb, det)
            fallback.append(bool(result.faces) and getattr(result.faces[c], "fallback", None) is not None)
            anon.append(judge(result.image, det.landmarks[c]))
        anon_a = np.stack(anon) if anon else np.zeros((0, 4), np.float32)
        fb = np.array(fallback, bool)
        per_method[method] = {"faces": len(anon), "fallback_faces": int(fb.sum()), "groups": summarise(orig_a, anon_a, fb)}
    return shared, per_method
