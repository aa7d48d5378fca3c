"""Runs the benchmark sections and assembles the result dictionary (schema: docs/benchmarks/SCHEMA.md)."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__, operators
from ..detection import DEFAULT_DETECTOR, load_detector
from ..geometry import alignment_matrices, warp_mask_to_image
from ..image_io import read_image
from ..landmarks import Landmarks68
from ..writer import make_writer
from . import metrics
from .dataset import make_split, read_pairs
from .originals import central_face, measure_originals
from .progress import progress as _progress
from .recognizers import load_recognizer

SCHEMA = "refacex-bench/1"
SECTIONS = ("privacy", "utility", "naturalness", "attributes", "recovery", "robustness", "speed", "attacks")


@dataclass
class BenchConfig:
    data: Path
    methods: list[str]
    sections: tuple[str, ...] = SECTIONS
    recognizers: list[str] = field(default_factory=lambda: ["dlib"])
    quick: bool = False
    seed: int = 0
    far: float = 1e-3
    probes_per_person: int = 1
    cache_dir: Path | None = None
    device: str = "cpu"
    speed_images: int | None = None
    watermarks: list[str] | None = None  # None = every available watermark (incl. the dct-qim baseline)
    robustness_faces: int | None = None  # None = robustness.FACES (10 quick / 500 full)
    payload: str = "vault-ref"  # robustness: what each face carries (vault-ref: version 3, what a keyed anonymise with a vault writes; recovery-code: version 2)
    recovery_faces: int | None = None  # None = 12 quick / 300 full
    false_detect_images: int | None = None  # None = robustness.FALSE_DETECT_IMAGES (20 quick / 10,000 full)
    attack_steps: int | None = None  # inverter training steps: None = 60 quick / 1,500 full
    attack_faces: int | None = None  # attacked faces: None = 40 quick / 300 full
    pairs_limit: int | None = None  # pairs.txt pairs to verify: None = 400 quick / all full; 0 = skip
    quick_identities: int = 120
    quick_distractors: int = 380
    progress: bool = True
    command: str = ""
    strength: float = 1.0  # the methods' privacy/utility dial
    naturalness_faces: int | None = None  # None = 300 quick / 1,500 full
    naturalness_steps: int | None = None  # training steps of each classifier (64 and 128 px): None = 300 quick / 1,200 full
    attribute_faces: int | None = None  # attributes: images sampled: None = 300 quick / 1,500 full


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def calibrate(recognizer, orig, idx, split, far: float) -> dict:
    """Decision threshold at ``far`` over different-person pairs of original gallery images, with
    the true-accept rate it gives on same-person (probe, gallery) original pairs."""
    g = [idx[str(p)] for p in split.gallery]
    g = [i for i in g if orig.ok[i]]
    labels = np.array([orig.paths[i].split("/")[-2] for i in g])
    emb = orig.embedding[recognizer.name][g]
    imp = metrics.impostor_scores(emb, labels, recognizer.metric)
    thr = metrics.threshold_at_far(imp, far)
    gal = {lab: i for lab, i in zip(labels, g)}
    pairs = [(idx[str(p)], gal[lab]) for p, lab in zip(split.probes, split.probe_labels) if lab in gal and orig.ok[idx[str(p)]]]
    gen = (
        metrics.paired_similarity(
            orig.embedding[recognizer.name][[a for a, _ in pairs]],
            orig.embedding[recognizer.name][[b for _, b in pairs]],
            recognizer.metric,
        )
        if pairs
        else np.zeros(0)
    )
    return {
        "metric": recognizer.metric,
        "far": far,
        "threshold": thr,
        "impostor_pairs": int(len(imp)),
        "observed_far": float((imp >= thr).mean()) if len(imp) else None,
        "genuine_pairs": int(len(gen)),
        "tar": float((gen >= thr).mean()) if len(gen) else None,
    }


def pairs_accuracy(recognizers, detector, data: Path, orig=None, limit: int | None = None) -> dict:
    """Best-threshold verification accuracy of each recogniser on the folder's ``pairs.txt`` (LFW
    View 2). Embeddings already measured in ``orig`` are reused. Returns ``{name: {...} | None}``."""
    if not (data / "pairs.txt").is_file():
        return {r.name: None for r in recognizers}
    from .originals import central_face

    pairs = read_pairs(data)
    if limit:
        pairs = _balanced(pairs, limit)
    known = orig.index() if orig is not None else {}
    cache: dict[Path, dict | None] = {}

    def emb(p: Path):
        if p not in cache:
            i = known.get(str(p))
            if i is not None:
                cache[p] = {r.name: orig.embedding[r.name][i] for r in recognizers} if orig.ok[i] else None
            else:
                rgb = read_image(p).rgb
                det = detector(rgb)
                c = central_face(det, *rgb.shape[:2])
                cache[p] = (
                    None if c is None else {r.name: r.embed(rgb, [r.geometry(rgb, det.boxes[c], det.landmarks[c])])[0] for r in recognizers}
                )
        return cache[p]

    scores = {r.name: [] for r in recognizers}
    same = []
    for a, b, s in pairs:
        if not (a.is_file() and b.is_file()):
            continue
        ea, eb = emb(a), emb(b)
        if ea is None or eb is None:
            continue
        for r in recognizers:
            scores[r.name].append(float(metrics.paired_similarity(ea[r.name][None], eb[r.name][None], r.metric)[0]))
        same.append(s)
    out = {}
    for r in recognizers:
        acc, thr = metrics.best_threshold_accuracy(np.array(scores[r.name]), np.array(same))
        out[r.name] = {"pairs": len(same), "accuracy": acc, "best_threshold": thr}
    return out


def _balanced(pairs, limit):
    pos = [p for p in pairs if p[2]][: limit // 2]
    neg = [p for p in pairs if not p[2]][: limit - limit // 2]
    return pos + neg


def evaluate_method(method: str, cfg: BenchConfig, split, orig, idx, recognizers, calib) -> dict:
    """Privacy and utility of one method over the probes (``method='none'``: the originals)."""
    detector = load_detector(DEFAULT_DETECTOR)
    lm68 = Landmarks68()
    writer = make_writer(method, device=cfg.device, donor_seed=cfg.seed, strength=cfg.strength) if method != "none" else None
    probes = [(idx[str(p)], lab) for p, lab in zip(split.probes, split.probe_labels) if orig.ok[idx[str(p)]]]
    anon_emb = {r.name: [] for r in recognizers}
    donor_ids: list[str | None] = []
    retained, nmes, nmes5, pose_d, bg_psnr, bg_ssim, face_psnr = [], [], [], [], [], [], []
    for i, _ in _progress(probes, f"privacy/utility {method}", cfg.progress):
        rgb = read_image(orig.paths[i]).rgb
        if writer is None:
            out = rgb
        else:
            result = writer.anonymise_image(rgb, orig.detections(i))
            out = result.image
            central = central_face(orig.detections(i), *rgb.shape[:2])
            donor_ids.append(result.faces[central].donor_id if central is not None and result.faces else None)
        for r in recognizers:
            anon_emb[r.name].append(r.embed(out, [orig.geometry[r.name][i]])[0])
        if writer is None or "utility" not in cfg.sections:
            continue
        det = detector(out)
        overlaps = [metrics.box_iou(b, orig.box[i]) for b in det.boxes]
        retained.append(any(o >= 0.5 for o in overlaps))
        dets = orig.detections(i)
        central = central_face(dets, *rgb.shape[:2])
        if retained[-1] and central is not None:  # the detector's own 5 points, found again on the new face
            nmes5.append(metrics.nme5(det.landmarks[int(np.argmax(overlaps))], dets.landmarks[central]))
        p68 = lm68(out, orig.box[i])
        nmes.append(metrics.nme(p68, orig.pts68[i]))
        pose_d.append(metrics.angle_diff(metrics.head_pose(p68, out.shape[:2]), orig.pose[i]))
        mask = warp_mask_to_image(alignment_matrices(dets.landmarks, writer.align), writer.align, *rgb.shape[:2])
        bg = (mask == 0).astype(np.uint8)
        bg_psnr.append(metrics.psnr(out, rgb, bg))
        bg_ssim.append(metrics.ssim(out, rgb, bg))
        face_psnr.append(metrics.psnr(out, rgb, (mask > 0.5).astype(np.uint8)))

    res: dict = {"probes": len(probes)}
    if "privacy" in cfg.sections:
        priv = {}
        g_idx = [idx[str(p)] for p in split.gallery]
        g_ok = [j for j in g_idx if orig.ok[j]]
        g_labels = np.array([orig.paths[j].split("/")[-2] for j in g_ok])
        p_labels = np.array([lab for _, lab in probes])
        for r in recognizers:
            a = np.asarray(anon_emb[r.name], np.float32)
            o = orig.embedding[r.name][[i for i, _ in probes]]
            sim = metrics.paired_similarity(a, o, r.metric)
            ranks = metrics.rank_k(a, orig.embedding[r.name][g_ok], p_labels, g_labels, (1, 5), r.metric)
            priv[r.name] = {
                "mean_similarity": float(sim.mean()),
                "match_rate": float((sim >= calib[r.name]["threshold"]).mean()),
                "rank1": ranks[1],
                "rank5": ranks[5],
                "gallery_identities": int(len(g_ok)),
                "donor_match_rate": None,  # baselines use no donor
            }
        bank = getattr(writer.anonymiser, "bank", None) if writer is not None else None
        if bank is not None and hasattr(bank, "sources") and any(donor_ids):
            from .donors import donor_match_rates

            rates = donor_match_rates(
                {r.name: np.asarray(anon_emb[r.name], np.float32) for r in recognizers},
                donor_ids,
                bank,
                cfg.data,
                recognizers,
                calib,
                detector,
            )
            for name, rate in rates.items():
                priv[name]["donor_match_rate"] = rate
        res["privacy"] = priv
    if "utility" in cfg.sections and writer is not None:
        pose_arr = np.array(pose_d)
        res["utility"] = {
            "detection_retention": float(np.mean(retained)),
            "landmark_nme": float(np.mean(nmes)),
            "landmark_nme_median": float(np.median(nmes)),
            "detector_nme5": float(np.mean(nmes5)) if nmes5 else None,
            "head_pose_diff_deg": float(np.nanmean(pose_arr)),
            "yaw_pitch_roll_diff_deg": [float(v) for v in np.nanmean(pose_arr, axis=0)],
            "background_psnr_db": float(np.mean(bg_psnr)),
            "background_ssim": float(np.mean(bg_ssim)),
            "face_psnr_db": float(np.mean(face_psnr)),
        }
    return res


def run(cfg: BenchConfig) -> dict:
    started = dt.datetime.now(dt.timezone.utc)
    split = make_split(cfg.data, cfg.seed, cfg.quick, cfg.probes_per_person, cfg.quick_identities, cfg.quick_distractors)
    detector = load_detector(DEFAULT_DETECTOR)
    recognizers = [load_recognizer(s) for s in cfg.recognizers]
    result: dict = {
        "schema": SCHEMA,
        "refacex_version": __version__,
        "git_commit": git_commit(),
        "created": started.isoformat(timespec="seconds"),
        "command": cfg.command,
        "mode": "quick" if cfg.quick else "full",
        "seed": cfg.seed,
        "device": cfg.device,
        "sections": list(cfg.sections),
        "data": {
            "path": str(cfg.data),
            "gallery_images": len(split.gallery),
            "gallery_identities": len(set(split.gallery_labels)),
            "probe_images": len(split.probes),
            "probe_identities": len(set(split.probe_labels)),
            "probes_per_person": cfg.probes_per_person if not cfg.quick else 1,
        },
        "detector": DEFAULT_DETECTOR,
        "recognizers": {},
        "methods": {},
    }
    need_faces = bool({"privacy", "utility", "naturalness", "recovery", "attacks"} & set(cfg.sections))
    if need_faces:
        orig = measure_originals(split.images, detector, recognizers, cfg.cache_dir, cfg.progress)
        idx = orig.index()
        result["data"]["images_without_central_face"] = int((~orig.ok).sum())
        calib = {r.name: calibrate(r, orig, idx, split, cfg.far) for r in recognizers}
        limit = (400 if cfg.quick else None) if cfg.pairs_limit is None else cfg.pairs_limit
        if limit != 0:
            for name, acc in pairs_accuracy(recognizers, detector, cfg.data, orig, limit).items():
                calib[name]["pairs_txt"] = acc
        result["recognizers"] = calib
        if {"privacy", "utility"} & set(cfg.sections):
            result["reference"] = evaluate_method("none", cfg, split, orig, idx, recognizers, calib)
            for m in cfg.methods:
                result["methods"].setdefault(m, {}).update(evaluate_method(m, cfg, split, orig, idx, recognizers, calib))
    if "naturalness" in cfg.sections:
        result["naturalness"] = measure_naturalness_section(cfg, split, orig, idx)
    if "attributes" in cfg.sections:
        shared, per_method = measure_attributes_section(cfg, split, orig if need_faces else None, detector)
        result["attributes"] = shared
        for m, a in per_method.items():
            result["methods"].setdefault(m, {})["attributes"] = a
    for m in cfg.methods:
        if "recovery" in cfg.sections:
            result["methods"].setdefault(m, {})["recovery"] = measure_recovery(m, cfg, split, orig, idx, recognizers, calib)
    if "robustness" in cfg.sections:
        result["watermarks"] = measure_robustness(cfg, split)
    if "attacks" in cfg.sections:
        from .attacks import measure_attacks

        result["attacks"] = measure_attacks(cfg, split, orig, idx, recognizers, calib)
    if "speed" in cfg.sections:
        from .speed import measure_speed

        speed = measure_speed(cfg, split)
        for m, s in speed.items():
            result["methods"].setdefault(m, {})["speed"] = s
    result["elapsed_s"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1)
    return result


def measure_naturalness_section(cfg: BenchConfig, split, orig, idx) -> dict:
    """The real-or-anonymised classifiers' test accuracy per method, at 64 and 128 px (:mod:`.naturalness`)."""
    import random

    from .naturalness import measure_naturalness

    n = cfg.naturalness_faces or (300 if cfg.quick else 1500)
    steps = cfg.naturalness_steps or (300 if cfg.quick else 1200)
    pool = [idx[str(p)] for p in [*split.gallery, *split.probes] if orig.ok[idx[str(p)]]]
    chosen = sorted(random.Random(cfg.seed).sample(pool, min(n, len(pool))))
    files = [orig.paths[i] for i in chosen]
    labels = [orig.paths[i].split("/")[-2] for i in chosen]
    dets = []
    for i, path in zip(chosen, files):
        det = orig.detections(i)
        h, w = read_image(path).rgb.shape[:2]
        dets.append((det, central_face(det, h, w)))
    return measure_naturalness(cfg.methods, files, labels, dets, cfg.device, cfg.seed, steps, cfg.progress)


