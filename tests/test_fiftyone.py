"""The FiftyOne plugin against a real FiftyOne database (the bundled mongod) and real LFW faces."""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

_DB = tempfile.mkdtemp(prefix="refacex-fodb-")
_PLUGINS = tempfile.mkdtemp(prefix="refacex-foplugins-")
os.environ.setdefault("FIFTYONE_DATABASE_DIR", _DB)
os.environ["FIFTYONE_PLUGINS_DIR"] = _PLUGINS
os.environ.update(FIFTYONE_DO_NOT_TRACK="true", FIFTYONE_SHOW_PROGRESS_BARS="false", FIFTYONE_DATABASE_VALIDATION="false")
fo = pytest.importorskip("fiftyone")

from PIL import Image  # noqa: E402

import refacex_fiftyone.api as api  # noqa: E402
from refacex_plugin.errors import RefacexError  # noqa: E402
from refacex_plugin.image_io import read_image  # noqa: E402
from refacex_plugin.keys import write_key_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
URI = "@refacex/refacex"
os.symlink(REPO / "fiftyone_plugin", Path(_PLUGINS) / "refacex")


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    path = tmp_path / "admin.key"
    write_key_file(path)
    monkeypatch.setenv("REFACEX_KEY_FILE", str(path))
    return path


def make_dataset(name, lfw_sample, tmp_path, n=6):
    """Real LFW faces (as PNG, so recovery can be checked bit for bit) with labels of their own."""
    media = tmp_path / f"media-{name}"
    media.mkdir()
    ds = fo.Dataset(name, overwrite=True, persistent=True)
    samples = []
    for _i, p in enumerate(lfw_sample[:n]):
        dst = media / (p.stem + ".png")
        Image.open(p).save(dst)
        samples.append(
            fo.Sample(
                filepath=str(dst),
                person=fo.Classification(label=p.parent.name),
                ground_truth=fo.Detections(detections=[fo.Detection(label="head", bounding_box=[0.3, 0.25, 0.4, 0.5])]),
                gt_landmarks=fo.Keypoints(keypoints=[fo.Keypoint(label="eyes", points=[[0.42, 0.45], [0.58, 0.45]])]),
                tags=["lfw"],
            )
        )
    ds.add_samples(samples)
    return ds


def _labels(ds):
    return {s.id: (s.person.to_dict(), s.ground_truth.to_dict(), s.gt_landmarks.to_dict(), list(s.tags)) for s in ds}


def _pixels(ds):
    return {s.id: read_image(s.filepath).rgb for s in ds}


def test_plugin_is_discovered_with_every_operator():
    import fiftyone.plugins as fop
    import yaml

    names = {o.name for o in __import__("fiftyone.operators", fromlist=["list_operators"]).list_operators(enabled=True)}
    declared = yaml.safe_load((REPO / "fiftyone_plugin" / "fiftyone.yml").read_text())["operators"]
    assert set(declared) <= names, names
    assert "REFACEX_KEY_FILE" in yaml.safe_load((REPO / "fiftyone_plugin" / "fiftyone.yml").read_text())["secrets"]
    assert any(p.name == URI for p in fop.list_plugins())


