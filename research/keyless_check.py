"""Re-measure only the keyless-recovery rows of ``refacex bench attacks`` (full-mode split, the
same attacked faces) with the recovery network now in models/, without re-training inverters.

    python research/keyless_check.py --data ../shared/data/lfw --faces 150 --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from refacex_plugin.bench.attacks import attacked_faces
from refacex_plugin.bench.dataset import make_split
from refacex_plugin.bench.identity_attacks import _anonymised_probes, keyless_recovery
from refacex_plugin.bench.originals import measure_originals
from refacex_plugin.bench.recognizers import default_recognizer_specs, load_recognizer
from refacex_plugin.bench.runner import calibrate
from refacex_plugin.detection import load_detector


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--faces", type=int, default=150)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "refacex" / "bench")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    split = make_split(args.data, 0, False, 1)
    recognizers = [load_recognizer(s) for s in default_recognizer_specs()]
    orig = measure_originals(split.images, load_detector(), recognizers, args.cache, progress=False)
    idx = orig.index()
    calib = {r.name: calibrate(r, orig, idx, split, 1e-3) for r in recognizers}
    faces = _anonymised_probes("refacex", attacked_faces(split, orig, idx, args.faces), orig)
    res = {"faces": len(faces.index), "keyless_recovery": keyless_recovery(faces, orig, recognizers, calib, 0)}
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