def measure_attributes_section(cfg: BenchConfig, split, orig=None, detector=None) -> tuple[dict, dict]:
    """Apparent gender, age band and skin tone kept per method (:mod:`.attributes`), on the central
    face of a seeded sample of the split's images: the originals' detections when measured (the
    same faces as the utility section), else detected here (same detector, same face)."""
    import random

    from .attributes import measure_attributes

    n = cfg.attribute_faces or (300 if cfg.quick else 1500)
    pool = split.images
    chosen = sorted(random.Random(cfg.seed).sample(range(len(pool)), min(n, len(pool))))
    idx = orig.index() if orig is not None else {}
    files, dets = [], []
    for k in chosen:
        path = pool[k]
        rgb = read_image(path).rgb
        i = idx.get(str(path))
        det = orig.detections(i) if i is not None else (detector or load_detector(DEFAULT_DETECTOR))(rgb)
        c = central_face(det, *rgb.shape[:2])
        if c is not None:
            files.append(path)
            dets.append((det, c))
    shared, per_method = measure_attributes(cfg.methods, files, dets, cfg.device, cfg.seed, cfg.strength, cfg.progress)
    shared["images_sampled"] = len(chosen)
    shared["images_without_central_face"] = len(chosen) - len(files)
    return shared, per_method