def test_anonymize_evaluate_recover_round_trip(lfw_sample, tmp_path, key_file):
    import fiftyone.operators as foo

    ds = make_dataset("refacex-roundtrip", lfw_sample, tmp_path)
    labels, originals = _labels(ds), _pixels(ds)
    vault = tmp_path / "faces.vault"
    params = {"method": "pixelate", "target": "replace", "vault": str(vault), "output_dir": str(tmp_path / "anon"), "delegate": False}
    res = foo.execute_operator(f"{URI}/anonymize_faces", ctx={"dataset": ds, "view": ds.view(), "params": params})
    assert res.error is None, res.error
    out = res.result
    assert out["anonymized"] == 6 and out["reversible"] and out["failed"] == 0
    ds.reload()
    assert _labels(ds) == labels  # existing labels untouched
    for s in ds:
        assert Path(s.filepath).is_file() and str(tmp_path / "anon") in s.filepath
        assert not np.array_equal(read_image(s.filepath).rgb, originals[s.id])
        assert s.refacex["status"] == "anonymized" and s.refacex["vault_records"] >= 1
        assert len(s.refacex_faces.detections) >= 1 and len(s.refacex_landmarks.keypoints[0].points) == 5
        assert not s.has_field(api.ORIGINAL_FIELD) or s[api.ORIGINAL_FIELD] is None  # originals not referenced
        assert str(key_file) not in str(s.to_dict())  # the key never lands in the dataset

    assert all(s.refacex["payload"] == "vault-ref" for s in ds)  # every face carries a sealed vault reference
    ext = foo.execute_operator(f"{URI}/extract_payloads", ctx={"dataset": ds, "view": ds.view(), "params": {}})
    assert ext.error is None, ext.error
    assert ext.result["faces"] >= 4 and ext.result["payloads_found"] >= ext.result["authenticated"]
    ds.reload()  # how many decode is the watermark's business (docs/payload.md); what decodes is ours
    rows = [f for s in ds for f in (s[api.PAYLOADS_FIELD] or [])]
    assert len(rows) == ext.result["faces"] and all(f["kind"] == "vault-ref" for f in rows if f["authenticated"])
    assert all({"payload_found", "authenticated", "key_id", "kind"} <= set(f) for f in rows)

    again = foo.execute_operator(f"{URI}/anonymize_faces", ctx={"dataset": ds, "view": ds.view(), "params": params}).result
    assert again["anonymized"] == 0 and again["skipped_already_done"] == 6

    ev = foo.execute_operator(f"{URI}/evaluate_anonymization", ctx={"dataset": ds, "view": ds.view(), "params": {"delegate": False}})
    assert ev.error is None, ev.error
    ds.reload()
    assert 0 <= ev.result["detection_retention"] <= 1 and ds.info["refacex_evaluation"]["faces"] >= 6
    assert all(s[api.EVAL_PREFIX + "detection_retained"] is not None for s in ds)
    worst = ds.sort_by(api.EVAL_PREFIX + "landmark_nme", reverse=True).first()  # sortable in the App
    assert worst is not None

    rec = foo.execute_operator(
        f"{URI}/recover_faces",
        ctx={
            "dataset": ds,
            "view": ds.view(),
            "params": {"vault": str(vault), "target": "field", "output_dir": str(tmp_path / "rec"), "delegate": False},
        },
    )
    assert rec.error is None, rec.error
    assert rec.result["recovered"] == 6
    ds.reload()
    for s in ds:
        assert np.array_equal(read_image(s.recovered_filepath).rgb, originals[s.id])  # bit for bit


def test_without_a_key_it_still_anonymizes_irreversibly(lfw_sample, tmp_path, monkeypatch):
    import fiftyone.operators as foo

    monkeypatch.delenv("REFACEX_KEY_FILE", raising=False)
    ds = make_dataset("refacex-nokey", lfw_sample, tmp_path, n=3)
    res = foo.execute_operator(
        f"{URI}/anonymize_faces",
        ctx={"dataset": ds, "view": ds.view(), "params": {"target": "field", "output_dir": str(tmp_path / "anon"), "delegate": False}},
    ).result
    assert res["anonymized"] == 3 and not res["reversible"] and "irreversible" in res["note"], res
    ds.reload()
    for s in ds:  # target=field: filepath untouched, anonymised media in a new media field
        assert Path(s.filepath).parent.name.startswith("media-") and Path(s.anonymized_filepath).is_file()
    assert "anonymized_filepath" in ds.app_config.media_fields
    ext = foo.execute_operator(f"{URI}/extract_payloads", ctx={"dataset": ds, "view": ds.view(), "params": {}})
    assert ext.error is None, ext.error
    assert ext.result["payloads_found"] == 0 and ext.result["authenticated"] == 0  # nothing was embedded


