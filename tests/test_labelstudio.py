"""The Label Studio ML backend through its Flask test client, with real LFW images and real task
payloads for every image reference kind (and the refused ones)."""

import base64
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

os.environ.setdefault("MODEL_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "refacex-ls-model-state"))
pytest.importorskip("label_studio_ml")

from labelstudio_backend._wsgi import app  # noqa: E402
from labelstudio_backend.config import LabelConfigError, parse_label_config  # noqa: E402

BOX_CONFIG = """<View><Image name="image" value="$image"/>
  <RectangleLabels name="face" toName="image"><Label value="Face"/><Label value="Other"/></RectangleLabels></View>"""
FULL_CONFIG = """<View><Image name="img" value="$photo"/>
  <RectangleLabels name="boxes" toName="img"><Label value="face"/></RectangleLabels>
  <KeyPointLabels name="points" toName="img">
    <Label value="left_eye"/><Label value="right_eye"/><Label value="nose"/><Label value="mouth_left"/><Label value="mouth_right"/>
  </KeyPointLabels></View>"""


class _Server:
    """A real HTTP server on 127.0.0.1 standing in for a Label Studio host's /data/upload."""

    def __init__(self, root: Path, token: str | None, host: str = "127.0.0.1"):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append((self.path, self.headers.get("Authorization")))
                if token and self.headers.get("Authorization") != f"Token {token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                f = root / self.path.lstrip("/")
                if not f.is_file():
                    self.send_response(404)
                    self.end_headers()
                    return
                data = f.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def client():
    return app.test_client()


@pytest.fixture
def docroot(tmp_path, lfw_sample, monkeypatch):
    root = tmp_path / "docroot"
    (root / "faces").mkdir(parents=True)
    for p in lfw_sample[:3]:
        shutil.copy(p, root / "faces" / p.name)
    monkeypatch.setenv("LOCAL_FILES_DOCUMENT_ROOT", str(root))
    for var in (
        "LABEL_STUDIO_URL",
        "LABEL_STUDIO_API_KEY",
        "REFACEX_LS_ALLOWED_HOSTS",
        "REFACEX_LS_ALLOWED_ROOTS",
        "REFACEX_LS_ANONYMIZE",
        "REFACEX_KEY_FILE",
        "REFACEX_VAULT",
    ):
        monkeypatch.delenv(var, raising=False)
    return root


def predict(client, refs, config=BOX_CONFIG, key="image", project="7.1700000000"):
    tasks = [{"id": i + 1, "data": {key: ref}} for i, ref in enumerate(refs)]
    r = client.post("/predict", json={"tasks": tasks, "project": project, "label_config": config, "params": {}})
    return r


def _one_face_box(pred):
    boxes = [r for r in pred["result"] if r["type"] == "rectanglelabels"]
    assert boxes, pred
    v = boxes[0]["value"]
    assert 0 < v["x"] < 100 and 0 < v["y"] < 100 and 5 < v["width"] < 100 and 5 < v["height"] < 100
    assert v["x"] < 50 < v["x"] + v["width"] and v["y"] < 50 < v["y"] + v["height"]  # LFW's centred face
    assert boxes[0]["original_width"] == 250 and 0 < boxes[0]["score"] <= 1
    return boxes


def test_health_setup_and_fit(client, tmp_path):
    assert client.get("/health").json["status"] == "UP"
    assert client.post("/setup", json={"project": "1.1", "schema": BOX_CONFIG}).status_code == 200
    r = client.post(
        "/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": BOX_CONFIG}, "annotation": {"id": 1}}
    )
    assert r.status_code == 201 and "job_id" in r.json


def test_local_files_data_uri_plain_path_and_file_url(client, docroot, monkeypatch):
    files = sorted((docroot / "faces").iterdir())
    monkeypatch.setenv("REFACEX_LS_ALLOWED_ROOTS", str(docroot))
    data_uri = "data:image/jpeg;base64," + base64.b64encode(files[0].read_bytes()).decode()
    refs = [f"/data/local-files/?d=faces/{files[0].name}", data_uri, str(files[1]), f"file://{files[2]}"]
    r = predict(client, refs)
    assert r.status_code == 200, r.json
    preds = r.json["results"]
    assert len(preds) == 4
    for p in preds:
        assert "error" not in p, p
        boxes = _one_face_box(p)
        assert boxes[0]["from_name"] == "face" and boxes[0]["to_name"] == "image"
        assert boxes[0]["value"]["rectanglelabels"] == ["Face"]


