"""``refacex bench``: the front end of the measurement layer (:mod:`refacex_plugin.bench`), which
is imported only when the command runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..errors import RefacexError
from ..payload import KIND_NAMES
from . import _SETTINGS, METHOD_NAMES, _fail, main


@main.command(context_settings=_SETTINGS)
@click.argument(
    "sections",
    nargs=-1,
    type=click.Choice(["privacy", "utility", "naturalness", "attributes", "recovery", "robustness", "speed", "attacks", "all"]),
)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Identity-labelled face photos, one folder per person (<Name>/<Name>_NNNN.jpg), as LFW is laid out: "
    "bring your own copy (the benchmark never downloads data); people with two or more photos become probes.",
)
@click.option("--method", "methods", multiple=True, type=click.Choice(METHOD_NAMES), help="Method(s) to measure [default: all available].")
@click.option(
    "--recognizer",
    "recognizers",
    multiple=True,
    help="dlib or onnx:PATH[:imagenet|arcface] [default: dlib + ../shared MobileFaceNet if present].",
)
@click.option("--quick", is_flag=True, help="Fixed seeded sample, under 5 minutes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--probes-per-person", type=int, default=1, show_default=True, help="Full mode: probes per identity (0 = all).")
@click.option("--far", type=float, default=1e-3, show_default=True, help="False-accept rate for the recognisers' thresholds.")
@click.option("--attack-steps", type=int, default=None, help="Attacks: inverter training steps [default: 60 quick / 1,500 full].")
@click.option("--attack-faces", type=int, default=None, help="Attacks: attacked faces [default: 40 quick / 300 full].")
@click.option(
    "--watermark",
    "watermarks",
    multiple=True,
    help="Watermark(s) for the robustness section [default: the default one quick / all available full].",
)
@click.option("--robustness-faces", type=int, help="Faces for the robustness section [default: 10 quick / 500 full].")
@click.option(
    "--payload",
    type=click.Choice(list(KIND_NAMES.values())),
    default="vault-ref",
    show_default=True,
    help="Robustness: what each face carries (a 64-bit vault reference, t = 21, as anonymise --key-file --vault writes; a 128-bit recovery code, BCH t = 10).",
)
@click.option("--recovery-faces", type=int, help="Faces for the recovery section [default: 12 quick / 300 full].")
@click.option("--strength", type=float, default=1.0, show_default=True, help="The methods' privacy/utility dial.")
@click.option(
    "--naturalness-faces", type=int, help="Faces for the naturalness classifiers (64 and 128 px) [default: 300 quick / 1,500 full]."
)
@click.option(
    "--naturalness-steps",
    type=int,
    help="Training steps of each naturalness classifier (64 and 128 px) [default: 300 quick / 1,200 full].",
)
@click.option(
    "--attribute-faces",
    type=int,
    help="Attributes: images sampled, the central face of each measured [default: 300 quick / 1,500 full].",
)
@click.option(
    "--pairs-limit", type=int, help="pairs.txt pairs the recognisers are verified on [default: 400 quick / all full; 0 skips it]."
)
@click.option("--false-detect-images", type=int, help="Unmarked images for the false-detection count [default: 20 quick / 10,000 full].")
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    default=str(Path.home() / ".cache" / "refacex" / "bench"),
    show_default=True,
    help="Cache of the originals' measurements.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option("--report", "report_out", type=click.Path(dir_okay=False), help="Write a Markdown report.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), help="Write PNG plots here.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Progress on stderr: a bar in a terminal, else a plain line every few items with the time taken.",
)
def bench(
    sections,
    data,
    methods,
    recognizers,
    quick,
    seed,
    probes_per_person,
    far,
    attack_steps,
    attack_faces,
    watermarks,
    robustness_faces,
    payload,
    recovery_faces,
    strength,
    naturalness_faces,
    naturalness_steps,
    attribute_faces,
    pairs_limit,
    false_detect_images,
    cache_dir,
    json_out,
    report_out,
    plots_dir,
    device,
    progress,
):
    """Measure privacy, utility, recovery, robustness and speed on real faces.

    SECTIONS: privacy, utility, naturalness, attributes, recovery, robustness, speed, attacks or all
    (default all; attacks trains inversion networks: ~5 min quick, hours full on a CPU; attributes:
    apparent gender, age band and skin tone kept, judged by refacex's own estimator).
    """
    from ..anonymisers import available_methods
    from ..bench.recognizers import default_recognizer_specs
    from ..bench.report import markdown, plots
    from ..bench.runner import SECTIONS, BenchConfig, run

    if "OMP_NUM_THREADS" not in os.environ:
        # The sections read one small image at a time, where more threads gain little and, on a CPU
        # another job shares, lose much: a quick run on 100 people beside one busy process, two
        # threads vs one: recovery 6.5 vs 1.3 s a face, robustness > 27 vs 4.2 s an image. The
        # speed section times each method in its own process (:func:`~.bench.speed.measure_speed`).
        import torch

        torch.set_num_threads(1)
    chosen = SECTIONS if not sections or "all" in sections else tuple(s for s in SECTIONS if s in sections)
    cfg = BenchConfig(
        data=Path(data),
        methods=list(methods) or available_methods(),
        sections=chosen,
        recognizers=list(recognizers) or default_recognizer_specs(),
        quick=quick,
        seed=seed,
        far=far,
        probes_per_person=probes_per_person,
        cache_dir=Path(cache_dir) if cache_dir else None,
        device=device,
        attack_steps=attack_steps,
        attack_faces=attack_faces,
        watermarks=list(watermarks) or None,
        robustness_faces=robustness_faces,
        payload=payload,
        recovery_faces=recovery_faces,
        false_detect_images=false_detect_images,
        strength=strength,
        naturalness_faces=naturalness_faces,
        naturalness_steps=naturalness_steps,
        attribute_faces=attribute_faces,
        pairs_limit=pairs_limit,
        progress=progress,
        command="refacex bench " + " ".join(sys.argv[2:]),
    )
    try:
        res = run(cfg)
    except (RefacexError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if json_out:  # first: hours of measurements survive a report that fails to render
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(res, indent=2))
    text = markdown(res)
    if report_out:
        Path(report_out).parent.mkdir(parents=True, exist_ok=True)
        Path(report_out).write_text(text + "\n")
    if plots_dir:
        for p in plots(res, Path(plots_dir)):
            click.echo(f"wrote {p}", err=True)
    click.echo(text)
