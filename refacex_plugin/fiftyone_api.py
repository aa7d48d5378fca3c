"""FiftyOne integration: anonymise a dataset (or view) in place, keep its labels, evaluate utility,
and recover under control. The plugin's operators (``fiftyone_plugin/``) call these functions,
and notebooks can too::

    import refacex_plugin.fiftyone_api as rfo
    rfo.anonymize_samples(dataset.take(100), method="pixelate", key_file="admin.key", vault="faces.vault")

Every sample is updated by one document write after its anonymised file is fully written (and
its vault record committed), so an interrupted run leaves each sample either fully anonymised or
untouched; re-running skips the samples already done. Labels already on a sample are never
touched; refacex adds ``refacex_faces`` (detections), ``refacex_landmarks`` (5-point keypoints)
and ``refacex`` (status, method, key id, payload and vault state).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import api
from .batch import Job, Summary, default_workers, run_jobs
from .errors import RefacexError
from .image_io import read_image
from .keys import key_id, read_key_file

FACES_FIELD = "refacex_faces"
LANDMARKS_FIELD = "refacex_landmarks"
STATUS_FIELD = "refacex"
ORIGINAL_FIELD = "refacex_original_filepath"
EVAL_PREFIX = "refacex_eval_"

Progress = Callable[[float, str], None]


def _fo():
    import fiftyone as fo

    return fo


def is_done(sample) -> bool:
    return _is_done_status(sample[STATUS_FIELD] if sample.has_field(STATUS_FIELD) else None)


def _is_done_status(status: dict | None) -> bool:
    return bool(status) and status.get("status") == "anonymized"


def _labels(faces, height: int, width: int):
    fo = _fo()
    dets, kps = [], []
    for f in faces:
        x0, y0, x1, y1 = f.box
        dets.append(
            fo.Detection(
                label="face",
                bounding_box=[x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height],
                confidence=f.score,
                face_index=f.index,
                method=f.method,
                payload=f.payload,
            )
        )
        kps.append(fo.Keypoint(label="face", points=[[x / width, y / height] for x, y in f.landmarks], face_index=f.index))
    return fo.Detections(detections=dets), fo.Keypoints(keypoints=kps)


def _output_path(src: Path, root: Path, output_dir: Path, sample_id: str) -> Path:
    try:
        rel = src.resolve().relative_to(root)
    except ValueError:
        rel = Path(f"{sample_id}{src.suffix}")
    return output_dir / rel


def default_output_dir(samples) -> Path:
    fo = _fo()
    return Path(fo.config.default_dataset_dir) / "refacex" / samples._dataset.name


def anonymize_samples(
    samples,
    method: str | None = None,
    strength: float = 1.0,
    key_file: str | os.PathLike | None = None,
    vault: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    target: str = "replace",
    media_field: str = "anonymized_filepath",
    keep_originals: bool = False,
    detector: str = "centerface",
    progress: Progress | None = None,
    workers: int | None = None,
) -> dict:
    """Anonymise every face in ``samples`` (a dataset or view).

    Args:
        target: ``replace`` points each sample's ``filepath`` at its anonymised file (the original
            path is kept in ``refacex_original_filepath`` only if ``keep_originals``); ``field``
            stores the anonymised path in ``media_field`` and leaves ``filepath`` alone.
        key_file, vault: with both, each original face region is stored encrypted in the vault
            and can be restored by :func:`recover_samples`; without, anonymisation is irreversible.
            A key without a vault is refused unless the method is reversible (:func:`refacex_plugin.api.validate`).
        workers: files worked on at once (:func:`~refacex_plugin.batch.run_jobs`; default one per
            core, at most 4); samples are saved in order, each after its file is written.

    Returns:
        a summary dict (counts, output folder, whether the result is reversible).
    """
    if target not in ("replace", "field"):
        raise ValueError("target must be 'replace' or 'field'")
    session = api.Session(api.Settings.load(key_file, method=method, strength=strength, vault=vault, detector=detector))
    key, v = session.settings.key, session.vault
    out_dir = Path(output_dir) if output_dir else default_output_dir(samples)
    ids, paths = samples.values("id"), samples.values("filepath")
    status = samples.values(STATUS_FIELD) if samples.has_sample_field(STATUS_FIELD) else [None] * len(ids)
    root = Path(os.path.commonpath([str(Path(p).resolve().parent) for p in paths])) if paths else Path("/")
    jobs = [
        Job(Path(p), Path(Path(p).name), _output_path(Path(p), root, out_dir, i), tag=i)
        for i, p, st in zip(ids, paths, status)
        if not _is_done_status(st)
    ]
    dataset = samples._dataset
    payload = "vault-ref" if v is not None else "recovery-code"

    def work(job: Job):
        return api.anonymise_file(session, job.src, job.dst)

    def finish(job: Job, res, summary: Summary) -> None:
        sample = dataset[job.tag]
        dets, kps = _labels(res.faces, *res.size)
        sample[FACES_FIELD] = dets
        sample[LANDMARKS_FIELD] = kps
        sample[STATUS_FIELD] = {
            "status": "anonymized",
            "method": session.method,
            "faces": len(res.faces),
            "reversible": v is not None,
            "key_id": key_id(key) if key else None,
            "vault_records": res.vault_records,
            "payload": payload if res.faces and all(f.payload.startswith("embedded") for f in res.faces) else "none",
        }
        if target == "replace":
            if keep_originals:
                sample[ORIGINAL_FIELD] = str(job.src)
            sample.filepath = str(res.dst)
            sample.metadata = None
        else:
            sample[media_field] = str(res.dst)
        sample.save()  # one document write, after the file and its vault record: the sample is either done or untouched
        summary.faces += len(res.faces)
        if progress:
            n = summary.images + len(summary.failed) + 1
            progress(n / max(len(jobs), 1), f"{n}/{len(jobs)} samples")

    try:
        summary = run_jobs(
            jobs, work, finish, progress=False, log=lambda msg: None, workers=default_workers() if workers is None else workers
        )
    finally:
        session.close()
    if target == "field":
        ds = samples._dataset
        if media_field not in (ds.app_config.media_fields or []):
            ds.app_config.media_fields = list(dict.fromkeys([*(ds.app_config.media_fields or ["filepath"]), media_field]))
            ds.save()
    return {
        "anonymized": summary.images,
        "skipped_already_done": len(ids) - len(jobs),
        "failed": len(summary.failed),
        "errors": [msg for _, msg in summary.failed[:20]],
        "faces": summary.faces,
        "method": session.method,
        "output_dir": str(out_dir),
        "reversible": v is not None,
        "note": None if v is not None else _irreversible_note(key is not None),
    }


def _irreversible_note(has_key: bool) -> str:
    if has_key:  # a reversible method: its payloads carry recovery codes
        return "approximate recovery only: a key but no vault (set the REFACEX_VAULT secret or pass vault= for exact recovery)"
    return "irreversible: no key/vault configured, originals cannot be restored by refacex"


class NotAnonymisedError(RefacexError):
    """Evaluation was asked for samples that are not anonymised yet."""


def pending_count(samples) -> int:
    """How many samples of ``samples`` are not anonymised (yet)."""
    if not samples.has_sample_field(STATUS_FIELD):
        return len(samples)
    return sum(not _is_done_status(st) for st in samples.values(STATUS_FIELD))


def _original_from_vault(media: str, session: api.Session) -> np.ndarray:
    """The original image of an anonymised file, restored through the recover use case (the
    session's vault and key); the restored file lives in a private temporary folder only while it
    is read."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="refacex-eval-") as tmp:
        return read_image(api.recover_file(session, media, Path(tmp) / f"original{Path(media).suffix}").dst).rgb


def evaluate_samples(
    samples,
    detector: str = "centerface",
    progress: Progress | None = None,
    key_file: str | os.PathLike | None = None,
    vault: str | os.PathLike | None = None,
    skip_pending: bool = False,
) -> dict:
    """Re-detect faces and landmarks on the anonymised media and store per-sample utility figures.

    Per sample: ``refacex_eval_detection_retained`` (share of the faces found at anonymisation that
    the detector still finds, IoU >= 0.5), ``refacex_eval_landmark_nme`` (5-point landmark error vs
    the stored ``refacex_landmarks``, over the inter-ocular distance) and
    ``refacex_eval_identity_distance`` (dlib descriptor distance, original vs anonymised; >= 0.6
    means "another person" to dlib). The original comes from ``refacex_original_filepath``, from
    ``filepath`` when the anonymised media is in a field, or else from ``vault`` (with
    ``key_file``); where none is available the field stays empty and the summary's
    ``identity_distance_note`` says why. The dataset summary goes to ``dataset.info``.

    Raises :class:`NotAnonymisedError` when samples are not anonymised yet (a summary over them
    would be empty or partial), unless ``skip_pending``; then they are left out and counted.
    """
    from .detection import load_detector

    fo = _fo()
    ds = samples._dataset
    n_total = len(samples)
    pending = pending_count(samples)
    if not n_total:
        raise NotAnonymisedError("no samples to evaluate")
    if pending == n_total or (pending and not skip_pending):
        raise NotAnonymisedError(
            f"{pending} of {n_total} samples are not anonymised yet: run anonymize_faces on them first "
            "(or wait for its run to finish)" + ("" if pending == n_total else ", or evaluate only the anonymised ones (skip_pending)")
        )
    if vault and not key_file:
        raise RefacexError("reading the vault needs a key file (set the REFACEX_KEY_FILE secret)")
    for name in ("detection_retained", "landmark_nme", "identity_distance"):
        if not ds.has_sample_field(EVAL_PREFIX + name):
            ds.add_sample_field(EVAL_PREFIX + name, fo.FloatField)
    det = load_detector(detector)
    with contextlib.ExitStack() as opened:
        recovering = None  # the recover session, opened for the first original the vault must give

        def vault_session() -> api.Session:
            nonlocal recovering
            if recovering is None:
                settings = api.Settings(key=read_key_file(key_file), vault=vault)
                recovering = opened.enter_context(api.Session(settings, "recover", reuse_models=True))
            return recovering

        summary = _evaluate(samples, n_total, pending, det, vault, vault_session, progress)
    ds.info["refacex_evaluation"] = summary
    ds.save()
    return summary


def _evaluate(samples, n_total, pending, det, vault, vault_session, progress) -> dict:
    """Per-sample utility figures over ``samples`` (see :func:`evaluate_samples`) and their summary."""
    from .detection import box_iou

    recognizer = None
    retained_all, nme_all, dist_all = [], [], []
    no_original, vault_failures = 0, []
    for n, sample in enumerate(samples.iter_samples(autosave=True, progress=False)):
        if not is_done(sample):
            continue
        media = (
            sample["anonymized_filepath"] if sample.has_field("anonymized_filepath") and sample["anonymized_filepath"] else sample.filepath
        )
        rgb = read_image(media).rgb
        h, w = rgb.shape[:2]
        found = det(rgb)
        faces = sample[FACES_FIELD].detections if sample[FACES_FIELD] else []
        kps = {k.face_index: np.array(k.points) * [w, h] for k in (sample[LANDMARKS_FIELD].keypoints if sample[LANDMARKS_FIELD] else [])}
        retained, nmes = [], []
        for f in faces:
            bx, by, bw, bh = f.bounding_box
            box = np.array([bx * w, by * h, (bx + bw) * w, (by + bh) * h])
            ious = [box_iou(box, b) for b in found.boxes]
            hit = int(np.argmax(ious)) if ious and max(ious) >= 0.5 else None
            retained.append(hit is not None)
            ref = kps.get(f.face_index)
            if hit is not None and ref is not None:
                iod = max(np.linalg.norm(ref[0] - ref[1]), 1e-6)
                nmes.append(float(np.linalg.norm(found.landmarks[hit] - ref, axis=1).mean() / iod))
        sample[EVAL_PREFIX + "detection_retained"] = float(np.mean(retained)) if retained else None
        sample[EVAL_PREFIX + "landmark_nme"] = float(np.mean(nmes)) if nmes else None
        original = sample[ORIGINAL_FIELD] if sample.has_field(ORIGINAL_FIELD) else None
        if original is None and media != sample.filepath:
            original = sample.filepath
        orig = read_image(original).rgb if original and faces else None
        if orig is None and faces and vault:
            try:
                orig = _original_from_vault(media, vault_session())
            except RefacexError as exc:
                vault_failures.append(str(exc))
        elif orig is None and faces:
            no_original += 1
        sample[EVAL_PREFIX + "identity_distance"] = None
        if orig is not None:
            if recognizer is None:
                from .identity import DlibDescriptor

                recognizer = DlibDescriptor()
            bx, by, bw, bh = faces[0].bounding_box
            first = np.array([bx * w, by * h, (bx + bw) * w, (by + bh) * h])
            sample[EVAL_PREFIX + "identity_distance"] = recognizer.distance(orig, rgb, first)
            dist_all.append(sample[EVAL_PREFIX + "identity_distance"])
        retained_all += retained
        nme_all += nmes
        if progress:
            progress((n + 1) / max(n_total, 1), f"evaluated {n + 1}/{n_total}")
    summary = {
        "faces": len(retained_all),
        "not_anonymized": pending,
        "detection_retention": float(np.mean(retained_all)) if retained_all else None,
        "landmark_nme_mean": float(np.mean(nme_all)) if nme_all else None,
        "identity_distance_mean": float(np.mean(dist_all)) if dist_all else None,
        "identity_still_matching_dlib_0.6": float(np.mean(np.array(dist_all) < 0.6)) if dist_all else None,
        "identity_distance_note": _identity_note(no_original, vault_failures),
    }
    return summary


def _identity_note(no_original: int, vault_failures: list[str]) -> str | None:
    """Why some samples with faces have no ``refacex_eval_identity_distance`` (None when all have one)."""
    notes = []
    if no_original:
        notes.append(
            f"{no_original} samples have no original to compare with: anonymise with keep_originals=True "
            "or target='field', or give the key and vault (REFACEX_KEY_FILE / REFACEX_VAULT secrets)"
        )
    if vault_failures:
        notes.append(f"{len(vault_failures)} samples could not be restored from the vault (first: {vault_failures[0]})")
    return "; ".join(notes) or None


PAYLOADS_FIELD = "refacex_payloads"


def extract_sample_payloads(samples, key_file=None, progress: Progress | None = None) -> dict:
    """Read every face's payload; per sample store ``refacex_payloads`` (found, authenticated, key
    id, version, kind per face; never a code) and return the totals."""
    session = api.Session(api.Settings.load(key_file), "read")
    keys = [session.settings.key] if session.settings.key is not None else []
    faces = found = authenticated = 0
    n_total = len(samples)
    for n, sample in enumerate(samples.iter_samples(autosave=False, progress=False)):
        rows = [f.to_dict() for f in api.read_payloads(session, sample.filepath)]
        sample[PAYLOADS_FIELD] = rows
        sample.save()
        faces += len(rows)
        found += sum(r["payload_found"] for r in rows)
        authenticated += sum(r["authenticated"] for r in rows)
        if progress:
            progress((n + 1) / max(n_total, 1), f"read {n + 1}/{n_total}")
    return {"faces": faces, "payloads_found": found, "authenticated": authenticated, "key_id": key_id(keys[0]) if keys else None}


def recover_samples(
    samples,
    key_file: str | os.PathLike,
    vault: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    target: str = "field",
    media_field: str = "recovered_filepath",
    progress: Progress | None = None,
) -> dict:
    """Admin: restore original faces from the vault, into ``media_field`` or back into ``filepath``."""
    out_dir = Path(output_dir) if output_dir else default_output_dir(samples).with_name(samples._dataset.name + "-recovered")
    restored, failed = 0, []
    # without a watermark the session restores unchanged media only, by pixel hash
    with api.Session(api.Settings.load(key_file, vault=vault), "recover") as session:
        n_total = len(samples)
        for n, sample in enumerate(samples.iter_samples(autosave=False, progress=False)):
            if not is_done(sample):
                continue
            src = Path(sample.filepath)
            try:
                res = api.recover_file(session, src, out_dir / f"{sample.id}{src.suffix}")
            except RefacexError as exc:
                failed.append(str(exc))
                continue
            if target == "replace":
                sample.filepath = str(res.dst)
                sample[STATUS_FIELD] = {**sample[STATUS_FIELD], "status": "recovered"}
                sample.metadata = None
            else:
                sample[media_field] = str(res.dst)
            sample.save()
            restored += 1
            if progress:
                progress((n + 1) / max(n_total, 1), f"recovered {n + 1}/{n_total}")
    return {"recovered": restored, "failed": len(failed), "errors": failed[:20], "output_dir": str(out_dir)}
