"""Screenshot of Label Studio's labeling view showing refacex's face pre-annotations.

    PYTHONPATH=/path/to/websocket-client python scripts/labelstudio_screenshot.py ../shared/data/lfw docs/images/labelstudio.png

Starts a real Label Studio (own venv, 127.0.0.1) and our backend, imports one LFW image, retrieves
the prediction, logs in, and captures the labeling view with headless Chromium driven over the
DevTools protocol (the ``websocket-client`` package is needed for this script only).
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import websocket

from labelstudio_backend import e2e

CONFIG = """<View><Image name="image" value="$image"/>
  <RectangleLabels name="face" toName="image"><Label value="Face" background="#ff4d4f"/></RectangleLabels>
  <KeyPointLabels name="landmarks" toName="image">
    <Label value="left_eye"/><Label value="right_eye"/><Label value="nose"/><Label value="mouth_left"/><Label value="mouth_right"/>
  </KeyPointLabels></View>"""


def cdp_screenshot(url: str, cookies: list[dict], out: Path, port: int = 9333) -> None:
    chrome = subprocess.Popen(
        [
            "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            f"--remote-debugging-port={port}",
            "--remote-allow-origins=*",
            "--window-size=1400,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            try:
                targets = requests.get(f"http://127.0.0.1:{port}/json", timeout=1).json()
                break
            except requests.RequestException:
                time.sleep(0.2)
        ws = websocket.create_connection(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"], timeout=60)
        n = [0]

        def call(method, **params):
            n[0] += 1
            ws.send(json.dumps({"id": n[0], "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == n[0]:
                    return msg.get("result", {})

        call("Network.enable")
        for c in cookies:
            call("Network.setCookie", **c)
        call("Page.enable")
        call("Page.navigate", url=url)
        time.sleep(25)
        data = call("Page.captureScreenshot", format="png")["data"]
        out.write_bytes(base64.b64decode(data))
    finally:
        chrome.kill()


def main(data: Path, out: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="refacex-ls-shot-"))
    image = random.Random(3).choice(sorted(data.glob("*/*.jpg")))
    root = tmp / "docroot"
    root.mkdir()
    exe = e2e.ensure_venv(Path(__file__).resolve().parents[1] / ".ls-venv")
    ls_port, be_port = e2e.free_port(), e2e.free_port()
    base = f"http://127.0.0.1:{ls_port}"
    ls = e2e.start_label_studio(exe, tmp / "ls-data", root, ls_port, tmp / "ls.log")
    backend = e2e.start_backend(be_port, root, base, tmp / "model", tmp / "backend.log")
    try:
        e2e.wait_http(base + "/health", 600, ls)
        e2e.wait_http(f"http://127.0.0.1:{be_port}/health", 120, backend)
        e2e.enable_legacy_tokens(base)
        h = {"Authorization": f"Token {e2e.TOKEN}"}
        pid = requests.post(f"{base}/api/projects", json={"title": "refacex pre-annotations", "label_config": CONFIG}, headers=h).json()[
            "id"
        ]
        with open(image, "rb") as fh:
            requests.post(f"{base}/api/projects/{pid}/import", headers=h, files={"file": fh}).raise_for_status()
        requests.post(
            f"{base}/api/ml", headers=h, json={"project": pid, "url": f"http://127.0.0.1:{be_port}", "title": "refacex"}
        ).raise_for_status()
        requests.post(
            f"{base}/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
            headers=h,
            json={"selectedItems": {"all": True, "excluded": []}},
        ).raise_for_status()
        requests.patch(f"{base}/api/projects/{pid}", headers=h, json={"show_collab_predictions": True, "model_version": "refacex-0.1.0"})
        tasks = requests.get(f"{base}/api/tasks?project={pid}", headers=h).json()
        tid = (tasks["tasks"] if isinstance(tasks, dict) else tasks)[0]["id"]
        s = e2e.login_session(base)
        cookies = [{"name": c.name, "value": c.value, "domain": "127.0.0.1", "path": "/"} for c in s.cookies]
        cdp_screenshot(f"{base}/projects/{pid}/data?task={tid}", cookies, out)
        print(f"wrote {out}")
    finally:
        e2e.stop(backend)
        e2e.stop(ls)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]).resolve())
