"""``refacex anonymise``, ``extract``, ``recover`` and ``keygen``: the commands over image files,
each run as a batch (several files at a time; a summary and an exit code at the end)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..batch import Job, Shard, Summary, default_workers, folder_without_work, iter_jobs, run_jobs
from ..detection import DEFAULT_DETECTOR, READER_THRESHOLD, DetectorConfig, detector_names
from ..errors import RefacexError
from ..keys import key_id, read_key_file, write_key_file
from . import _SETTINGS, METHOD_NAMES, _fail, main

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


shard_option = click.option(
    "--shard",
    metavar="I/N",
    default=None,
    help="Take only shard I of N (1-based) of the files: each file falls in exactly one shard, by a hash of its path "
    "relative to its input folder, so N machines running 1/N ... N/N over the same tree do every file once.",
)


def _shard(text: str | None) -> Shard | None:
    """The parsed ``--shard``, or exit with one line saying what is wrong with it."""
    if text is None:
        return None
    try:
        return Shard.parse(text)
    except RefacexError as exc:
        _fail(str(exc))


def _with(options):
    def deco(fn):
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return deco


def _finish(summary: Summary, verb: str) -> None:
    click.echo(summary.line(verb), err=True)
    sys.exit(0 if summary.ok else 1)


def _run(
    inputs: tuple[str, ...],
    outdir: Path | None,
    recursive: bool,
    work,
    finish,
    desc: str,
    progress=None,
    workers: int = 1,
    shard: Shard | None = None,
) -> Summary:
    """Run ``work`` over every file of ``inputs`` (of ``shard``'s, when given) on ``workers``
    threads and ``finish`` in input order (:func:`~refacex_plugin.batch.run_jobs`); missing inputs,
    and folders that hold no image to work on (e.g. only in sub-folders without -r), count as
    failures (a shard that happens to hold none of a folder's files is no failure)."""
    unusable = {}
    for raw in inputs:
        path = Path(raw)
        why = "no such file or folder" if not path.exists() else path.is_dir() and folder_without_work(path, recursive)
        if why:
            unusable[raw] = why
            click.echo(f"error: {raw}: {why}", err=True)
    jobs = list(iter_jobs([r for r in inputs if r not in unusable], outdir, recursive))
    if shard is not None:
        every = len(jobs)
        jobs = [j for j in jobs if shard.holds(j.rel)]
        click.echo(f"shard {shard}: {len(jobs)} of {every} file(s)", err=True)
    summary = run_jobs(jobs, work, finish, progress, desc=desc, workers=workers)
    summary.failed.extend(unusable.items())
    return summary


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
    help="Store each original face region, encrypted, in this vault (needs --key-file) for exact recovery: a file "
    "(SQLite), or mongodb://HOST:PORT/DBNAME for one vault shared by several machines (docs/scaling.md).",
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
    "--seed",
    type=int,
    default=None,
    help="Without a key: choose donors reproducibly (same input and seed, same output). Anyone holding the seed and "
    "this public code can redo the choice, so treat it as a secret; with --key-file the key does this instead.",
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
@shard_option
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
    seed,
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
    shard,
    detector,
    threshold,
    min_face,
):
    """Anonymise every face in INPUTS (files or folders).

    Pixels outside the face masks are kept; EXIF (with its thumbnail), XMP, IPTC and ICC data are
    never written. Files that cannot be read are reported and skipped; the exit code is 1 if any failed.
    """
    from .. import api

    shard = _shard(shard)
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
            seed=seed,
            keep_landmarks=keep_landmarks,
            detector=detector,
            threshold=threshold,
            min_face=min_face,
            device=device,
        )
        chosen = api.validate(settings)
        if backend == "onnx" and chosen != "generator":
            raise RefacexError(f"--backend onnx runs the generator's networks; method {chosen!r} has none to run")
        if backend == "onnx":
            from ..onnx_backend import use_onnx

            use_onnx(device="cuda" if device == "cuda" else "cpu")
        session = api.Session(settings)
    except RefacexError as exc:
        _fail(str(exc))
    _warn(session)
    writer, vault, key = session.writer, session.vault, settings.key
    try:
        if records:
            Path(records).parent.mkdir(parents=True, exist_ok=True)
        records_fh = open(records, "w", encoding="utf-8") if records else None
    except OSError as exc:
        session.close()
        _fail(f"{records}: cannot write the records ({exc.strerror or exc})")

    def work(job: Job):
        return api.anonymise_file(session, job.src, job.dst, fmt, quality, in_place)

    verified = 0  # faces whose payload a reader was shown to open in the written image

    def finish(job: Job, res, summary: Summary) -> None:
        nonlocal verified
        if res.skipped:
            summary.skipped += 1
            return
        summary.faces += len(res.faces)
        summary.count("given the fallback mosaic", sum(f.fallback is not None for f in res.faces))
        summary.count("doubtful detections not confirmed as faces, left as they were", res.unconfirmed)
        verified += sum(f.payload == "embedded" for f in res.faces)
        summary.no_face += not res.faces
        for note in res.notes:  # what the output lost (e.g. 16 bits kept in 8), said once per file
            click.echo(f"warning: {res.src}: {note}", err=True)
        if records_fh:
            records_fh.write(json.dumps({"input": str(res.src), "output": str(res.dst), "faces": [f.to_dict() for f in res.faces]}) + "\n")

    try:
        summary = _run(inputs, Path(outdir) if outdir else None, recursive, work, finish, "anonymise", progress, workers, shard)
    finally:
        if records_fh:
            records_fh.close()
        session.close()
    note = f"method: {writer.method}"
    if key is not None:
        note += f", key id {key_id(key)}, payloads in the {writer.embedder.watermark.name} watermark"
        if summary.faces:  # the others: small or weakly detected faces (docs/payload.md); the vault still has them
            note += f" ({verified} of {summary.faces} faces read back; see --records)"
    if vault is not None:
        note += f", originals in vault {vault.location}"  # a URI's password is never shown
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
@click.option(
    "--vault",
    "vault_path",
    type=click.Path(dir_okay=False),
    help="Restore bit-exact face regions from this vault (a file, or a mongodb://HOST:PORT/DBNAME URI).",
)
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
@shard_option
@_with(detector_options)
def recover(
    inputs,
    key_files,
    vault_path,
    watermark,
    outdir,
    in_place,
    recursive,
    approximate,
    as_json,
    workers,
    shard,
    detector,
    threshold,
    min_face,
):
    """Restore original faces in INPUTS with the secret key (admin only).

    With --vault: unchanged images by their pixel hash (bit-exact), changed ones (re-encoded,
    resized, cropped) through the vault references their faces' payloads carry. Without a vault
    only an approximation can be made, and only when asked for with --approximate. Writes an output
    only for images in which a face was restored; lists the others and why, and exits 1 if any
    image could not be restored.
    """
    from .. import api

    shard = _shard(shard)
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
        summary = _run(inputs, Path(outdir) if outdir else None, recursive, work, finish, "recover", workers=workers, shard=shard)
    finally:
        session.close()
    if approximate and summary.images:
        click.echo(
            "note: approximate recovery: each face was drawn by the recovery network from its payload's code; "
            "it is not the original face (--vault restores originals exactly)",
            err=True,
        )
    _finish(summary, "restored approximately" if approximate else "restored")
