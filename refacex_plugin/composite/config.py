"""Every setting of the donor composite, each with the reason (or the measurement) behind its value.

Frozen and passed to what uses it (``CompositeAnonymiser(bank, replace(CompositeConfig(),
pool=24))``): an ablation is a config, not a code path (``research/composite_ablation.py``). What
a donor bank *is* - its texture size, the features donors are compared on, the screening limits
of ``build_bank`` - lives with the bank (:mod:`.bank`), since a bank file is built under them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompositeConfig:
    # --- the composite (docs/decisions/0001-donor-composite.md) ---
    #: Donors per face; with ``mix="parts"`` the eyes and brows, the mouth and chin, and the rest
    #: each come from one (a face whose parts come from different people looks like none of them).
    donors: int = 3
    mix: str = "parts"  # or "average"
    #: At strength 1, how far the inner features' identity layout moves toward the donors' (1: all
    #: the way; beyond, it overshoots away from the original). Capped at 1.5 whatever the strength.
    layout_push: float = 1.5
    layout_model: str = "identity"  # the pose/expression-free residual (:mod:`.shape`); "groups": :func:`~.anonymiser.push_layout`
    blend_levels: int = 4  # multi-band blend pyramid depth

    # --- choosing donors (docs/decisions/0012-donors-that-fit.md) ---
    #: Donors of the face's kind nearest it that the key draws among: same-kind look-alikes leak
    #: identity, and on 154 unseen LFW faces dlib (distance 0.6) matched 3.9 % of composites
    #: drawn from 12, 1.3 % from 48.
    pool: int = 48
    #: Fewer fitting donors than this, and the face gets the fallback mosaic.
    minimum_donors: int = 3
    #: Age (years) and skin lightness (L*) differences worth one unit of pose/expression distance
    #: when ranking donors (:data:`~.bank.FEATURE_SCALE`).
    age_scale: float = 8.0
    lightness_scale: float = 5.0
    #: Where a face's own age band has fewer donors than the pool, donors this many years from its
    #: estimated age also fit (the estimator's own spread between two photos of one person is ~8).
    age_slack: float = 8.0
    #: Donors within this many L* of the face's skin are the candidates whenever a pool of them exists.
    lightness_slack: float = 8.0
    #: How fast a candidate's chance of being drawn falls with its skin's distance from the face's (L*).
    skin_draw_spread: float = 8.0
    #: Faces estimated younger than this are children: they get donors only from a whole pool of
    #: children. Adults puffing their cheeks or in soft light read as 10-12.
    child_age: float = 10.0

    # --- when not to composite (:mod:`.fallback`) ---
    #: CenterFace's confidence below which a detection may be hair, a hand or a blurred background
    #: face (the issue's example fired at 0.58; of ~600 LFW subjects none scored below 0.7).
    min_score: float = 0.7
    #: Mean distance (eye distances) between the 68-point fit's eyes, nose tip and mouth corners and
    #: the detector's 5 points: at most 0.32 on the 3,306 LFW bank faces (99.9th percentile 0.26).
    max_fit_error: float = 0.35
    #: Donors have |yaw proxy| <= 0.35 (mirrored for the other side); further turned faces would get
    #: donor features stretched over a side they do not show.
    max_yaw: float = 0.42
    #: Mosaic blocks across the 256-px crop at strength 1 (about 6 across the face).
    fallback_blocks: int = 10

    # --- occluders (:mod:`.occluders`) ---
    #: Sunglasses: around both eyes the median lightness is below this fraction of the bare skin's,
    #: and inside the eyes even the brightest tenth is below ``sunglasses_eye_to_skin`` (bare eyes
    #: show their whites). On the 3,306 bank faces: 14 flagged, 12 of them dark lenses by eye;
    #: looser limits flag squints and shadowed eyes, which would then keep the original's eyes.
    sunglasses_ring_to_skin: float = 0.22
    sunglasses_eye_to_skin: float = 0.6
    #: Above these screening scores (:func:`~.bank.donor_quality`) a record says eyewear or a covered
    #: forehead was replaced: the bank's own screening limits plus a margin, so only clear cases.
    eyewear_note_score: float = 1.28
    forehead_note_score: float = 70.0

    # --- texture (:mod:`.blend`) ---
    #: Blurs (crop pixels) tried, in order, to bring a sharper composite down to a softer face's detail.
    soften_sigmas: tuple[float, ...] = (0.4, 0.6, 0.8, 1.1, 1.5, 2.0, 2.8, 4.0, 5.6)