def test_upload_and_http_urls_on_the_label_studio_host(client, docroot, monkeypatch):
    upload_root = docroot / "ls"
    (upload_root / "data" / "upload" / "3").mkdir(parents=True)
    src = next((docroot / "faces").iterdir())
    shutil.copy(src, upload_root / "data" / "upload" / "3" / "face.jpg")
    ls = _Server(upload_root, token="secret-token")
    try:
        monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", "secret-token")
        preds = predict(client, ["/data/upload/3/face.jpg", f"{ls.url}/data/upload/3/face.jpg"]).json["results"]
        for p in preds:
            _one_face_box(p)
        assert all(auth == "Token secret-token" for _, auth in ls.requests) and len(ls.requests) == 2
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", "wrong")
        p = predict(client, ["/data/upload/3/face.jpg"]).json["results"][0]
        assert p["result"] == [] and "download failed" in p["error"]
    finally:
        ls.close()


def test_refused_references_fetch_nothing(client, docroot, tmp_path, monkeypatch):
    other_root = tmp_path / "elsewhere"
    other_root.mkdir()
    shutil.copy(next((docroot / "faces").iterdir()), other_root / "x.jpg")
    other = _Server(other_root, token=None)  # a host that is not Label Studio
    try:
        monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")  # Label Studio lives elsewhere
        refs = [
            f"{other.url}/x.jpg",  # foreign host
            "http://169.254.169.254/latest/meta-data/",  # cloud metadata endpoint
            f"{other.url}/data/upload/1/x.jpg",  # an upload path on the wrong host
            "/data/local-files/?d=../../../etc/passwd",  # traversal out of the document root
            str(other_root / "x.jpg"),  # plain path outside the allowed roots
            "file:///etc/passwd",
            "ftp://example.com/x.jpg",
            "data:text/plain;base64,aGVsbG8=",
            "",
        ]
        preds = predict(client, refs).json["results"]
        assert len(preds) == len(refs)
        for ref, p in zip(refs, preds):
            assert p["result"] == [] and p["error"], ref
        assert other.requests == []  # not one byte was fetched from a refused host
        monkeypatch.setenv("REFACEX_LS_ALLOWED_HOSTS", "127.0.0.1")  # explicitly allowed: now fine
        _one_face_box(predict(client, [f"{other.url}/x.jpg"]).json["results"][0])
    finally:
        other.close()


def test_size_caps(client, docroot, monkeypatch):
    f = next((docroot / "faces").iterdir())
    monkeypatch.setenv("REFACEX_LS_MAX_PIXELS", "10000")
    p = predict(client, [f"/data/local-files/?d=faces/{f.name}"]).json["results"][0]
    assert "too large" in p["error"]
    monkeypatch.setenv("REFACEX_LS_MAX_PIXELS", "50000000")
    monkeypatch.setenv("REFACEX_LS_MAX_BYTES", "1000")
    p = predict(client, [f"/data/local-files/?d=faces/{f.name}"]).json["results"][0]
    assert "larger than" in p["error"]


def test_keypoints_follow_the_configs_own_names(client, docroot):
    f = next((docroot / "faces").iterdir())
    p = predict(client, [f"/data/local-files/?d=faces/{f.name}"], FULL_CONFIG, key="photo", project="8.1").json["results"][0]
    boxes = _one_face_box(p)
    assert boxes[0]["from_name"] == "boxes" and boxes[0]["to_name"] == "img" and boxes[0]["value"]["rectanglelabels"] == ["face"]
    kps = [r for r in p["result"] if r["type"] == "keypointlabels" and r["id"].startswith("face0")]
    assert [k["value"]["keypointlabels"][0] for k in kps] == ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
    assert kps[0]["value"]["x"] < kps[1]["value"]["x"] and kps[2]["value"]["y"] < kps[3]["value"]["y"]
    assert p["model_version"].startswith("refacex-")


