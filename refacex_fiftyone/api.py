"""FiftyOne integration: anonymise a dataset (or view) in place, keep its labels, evaluate utility,
and recover under control. The plugin's operators (``fiftyone_plugin/``) call these functions,
and notebooks can too::

    import refacex_fiftyone.api as rfo
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

from refacex_plugin import api
from refacex_plugin.batch import Job, Summary, default_workers, run_jobs
from refacex_plugin.errors import RefacexError
from refacex_plugin.image_io import read_image
from refacex_plugin.keys import key_id, read_key_file

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


def _relative_path(src: Path, root: Path, sample_id: str) -> Path:
    """``src`` relative to ``root`` (the common folder of the run's originals): the layout the
    anonymised files, and later the recovered ones, take under their output folder."""
    try:
        return src.resolve().relative_to(root)
    except ValueError:
        return Path(f"{sample_id}{src.suffix}")


def anonymized_field(sample, source_field: str | None = None) -> str:
    """The media field holding ``sample``'s anonymised file: ``source_field`` when given, else the
    field its anonymise run wrote (``refacex.media_field``: ``filepath`` with ``target='replace'``,
    the ``media_field`` with ``target='field'``), else (samples anonymised before the field was
    remembered) ``anonymized_filepath`` when set, else ``filepath``."""
    if source_field:
        return source_field
    status = sample[STATUS_FIELD] if sample.has_field(STATUS_FIELD) else None
    if status and status.get("media_field"):
        return status["media_field"]
    if sample.has_field("anonymized_filepath") and sample["anonymized_filepath"]:
        return "anonymized_filepath"
    return "filepath"


def anonymized_media(sample, source_field: str | None = None) -> str:
    """The path of ``sample``'s anonymised file (:func:`anonymized_field`); a :class:`RefacexError`
    naming the field when it is empty."""
    name = anonymized_field(sample, source_field)
    media = sample[name] if sample.has_field(name) else None
    if not media:
        raise RefacexError(f"sample {sample.id}: no anonymised media in field {name!r}")
    return str(media)


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
            stores the anonymised path in ``media_field`` and leaves ``filepath`` alone. Either
            way the sample's ``refacex.media_field`` remembers where the anonymised media is, so
            :func:`extract_sample_payloads`, :func:`evaluate_samples` and :func:`recover_samples`
            read it there without being told.
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
    if target == "field" and (not media_field or media_field == "filepath"):
        raise ValueError("target='field' needs a media_field other than 'filepath'")
    session = api.Session(api.Settings.load(key_file, method=method, strength=strength, vault=vault, detector=detector))
    key, v = session.settings.key, session.vault
    out_dir = Path(output_dir) if output_dir else default_output_dir(samples)
    ids, paths = samples.values("id"), samples.values("filepath")
    status = samples.values(STATUS_FIELD) if samples.has_sample_field(STATUS_FIELD) else [None] * len(ids)
    root = Path(os.path.commonpath([str(Path(p).resolve().parent) for p in paths])) if paths else Path("/")
    jobs = [
        Job(Path(p), rel, out_dir / rel, tag=i)
        for i, p, st in zip(ids, paths, status)
        if not _is_done_status(st)
        for rel in [_relative_path(Path(p), root, i)]
    ]
    dataset = samples._dataset
    payload = "vault-ref" if v is not None else "recovery-code"

    def work(job: Job):
        return api.anonymise_file(session, job.src, job.dst)

    def finish(job: Job, res, summary: Summary) -> None:
        if res.skipped:  # its pixels are an anonymised image already in the vault: nothing was written
            summary.skipped += 1
            return
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
            # where the anonymised media is (extract, evaluate and recover read it there) and the
            # original's path relative to the run's common folder (recovered files are named by it)
            "media_field": "filepath" if target == "replace" else media_field,
            "original_relpath": job.rel.as_posix(),
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
        "anonymized": summary.images - summary.skipped,
        "skipped_already_done": len(ids) - len(jobs),
        "skipped_already_in_vault": summary.skipped,
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

    Each face found at anonymisation (``refacex_faces``) is paired with at most one face the
    detector finds on the anonymised media, and each of those with at most one stored face: the
    most overlapping pairs first, none below IoU 0.5 (:func:`match_faces`), so in a photo of
    several people every face is compared with itself, never with a neighbour. Per face, the
    detection gets ``eval_redetected`` and ``eval_nme``; per sample:
    ``refacex_eval_detection_retained`` (share of its faces found again),
    ``refacex_eval_landmark_nme`` (mean 5-point landmark error of its scored faces vs the stored
    ``refacex_landmarks``, over the stored inter-ocular distance, as the benchmark's ``detector_nme5``)
    and ``refacex_eval_identity_distance`` (dlib descriptor distance, original vs anonymised;
    >= 0.6 means "another person" to dlib). A face turned away or cut off by the image edge
    (stored eye distance under :data:`NME_MIN_EYE_RATIO` of its box width) has no inter-ocular
    scale: its error is not scored, and the summary counts it. The original comes from
    ``refacex_original_filepath``, from ``filepath`` when the anonymised media is in a field, or
    else from ``vault`` (with ``key_file``); where none is available the field stays empty and the
    summary's ``identity_distance_note`` says why. The dataset summary goes to ``dataset.info``; its
    ``landmark_nme_note`` says over how many faces the mean was taken and which were left out.

    Raises :class:`NotAnonymisedError` when samples are not anonymised yet (a summary over them
    would be empty or partial), unless ``skip_pending``; then they are left out and counted.
    """
    from refacex_plugin.detection import load_detector

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
    for name, kind in (("eval_redetected", fo.BooleanField), ("eval_nme", fo.FloatField)):  # per face: filterable in the App
        if ds.has_sample_field(FACES_FIELD) and not ds.has_field(f"{FACES_FIELD}.detections.{name}"):
            ds.add_sample_field(f"{FACES_FIELD}.detections.{name}", kind)
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


#: A stored face whose eye distance is under this share of its box width is turned away or cut
#: off: the inter-ocular distance is no scale for its landmark error (it would divide by almost 0).
#: Every central LFW face CenterFace finds is above 0.27 (150 checked); profiles and faces cut by
#: the image edge fall to 0.1-0.2.
NME_MIN_EYE_RATIO = 0.25
_MATCH_IOU = 0.5


def match_faces(stored: list, found: list, min_iou: float = _MATCH_IOU) -> dict[int, int]:
    """One-to-one pairs ``{stored index: found index}`` of x0 y0 x1 y1 boxes by overlap: the most
    overlapping pair first, each box used once, pairs under ``min_iou`` left unmatched (ties go to
    the lower indices, so the result does not depend on anything but the boxes)."""
    from refacex_plugin.detection import box_iou

    pairs = sorted(
        ((box_iou(a, b), i, j) for i, a in enumerate(stored) for j, b in enumerate(found)),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    matched: dict[int, int] = {}
    used: set[int] = set()
    for iou, i, j in pairs:
        if iou < min_iou:
            break
        if i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    return matched


def _evaluate(samples, n_total, pending, det, vault, vault_session, progress) -> dict:
    """Per-sample utility figures over ``samples`` (see :func:`evaluate_samples`) and their summary."""
    fo = _fo()
    recognizer = None
    retained_all, nme_all, dist_all = [], [], []
    extra = turned = no_landmarks = 0
    no_original, vault_failures = 0, []
    for n, sample in enumerate(samples.iter_samples(autosave=True, progress=False)):
        if not is_done(sample):
            continue
        field = anonymized_field(sample)
        media = anonymized_media(sample)
        rgb = read_image(media).rgb
        h, w = rgb.shape[:2]
        found = det(rgb)
        faces = sample[FACES_FIELD].detections if sample[FACES_FIELD] else []
        kps = {k.face_index: np.array(k.points) * [w, h] for k in (sample[LANDMARKS_FIELD].keypoints if sample[LANDMARKS_FIELD] else [])}
        boxes = [np.array([bx * w, by * h, (bx + bw) * w, (by + bh) * h]) for bx, by, bw, bh in (f.bounding_box for f in faces)]
        pairs = match_faces(boxes, list(found.boxes))
        extra += len(found) - len(pairs)
        retained, nmes = [], []
        for i, f in enumerate(faces):
            hit = pairs.get(i)
            retained.append(hit is not None)
            ref = kps.get(f.face_index)
            nme = None
            if hit is not None and ref is None:
                no_landmarks += 1
            elif hit is not None:
                iod = float(np.linalg.norm(ref[0] - ref[1]))
                if iod < NME_MIN_EYE_RATIO * (boxes[i][2] - boxes[i][0]):
                    turned += 1
                else:
                    nme = float(np.linalg.norm(found.landmarks[hit] - ref, axis=1).mean() / iod)
                    nmes.append(nme)
            f["eval_redetected"] = hit is not None
            f["eval_nme"] = nme
        if faces:
            sample[FACES_FIELD] = fo.Detections(detections=list(faces))
        sample[EVAL_PREFIX + "detection_retained"] = float(np.mean(retained)) if retained else None
        sample[EVAL_PREFIX + "landmark_nme"] = float(np.mean(nmes)) if nmes else None
        original = sample[ORIGINAL_FIELD] if sample.has_field(ORIGINAL_FIELD) else None
        if original is None and field != "filepath":
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
                from refacex_plugin.identity import DlibDescriptor

                recognizer = DlibDescriptor()
            sample[EVAL_PREFIX + "identity_distance"] = recognizer.distance(orig, rgb, boxes[0])
            dist_all.append(sample[EVAL_PREFIX + "identity_distance"])
        retained_all += retained
        nme_all += nmes
        if progress:
            progress((n + 1) / max(n_total, 1), f"evaluated {n + 1}/{n_total}")
    redetected = int(np.sum(retained_all))
    summary = {
        "faces": len(retained_all),
        "not_anonymized": pending,
        "detection_retention": float(np.mean(retained_all)) if retained_all else None,
        "faces_redetected": redetected,
        "faces_not_redetected": len(retained_all) - redetected,
        "extra_detections": extra,
        "landmark_nme_mean": float(np.mean(nme_all)) if nme_all else None,
        "landmark_nme_median": float(np.median(nme_all)) if nme_all else None,
        "landmark_nme_faces": len(nme_all),
        "landmark_nme_turned_faces": turned,
        "landmark_nme_note": _nme_note(len(retained_all), redetected, len(nme_all), turned, no_landmarks),
        "identity_distance_mean": float(np.mean(dist_all)) if dist_all else None,
        "identity_still_matching_dlib_0.6": float(np.mean(np.array(dist_all) < 0.6)) if dist_all else None,
        "identity_distance_note": _identity_note(no_original, vault_failures),
    }
    return summary


def _nme_note(faces: int, redetected: int, scored: int, turned: int, no_landmarks: int) -> str:
    """Over which faces ``landmark_nme_mean`` was taken, and why the others were left out."""
    parts = [f"mean over {scored} of {faces} faces"]
    if faces - redetected:
        parts.append(f"{faces - redetected} not found again on the anonymised media (IoU < {_MATCH_IOU})")
    if turned:
        parts.append(
            f"{turned} turned away or cut off by the image edge (eye distance under {NME_MIN_EYE_RATIO:g} of the box width: "
            "no inter-ocular scale) not scored"
        )
    if no_landmarks:
        parts.append(f"{no_landmarks} without stored landmarks")
    return "; ".join(parts)


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


def extract_sample_payloads(samples, key_file=None, progress: Progress | None = None, source_field: str | None = None) -> dict:
    """Read every face's payload in each sample's anonymised media (:func:`anonymized_field`:
    where its anonymise run wrote it, or ``source_field``); per sample store ``refacex_payloads``
    (found, authenticated, key id, version, kind per face; never a code) and return the totals."""
    session = api.Session(api.Settings.load(key_file), "read")
    keys = [session.settings.key] if session.settings.key is not None else []
    faces = found = authenticated = 0
    n_total = len(samples)
    for n, sample in enumerate(samples.iter_samples(autosave=False, progress=False)):
        rows = [f.to_dict() for f in api.read_payloads(session, anonymized_media(sample, source_field))]
        sample[PAYLOADS_FIELD] = rows
        sample.save()
        faces += len(rows)
        found += sum(r["payload_found"] for r in rows)
        authenticated += sum(r["authenticated"] for r in rows)
        if progress:
            progress((n + 1) / max(n_total, 1), f"read {n + 1}/{n_total}")
    return {"faces": faces, "payloads_found": found, "authenticated": authenticated, "key_id": key_id(keys[0]) if keys else None}


def _original_relpath(sample, media: str) -> Path:
    """The relative path a sample's restored file is named by: its original's path relative to
    the anonymise run's common folder (``refacex.original_relpath``); for samples anonymised
    before that was remembered, the original's name (from ``refacex_original_filepath``, from
    ``filepath`` when the anonymised media is in a field, else the anonymised file's, which keeps
    its original's name)."""
    status = sample[STATUS_FIELD] or {}
    rel = status.get("original_relpath")
    if rel and not Path(rel).is_absolute() and ".." not in Path(rel).parts:
        return Path(rel)
    original = sample[ORIGINAL_FIELD] if sample.has_field(ORIGINAL_FIELD) else None
    if not original and Path(media) != Path(sample.filepath):
        original = sample.filepath
    return Path(Path(original or media).name)


def _claim(tmp: Path, want: Path, sample_id: str) -> Path:
    """Give ``tmp`` the name ``want``, never over an existing file: a taken name becomes
    ``<stem>-<sample id><suffix>`` (then ``-2``, ``-3``, ... should that be taken too)."""
    k = 0
    while True:
        dst = want if k == 0 else want.with_name(f"{want.stem}-{sample_id}{'' if k == 1 else f'-{k}'}{want.suffix}")
        k += 1
        try:
            os.link(tmp, dst)  # fails when dst exists: no window for another writer to be overwritten
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            if dst.exists():
                continue
            os.replace(tmp, dst)
            return dst
        tmp.unlink()
        return dst


def recover_samples(
    samples,
    key_file: str | os.PathLike,
    vault: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    target: str = "field",
    media_field: str = "recovered_filepath",
    progress: Progress | None = None,
    source_field: str | None = None,
) -> dict:
    """Admin: restore original faces from the vault, into ``media_field`` or back into ``filepath``.

    Each sample's anonymised media is read where its anonymise run wrote it (``filepath`` or the
    run's media field; :func:`anonymized_field`), or from ``source_field``. The restored file is
    named as its original was, in the originals' folder layout, under ``output_dir``
    (:func:`_original_relpath`). An existing file is never overwritten: when the name is taken (on
    disk, or by another sample of this run with the same name) the file gets the sample id
    appended, ``<stem>-<sample id><suffix>``, and the result's ``renames`` says so for each. A
    sample whose ``media_field`` already holds a restored file under ``output_dir`` is skipped.
    """
    out_dir = Path(output_dir) if output_dir else default_output_dir(samples).with_name(samples._dataset.name + "-recovered")
    restored, failed, renames, skipped = 0, [], [], 0
    # without a watermark the session restores unchanged media only, by pixel hash
    with api.Session(api.Settings.load(key_file, vault=vault), "recover") as session:
        n_total = len(samples)
        for n, sample in enumerate(samples.iter_samples(autosave=False, progress=False)):
            if not is_done(sample):
                continue
            if target != "replace" and _recovered_before(sample, media_field, out_dir):
                skipped += 1
                continue
            try:
                src = Path(anonymized_media(sample, source_field))
                want = out_dir / _original_relpath(sample, str(src))
                want.parent.mkdir(parents=True, exist_ok=True)
                tmp = want.with_name(f".refacex-{sample.id}.partial{want.suffix}")
                try:
                    res = api.recover_file(session, src, tmp)
                    want = want.with_suffix(res.dst.suffix)  # the original's format decides the suffix
                    dst = _claim(res.dst, want, sample.id)
                finally:
                    for leftover in want.parent.glob(f".refacex-{sample.id}.partial*"):
                        leftover.unlink()
            except RefacexError as exc:
                failed.append(str(exc))
                continue
            if dst != want:
                renames.append({"sample_id": sample.id, "wanted": str(want), "written": str(dst)})
            if target == "replace":
                sample.filepath = str(dst)
                sample[STATUS_FIELD] = {**sample[STATUS_FIELD], "status": "recovered"}
                sample.metadata = None
            else:
                sample[media_field] = str(dst)
            sample.save()
            restored += 1
            if progress:
                progress((n + 1) / max(n_total, 1), f"recovered {n + 1}/{n_total}")
    note = None
    if renames:
        note = (
            f"{len(renames)} restored files were written under another name because theirs was taken "
            "(by an existing file or another sample's original of the same name): <name>-<sample id>; see renames"
        )
    return {
        "recovered": restored,
        "failed": len(failed),
        "errors": failed[:20],
        "output_dir": str(out_dir),
        "skipped_already_recovered": skipped,
        "renamed": len(renames),
        "renames": renames[:20],
        "note": note,
    }


def _recovered_before(sample, media_field: str, out_dir: Path) -> bool:
    """Whether ``sample``'s ``media_field`` already holds a restored file under ``out_dir``."""
    done = sample[media_field] if sample.has_field(media_field) else None
    return bool(done) and Path(done).is_file() and Path(done).resolve().is_relative_to(out_dir.resolve())
