"""The attack suite's settings (``refacex bench attacks``): full and quick sizes, shared by the
orchestration (:mod:`.attacks`) and the attacks themselves (:mod:`.identity_attacks`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AttackConfig:
    trials: int = 1000  # payload attack trials per case
    transplant_images: int = 100
    train_images: int = 3000  # attacker's (anonymised, original) training faces
    steps: int = 1500
    batch: int = 16
    lr: float = 1e-3
    id_weight: float = 1.0
    eval_faces: int = 300
    pgd_steps: int = 20
    budgets: tuple[float, ...] = (2 / 255, 8 / 255)
    linkage_people: int = 300


QUICK = AttackConfig(trials=200, transplant_images=10, train_images=400, steps=60, eval_faces=40, pgd_steps=10, linkage_people=100)
