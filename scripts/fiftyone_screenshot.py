"""Screenshot of the FiftyOne App showing a refacex-anonymised dataset with its face detections.

    python scripts/fiftyone_screenshot.py ../shared/data/lfw docs/images/fiftyone_app.png

Builds a small dataset of real LFW faces, runs the plugin's API (pixelate), serves the App on
127.0.0.1 and captures it with headless Chromium.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

tmp = Path(tempfile.mkdtemp(prefix="refacex-shot-"))
os.environ.setdefault("FIFTYONE_DATABASE_DIR", str(tmp / "db"))
os.environ.update(FIFTYONE_DO_NOT_TRACK="true", FIFTYONE_SHOW_PROGRESS_BARS="false", FIFTYONE_DATABASE_VALIDATION="false")

import fiftyone as fo  # noqa: E402

import refacex_fiftyone.api as api  # noqa: E402


def main(data: Path, out: Path, port: int = 5151) -> None:
    files = random.Random(7).sample(sorted(data.glob("*/*.jpg")), 12)
    ds = fo.Dataset("refacex-demo", overwrite=True)
    ds.add_samples([fo.Sample(filepath=str(f), person=fo.Classification(label=f.parent.name)) for f in files])
    print(api.anonymize_samples(ds, method="pixelate", output_dir=tmp / "anon"))
    session = fo.launch_app(ds, remote=True, address="127.0.0.1", port=port)
    try:
        time.sleep(20)
        url = f"http://127.0.0.1:{port}/datasets/{ds.name}"
        subprocess.run(
            [
                "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1400,900",
                "--virtual-time-budget=30000",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            timeout=180,
        )
    finally:
        session.close()
        fo.core.session.session._server = None
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]).resolve())
