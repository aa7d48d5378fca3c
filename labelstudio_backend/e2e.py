"""Driving a real Label Studio server (its own venv) and our backend on 127.0.0.1.

Used by ``tests/test_labelstudio_e2e.py`` and ``scripts/labelstudio_screenshot.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

LABEL_STUDIO_VERSION = "1.23.2"
USER, PASSWORD, TOKEN = "admin@example.com", "refacex-e2e-pass", "refacexe2etoken0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_venv(path: Path, log=print) -> Path:
    """A venv with Label Studio (it pins packages our environment must not get)."""
    exe = path / "bin" / "label-studio"
    if not exe.is_file():
        log(f"installing label-studio=={LABEL_STUDIO_VERSION} into {path}")
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        # sentry-sdk 3 drops the send_default_pii option Label Studio 1.23 passes: the server would not start.
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", f"label-studio=={LABEL_STUDIO_VERSION}", "sentry-sdk<3"], check=True)
    return exe


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return time.time() - t0
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not up after {timeout} s")


def start_label_studio(exe: Path, data_dir: Path, doc_root: Path, port: int, log_file: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "LATEST_VERSION_CHECK": "false",
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(doc_root),
    }
    return subprocess.Popen(
        [
            str(exe),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "-p",
            str(port),
            "--data-dir",
            str(data_dir),
            "--username",
            USER,
            "--password",
            PASSWORD,
            "--user-token",
            TOKEN,
        ],
        stdout=open(log_file, "w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def start_backend(port: int, doc_root: Path, ls_url: str, model_dir: Path, log_file: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "LOCAL_FILES_DOCUMENT_ROOT": str(doc_root),
        "LABEL_STUDIO_URL": ls_url,
        "LABEL_STUDIO_API_KEY": TOKEN,
        "MODEL_DIR": str(model_dir),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "refacex_plugin.cli", "labelstudio", "serve", "--port", str(port)],
        stdout=open(log_file, "w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def login_session(base: str) -> requests.Session:
    s = requests.Session()
    s.get(base + "/user/login/")
    r = s.post(
        base + "/user/login/",
        data={"email": USER, "password": PASSWORD, "csrfmiddlewaretoken": s.cookies.get("csrftoken")},
        headers={"Referer": base + "/user/login/"},
        allow_redirects=False,
    )
    r.raise_for_status()
    return s


def enable_legacy_tokens(base: str) -> None:
    """Label Studio 1.23 disables legacy API tokens by default; our backend downloads with one."""
    s = login_session(base)
    r = s.post(
        base + "/api/jwt/settings",
        json={"legacy_api_tokens_enabled": True, "api_tokens_enabled": True},
        headers={"X-CSRFToken": s.cookies.get("csrftoken"), "Referer": base},
    )
    r.raise_for_status()
