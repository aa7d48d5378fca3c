"""``refacex donors build``, ``train``, ``export-onnx``, ``models add`` and ``info``: making,
registering and reporting the networks and donor banks the file commands run on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .. import __version__
from ..detection import DEFAULT_DETECTOR, detector_names
from ..errors import RefacexError
from ..zoo import weights_path
from . import _SETTINGS, _fail, main


@main.group(context_settings=_SETTINGS)
def donors():
    """Donor banks: the faces anonymised faces are built from."""


@donors.command("build", context_settings=_SETTINGS)
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Bank file to write (.npz).")
@click.option(
    "--blend",
    type=click.IntRange(1, 4),
    default=1,
    show_default=True,
    help="People averaged per donor (2+: no single donor's face is ever pasted).",
)
@click.option("--screen/--no-screen", default=True, show_default=True, help="Leave out faces with glasses or a covered forehead.")
def donors_build(folder, output, blend, screen):
    """Build a donor bank from FOLDER's photos (searched recursively; one face each, of people who consented)."""
    from ..batch import iter_jobs
    from ..composite import build_bank, collect_faces

    photos = [j.src for j in iter_jobs([folder], None, True)]
    if not photos:
        _fail(f"{folder}: no images found")
    skipped: dict[str, int] = {}
    faces = collect_faces(photos, skipped=skipped)
    try:
        bank = build_bank(faces, blend=blend, screen=screen, origin=f"{len(faces)} photos from {Path(folder).name}")
    except RefacexError as exc:
        _fail(str(exc))
    bank.save(output)
    left = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
    click.echo(
        f"{len(photos)} photos, {len(faces)} usable faces" + (f" ({left} left out)" if left else "") + f" -> {len(bank)} donors in {output}"
    )


@donors.command("info", context_settings=_SETTINGS)
@click.argument("bank", required=False, type=click.Path(exists=True, dir_okay=False))
def donors_info(bank):
    """How a donor bank (default: the shipped one) covers each gender, age band and skin tone.

    Faces of a group with too few donors get the fallback mosaic instead of a composite."""
    from ..composite import DonorBank, shipped_bank
    from ..composite.coverage import coverage_table

    try:
        loaded = DonorBank.load(bank) if bank else shipped_bank()
    except RefacexError as exc:
        _fail(str(exc))
    click.echo(coverage_table(loaded))


@main.group(context_settings=_SETTINGS)
def train():
    """Train refacex's networks (seeded, resumable, logged)."""


def _training_argv(data, config, out, device, **options) -> list[str]:
    """The ``refacex train`` options as the training module's argv: ``None``/``False`` values
    are left out, ``True`` becomes a bare flag, anything else ``--name value``."""
    if not (Path(data).is_dir() or Path(data).suffix == ".npz"):
        _fail(f"{data}: --data takes an identity-labelled folder or a .npz crop pack")
    argv = ["--data", data, "--config", config, "--out", out, "--device", device]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return argv


@train.command("watermark", context_settings=_SETTINGS)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True),
    help="Identity-labelled face folder, or a crop pack (.npz; scripts/device_bundle.py writes one).",
)
@click.option("--config", type=click.Choice(["tiny", "cpu", "gpu", "device"]), default="cpu", show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False), default="runs/watermark", show_default=True, help="Run folder (checkpoint, log, samples)."
)
@click.option("--steps", type=int, help="Override the config's number of steps.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--init", help="Start a new run from these weights ('zoo': the partially trained models/ watermark-learned).")
@click.option("--minutes", type=float, help="Stop after this long (checkpoint and weights written; the learning rate anneals by time).")
def train_watermark(data, config, out, steps, device, init, minutes):
    """Train the learned watermark; re-run the same command to resume."""
    from ..training.watermark import main as run_training

    run_training(_training_argv(data, config, out, device, steps=steps, init=init, minutes=minutes))


@train.command("anonymiser", context_settings=_SETTINGS)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True),
    help="Identity-labelled face folder, or a crop pack (.npz; scripts/device_bundle.py writes one).",
)
@click.option("--config", type=click.Choice(["tiny", "cpu", "gpu", "device"]), default="cpu", show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="runs/anonymiser",
    show_default=True,
    help="Run folder (checkpoint, log, samples, donors).",
)
@click.option("--steps", type=int, help="Override the config's number of steps.")
@click.option("--no-detach", is_flag=True, help="Ablation: let recovery gradients reach the anonymiser.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--init", help="Start a new run from these weights ('zoo': models/'s refacex-anonymiser).")
@click.option("--recovery-only", is_flag=True, help="Fine-tune the recovery network alone (G and E frozen; use with --init).")
@click.option("--lr", type=float, help="Override the config's learning rate.")
@click.option("--view-blur", type=float, help="Strength of the blur G sees under the face mask (default: the current design's).")
@click.option("--minutes", type=float, help="Stop after this long (checkpoint and weights written; the learning rate anneals by time).")
def train_anonymiser(data, config, out, steps, no_detach, device, init, recovery_only, lr, view_blur, minutes):
    """Train the anonymiser, code encoder and recovery network; re-run the same command to resume."""
    from ..training.anonymiser import main as run_training

    run_training(
        _training_argv(
            data,
            config,
            out,
            device,
            steps=steps,
            no_detach=no_detach,
            init=init,
            recovery_only=recovery_only,
            lr=lr,
            view_blur=view_blur,
            minutes=minutes,
        )
    )


