"""Attacks on the identity in the anonymised face, by an attacker holding our public code and
weights but not the key (the per-method rows and ``donor_linkage`` of ``refacex bench attacks``,
run by :mod:`.attacks`).

* :func:`keyless_recovery`: our recovery network with random, all-zero and all-one codes, and with
  codes read without authentication (the ciphertext bits where the code would be).
* :func:`inversion_attack`: (anonymised, original) pairs made with the public pipeline on
  identities disjoint from the evaluated probes train an inversion network of the recovery
  network's capacity and of twice its width (L1 in the face mask + an identity loss toward the
  original through our dlib port - the strongest loss an attacker has); identity match of its
  outputs on the probes. A recogniser's matches of an attacker trained against that very
  recogniser are partly its blind spots (the context alone, the face flat, gave 15.3 % dlib and
  1.3 % MobileFaceNet matches through a dlib-trained inverter), so with the evaluation judge at
  hand (:mod:`.onnx_torch`) a second attacker of R's capacity trains its identity loss through the
  judge: each recogniser then also judges an attacker that never saw it. Blur and pixelate get the
  same attack as a check that it is real.
* :func:`adversarial_pull`: PGD on the anonymised face against the dlib model (a) toward the
  person's own gallery photo (the attacker guessed right) and (b) toward the donor; how often the
  result matches the original under the *other* recogniser (and under dlib), per L-inf budget.
* :func:`donor_linkage`: with the ``consistent`` policy, how often one person gets the same donor
  under two different keys (should be chance, 1/bank size) and under the same key (by design,
  almost always).

They share the probe faces (:class:`_Faces`), the way an attack's crops go back into the image
(:func:`_apply_to_faces`) and the identity match of the result (:func:`_match`): the benchmark's,
similarity of the face pasted back into the image vs the original probe, at the recogniser's FAR
threshold.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import payload
from ..generator.networks import RES, RecoveryNet
from ..geometry import AlignConfig, alignment_matrices, extract_crops, face_mask, paste_crops, pool_to
from ..image_io import read_image
from ..keys import generate_key
from . import metrics
from .attack_config import AttackConfig


@functools.lru_cache(maxsize=1)
def _frozen_identity_model():
    """The dlib-port identity model, eval mode, parameters frozen (inputs still take gradients)."""
    from ..identity import IdentityModel

    idm = IdentityModel().eval()
    for p in idm.parameters():
        p.requires_grad_(False)
    return idm


# ---------------------------------------------------------------------------------- face helpers


@dataclass
class _Faces:
    """Probe faces of the benchmark: originals, their anonymisation (public pipeline, no key),
    the frames they were anonymised in and, for donor-driven methods, the donors used."""

    index: list[int]
    original: list[np.ndarray]
    anonymised: list[np.ndarray]
    landmarks: list[np.ndarray]
    donors: list[torch.Tensor | None]

    def select(self, keep: list[bool]) -> _Faces:
        cols = (self.index, self.original, self.anonymised, self.landmarks, self.donors)
        return _Faces(*([x for x, k in zip(col, keep) if k] for col in cols))


class _RecordingDonors:
    """Wraps the generator's donor assigner and keeps the last donor vectors it handed out."""

    def __init__(self, inner):
        self.inner, self.policy, self.last = inner, inner.policy, None

    def vectors(self, identities):
        self.last = self.inner.vectors(identities)
        return self.last


def _anonymised_probes(method: str, probes: list[int], orig, device="cpu", seed: int = 0) -> _Faces:
    from ..writer import make_writer

    writer = make_writer(method, device=device, donor_seed=seed)
    recorder = None
    if hasattr(writer.anonymiser, "assigner"):  # the generator draws donor vectors: the attack sees them
        recorder = writer.anonymiser.assigner = _RecordingDonors(writer.anonymiser.assigner)
    faces = _Faces([], [], [], [], [])
    for i in probes:
        rgb = read_image(orig.paths[i]).rgb
        res = writer.anonymise_image(rgb, orig.detections(i))
        if not res.faces:
            continue
        faces.index.append(i)
        faces.original.append(rgb)
        faces.anonymised.append(res.image)
        faces.landmarks.append(np.asarray([f.landmarks for f in res.faces], np.float32))
        faces.donors.append(recorder.last.float() if recorder is not None else None)
    return faces


def _identity_of(path: str) -> str:
    return Path(path).parent.name  # <Name>/<Name>_NNNN.jpg