def _assert_json_error(r, status, *words):
    """An error answer: the status code, a JSON body with a one-line message, no traceback."""
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:500])
    assert r.is_json and r.json["status"] == status, r.get_data(as_text=True)[:500]
    detail = r.json["detail"]
    assert "\n" not in detail and len(detail) <= 300 and "Traceback" not in r.get_data(as_text=True)
    for w in words:
        assert w in detail, detail


@pytest.fixture
def fresh_backend(monkeypatch):
    """The backend as just started: label-studio-ml holds no model until /setup or /predict loads one."""
    from label_studio_ml.model import LabelStudioMLManager

    monkeypatch.setattr(LabelStudioMLManager, "_current_model", {})


def test_predict_without_setup_uses_the_requests_config(client, docroot, fresh_backend):
    f = next((docroot / "faces").iterdir())
    r = predict(client, [f"/data/local-files/?d=faces/{f.name}"], FULL_CONFIG, key="photo", project="21.1")
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    boxes = _one_face_box(r.json["results"][0])
    assert boxes[0]["from_name"] == "boxes" and r.json["model_version"]


def test_predict_without_any_config_is_a_400(client, docroot, fresh_backend):
    f = next((docroot / "faces").iterdir())
    r = client.post("/predict", json={"tasks": [{"id": 1, "data": {"image": f"/data/local-files/?d=faces/{f.name}"}}], "project": "22.1"})
    _assert_json_error(r, 400, "label_config")


def test_a_request_without_a_config_is_a_400_after_one_was_seen(client, docroot, fresh_backend):
    """docs/labelstudio.md: 400 for a request with no labeling config. A config seen before (by
    /setup or an earlier /predict, maybe another project's) is never used in its place."""
    f = next((docroot / "faces").iterdir())
    ref = f"/data/local-files/?d=faces/{f.name}"
    assert predict(client, [ref], project="24.1").status_code == 200  # the model is loaded and cached now
    assert client.post("/setup", json={"project": "24.1", "schema": BOX_CONFIG}).status_code == 200
    for body in (
        {"tasks": [{"id": 1, "data": {"image": ref}}], "project": "24.1"},
        {"tasks": [{"id": 1, "data": {"image": ref}}], "project": "24.1", "label_config": ""},
        {"tasks": [{"id": 1, "data": {"image": ref}}], "project": "25.1", "label_config": None},
    ):
        _assert_json_error(client.post("/predict", json=body), 400, "label_config")


def test_unknown_config_is_a_clear_error_not_a_crash(client, docroot, fresh_backend):
    f = next((docroot / "faces").iterdir())
    r = predict(client, [f"/data/local-files/?d=faces/{f.name}"], '<View><Text name="t" value="$text"/></View>')
    _assert_json_error(r, 422, "RectangleLabels or KeyPointLabels")
    _assert_json_error(predict(client, [f"/data/local-files/?d=faces/{f.name}"], "<View>"), 422, "not valid XML")
    with pytest.raises(LabelConfigError, match="not valid XML"):
        parse_label_config("<View>")
    assert client.get("/health").json["status"] == "UP"  # still serving


def test_every_error_is_one_json_line_with_its_status(client, docroot, monkeypatch):
    f = next((docroot / "faces").iterdir())
    _assert_json_error(client.post("/predict", data="not json", content_type="application/json"), 400, "JSON object")
    _assert_json_error(client.post("/predict", json={"tasks": "x", "label_config": BOX_CONFIG}), 400, "tasks")
    _assert_json_error(client.post("/setup", json={"project": "23.1", "schema": "<View>"}), 422, "not valid XML")
    _assert_json_error(client.post("/webhook", json={"project": {"id": 1}}), 400, "action")
    _assert_json_error(client.post("/versions", json={}), 400, "project")
    _assert_json_error(client.get("/predict"), 405)
    _assert_json_error(client.get("/no-such-route"), 404)
    monkeypatch.setenv("REFACEX_LS_ANONYMIZE", "1")  # a backend misconfigured: an unknown method
    monkeypatch.setenv("REFACEX_LS_METHOD", "no-such-method")
    _assert_json_error(predict(client, [f"/data/local-files/?d=faces/{f.name}"]), 500, "no-such-method")


