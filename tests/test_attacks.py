"""The attack suite's building blocks (bench/attacks.py, bench/payload_attacks.py, bench/identity_attacks.py); the
measured run is in docs/benchmarks."""

import numpy as np
import pytest
import torch

from refacex_plugin.bench.attack_config import AttackConfig
from refacex_plugin.bench.identity_attacks import _match, donor_linkage, train_inverter
from refacex_plugin.bench.payload_attacks import payload_attacks
from refacex_plugin.bench.report import attacks_markdown
from refacex_plugin.generator.donors import DonorBank


@pytest.mark.slow
def test_every_payload_tampering_is_refused_and_correctable_errors_open_intact():
    res = payload_attacks(trials=25, seed=3)
    assert len(res) >= 14
    for case, r in res.items():
        assert r["opened_wrong"] == 0, case  # never a wrong code, whatever the attack
        assert r["refused"] + r["opened_intact"] == r["trials"]
        if r["must_open"]:
            assert r["opened_intact"] == r["trials"], case
        elif not case.startswith("flip_11"):  # 11 flips: soft decoding sometimes still corrects them
            assert r["refused"] == r["trials"], case


class _Orig:
    def __init__(self, emb):
        self.embedding = {"dlib": emb}


def test_consistent_donors_follow_a_person_within_a_key_and_not_across_keys():
    rng = np.random.default_rng(0)
    people = rng.normal(size=(60, 128)).astype(np.float32) * 0.3
    other_photo = people + rng.normal(size=people.shape).astype(np.float32) * 0.005
    bank = DonorBank.synthetic(rng.normal(size=(500, 128)).astype(np.float32), n=256, seed=0)
    res = donor_linkage(_Orig(np.concatenate([people, other_photo])), [(i, 60 + i) for i in range(60)], bank)
    assert res["same_donor_same_key_other_photo"] >= 0.95
    assert res["same_donor_across_keys"] <= 0.05
    assert res["chance"] == 1 / 256


@pytest.mark.slow
def test_the_inverter_learns_a_known_degradation():
    """A darkened face is inverted better after a few steps than at the start (the attack trains)."""
    torch.manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(12, 3, 16, 16), size=(128, 128), mode="bilinear", align_corners=False)
    cfg = AttackConfig(steps=25, batch=6, lr=3e-3, id_weight=0.0)
    _, info = train_inverter(x * 0.4, x, width=8, cfg=cfg, progress=False)
    assert info["log"][-1]["l1"] < 0.6 * info["log"][0]["l1"]


def test_attack_report_renders_every_section():
    res = {
        "evaluated_faces": 3,
        "payload": payload_attacks(trials=3),
        "transplant": {
            "pairs": 2,
            "opened_in_other_image": 0,
            "refused_in_other_image": 2,
            "control_opened_in_own_image": 2,
            "watermark": "dct-qim",
        },
        "methods": {
            "blur": {
                "inversion": {
                    "width_16": {
                        "width": 16,
                        "steps": 5,
                        "train_faces": 10,
                        "train_s": 1.0,
                        "identity": {"dlib": {"match_rate": 0.5, "mean_similarity": -0.6}},
                    },
                    "width_16_vs_onnx:judge": {
                        "width": 16,
                        "steps": 5,
                        "train_faces": 10,
                        "train_s": 1.0,
                        "identity_loss": "onnx:judge",
                        "identity": {"dlib": {"match_rate": 0.25, "mean_similarity": -0.7}},
                    },
                    "width_16_pixels_only": {
                        "width": 16,
                        "steps": 5,
                        "train_faces": 10,
                        "train_s": 1.0,
                        "identity_loss": "none",
                        "identity": {"dlib": {"match_rate": 0.0, "mean_similarity": -0.8}},
                    },
                }
            }
        },
        "donor_linkage": {
            "people": 4,
            "bank_size": 8,
            "same_donor_same_key_other_photo": 1.0,
            "same_donor_across_keys": 0.0,
            "chance": 0.125,
        },
    }
    text = "\n".join(attacks_markdown(res))
    for needle in (
        "Payload tampering",
        "tag_forged_and_recoded",
        "Transplant",
        "Learned inversion: blur",
        "50.0 %",
        "Consistent-donor",
        "identity loss through onnx:judge",
        "25.0 %",
        "Wilson",
        "pixel loss only",
    ):
        assert needle in text
    assert "50.0 % (12.5–87.5)" in text  # half of 3 faces: the rate with its interval


def test_match_counts_a_photo_of_the_same_person_as_re_identification():
    """rank-1 among every original: an attacked face nearest another photo of its person counts,
    one nearest somebody else does not, whatever the threshold match says."""
    from types import SimpleNamespace

    class Recognizer:
        name, metric = "r", "cosine"

        def embed(self, image, geometry):
            return image[None]  # the "image" is its embedding

    e = np.eye(4, dtype=np.float32)  # A_1, A_2, B_1, C_1
    orig = SimpleNamespace(
        ok=np.array([True, True, True, True]),
        paths=["d/A/A_1.jpg", "d/A/A_2.jpg", "d/B/B_1.jpg", "d/C/C_1.jpg"],
        embedding={"r": e},
        geometry={"r": np.zeros((4, 5, 2), np.float32)},
    )
    faces = SimpleNamespace(index=[0, 2])
    attacked = [e[1] + 0.1 * e[0], e[3] + 0.1 * e[2]]  # A's face nearest A_2; B's face nearest C_1
    out = _match(attacked, faces, orig, [Recognizer()], {"r": {"threshold": 0.5}})["r"]
    assert out["rank1_originals"] == 0.5 and out["originals_searched"] == 4
    assert out["match_rate"] == 0.0  # neither is near its own original
    res = {"evaluated_faces": 2, "payload": {}, "methods": {"blur": {"inversion": {"anonymised_without_attack": {"identity": {"r": out}}}}}}
    assert "| 0.0 % (0.0–65.8) | 50.0 % (9.5–90.5) |" in "\n".join(attacks_markdown(res))


def test_the_inverters_training_pairs_repeat_with_the_seed(lfw):
    """The attack's (anonymised, original) pairs draw refacex's donors from the run's seed."""
    from refacex_plugin.anonymisers import available_methods
    from refacex_plugin.bench.identity_attacks import _training_pairs

    if "refacex" not in available_methods():
        pytest.skip("refacex weights not shipped")
    (a1, o1), (a2, o2) = (_training_pairs("refacex", lfw, 4, 0, False) for _ in range(2))
    assert torch.equal(o1, o2) and torch.equal(a1, a2) and not torch.equal(a1, o1)