@main.command("export-onnx", context_settings=_SETTINGS)
@click.option(
    "-o", "--output", "folder", type=click.Path(file_okay=False), help="Folder for the graphs [default: the cache --backend onnx uses]."
)
def export_onnx_cmd(folder):
    """Export every shipped network to ONNX and check it against PyTorch (max abs difference)."""
    from ..onnx_backend import default_folder, export_onnx

    try:
        report = export_onnx(Path(folder) if folder else default_folder())
    except RefacexError as exc:
        _fail(str(exc))
    for r in report:
        click.echo(f"{r['network']:22s} {r['file']:28s} max |onnx - torch| = {r['max_abs_diff']:.2e}")


_ARCH_FIELDS = ("width", "code_bits", "view_blur")


@main.group(context_settings=_SETTINGS)
def models():
    """The model zoo in models/ (named, hashed weights with their manifest entries)."""


@models.command("add", context_settings=_SETTINGS)
@click.argument("name")
@click.argument("weights", type=click.Path(exists=True, dir_okay=False))
@click.option("--command", "train_command", required=True, help="The command that trained it.")
@click.option("--data", "train_data", required=True, help="What it was trained on.")
@click.option("--metrics", type=click.Path(exists=True, dir_okay=False), help="JSON file of measured metrics to record.")
@click.option("--set", "extra", multiple=True, help="Extra field KEY=JSON_VALUE (e.g. width=16, default=true).")
@click.option("--half", is_flag=True, help="Store floating-point tensors as float16 (halves the file).")
def models_add(name, weights, train_command, train_data, metrics, extra, half):
    """Copy WEIGHTS into models/ as NAME and write its manifest entry (sha256, command, data, metrics)."""
    import tempfile

    import torch

    from ..zoo import register

    fields = {"command": train_command, "data": train_data}
    if metrics:
        fields["metrics"] = json.loads(Path(metrics).read_text())
    for kv in extra:
        k, _, v = kv.partition("=")
        fields[k] = json.loads(v)
    src = Path(weights)
    if half and src.suffix != ".pt":
        raise click.UsageError("--half applies to PyTorch .pt weights only")
    state = torch.load(src, map_location="cpu", weights_only=True) if src.suffix == ".pt" else None
    if isinstance(state, dict):  # architecture fields saved by training travel into the manifest
        fields.update({k: state[k] for k in _ARCH_FIELDS if k in state and k not in fields})
    if half:

        def cast(v):
            if isinstance(v, dict):
                return {k: cast(x) for k, x in v.items()}
            return v.half() if torch.is_tensor(v) and v.is_floating_point() else v

        tmp = Path(tempfile.mkdtemp()) / src.name
        torch.save(cast(state), tmp)
        src = tmp
    entry = register(name, src, **fields)
    click.echo(f"{name}: {entry['file']} sha256 {entry['sha256'][:16]}... ({entry['bytes']:,} bytes)")


def _default_watermark() -> str:
    from ..watermark import load_watermark

    try:
        return load_watermark().name
    except RefacexError as exc:
        return f"none ({exc})"


def _bank_summary() -> str:
    from ..composite import BANK, shipped_bank

    return f"{weights_path(BANK)} ({len(shipped_bank())} donors; coverage: refacex donors info)"


@main.command(context_settings=_SETTINGS)
def info():
    """Versions, compute device, detectors, methods and models found."""
    import cv2
    import numpy
    import torch

    from .. import operators
    from ..anonymisers import available_methods, default_method
    from ..detection import centerface_weights
    from ..watermark import available_watermarks, is_experimental, load_watermark
    from ..zoo import dlib_model_path

    def probe(fn):
        try:
            return str(fn())
        except RefacexError as exc:
            return f"missing ({exc})"

    rows = [
        ("refacex", __version__),
        ("python", sys.version.split()[0]),
        ("torch", torch.__version__),
        ("numpy", numpy.__version__),
        ("opencv", cv2.__version__),
        ("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"),
        ("methods", ", ".join(available_methods()) + f" (default {default_method()})"),
        ("detectors", ", ".join(detector_names()) + f" (default {DEFAULT_DETECTOR})"),
        ("centerface weights", probe(centerface_weights)),
        ("dlib landmarks", probe(lambda: dlib_model_path("shape_predictor_68_face_landmarks.dat"))),
        ("donor bank", probe(_bank_summary)),
        ("face attributes", probe(lambda: ", ".join(str(weights_path(n).name) for n in ("face-gender", "face-age")))),
        ("watermarks", ", ".join(available_watermarks()) + f" (default {_default_watermark()})"),
        (
            "learned watermark",
            probe(lambda: "experimental (by name only)" if is_experimental(load_watermark("learned")) else "the default"),
        ),
        ("recovery network", "available (--method generator)" if operators.recovery_available() else "not available"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
