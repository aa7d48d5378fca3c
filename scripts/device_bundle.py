"""Prepare ``.gpu/``: what a lent accelerator needs to continue our training (scripts/device_train.sh).

The device machine (the ``device`` tool) starts bare, reaches no network and gets only this
checkout, at most 64 MiB of it, for about 15 minutes a session: no ``../shared`` dataset, no dlib
model package, no cryptography or bchlib. This writes, into the git-ignored ``.gpu/`` folder:

* ``crops.npz``: a crop pack (``training.data.write_crop_pack``) of the trainers' own 128-px
  crops - 4,000 "train" and 64 "val" faces of ``--data``, JPEG at 90 (about 19 MB);
* ``site/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat``: the identity
  model's weights, copied from the installed PyPI package for that run only (never committed);
* ``whl/``: cp312 manylinux wheels of the packages the device image lacks.

Then, where the ``device`` tool's ``status`` says a machine is lent::

    run(command="bash scripts/device_train.sh", carry=[".gpu"], timeout_s=480)

and, back here, measure what came back before anything is registered in ``models/``.

    python scripts/device_bundle.py --data ../shared/data/lfw
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".gpu"
#: what the device image lacks (its package list: /work/.library/device/KINDS.md), pinned to this venv's versions
WHEELS = ("cryptography", "cffi", "pycparser", "bchlib", "reedsolo")
LIMIT = 64 * 2**20  # what may travel: the working tree and the carried paths together


def _exclude() -> None:
    exclude = ROOT / ".git" / "info" / "exclude"
    lines = exclude.read_text().splitlines() if exclude.is_file() else []
    if "/.gpu/" not in lines:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text("\n".join([*lines, "/.gpu/"]) + "\n")


def _wheels(dest: Path) -> None:
    from importlib.metadata import version

    dest.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34)] + ["--platform=manylinux2014_x86_64"]
    specs = [f"{name}=={version(name)}" for name in WHEELS]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(dest),
            *specs,
        ],
        check=True,
    )


def _tree_bytes() -> int:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    return sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="identity-labelled folder (LFW)")
    ap.add_argument("--train-images", type=int, default=4000)
    ap.add_argument("--val-images", type=int, default=64)
    ap.add_argument("--quality", type=int, default=90)
    args = ap.parse_args()

    from refacex_plugin.training.data import prepare_crops, write_crop_pack
    from refacex_plugin.zoo import dlib_model_path

    _exclude()
    BUNDLE.mkdir(exist_ok=True)
    # the trainers' own crops and seed (training.anonymiser / .watermark: prepare_crops(data, split, n, 128, 0))
    splits = {
        "train": prepare_crops(args.data, "train", args.train_images, 128, 0),
        "val": prepare_crops(args.data, "val", args.val_images, 128, 0),
    }
    size = write_crop_pack(BUNDLE / "crops.npz", splits, args.quality, source=str(args.data), seed=0)
    print(f"crops.npz: {len(splits['train'])} train + {len(splits['val'])} val crops, {size / 2**20:.1f} MiB")

    models = BUNDLE / "site" / "face_recognition_models" / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models.parent / "__init__.py").write_text('"""The dlib model file refacex\'s identity model reads (copied for a device run)."""\n')
    name = "dlib_face_recognition_resnet_model_v1.dat"
    shutil.copyfile(dlib_model_path(name), models / name)

    _wheels(BUNDLE / "whl")
    bundle = sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file())
    tree = _tree_bytes()
    print(f".gpu: {bundle / 2**20:.1f} MiB; with the working tree ({tree / 2**20:.1f} MiB): {(bundle + tree) / 2**20:.1f} of 64 MiB")
    if bundle + tree > LIMIT:
        sys.exit("too large to travel: lower --train-images or --quality")


if __name__ == "__main__":
    main()
