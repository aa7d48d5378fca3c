"""A wheel works like the checkout: it carries the weights and the donor bank, so the default
method anonymises from any folder, with nothing but the wheel installed (no silent step down)."""

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import EXAMPLES, REPO


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_anonymises_the_first_example_with_the_default(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)], check=True
    )
    wheel = next(wheels.glob("refacex-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # the dependencies come from this environment's site-packages (a plain path: its .pth files,
    # among them this checkout's editable install, are not run), refacex from the wheel alone
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    )
    Path(purelib.stdout.strip(), "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "REFACEX_MODELS"}
    where = subprocess.run(
        [str(py), "-c", "import refacex_plugin; print(refacex_plugin.__file__)"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert str(env_dir) in where.stdout, where.stdout + where.stderr
    res = subprocess.run(
        [str(env_dir / "bin" / "refacex"), "anonymise", str(EXAMPLES / "Serena_Williams_0001.jpg"), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert "method: refacex" in res.stderr and "1 face(s)" in res.stderr
    assert (tmp_path / "out" / "Serena_Williams_0001.jpg").stat().st_size > 1000
