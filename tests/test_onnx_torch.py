"""The evaluation judge as a differentiable module (``bench.onnx_torch``): it must compute what
onnxruntime computes, on the chip the bench's recogniser reads, and pass gradients."""

import numpy as np
import pytest
import torch
from conftest import REPO

JUDGE = REPO.parent / "shared" / "models" / "mobilefacenet_ms1m.onnx"


@pytest.fixture(scope="module")
def judge_path():
    if not JUDGE.is_file():
        pytest.skip(f"evaluation judge not found at {JUDGE}")
    return JUDGE


def test_graph_matches_onnxruntime_for_a_batch(judge_path):
    from refacex_plugin.bench.onnx_torch import OnnxGraph
    from refacex_plugin.bench.recognizers import OnnxRecognizer

    x = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = OnnxGraph(judge_path)(x).reshape(3, -1)  # the graph was exported for one image
    ort = OnnxRecognizer(judge_path)
    ref = np.concatenate([ort.sess.run(None, {ort.input: x[i : i + 1].numpy()})[0] for i in range(3)]).reshape(3, -1)
    assert float((ours - torch.from_numpy(ref)).abs().max()) < 1e-4


def test_crop_embedding_is_the_benchs_embedding_of_the_face_and_takes_gradients(judge_path, example_rgb):
    """The canonical crop's central part is the judge's ArcFace chip: the embedding of an aligned
    crop is the one the bench computes from the image and the landmarks."""
    from refacex_plugin.bench.onnx_torch import ArcFaceCropEmbedder
    from refacex_plugin.bench.recognizers import OnnxRecognizer
    from refacex_plugin.detection import DEFAULT_DETECTOR, load_detector
    from refacex_plugin.geometry import AlignConfig, alignment_matrices, extract_crops

    det = load_detector(DEFAULT_DETECTOR)(example_rgb)
    crop = extract_crops(example_rgb, alignment_matrices(det.landmarks[:1], AlignConfig()), AlignConfig()).requires_grad_(True)
    emb = ArcFaceCropEmbedder(judge_path)(crop)
    ref = torch.nn.functional.normalize(torch.from_numpy(OnnxRecognizer(judge_path).embed(example_rgb, [det.landmarks[0]])), dim=1)
    assert float((emb.detach() * ref).sum()) > 0.95  # same face, same frame: only the resampling differs
    emb.sum().backward()
    assert crop.grad is not None and float(crop.grad.abs().sum()) > 0


def test_unsupported_operators_fail_clearly(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from refacex_plugin.bench.onnx_torch import OnnxGraph

    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "sigmoid.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(NotImplementedError, match="Sigmoid"):
        OnnxGraph(path)


def test_an_attacker_trains_its_identity_loss_through_the_judge(judge_path):
    """``refacex bench attacks`` gets one identity loss per differentiable recogniser of the run
    (the dlib port and the judge), and an inverter trains through the judge's."""
    from refacex_plugin.bench.attack_config import AttackConfig
    from refacex_plugin.bench.identity_attacks import identity_losses, train_inverter
    from refacex_plugin.bench.recognizers import OnnxRecognizer

    judge = OnnxRecognizer(judge_path)
    losses = identity_losses([judge])
    assert set(losses) == {"dlib", judge.name}
    torch.manual_seed(0)
    x = torch.rand(4, 3, 128, 128)
    cfg = AttackConfig(steps=3, batch=2, id_weight=1.0)
    net, info = train_inverter(x * 0.5, x, width=8, cfg=cfg, progress=False, idm=losses[judge.name])
    assert all(np.isfinite(r["id_distance"]) and 0 <= r["id_distance"] <= 2 for r in info["log"])  # unit vectors
    assert not any(p.requires_grad for p in losses[judge.name].parameters())  # the judge stays frozen