def test_anonymisation_mode_writes_and_references_media(client, docroot, monkeypatch):
    from refacex_plugin.image_io import read_image

    monkeypatch.setenv("REFACEX_LS_ANONYMIZE", "1")
    monkeypatch.setenv("REFACEX_LS_METHOD", "pixelate")
    monkeypatch.setenv("REFACEX_LS_STORAGE", str(docroot / "anonymized"))
    f = next((docroot / "faces").iterdir())
    p = predict(client, [f"/data/local-files/?d=faces/{f.name}"]).json["results"][0]
    _one_face_box(p)
    ref = p["anonymized_image"]
    assert ref.startswith("/data/local-files/?d=anonymized/")
    out = docroot / ref.split("?d=")[1]
    a, b = read_image(out).rgb, read_image(f).rgb
    assert a.shape == b.shape and abs(a.astype(int) - b.astype(int)).mean() > 1


def _key_without_vault(tmp_path, docroot) -> dict:
    from refacex_plugin.keys import write_key_file

    write_key_file(tmp_path / "admin.key")
    env = {k: v for k, v in os.environ.items() if k not in ("REFACEX_VAULT", "REFACEX_LS_METHOD")}
    env.update(REFACEX_KEY_FILE=str(tmp_path / "admin.key"), REFACEX_LS_ANONYMIZE="1", REFACEX_LS_STORAGE=str(docroot / "anonymized"))
    return env


def test_a_key_without_a_vault_stops_the_backend_at_start_up(docroot, tmp_path):
    """The default method is irreversible: with the key but no vault the backend does not start
    (not a 500 at its first /predict), with one line in its own terms: the variables to set, no
    CLI flag. The policy is the use-case layer's (the CLI's and FiftyOne's tests check theirs)."""
    import socket
    import subprocess
    import sys

    from refacex_plugin.anonymisers import default_method

    env = _key_without_vault(tmp_path, docroot)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    said = []
    for cmd in (
        [sys.executable, "-m", "refacex_plugin.cli", "labelstudio", "serve", "--port", port],
        [sys.executable, "-m", "labelstudio_backend._wsgi", "--port", port],
    ):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
        except subprocess.TimeoutExpired:
            pytest.fail(f"{cmd[2:4]} started serving with settings that fail every request")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1, (cmd, proc.returncode, proc.stderr[-2000:])
        assert lines[0].startswith("error: the refacex Label Studio backend cannot start: "), lines[0]
        said.append(lines[0])

    from labelstudio_backend._wsgi import create_app
    from labelstudio_backend.config import BackendConfigError

    with pytest.raises(BackendConfigError) as exc:
        create_app(env)
    line = str(exc.value)
    assert "\n" not in line and "--" not in line, line
    assert f"method {default_method()!r} is irreversible" in line
    assert all(var in line for var in ("REFACEX_KEY_FILE", "REFACEX_VAULT", "REFACEX_LS_METHOD")), line
    assert all(s.endswith(line) for s in said), said
    assert not (docroot / "anonymized").exists()


def test_settings_changed_under_a_running_backend_fail_the_request_with_the_same_line(client, docroot, tmp_path, monkeypatch):
    """Settings are read at each /predict: should the environment change after start-up, the
    request is refused (500) with the start-up check's line, writing nothing."""
    from labelstudio_backend.config import BackendConfigError, check_settings

    env = _key_without_vault(tmp_path, docroot)
    for var in ("REFACEX_KEY_FILE", "REFACEX_LS_ANONYMIZE", "REFACEX_LS_STORAGE"):
        monkeypatch.setenv(var, env[var])
    monkeypatch.delenv("REFACEX_LS_METHOD", raising=False)
    with pytest.raises(BackendConfigError) as exc:
        check_settings()
    f = next((docroot / "faces").iterdir())
    r = predict(client, [f"/data/local-files/?d=faces/{f.name}"])
    _assert_json_error(r, 500)
    assert r.json["detail"] == str(exc.value)
    assert not (docroot / "anonymized").exists()


