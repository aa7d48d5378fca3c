"""What an attacker holding our public code and weights, but not the key, can do
(``refacex bench attacks``): the run's settings and the orchestration of its attacks.

This module picks the attacked faces (people the attacker never trains on) and the gallery photos
that serve as an attacker's right guess, then runs each attack and gathers their rows in one
result. The attacks themselves live in two modules, one per thing attacked:

* :mod:`.payload_attacks`: the sealed payload and its binding to one face (tampering,
  transplanting a payload into another image).
* :mod:`.identity_attacks`: the identity in the anonymised face (keyless recovery, learned
  inversion, adversarial pull, donor linkage).

Identity match is the benchmark's: similarity of the face pasted back into the image vs the
original probe, at the recogniser's FAR threshold.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from .attack_config import QUICK, AttackConfig
from .identity_attacks import _anonymised_probes, adversarial_pull, donor_linkage, inversion_attack, keyless_recovery
from .payload_attacks import payload_attacks, transplant_attack


def measure_attacks(cfg_bench, split, orig, idx, recognizers, calib) -> dict:
    from ..anonymisers import get_anonymiser
    from .robustness import sample_files

    cfg = QUICK if cfg_bench.quick else AttackConfig()
    if cfg_bench.attack_steps is not None:
        cfg = replace(cfg, steps=cfg_bench.attack_steps)
    if cfg_bench.attack_faces is not None:
        cfg = replace(cfg, eval_faces=cfg_bench.attack_faces)
    progress = cfg_bench.progress
    result: dict = {"config": asdict(cfg)}
    result["payload"] = payload_attacks(cfg.trials, cfg_bench.seed)
    files = sample_files(split.probes or split.gallery, 2 * cfg.transplant_images, cfg_bench.seed)
    result["transplant"] = transplant_attack(files, cfg.transplant_images, cfg_bench.seed, progress)
    probes = attacked_faces(split, orig, idx, cfg.eval_faces)
    result["evaluated_faces"] = len(probes)
    result["methods"] = {}
    # The attacker's right guess for a PGD pull: the dlib embedding of the person's gallery photo.
    guesses = {i: orig.embedding["dlib"][j] for i, j in _same_person_pairs(split, orig, idx)} if "dlib" in orig.embedding else {}
    for method in cfg_bench.methods:
        entry: dict = {}
        faces = _anonymised_probes(method, probes, orig, cfg_bench.device, cfg_bench.seed)
        reversible = getattr(get_anonymiser(method), "reversible", False)
        width = 16
        if reversible:
            from ..zoo import manifest

            width = int(manifest().get("refacex-anonymiser", {}).get("width", 16))
            entry["keyless_recovery"] = keyless_recovery(faces, orig, recognizers, calib, cfg_bench.seed)
        # The larger inverter only where it matters (our method); blur and pixelate are the check
        # that the attack is real.
        widths = [width, 2 * width] if reversible else [width]
        entry["inversion"] = inversion_attack(
            method, faces, cfg_bench.data, orig, recognizers, calib, widths, cfg, cfg_bench.seed, progress
        )
        if any(i in guesses for i in faces.index):
            with_guess = faces.select([i in guesses for i in faces.index])
            entry["adversarial_pull"] = adversarial_pull(with_guess, orig, recognizers, calib, cfg, guesses)
            entry["adversarial_pull"]["faces"] = len(with_guess.index)
        result["methods"][method] = entry
    banks = [b for b in (getattr(get_anonymiser(m), "bank", None) for m in cfg_bench.methods) if b is not None]
    if banks and "dlib" in orig.embedding:
        result["donor_linkage"] = donor_linkage(orig, _same_person_pairs(split, orig, idx, cfg.linkage_people), banks[0])
    return result


def attacked_faces(split, orig, idx, n: int) -> list[int]:
    """Up to ``n`` image indices of people the attacker never trains on: probes of "val"
    identities (the attacker trains on "train" ones), then gallery images of "val" identities."""
    from ..training.data import identity_split

    probes = [idx[str(p)] for p, lab in zip(split.probes, split.probe_labels) if orig.ok[idx[str(p)]] and identity_split(lab) == "val"]
    if len(probes) < n:
        extra = [idx[str(p)] for p in split.gallery if orig.ok[idx[str(p)]] and identity_split(str(p).split("/")[-2]) == "val"]
        probes += [i for i in extra if i not in probes]
    return probes[:n]


def _same_person_pairs(split, orig, idx, n: int | None = None) -> list[tuple[int, int]]:
    """(probe, the same person's gallery photo) index pairs, both measured."""
    gal = {lab: idx[str(p)] for p, lab in zip(split.gallery, split.gallery_labels) if orig.ok[idx[str(p)]]}
    pairs = []
    for p, lab in zip(split.probes, split.probe_labels):
        i = idx[str(p)]
        if orig.ok[i] and lab in gal and gal[lab] != i:
            pairs.append((i, gal[lab]))
    return pairs[:n]