def _match(images: list[np.ndarray], faces: _Faces, orig, recognizers, calib) -> dict:
    """Identity of ``images`` (one per probe) against the original probes.

    Per recogniser: ``match_rate``, how often an image matches its own original at the calibrated
    threshold (the issues' bar); ``mean_similarity``; and ``rank1_originals``, how often the most
    similar of *every* measured original photo (the probe's own included: the attacker's database
    holds it) belongs to the probe's person - re-identification, which a recogniser steered to
    agree with one photo need not give (``originals_searched``: the database's size)."""
    out = {}
    db = np.flatnonzero(orig.ok)
    db_labels = np.array([_identity_of(orig.paths[i]) for i in db])
    own = np.array([_identity_of(orig.paths[i]) for i in faces.index])
    for r in recognizers:
        emb = np.stack([r.embed(im, [orig.geometry[r.name][i]])[0] for im, i in zip(images, faces.index)])
        sim = metrics.paired_similarity(emb, orig.embedding[r.name][faces.index], r.metric)
        rank1 = metrics.rank_k(emb, orig.embedding[r.name][db], own, db_labels, ks=(1,), metric=r.metric)[1]
        out[r.name] = {
            "match_rate": float((sim >= calib[r.name]["threshold"]).mean()),
            "mean_similarity": float(sim.mean()),
            "rank1_originals": rank1,
            "originals_searched": int(len(db)),
        }
    return out


def _apply_to_faces(faces: _Faces, fn, align: AlignConfig = AlignConfig(), batch: int = 16) -> list[np.ndarray]:
    """Replace the anonymised images' face crops by ``fn(crops (B, 3, S, S), owners)``, run on
    batches of faces across images, and paste them back; ``owners``: per crop, ``(probe number,
    face number in its image)``."""
    mats = [alignment_matrices(lm, align) for lm in faces.landmarks]
    crops = [extract_crops(im, m, align) for im, m in zip(faces.anonymised, mats)]
    owners = [(k, j) for k, c in enumerate(crops) for j in range(len(c))]
    flat = torch.cat(crops)
    new = torch.cat([fn(flat[i : i + batch], owners[i : i + batch]) for i in range(0, len(flat), batch)])
    mask = face_mask(align)
    out, start = [], 0
    for im, m, c in zip(faces.anonymised, mats, crops):
        out.append(paste_crops(im, new[start : start + len(c)].clamp(0, 1), m, align, mask.expand(len(c), -1, -1, -1)))
        start += len(c)
    return out


# ------------------------------------------------------------------------------------- keyless


def keyless_recovery(faces: _Faces, orig, recognizers, calib, seed: int = 0) -> dict:
    """The public recovery network on anonymised faces with codes an attacker can make."""
    from .. import operators

    g = np.random.default_rng(seed)
    key = generate_key()
    align = AlignConfig()
    true = [operators.codes(extract_crops(o, alignment_matrices(lm, align), align)) for o, lm in zip(faces.original, faces.landmarks)]

    def unauthenticated(code: np.ndarray) -> np.ndarray:
        # What the channel gives without the key: BCH-decode (public) and take the ciphertext
        # bits where the code sits in the plaintext.
        return payload.ECC.decode_hard(payload.seal(code, key, payload.KIND_RECOVERY_CODE))[0][-payload.CODE_BITS :]

    rows = {
        "true_code (with the key, for reference)": lambda k, j: true[k][j],
        "random_code": lambda k, j: g.integers(0, 2, payload.CODE_BITS),
        "all_zero_code": lambda k, j: np.zeros(payload.CODE_BITS, np.uint8),
        "all_one_code": lambda k, j: np.ones(payload.CODE_BITS, np.uint8),
        "unauthenticated_bits": lambda k, j: unauthenticated(true[k][j]),
    }
    out = {}
    for name, code_of in rows.items():

        def fn(crops, owners, code_of=code_of):
            with torch.inference_mode():
                return operators.recover(crops, np.stack([code_of(k, j) for k, j in owners]))

        out[name] = {"identity": _match(_apply_to_faces(faces, fn, align), faces, orig, recognizers, calib)}
    return out


# ----------------------------------------------------------------------------------- inversion


