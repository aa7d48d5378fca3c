"""End to end: a real Label Studio server (own venv, 127.0.0.1), our backend started with
``refacex labelstudio serve``, real LFW images imported both as local files and as uploads,
predictions retrieved through Label Studio's API."""

import os
import shutil
import time
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("label_studio_ml")

from labelstudio_backend import e2e  # noqa: E402

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
CONFIG = """<View><Image name="image" value="$image"/>
  <RectangleLabels name="face" toName="image"><Label value="Face"/></RectangleLabels></View>"""


@pytest.mark.slow
def test_label_studio_gets_face_boxes_from_our_backend(tmp_path, lfw_sample):
    venv = Path(os.environ.get("REFACEX_LS_VENV", REPO / ".ls-venv"))
    t0 = time.time()
    exe = e2e.ensure_venv(venv)
    t_install = time.time() - t0
    root = tmp_path / "docroot"
    (root / "faces").mkdir(parents=True)
    images = lfw_sample[:3]
    for p in images:
        shutil.copy(p, root / "faces" / p.name)
    ls_port, be_port = e2e.free_port(), e2e.free_port()
    base = f"http://127.0.0.1:{ls_port}"
    ls = e2e.start_label_studio(exe, tmp_path / "ls-data", root, ls_port, tmp_path / "ls.log")
    backend = e2e.start_backend(be_port, root, base, tmp_path / "model", tmp_path / "backend.log")
    try:
        t_ls = e2e.wait_http(base + "/health", 600, ls)
        e2e.wait_http(f"http://127.0.0.1:{be_port}/health", 120, backend)
        e2e.enable_legacy_tokens(base)
        h = {"Authorization": f"Token {e2e.TOKEN}"}
        pid = requests.post(f"{base}/api/projects", json={"title": "refacex e2e", "label_config": CONFIG}, headers=h).json()["id"]
        r = requests.post(
            f"{base}/api/projects/{pid}/import", headers=h, json=[{"image": f"/data/local-files/?d=faces/{p.name}"} for p in images]
        )
        assert r.status_code == 201, r.text
        for p in images:  # the same faces again, uploaded through Label Studio
            with open(p, "rb") as fh:
                assert requests.post(f"{base}/api/projects/{pid}/import", headers=h, files={"file": fh}).status_code == 201
        r = requests.post(f"{base}/api/ml", headers=h, json={"project": pid, "url": f"http://127.0.0.1:{be_port}", "title": "refacex"})
        assert r.status_code == 201 and r.json()["readable_state"] == "Connected", r.text
        r = requests.post(
            f"{base}/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
            headers=h,
            json={"selectedItems": {"all": True, "excluded": []}},
        )
        assert r.status_code == 200, r.text
        tasks = requests.get(f"{base}/api/tasks?project={pid}", headers=h).json()
        tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
        assert len(tasks) == 6
        kinds = set()
        for task in tasks:
            ref = task["data"]["image"]
            kinds.add(ref.split("/")[2])
            preds = requests.get(f"{base}/api/predictions?task={task['id']}", headers=h).json()
            assert preds and preds[0]["model_version"].startswith("refacex-"), (ref, preds)
            boxes = [x for x in preds[0]["result"] if x["type"] == "rectanglelabels"]
            assert boxes, ref
            v = boxes[0]["value"]
            assert v["rectanglelabels"] == ["Face"] and v["x"] < 50 < v["x"] + v["width"] and v["y"] < 50 < v["y"] + v["height"], (ref, v)
        assert kinds == {"local-files", "upload"}
        print(f"\nlabel-studio venv ready in {t_install:.0f} s, server up in {t_ls:.0f} s")
    finally:
        e2e.stop(backend)
        e2e.stop(ls)
