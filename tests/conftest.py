import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
LFW = Path(os.environ.get("REFACEX_LFW", REPO.parent / "shared" / "data" / "lfw"))
EXAMPLES = REPO / "examples"

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="session")
def lfw() -> Path:
    if not LFW.is_dir():
        pytest.skip(f"LFW not found at {LFW} (set REFACEX_LFW)")
    return LFW


@pytest.fixture(scope="session")
def lfw_sample(lfw):
    """A fixed, seeded sample of real LFW images."""
    files = sorted(lfw.glob("*/*.jpg"))
    return random.Random(1234).sample(files, 60)


@pytest.fixture(scope="session")
def example_image() -> Path:
    return EXAMPLES / "Serena_Williams_0001.jpg"


@pytest.fixture(scope="session")
def example_rgb(example_image) -> np.ndarray:
    from refacex_plugin.image_io import read_image

    return read_image(example_image).rgb


@pytest.fixture(scope="session")
def group_rgb(lfw) -> np.ndarray:
    """A 2x3 mosaic of six different real LFW people: an image with many faces."""
    from refacex_plugin.image_io import read_image

    people = ["Aaron_Eckhart", "George_W_Bush", "Serena_Williams", "Colin_Powell", "Tony_Blair", "Hugo_Chavez"]
    tiles = [read_image(next((lfw / p).glob("*.jpg"))).rgb for p in people]
    rows = [np.concatenate(tiles[i : i + 3], axis=1) for i in (0, 3)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))
