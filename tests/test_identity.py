import random

import numpy as np
import pytest
import torch

from refacex_plugin.identity import _padded_add, load_dlib_resnet


@pytest.fixture(scope="module")
def net():
    return load_dlib_resnet()


def test_parameter_count(net):
    assert sum(p.numel() for p in net.parameters()) == 5_614_592


def test_matches_dlib_on_100_lfw_faces(net, lfw):
    """The port reproduces dlib.face_recognition_model_v1 (issue 5: max abs diff <= 1e-3)."""
    from refacex_plugin.bench.recognizers import DlibRecognizer
    from refacex_plugin.detection import load_detector
    from refacex_plugin.image_io import read_image

    rec, det = DlibRecognizer(), load_detector()
    files = random.Random(5).sample(sorted(lfw.glob("*/*.jpg")), 100)
    chips, refs = [], []
    for f in files:
        rgb = read_image(f).rgb
        d = det(rgb)
        chip = rec.chips(rgb, [rec.geometry(rgb, d.boxes[0], d.landmarks[0])])[0]
        chips.append(chip)
        refs.append(np.asarray(rec.net.compute_face_descriptor(chip)))
    with torch.no_grad():
        out = net(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()).numpy()
    diff = np.abs(out - np.stack(refs)).max()
    assert diff <= 1e-3, diff


def test_is_differentiable(net):
    x = torch.rand(2, 3, 150, 150, requires_grad=True) * 255
    x.retain_grad()
    net(x).norm(dim=1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_padded_add_follows_dlib():
    a, b = torch.ones(1, 2, 3, 3), torch.ones(1, 4, 4, 4)
    out = _padded_add(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert out[0, 0, 0, 0] == 2 and out[0, 3, 3, 3] == 1 and out[0, 0, 3, 3] == 1