def test_key_and_vault_seal_payloads_and_keep_the_original(client, docroot, tmp_path, monkeypatch):
    """With REFACEX_KEY_FILE and REFACEX_VAULT the written media's faces carry vault references
    sealed with the key, and the vault gives back the task's very file."""
    from refacex_plugin import api
    from refacex_plugin.keys import read_key_file, write_key_file

    write_key_file(tmp_path / "admin.key")
    vault = tmp_path / "faces.vault"
    monkeypatch.setenv("REFACEX_KEY_FILE", str(tmp_path / "admin.key"))
    monkeypatch.setenv("REFACEX_VAULT", str(vault))
    monkeypatch.setenv("REFACEX_LS_ANONYMIZE", "1")
    monkeypatch.setenv("REFACEX_LS_METHOD", "pixelate")
    monkeypatch.setenv("REFACEX_LS_STORAGE", str(docroot / "anonymized"))
    f = next((docroot / "faces").iterdir())
    p = predict(client, [f"/data/local-files/?d=faces/{f.name}"]).json["results"][0]
    _one_face_box(p)
    out = docroot / p["anonymized_image"].split("?d=")[1]
    key = read_key_file(tmp_path / "admin.key")
    with api.Session(api.Settings(), "read") as reader:
        faces = api.read_payloads(reader, out, [key])
    assert any(x.authenticated and x.to_dict()["kind"] == "vault-ref" for x in faces), [x.to_dict() for x in faces]
    with api.Session(api.Settings(key=key, vault=vault), "recover") as session:
        back = api.recover_file(session, out, tmp_path / "back.jpg")
    assert back.original and back.dst.read_bytes() == f.read_bytes()
    monkeypatch.delenv("REFACEX_LS_STORAGE")  # a vault keeping originals of media never written: refused
    _assert_json_error(predict(client, [f"/data/local-files/?d=faces/{f.name}"]), 500, "REFACEX_LS_STORAGE")


def test_start_up_check_refuses_each_setting_that_could_not_work(docroot, tmp_path):
    from labelstudio_backend.config import BackendConfigError, check_settings
    from refacex_plugin.keys import write_key_file

    write_key_file(tmp_path / "admin.key")
    base = {"REFACEX_LS_ANONYMIZE": "1", "LOCAL_FILES_DOCUMENT_ROOT": str(docroot), "REFACEX_LS_METHOD": "pixelate"}
    key, vault, storage = str(tmp_path / "admin.key"), str(tmp_path / "v.vault"), str(docroot / "anonymized")
    refused = {
        "REFACEX_VAULT is set without REFACEX_KEY_FILE": {"REFACEX_VAULT": vault, "REFACEX_LS_STORAGE": storage},
        "REFACEX_LS_METHOD: unknown method 'nope'": {"REFACEX_LS_METHOD": "nope"},
        "REFACEX_KEY_FILE: ": {"REFACEX_KEY_FILE": str(tmp_path / "missing.key"), "REFACEX_VAULT": vault, "REFACEX_LS_STORAGE": storage},
        "REFACEX_VAULT needs REFACEX_LS_STORAGE": {"REFACEX_KEY_FILE": key, "REFACEX_VAULT": vault},
        "is not under LOCAL_FILES_DOCUMENT_ROOT": {"REFACEX_LS_STORAGE": str(tmp_path / "elsewhere")},
    }
    for said, extra in refused.items():
        with pytest.raises(BackendConfigError) as exc:
            check_settings({**base, **extra})
        assert said in str(exc.value) and "\n" not in str(exc.value) and "--" not in str(exc.value), str(exc.value)
    assert check_settings({**base, "REFACEX_KEY_FILE": key, "REFACEX_VAULT": vault, "REFACEX_LS_STORAGE": storage}).vault == vault
    assert check_settings({"REFACEX_KEY_FILE": key}) is None  # pre-annotation only: nothing to refuse
    assert not (tmp_path / "v.vault").exists()  # checking opens no vault