def test_delegated_execution(lfw_sample, tmp_path, key_file):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    ds = make_dataset("refacex-delegated", lfw_sample, tmp_path, n=3)
    queued = foo.execute_operator(
        f"{URI}/anonymize_faces",
        ctx={
            "dataset": ds,
            "view": ds.view(),
            "request_delegation": True,
            "params": {"method": "blur", "output_dir": str(tmp_path / "anon"), "vault": str(tmp_path / "v.vault"), "delegate": True},
        },
    )
    assert queued.delegated
    svc = DelegatedOperationService()
    svc.execute_queued_operations(dataset_name=ds.name)
    ds.reload()
    assert all(s.refacex["status"] == "anonymized" for s in ds)


def test_killed_run_leaves_samples_whole_and_rerun_finishes(lfw_sample, tmp_path, key_file):
    ds = make_dataset("refacex-killed", lfw_sample, tmp_path, n=6)
    labels, originals = _labels(ds), {s.id: s.filepath for s in ds}
    vault = tmp_path / "v.vault"
    script = textwrap.dedent(f"""
        import os, signal
        calls = [0]
        real = os.fsync
        def fsync(fd):
            import stat
            calls[0] += stat.S_ISREG(os.fstat(fd).st_mode)  # count file writes, not folder syncs
            if calls[0] == 3:  # the third anonymised file is written but not yet renamed or saved
                os.kill(os.getpid(), signal.SIGKILL)
            real(fd)
        os.fsync = fsync
        import fiftyone as fo
        import refacex_fiftyone.api as api
        api.anonymize_samples(fo.load_dataset({ds.name!r}), method="pixelate", key_file={str(key_file)!r},
                              vault={str(vault)!r}, output_dir={str(tmp_path / "anon")!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    ds.reload()
    done = [s for s in ds if api.is_done(s)]
    assert 1 <= len(done) <= 2  # two files were written; with several workers the second may not be saved yet
    for s in ds:
        if api.is_done(s):
            assert Path(s.filepath).is_file() and s.filepath != originals[s.id]
        else:  # untouched: original media, no refacex fields
            assert s.filepath == originals[s.id] and not s.has_field("refacex_faces") or s["refacex_faces"] is None
    assert _labels(ds) == labels
    res = api.anonymize_samples(ds, method="pixelate", key_file=key_file, vault=vault, output_dir=tmp_path / "anon")
    assert res["anonymized"] == 6 - len(done) and res["skipped_already_done"] == len(done)


def test_vault_secret_is_honoured_from_the_sdk_and_delegated(lfw_sample, tmp_path, key_file, monkeypatch):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    vault = tmp_path / "secret.vault"
    monkeypatch.setenv("REFACEX_VAULT", str(vault))  # a plugin secret is an environment variable in open-source FiftyOne
    ds = make_dataset("refacex-vault-secret", lfw_sample, tmp_path, n=2)
    originals = _pixels(ds)
    params = {"method": "pixelate", "output_dir": str(tmp_path / "anon"), "delegate": False}  # no vault parameter
    res = foo.execute_operator(f"{URI}/anonymize_faces", ctx={"dataset": ds, "view": ds.view(), "params": params})
    assert res.error is None, res.error
    assert res.result["reversible"] and res.result["note"] is None and vault.is_file()
    ds.reload()
    assert all(s.refacex["reversible"] and s.refacex["vault_records"] >= 1 for s in ds)
    rec = foo.execute_operator(
        f"{URI}/recover_faces",
        ctx={"dataset": ds, "view": ds.view(), "params": {"target": "field", "output_dir": str(tmp_path / "rec"), "delegate": False}},
    )
    assert rec.error is None, rec.error
    assert rec.result["recovered"] == 2
    ds.reload()
    assert all(np.array_equal(read_image(s.recovered_filepath).rgb, originals[s.id]) for s in ds)

    queued_ds = make_dataset("refacex-vault-secret-delegated", lfw_sample[2:], tmp_path, n=2)
    queued = foo.execute_operator(
        f"{URI}/anonymize_faces",
        ctx={
            "dataset": queued_ds,
            "view": queued_ds.view(),
            "request_delegation": True,
            "params": {**params, "output_dir": str(tmp_path / "anon-d"), "delegate": True},
        },
    )
    assert queued.delegated
    DelegatedOperationService().execute_queued_operations(dataset_name=queued_ds.name)
    queued_ds.reload()
    assert all(s.refacex["status"] == "anonymized" and s.refacex["reversible"] for s in queued_ds)


def test_a_key_without_a_vault_is_refused_as_in_every_front_end(lfw_sample, tmp_path, key_file, monkeypatch):
    """The key secret but no vault, with the default (irreversible) method: the operator refuses
    with the use-case layer's message (the CLI's and Label Studio's tests check theirs say the
    same) and no sample changes."""
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    from refacex_plugin.anonymisers import default_method
    from refacex_plugin.api import irreversible_message

    monkeypatch.delenv("REFACEX_VAULT", raising=False)
    one = make_dataset("refacex-key-no-vault", lfw_sample[4:], tmp_path, n=1)
    before = {s.id: s.filepath for s in one}
    with pytest.raises(ExecutionError) as exc:
        foo.execute_operator(
            f"{URI}/anonymize_faces",
            ctx={"dataset": one, "view": one.view(), "params": {"output_dir": str(tmp_path / "anon"), "delegate": False}},
        )
    assert irreversible_message(default_method()) in str(exc.value), str(exc.value)[-500:]
    one.reload()
    assert {s.id: s.filepath for s in one} == before and api.pending_count(one) == 1
    assert not (tmp_path / "anon").exists()


def test_evaluate_refuses_samples_not_anonymised_yet(lfw_sample, tmp_path, key_file):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionError

    ds = make_dataset("refacex-eval-early", lfw_sample, tmp_path, n=3)
    with pytest.raises(RefacexError, match="3 of 3 samples are not anonymised yet"):
        api.evaluate_samples(ds)
    with pytest.raises(ExecutionError, match="not anonymised yet"):
        foo.execute_operator(f"{URI}/evaluate_anonymization", ctx={"dataset": ds, "view": ds.view(), "params": {"delegate": False}})
    assert "refacex_evaluation" not in ds.info

    # Queued in order anonymise, evaluate: FiftyOne's executor runs the newest first.
    for op, params in (
        # the key secret is set: a vault with it (a key without one is refused for pixelate)
        (
            "anonymize_faces",
            {"method": "pixelate", "output_dir": str(tmp_path / "anon"), "vault": str(tmp_path / "v.vault"), "delegate": True},
        ),
        ("evaluate_anonymization", {"delegate": True}),
    ):
        assert foo.execute_operator(
            f"{URI}/{op}", ctx={"dataset": ds, "view": ds.view(), "request_delegation": True, "params": params}
        ).delegated
    svc = DelegatedOperationService()
    svc.execute_queued_operations(dataset_name=ds.name)
    ds.reload()
    assert all(api.is_done(s) for s in ds)
    evals = svc.list_operations(operator=f"{URI}/evaluate_anonymization", dataset_name=ds.name)
    assert len(evals) == 1
    outcome = evals[0].result
    if outcome.error:  # it ran before the anonymise: refused, and says why
        assert "not anonymised yet" in outcome.error and "queued" in outcome.error, outcome.error
        assert "refacex_evaluation" not in ds.info
    else:
        assert outcome.result["faces"] >= 3
    assert ds.info.get("refacex_evaluation", {}).get("faces") != 0  # never a summary of nothing

    fresh = make_dataset("refacex-eval-partial", lfw_sample[3:], tmp_path, n=3)
    api.anonymize_samples(fresh.limit(2), method="pixelate", output_dir=tmp_path / "anon-p")
    with pytest.raises(RefacexError, match="1 of 3 samples"):
        api.evaluate_samples(fresh)
    summary = api.evaluate_samples(fresh, skip_pending=True)
    assert summary["faces"] >= 2 and summary["not_anonymized"] == 1


def test_identity_distance_from_the_vault_or_explained(lfw_sample, tmp_path, key_file, monkeypatch):
    import tempfile as tf

    import fiftyone.operators as foo

    vault = tmp_path / "faces.vault"
    ds = make_dataset("refacex-eval-identity", lfw_sample, tmp_path, n=3)
    api.anonymize_samples(ds, method="pixelate", key_file=key_file, vault=vault, output_dir=tmp_path / "anon")  # originals not kept

    summary = api.evaluate_samples(ds)  # no vault: no original to compare with, and it says so
    ds.reload()
    assert summary["identity_distance_mean"] is None and "no original" in summary["identity_distance_note"]
    assert all(s[api.EVAL_PREFIX + "identity_distance"] is None for s in ds)

    before = set(Path(tf.gettempdir()).glob("refacex-eval-*"))
    monkeypatch.setenv("REFACEX_VAULT", str(vault))
    ev = foo.execute_operator(f"{URI}/evaluate_anonymization", ctx={"dataset": ds, "view": ds.view(), "params": {"delegate": False}})
    assert ev.error is None, ev.error
    ds.reload()
    dists = [s[api.EVAL_PREFIX + "identity_distance"] for s in ds if s.refacex_faces.detections]
    assert len(dists) >= 2 and all(d is not None and d > 0 for d in dists)
    assert ev.result["identity_distance_note"] is None and ev.result["identity_distance_mean"] == pytest.approx(np.mean(dists))
    assert set(Path(tf.gettempdir()).glob("refacex-eval-*")) == before  # no restored original left on disk


def test_delegated_evaluate_waits_for_a_running_anonymize(lfw_sample, tmp_path):
    import threading
    import time

    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    ds = make_dataset("refacex-eval-wait", lfw_sample, tmp_path, n=3)
    svc = DelegatedOperationService()
    ctx = {"dataset": ds, "view": ds.view(), "request_delegation": True}
    foo.execute_operator(f"{URI}/anonymize_faces", ctx={**ctx, "params": {"method": "pixelate", "delegate": True}})
    foo.execute_operator(f"{URI}/evaluate_anonymization", ctx={**ctx, "params": {"delegate": True}})
    (anon,) = svc.list_operations(operator=f"{URI}/anonymize_faces", dataset_name=ds.name)
    (ev,) = svc.list_operations(operator=f"{URI}/evaluate_anonymization", dataset_name=ds.name)
    svc.set_running(anon.id)  # another worker has taken the anonymise run

    def other_worker():
        while svc.get(ev.id).run_state == ExecutionRunState.QUEUED:  # until the evaluate has started
            time.sleep(0.2)
        time.sleep(1)
        api.anonymize_samples(fo.load_dataset(ds.name), method="pixelate", output_dir=tmp_path / "anon")
        svc.set_completed(anon.id)

    worker = threading.Thread(target=other_worker)
    worker.start()
    done = svc.execute_operation(ev)
    worker.join()
    assert done.error is None, done.error
    assert done.result["faces"] >= 3 and done.result["not_anonymized"] == 0


def test_target_field_is_read_by_extract_evaluate_and_recover(lfw_sample, tmp_path, key_file):
    """Anonymised into a media field of the user's naming: extract, evaluate and recover read it
    there (the anonymise run remembers the field on each sample) without being told, never the
    originals left in filepath."""
    import fiftyone.operators as foo

    ds = make_dataset("refacex-field-target", lfw_sample, tmp_path, n=3)
    originals, names = _pixels(ds), {s.id: Path(s.filepath).name for s in ds}
    vault = tmp_path / "faces.vault"
    params = {
        "method": "pixelate",
        "target": "field",
        "media_field": "anon_media",
        "vault": str(vault),
        "output_dir": str(tmp_path / "anon"),
        "delegate": False,
    }
    res = foo.execute_operator(f"{URI}/anonymize_faces", ctx={"dataset": ds, "view": ds.view(), "params": params})
    assert res.error is None, res.error
    ds.reload()
    assert all(Path(s.anon_media).is_file() and Path(s.filepath).parent.name.startswith("media-") for s in ds)

    ext = foo.execute_operator(f"{URI}/extract_payloads", ctx={"dataset": ds, "view": ds.view(), "params": {}})
    assert ext.error is None, ext.error
    assert ext.result["authenticated"] >= 2, ext.result  # the anonymised media's sealed payloads, not the originals' none
    ds.reload()
    assert all(f["kind"] == "vault-ref" for s in ds for f in s[api.PAYLOADS_FIELD] if f["authenticated"])

    summary = api.evaluate_samples(ds)  # the original is filepath: identity measured against it
    assert summary["identity_distance_note"] is None and summary["identity_distance_mean"] > 0, summary

    rec = foo.execute_operator(
        f"{URI}/recover_faces",
        ctx={"dataset": ds, "view": ds.view(), "params": {"vault": str(vault), "output_dir": str(tmp_path / "rec"), "delegate": False}},
    )
    assert rec.error is None, rec.error
    assert rec.result["recovered"] == 3 and rec.result["failed"] == 0, rec.result
    ds.reload()
    for s in ds:
        assert Path(s.recovered_filepath).name == names[s.id]
        assert np.array_equal(read_image(s.recovered_filepath).rgb, originals[s.id])
    # the Python API with an explicit field reads that field
    direct = api.extract_sample_payloads(ds, key_file, source_field="anon_media")
    assert direct["authenticated"] == ext.result["authenticated"]
    assert all(s.refacex["media_field"] == "anon_media" for s in ds)  # remembered by the anonymise run


def test_recovered_files_keep_their_originals_names_and_never_overwrite(lfw_sample, tmp_path, key_file):
    """Restored files are named by their originals, in the originals' folder layout; a name taken
    on disk gets the sample id appended, is reported, and the file there is left alone."""
    media = tmp_path / "media-layout"
    ds = fo.Dataset("refacex-recover-names", overwrite=True, persistent=True)
    layout = [("a", "face.png", lfw_sample[0]), ("b", "face.png", lfw_sample[1]), ("a", "other.png", lfw_sample[2])]
    for folder, name, src in layout:
        (media / folder).mkdir(parents=True, exist_ok=True)
        Image.open(src).save(media / folder / name)
    ds.add_samples([fo.Sample(filepath=str(media / folder / name)) for folder, name, _ in layout])
    originals = {s.id: read_image(s.filepath).rgb for s in ds}
    rel = {s.id: Path(s.filepath).relative_to(media) for s in ds}
    vault = tmp_path / "v.vault"
    api.anonymize_samples(ds, method="pixelate", key_file=key_file, vault=vault, output_dir=tmp_path / "anon")

    out = tmp_path / "rec"
    (out / "a").mkdir(parents=True)
    (out / "a" / "other.png").write_bytes(b"somebody else's file")
    res = api.recover_samples(ds, key_file, vault, output_dir=out)
    ds.reload()
    by_rel = {rel[s.id]: s for s in ds}
    assert Path(by_rel[Path("a/face.png")].recovered_filepath) == out / "a" / "face.png"
    assert Path(by_rel[Path("b/face.png")].recovered_filepath) == out / "b" / "face.png"
    moved = by_rel[Path("a/other.png")]
    assert Path(moved.recovered_filepath) == out / "a" / f"other-{moved.id}.png"
    assert (out / "a" / "other.png").read_bytes() == b"somebody else's file"
    assert res["recovered"] == 3 and res["renamed"] == 1, res
    assert res["renames"] == [{"sample_id": moved.id, "wanted": str(out / "a" / "other.png"), "written": moved.recovered_filepath}]
    assert "another name" in res["note"]
    for s in ds:
        assert np.array_equal(read_image(s.recovered_filepath).rgb, originals[s.id])
    assert not list(out.rglob(".refacex-*"))  # no partial file left

    before = sorted(out.rglob("*"))
    again = api.recover_samples(ds, key_file, vault, output_dir=out)  # already restored there: nothing rewritten
    assert again["recovered"] == 0 and again["skipped_already_recovered"] == 3 and sorted(out.rglob("*")) == before
    third = api.recover_samples(ds, key_file, vault, output_dir=out, media_field="restored_again")  # every name taken now
    ds.reload()
    assert third["recovered"] == 3 and third["renamed"] == 3
    assert Path(ds[moved.id].restored_again) == out / "a" / f"other-{moved.id}-2.png"  # deterministic: id, then a count
    assert len(set(sorted(out.rglob("*.png")))) == 7 and (out / "a" / "other.png").read_bytes() == b"somebody else's file"


def test_evaluate_pairs_each_face_with_itself_and_says_what_it_averaged(lfw_sample, tmp_path):
    """A photo of several people (four LFW portraits in a 2x2 grid, with a neighbour's face cut
    off at a tile edge): each face's landmarks are compared with the same face's, and a face
    without an inter-ocular scale is counted, not averaged into a mean it would dominate."""
    media = tmp_path / "media-group"
    media.mkdir()
    tiles = [read_image(p).rgb for p in lfw_sample[:4]]
    grid = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:4], axis=1)], axis=0)
    Image.fromarray(grid).save(media / "group.png")
    Image.open(lfw_sample[4]).save(media / "single.png")
    ds = fo.Dataset("refacex-eval-group", overwrite=True, persistent=True)
    ds.add_samples([fo.Sample(filepath=str(media / n)) for n in ("group.png", "single.png")])
    api.anonymize_samples(ds, method="pixelate", output_dir=tmp_path / "anon")

    summary = api.evaluate_samples(ds)
    ds.reload()
    group = ds.match(fo.ViewField("filepath").ends_with("group.png")).first()
    faces = group.refacex_faces.detections
    assert len(faces) >= 4
    assert group[api.EVAL_PREFIX + "landmark_nme"] < 0.3  # was 0.77: a cut-off face's error over ~0 eye distance
    per_face = [f for s in ds for f in s.refacex_faces.detections]
    assert all(f.has_field("eval_redetected") for f in per_face)
    scored = [f.eval_nme for f in per_face if f.has_field("eval_nme") and f.eval_nme is not None]
    assert all(v < 0.5 for v in scored) and summary["landmark_nme_faces"] == len(scored)
    assert summary["landmark_nme_mean"] == pytest.approx(np.mean(scored))
    assert summary["landmark_nme_turned_faces"] >= 1
    assert summary["faces_redetected"] + summary["faces_not_redetected"] == summary["faces"]
    assert summary["landmark_nme_faces"] + summary["landmark_nme_turned_faces"] <= summary["faces_redetected"]
    assert summary["landmark_nme_note"].startswith(f"mean over {len(scored)} of {summary['faces']} faces")
    assert "turned away or cut off" in summary["landmark_nme_note"]
    assert sum(f.eval_redetected for f in per_face) == summary["faces_redetected"]
    assert len(ds.filter_labels(api.FACES_FIELD, fo.ViewField("eval_nme") > 0.5)) == 0  # filterable per face


def test_faces_are_matched_one_to_one_by_overlap():
    """Two stored faces overlapping one re-detected face: only the better overlap is paired."""
    stored = [np.array([0, 0, 10, 10]), np.array([1, 1, 11, 11]), np.array([50, 50, 60, 60])]
    found = [np.array([1, 1, 11, 11]), np.array([51, 51, 61, 61])]
    assert api.match_faces(stored, found) == {1: 0, 2: 1}
    assert api.match_faces(stored, []) == {} and api.match_faces([], found) == {}
