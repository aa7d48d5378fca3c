"""The ``refacex`` command line. Every command is a thin shell over the core API."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .. import __version__
from ..batch import Job, Summary, default_workers, folder_without_work, iter_jobs, run_jobs
from ..detection import DEFAULT_DETECTOR, READER_THRESHOLD, DetectorConfig, detector_names
from ..errors import RefacexError
from ..keys import key_id, read_key_file, write_key_file
from ..payload import KIND_NAMES

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: The names ``--method`` accepts, in ``anonymisers.PREFERENCE`` order. Spelled out here because
#: the registry imports torch and probes the models, and help must print without either
#: (tests/test_cli.py checks the two lists agree).
METHOD_NAMES = ("refacex", "generator", "pixelate", "blur", "mask")


def _fail(msg: str, code: int = 2) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _finish(summary: Summary, verb: str) -> None:
    click.echo(summary.line(verb), err=True)
    sys.exit(0 if summary.ok else 1)


def _run(
    inputs: tuple[str, ...], outdir: Path | None, recursive: bool, work, finish, desc: str, progress=None, workers: int = 1
) -> Summary:
    """Run ``work`` over every file of ``inputs`` on ``workers`` threads and ``finish`` in input
    order (:func:`~refacex_plugin.batch.run_jobs`); missing inputs, and folders that hold no image
    to work on (e.g. only in sub-folders without -r), count as failures."""
    unusable = {}
    for raw in inputs:
        path = Path(raw)
        why = "no such file or folder" if not path.exists() else path.is_dir() and folder_without_work(path, recursive)
        if why:
            unusable[raw] = why
            click.echo(f"error: {raw}: {why}", err=True)
    jobs = list(iter_jobs([r for r in inputs if r not in unusable], outdir, recursive))
    summary = run_jobs(jobs, work, finish, progress, desc=desc, workers=workers)
    summary.failed.extend(unusable.items())
    return summary


@click.group(context_settings=_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="refacex")
def main() -> None:
    """refacex - reversible, donor-driven face anonymisation for image datasets.

    \b
    Typical use:
      refacex anonymise photos/ -o anonymised/ --recursive
      refacex keygen -o admin.key
      refacex anonymise photos/ -r --in-place --key-file admin.key --vault faces.vault
      refacex recover photos/ -r --key-file admin.key --vault faces.vault -o restored/
    """


detector_options = [
    click.option("--detector", type=click.Choice(detector_names()), default=DEFAULT_DETECTOR, show_default=True, help="Face detector."),
    click.option(
        "--threshold",
        type=float,
        default=DetectorConfig.threshold,
        show_default=True,
        help=f"Minimum detection score of a face to anonymise (payloads are looked for down to min(this, {READER_THRESHOLD})).",
    ),
    click.option("--min-face", type=int, default=DetectorConfig.min_size, show_default=True, help="Minimum face size in pixels."),
]
workers_option = click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=default_workers(),
    show_default=True,
    help="Files worked on at once (threads sharing the models; output order is kept).",
)


def _with(options):
    def deco(fn):
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return deco


@main.command(context_settings=_SETTINGS)
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "outdir", type=click.Path(file_okay=False), help="Output folder (mirrors the input tree).")
@click.option(
    "--method",
    type=click.Choice(METHOD_NAMES),
    default=None,
    help="Anonymisation method [default: the best available, refacex when its donor bank is installed; `refacex info` names it].",
)
@click.option("--strength", type=float, default=1.0, show_default=True, help="Privacy/utility dial of the method.")
@click.option("--key-file", type=click.Path(dir_okay=False), help="Secret key: seals each face's payload and encrypts vault records.")
@click.option(
    "--vault",
    "vault_path",
    type=click.Path(dir_okay=False),
    help="Store each original face region, encrypted, in this vault file (needs --key-file) for exact recovery.",
)
@click.option(
    "--donor-policy",
    type=click.Choice(["random", "consistent"]),
    default="random",
    show_default=True,
    help="Donor-driven methods: a new donor per face, or the same donor for the same person (keyed by --key-file).",
)
@click.option(
    "--donors",
    "donors_dir",
    type=click.Path(exists=True),
    help="Donor bank built by `refacex donors build` from consenting donors' faces, or a folder of their photos [default: the shipped bank].",
)
@click.option(
    "--keep-landmarks/--no-keep-landmarks",
    default=False,
    show_default=True,
    help="generator: move the drawn face's features onto the original's 68 landmarks (better landmarks and pose, "
    "at a measured privacy cost; see the README).",
)
@click.option("--watermark", default=None, help="Watermark that carries the payloads [default: the best available].")
@click.option(
    "--watermark-strength",
    type=float,
    default=1.0,
    show_default=True,
    help="Learned watermark: invisibility/robustness dial (residual RMS scale); dct-qim has a fixed strength.",
)
@click.option("--in-place", is_flag=True, help="Replace each input atomically instead of writing to -o.")
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders of folder inputs.")
@click.option("--format", "fmt", type=click.Choice(["jpeg", "png", "webp"]), default=None, help="Output format [default: the input's].")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG/WebP quality.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    default="torch",
    show_default=True,
    help="Run the learned networks with PyTorch or onnxruntime.",
)
@click.option("--records", type=click.Path(dir_okay=False), help="Write one JSON line per image with its face records.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: when stderr is a terminal].")
@workers_option
@_with(detector_options)
def anonymise(
    inputs,
    outdir,
    method,
    strength,
    key_file,
    vault_path,
    donor_policy,
    donors_dir,
    keep_landmarks,
    watermark,
    watermark_strength,
    in_place,
    recursive,
    fmt,
    quality,
    device,
    backend,
    records,
    progress,
    workers,
    detector,
    threshold,
    min_face,
):
    """Anonymise every face in INPUTS (files or folders).

    Pixels outside the face masks are kept; EXIF (with its thumbnail), XMP, IPTC and ICC data are
    never written. Files that cannot be read are reported and skipped; the exit code is 1 if any failed.
    """
    from .. import api

    if bool(outdir) == bool(in_place):
        _fail("give exactly one of -o/--output OUTDIR or --in-place")
    if in_place and fmt:
        _fail("--format cannot be combined with --in-place (the file would change type)")
    try:
        settings = api.Settings.load(
            key_file,
            method=method,
            strength=strength,
            vault=vault_path,
            watermark=watermark,
            watermark_strength=watermark_strength,
            donor_policy=donor_policy,
            donors=donors_dir,
            keep_landmarks=keep_landmarks,
            detector=detector,
            threshold=threshold,
            min_face=min_face,
            device=device,
        )
        if backend == "onnx":
            from ..onnx_backend import use_onnx

            use_onnx(device="cuda" if device == "cuda" else "cpu")
        session = api.Session(settings)
    except RefacexError as exc:
        _fail(str(exc))
    _warn(session)
    pipe, vault, key = session.pipeline, session.vault, settings.key
    records_fh = open(records, "w", encoding="utf-8") if records else None

    def work(job: Job):
        return api.anonymise_file(session, job.src, job.dst, fmt, quality, in_place)

    verified = 0  # faces whose payload a reader was shown to open in the written image

    def finish(job: Job, res, summary: Summary) -> None:
        nonlocal verified
        if res.skipped:
            summary.skipped += 1
            return
        summary.faces += len(res.faces)
        verified += sum(f.payload == "embedded" for f in res.faces)
        summary.no_face += not res.faces
        for note in res.notes:  # what the output lost (e.g. 16 bits kept in 8), said once per file
            click.echo(f"warning: {res.src}: {note}", err=True)
        if records_fh:
            records_fh.write(json.dumps({"input": str(res.src), "output": str(res.dst), "faces": [f.to_dict() for f in res.faces]}) + "\n")

    try:
        summary = _run(inputs, Path(outdir) if outdir else None, recursive, work, finish, "anonymise", progress, workers)
    finally:
        if records_fh:
            records_fh.close()
        session.close()
    note = f"method: {pipe.method}"
    if key is not None:
        note += f", key id {key_id(key)}, payloads in the {pipe.watermark.name} watermark"
        if summary.faces:  # the others: small or weakly detected faces (docs/payload.md); the vault still has them
            note += f" ({verified} of {summary.faces} faces read back; see --records)"
    if vault is not None:
        note += f", originals in vault {vault_path}"
    click.echo(note, err=True)
    _finish(summary, "anonymised")


@main.command(context_settings=_SETTINGS)
@click.option("-o", "--output", "path", required=True, type=click.Path(dir_okay=False), help="Key file to create (0600).")
@click.option(
    "--from-passphrase",
    is_flag=True,
    help="Derive the key from a passphrase (scrypt) asked for on the terminal, "
    "so it can be re-created from memory; otherwise a random key.",
)
def keygen(path, from_passphrase):
    """Create a new 256-bit secret key file (refuses to overwrite). Keep it offline and backed up."""
    from ..keys import key_from_passphrase

    try:
        key = None
        if from_passphrase:
            phrase = click.prompt("passphrase (at least 12 characters)", hide_input=True, confirmation_prompt=True, err=True)
            key = key_from_passphrase(phrase)
        kid = write_key_file(path, key)
    except RefacexError as exc:
        _fail(str(exc))
    click.echo(f"wrote {path} (key id {kid}); anyone holding this file can restore original faces")


@main.command(context_settings=_SETTINGS)
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--key-file", "key_files", multiple=True, type=click.Path(dir_okay=False), help="Key(s) to authenticate payloads with (repeatable)."
)
@click.option("--watermark", default=None, help="Watermark to read [default: the best available].")
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders of folder inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image.")
@workers_option
@_with(detector_options)
def extract(inputs, key_files, watermark, recursive, as_json, workers, detector, threshold, min_face):
    """Report, for each face in INPUTS, whether it carries a payload, whether that payload
    authenticates with one of the keys, and its key id, version and kind. Never prints a code."""
    from .. import api

    try:
        keys = [read_key_file(k) for k in key_files]
        session = api.Session(_reader_settings(keys[0] if keys else None, None, watermark, detector, threshold, min_face), "read")
    except RefacexError as exc:
        _fail(str(exc))
    _warn(session)

    def work(job: Job):
        return api.read_payloads(session, job.src, keys)

    tallies = ("authenticated", "not authenticated", "without a payload", "too small to carry one")

    def finish(job: Job, faces, summary: Summary) -> None:
        summary.faces += len(faces)
        summary.no_face += not faces
        rows = [f.to_dict() for f in faces]
        for what in tallies:  # the summary lists them in this order
            summary.counts.setdefault(what, 0)
        for r in rows:
            summary.count(
                "authenticated"
                if r["authenticated"]
                else "not authenticated"
                if r["payload_found"]
                else "too small to carry one"
                if r["too_small"]
                else "without a payload"
            )
        if as_json:
            click.echo(json.dumps({"input": str(job.src), "faces": rows}))
            return
        if not rows:
            click.echo(f"{job.src}: no face")
        for r in rows:
            state = (
                "authenticated, key id {key_id}, version {version}, {kind}, {bit_errors} bit errors corrected".format(**r)
                if r["authenticated"]
                else "payload found, not authenticated by the given key(s)"
                if r["payload_found"]
                else "no payload (face too small to carry one; not read)"
                if r["too_small"]
                else "no payload"
            )
            click.echo(f"{job.src}: face {r['face']}: {state}")

    _finish(_run(inputs, None, recursive, work, finish, "extract", workers=workers), "read")


@main.command(context_settings=_SETTINGS)
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--key-file", "key_files", multiple=True, required=True, type=click.Path(dir_okay=False), help="Secret key file(s).")
@click.option("--vault", "vault_path", type=click.Path(dir_okay=False), help="Restore bit-exact face regions from this vault.")
@click.option("--watermark", default=None, help="Watermark to read payloads with [default: the best available].")
@click.option("-o", "--output", "outdir", type=click.Path(file_okay=False), help="Output folder (mirrors the input tree).")
@click.option("--in-place", is_flag=True, help="Replace each anonymised input atomically with its original instead of writing to -o.")
@click.option("-r", "--recursive", is_flag=True, help="Descend into sub-folders of folder inputs.")
@click.option(
    "--approximate",
    is_flag=True,
    help="Without --vault: let the recovery network draw each face from the code its "
    "payload carries (--method generator files): an approximation, not the original face.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per restored image.")
@workers_option
@_with(detector_options)
def recover(
    inputs, key_files, vault_path, watermark, outdir, in_place, recursive, approximate, as_json, workers, detector, threshold, min_face
):
    """Restore original faces in INPUTS with the secret key (admin only).

    With --vault: unchanged images by their pixel hash (bit-exact), changed ones (re-encoded,
    resized, cropped) through the vault references their faces' payloads carry. Without a vault
    only an approximation can be made, and only when asked for with --approximate. Writes an output
    only for images in which a face was restored; lists the others and why, and exits 1 if any
    image could not be restored.
    """
    from .. import api

    if bool(outdir) == bool(in_place):
        _fail("give exactly one of -o/--output OUTDIR or --in-place")
    if vault_path and approximate:
        _fail("give --vault (the original faces) or --approximate (the recovery network's approximation), not both")
    if not vault_path and not approximate:
        _fail(
            "without --vault only an approximation of each face can be drawn from its payload: "
            "give --vault FILE for the original faces, or --approximate to accept the approximation"
        )
    if approximate:
        from .. import operators

        if not operators.recovery_available():
            _fail("recovery without --vault needs the recovery network, which is not available in this version")
    try:
        keys = [read_key_file(k) for k in key_files]
        if len(keys) != 1:
            raise RefacexError("recovery takes exactly one --key-file")
        session = api.Session(_reader_settings(keys[0], vault_path, watermark, detector, threshold, min_face), "recover")
    except RefacexError as exc:
        _fail(str(exc))
    _warn(session)

    def work(job: Job):
        return api.recover_file(session, job.src, job.dst, in_place=in_place)

    recovery = "approximate" if approximate else "exact"

    def finish(job: Job, res, summary: Summary) -> None:
        summary.faces += res.vault_records
        if as_json:
            click.echo(
                json.dumps({"input": str(job.src), "output": str(res.dst), "faces_restored": res.vault_records, "recovery": recovery})
            )

    try:
        summary = _run(inputs, Path(outdir) if outdir else None, recursive, work, finish, "recover", workers=workers)
    finally:
        session.close()
    if approximate and summary.images:
        click.echo(
            "note: approximate recovery: each face was drawn by the recovery network from its payload's code; "
            "it is not the original face (--vault restores originals exactly)",
            err=True,
        )
    _finish(summary, "restored approximately" if approximate else "restored")


def _default_watermark() -> str:
    from ..watermark import load_watermark

    try:
        return load_watermark().name
    except RefacexError as exc:
        return f"none ({exc})"


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
    faces = collect_faces(photos)
    try:
        bank = build_bank(faces, blend=blend, screen=screen, origin=f"{len(faces)} photos from {Path(folder).name}")
    except RefacexError as exc:
        _fail(str(exc))
    bank.save(output)
    click.echo(f"{len(photos)} photos, {len(faces)} usable faces -> {len(bank)} donors in {output}")


def _reader_settings(key, vault_path, watermark, detector, threshold, min_face):
    """Settings of a session that reads payloads (extract) or restores originals (recover)."""
    from ..api import Settings

    return Settings(key=key, vault=vault_path, watermark=watermark, detector=detector, threshold=threshold, min_face=min_face)


def _warn(session) -> None:
    """Say the session's warnings (experimental weights) and notes (degraded recovery) on stderr."""
    for line in session.warnings:
        click.echo(f"warning: {line}", err=True)
    for line in session.notes:
        click.echo(f"note: {line}", err=True)