def measure_recovery(method: str, cfg: BenchConfig, split, orig, idx, recognizers, calib) -> dict:
    from ..anonymisers import get_anonymiser
    from .recovery import evaluate_recovery

    if not get_anonymiser(method).reversible:
        return {"available": False, "reason": f"{method} is irreversible (no recovery code)"}
    if not operators.recovery_available():
        return {"available": False, "reason": "recovery network not available in this version"}
    n = cfg.recovery_faces or (12 if cfg.quick else 300)
    probes = [idx[str(p)] for p in split.probes if orig.ok[idx[str(p)]]][:n]
    return evaluate_recovery(method, probes, orig, recognizers, calib, cfg.device, cfg.progress, cfg.seed)


def measure_robustness(cfg: BenchConfig, split) -> dict:
    """Every watermark on the same faces: hosts anonymised by the default method, the faces users mark."""
    from ..anonymisers import default_method
    from ..watermark import available_watermarks, load_watermark
    from .robustness import FACES, FALSE_DETECT_IMAGES, evaluate_watermark, sample_files

    # a quick run measures what a keyed anonymise writes: the default watermark
    names = cfg.watermarks or ([load_watermark().name] if cfg.quick else available_watermarks())
    host = default_method()
    n = cfg.robustness_faces or FACES[cfg.quick]
    nf = cfg.false_detect_images if cfg.false_detect_images is not None else FALSE_DETECT_IMAGES[cfg.quick]
    files = sample_files(split.probes or split.gallery, n, cfg.seed)
    pool = (
        sorted(set(split.gallery) | set(split.probes)) if nf <= len(split.gallery) + len(split.probes) else sorted(cfg.data.glob("*/*.jpg"))
    )
    fd_files = sample_files(pool, nf, cfg.seed + 1)
    return {name: evaluate_watermark(name, files, host, cfg.seed, fd_files, cfg.progress, cfg.payload) for name in names}
