"""Payloads are bound to the face they were sealed for: a moved payload is refused (issue 9)."""

import numpy as np
import pytest

from refacex_plugin import binding as B
from refacex_plugin import distortions as D
from refacex_plugin import payload as P
from refacex_plugin.image_io import read_image
from refacex_plugin.keys import generate_key


def test_the_candidate_list_starts_with_the_hash_and_flips_only_weak_bits():
    sig = np.random.default_rng(0).normal(size=B.HASH_BITS).astype(np.float32)
    cands = B.candidate_hashes(sig)
    assert cands[0] == B.face_hash(sig) and len(cands) == len(set(cands)) == B.CANDIDATES
    weakest, strongest = np.argsort(np.abs(sig))[[0, -1]]
    for i, expected in ((weakest, True), (strongest, False)):
        flipped = sig.copy()
        flipped[i] = -flipped[i]
        assert (B.face_hash(flipped) in cands) is expected


def test_a_bound_payload_opens_only_for_its_binding():
    key, code = generate_key(), np.random.default_rng(1).integers(0, 2, P.CODE_BITS).astype(np.uint8)
    bits = P.bits_to_logits(P.seal(code, key, binding=b"\x01\x02\x03"))
    assert P.open_payload(bits, key) is None  # unbound reading
    assert P.open_payload(bits, key, bindings=[b"\x01\x02\x04", b"\x00\x02\x03"]) is None
    out = P.open_payload(bits, key, bindings=[b"\x01\x02\x04", b"\x01\x02\x03"])
    assert np.array_equal(out.code, code) and out.binding == b"\x01\x02\x03"


def test_a_face_keeps_its_hash_through_jpeg_and_colour_changes(lfw):
    """The reader's candidates include the writer's hash after real re-encoding and re-detection."""
    from refacex_plugin.channel import match_faces
    from refacex_plugin.writer import make_writer

    pipe = make_writer("blur")
    kept = 0
    people = ["Aaron_Eckhart", "Serena_Williams", "Colin_Powell", "Tony_Blair"]
    for person in people:
        res = pipe.anonymise_image(read_image(next((lfw / person).glob("*.jpg"))).rgb)
        found = pipe.detect(res.image)
        lm = found.landmarks[match_faces(np.array([res.faces[0].landmarks]), found)[0]][None]
        stored = B.face_hash(B.face_signatures(res.image, lm, pipe.align)[0])
        for name in ("jpeg_q75", "saturation_-30", "brightness_+20"):
            out = D.DISTORTIONS[name](res.image)
            again = pipe.detect(out)
            j = match_faces(lm, again)[0]
            kept += stored in B.candidate_hashes(B.face_signatures(out, again.landmarks[j : j + 1], pipe.align)[0])
    assert kept == 3 * len(people)


@pytest.mark.slow
def test_a_payload_moved_into_another_image_is_refused(lfw):
    """The transplant attack with the real detector, watermark and JPEG-free channel: the moved
    bits are refused in the other image and, re-embedded the same way, open in their own."""
    from refacex_plugin.bench.payload_attacks import transplant_attack

    res = transplant_attack(sorted(lfw.glob("*/*.jpg"))[::97][:16], 8, progress=False)
    assert res["pairs"] >= 2  # payloads that opened in their own image before the move
    assert res["opened_in_other_image"] == 0
    assert res["control_opened_in_own_image"] >= 1  # the refusal is the binding's, not the channel's


@pytest.mark.slow
def test_the_robustness_benchmark_measures_bound_payloads(lfw):
    """`refacex bench robustness` seals as the pipeline does (bound) and opens as a reader does;
    it counts reads the binding lost, and renders them."""
    from refacex_plugin.bench.report import robustness_markdown
    from refacex_plugin.bench.robustness import evaluate_watermark

    files = sorted(lfw.glob("*/*.jpg"))[::500][:6]
    r = evaluate_watermark("dct-qim", files, "blur", false_detect_files=files[:3], progress=False)
    assert r["faces"] == 6 and r["exact_decode_rate"]["none"] >= 1 / 6
    assert r["binding_misses"]["none"] == 0 and r["false_detect_authenticated"] == 0
    assert "binding misses" in "\n".join(robustness_markdown({"dct-qim": r}))