def _training_pairs(method: str, data, n: int, seed: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(anonymised, original)`` ``(n, 3, RES, RES)`` float crops of the "train" identities
    (:func:`~refacex_plugin.training.data.identity_split`; the attacked probes are "val" ones)."""
    from ..anonymisers import get_anonymiser
    from ..generator.donors import DonorAssigner
    from ..generator.networks import blend
    from ..operators import anonymise
    from ..training.data import prepare_crops

    crops = prepare_crops(data, "train", n, AlignConfig().size, seed, progress=progress)  # uint8, 256 px
    # Anonymisers may change the whole crop (blur does); the pipeline keeps what lies under the face
    # mask, and the attacked crops come from its output: train on crops made the same way.
    mask = face_mask(AlignConfig())
    anonymiser = get_anonymiser(method)
    composite = anonymiser.with_donors(seed=seed) if hasattr(anonymiser, "with_donors") else None  # seeded: a run repeats
    bank = getattr(anonymiser, "bank", None) if composite is None else None
    donors = DonorAssigner(bank, "random", None, seed=seed) if bank is not None else None
    anon, orig = [], []
    for i in range(0, len(crops), 32):
        x = crops[i : i + 32].float() / 255
        d = donors.vectors(np.zeros((len(x), 128), np.float32)) if donors is not None else None
        with torch.inference_mode():
            y = blend(x, composite(x) if composite is not None else anonymise(x, d, method), mask)
        anon.append(pool_to(y, RES))
        orig.append(pool_to(x, RES))
    return torch.cat(anon), torch.cat(orig)


def identity_losses(recognizers) -> dict:
    """The differentiable recognisers an attacker's identity loss can go through, by the name of the
    recogniser that judges it: our dlib port, and each ArcFace-style ONNX recogniser of the run
    (:class:`.onnx_torch.ArcFaceCropEmbedder`), frozen."""
    from .onnx_torch import ArcFaceCropEmbedder
    from .recognizers import OnnxRecognizer

    out = {"dlib": _frozen_identity_model()}
    for r in recognizers:
        if isinstance(r, OnnxRecognizer):
            m = ArcFaceCropEmbedder(r.path, mean=tuple(r.mean / 255), std=tuple(r.std / 255)).eval()
            for p in m.parameters():
                p.requires_grad_(False)
            out[r.name] = m
    return out


def train_inverter(
    anon: torch.Tensor,
    orig: torch.Tensor,
    width: int,
    cfg: AttackConfig,
    seed: int = 0,
    progress: bool = True,
    idm: torch.nn.Module | None = None,
) -> tuple[RecoveryNet, dict]:
    """An inversion network (the recovery network's architecture, its code input held at zero),
    its identity loss through ``idm`` (default: the dlib port): ``(B, 3, RES, RES) -> (B, D)``."""
    torch.manual_seed(seed)
    net = RecoveryNet(payload.CODE_BITS, width)
    idm = idm if idm is not None else _frozen_identity_model()
    mask = face_mask(AlignConfig(size=RES))
    zeros = torch.zeros(cfg.batch, payload.CODE_BITS)
    with torch.no_grad():
        target = torch.cat([idm(orig[i : i + 64]) for i in range(0, len(orig), 64)])
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    loss_log = []
    for step in tqdm(range(cfg.steps), desc=f"inverter w{width}", disable=not progress, file=sys.stderr):
        idx = torch.randint(0, len(anon), (cfg.batch,), generator=g)
        y, x = anon[idx], orig[idx]
        m = mask.expand(len(y), -1, -1, -1)
        out = net(y, zeros[: len(y)], m)
        l1 = ((out - x).abs() * m).mean() / m.mean()
        logged = step % max(cfg.steps // 10, 1) == 0 or step == cfg.steps - 1
        if cfg.id_weight:
            lid = (idm(out) - target[idx]).norm(dim=1).mean()
            loss = l1 + cfg.id_weight * lid
        else:  # pixels only: the identity distance is only logged
            loss = l1
            if logged:
                with torch.no_grad():
                    lid = (idm(out) - target[idx]).norm(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if logged:
            loss_log.append({"step": step, "l1": round(l1.item(), 4), "id_distance": round(lid.item(), 4)})
    net.eval()
    return net, {"width": width, "steps": cfg.steps, "train_faces": len(anon), "train_s": round(time.time() - t0, 1), "log": loss_log}


def inversion_attack(
    method: str, faces: _Faces, data, orig, recognizers, calib, widths: list[int], cfg: AttackConfig, seed: int = 0, progress: bool = True
) -> dict:
    """Inverters of each width in ``widths`` trained through the dlib port (rows ``width_W``), one of
    the first width through each other differentiable recogniser (``width_W_vs_NAME``), and one of
    the first width on the pixel loss alone (``width_W_pixels_only``: the textbook inversion, no
    recogniser to steer)."""
    anon, original = _training_pairs(method, data, cfg.train_images, seed, progress)
    mask = face_mask(AlignConfig(size=RES))
    losses = identity_losses(recognizers)
    attackers = (
        [(f"width_{w}", w, "dlib") for w in widths]
        + [(f"width_{widths[0]}_vs_{n}", widths[0], n) for n in losses if n != "dlib"]
        + [(f"width_{widths[0]}_pixels_only", widths[0], None)]
    )
    out = {}
    for row, w, loss in attackers:
        net, info = train_inverter(
            anon, original, w, cfg if loss else replace(cfg, id_weight=0.0), seed, progress, idm=losses[loss or "dlib"]
        )
        info["identity_loss"] = loss or "none"

        def fn(crops, owners, net=net):
            small = pool_to(crops, RES)
            with torch.inference_mode():
                rec = net(small, torch.zeros(len(small), payload.CODE_BITS), mask.expand(len(small), -1, -1, -1))
            return (crops + F.interpolate(rec - small, size=crops.shape[-2:], mode="bilinear", align_corners=False)).clamp(0, 1)

        out[row] = {**info, "identity": _match(_apply_to_faces(faces, fn), faces, orig, recognizers, calib)}
    out["anonymised_without_attack"] = {"identity": _match(faces.anonymised, faces, orig, recognizers, calib)}
    return out


# ---------------------------------------------------------------------------- adversarial pull


def adversarial_pull(faces: _Faces, orig, recognizers, calib, cfg: AttackConfig, guesses: dict[int, np.ndarray]) -> dict:
    """PGD (L-inf) on the anonymised face crop, minimising the dlib-model distance to a target."""
    idm = _frozen_identity_model()
    align = AlignConfig()
    mask = face_mask(align)
    out = {}
    # (a) the dlib embedding of another photo of the same person (the attacker's right guess
    # from a gallery; ``guesses`` maps probe index -> embedding); (b) the donor.
    targets = {"toward_true_identity": lambda k, j: torch.as_tensor(guesses[faces.index[k]]).float()}
    if all(d is not None for d in faces.donors):
        targets["toward_donor"] = lambda k, j: faces.donors[k][j]
    for tname, target_of in targets.items():
        for eps in cfg.budgets:
            psnrs = []

            def fn(crops, owners, eps=eps, target_of=target_of, psnrs=psnrs):
                t = torch.stack([target_of(k, j) for k, j in owners])
                m = mask.expand(len(crops), 3, -1, -1)
                delta = torch.zeros_like(crops, requires_grad=True)
                step = 2.5 * eps / cfg.pgd_steps
                for _ in range(cfg.pgd_steps):
                    loss = (idm((crops + delta * m).clamp(0, 1)) - t).norm(dim=1).sum()
                    (grad,) = torch.autograd.grad(loss, delta)
                    with torch.no_grad():
                        delta -= step * grad.sign()
                        delta.clamp_(-eps, eps)
                adv = (crops + delta.detach() * m).clamp(0, 1)
                psnrs.extend((10 * torch.log10(1 / F.mse_loss(adv, crops, reduction="none").mean((1, 2, 3)).clamp_min(1e-10))).tolist())
                return adv

            images = _apply_to_faces(faces, fn, align)
            out[f"{tname}@{round(eps * 255)}/255"] = {
                "linf": eps,
                "crop_psnr_db": float(np.mean(psnrs)),
                "identity": _match(images, faces, orig, recognizers, calib),
            }
    return out


# ------------------------------------------------------------------------------- donor linkage


def donor_linkage(orig, pairs: list[tuple[int, int]], bank) -> dict:
    """``pairs``: (image, another image of the same person) indices into ``orig``."""
    from ..generator.donors import DonorAssigner

    a = np.stack([orig.embedding["dlib"][i] for i, _ in pairs])
    b = np.stack([orig.embedding["dlib"][j] for _, j in pairs])
    k1, k2 = generate_key(), generate_key()
    s1 = DonorAssigner(bank, "consistent", k1)
    d1a, d1b = s1.assign(a), s1.assign(b)
    d2a = DonorAssigner(bank, "consistent", k2).assign(a)
    return {
        "people": len(pairs),
        "bank_size": len(bank),
        "same_donor_same_key_other_photo": float((d1a == d1b).mean()),
        "same_donor_across_keys": float((d1a == d2a).mean()),
        "chance": 1.0 / len(bank),
    }