@main.command(context_settings=_SETTINGS)
@click.argument(
    "sections", nargs=-1, type=click.Choice(["privacy", "utility", "naturalness", "recovery", "robustness", "speed", "attacks", "all"])
)
@click.option(
    "--data", required=True, type=click.Path(exists=True, file_okay=False), help="Identity-labelled folder (<Name>/<Name>_NNNN.jpg)."
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
@click.option("--naturalness-faces", type=int, help="Faces for the naturalness classifier [default: 300 quick / 1,500 full].")
@click.option("--naturalness-steps", type=int, help="Training steps of the naturalness classifier [default: 300 quick / 1,200 full].")
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

    SECTIONS: privacy, utility, naturalness, recovery, robustness, speed, attacks or all (default
    all; attacks trains inversion networks: ~5 min quick, hours full on a CPU).
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


@main.group(context_settings=_SETTINGS)
def train():
    """Train refacex's networks (seeded, resumable, logged)."""


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


@main.group(context_settings=_SETTINGS)
def labelstudio():
    """Label Studio ML backend."""


@labelstudio.command("serve", context_settings=_SETTINGS)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9090, show_default=True)
def labelstudio_serve(host, port):
    """Serve face pre-annotations to Label Studio (see README: Label Studio)."""
    try:
        from labelstudio_backend._wsgi import main as serve
    except ImportError as exc:
        _fail(f"the Label Studio backend needs the [labelstudio] extra and the repository's labelstudio_backend/ ({exc})")
    serve(["--host", host, "--port", str(port)])


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


@main.command(context_settings=_SETTINGS)
def info():
    """Versions, compute device, detectors, methods and models found."""
    import cv2
    import numpy
    import torch

    from .. import operators
    from ..anonymisers import available_methods, default_method
    from ..detection import centerface_weights, dlib_model_path
    from ..watermark import available_watermarks, is_experimental, load_watermark

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
