"""Merge `refacex bench --json` results of one data set run as separate processes into one report.

python research/merge_bench.py a.json b.json c.json --json all.json --report all.md

Per-method blocks (`methods.<m>.privacy`, `.utility`, `.attributes`, `.speed`, ...) and each
method's `naturalness.<m>` record (its 64-px `accuracy` and 128-px `accuracy_128`) are taken whole
from the last run that measured them. The top-level `attributes` block (the sampled faces, their
groups and the estimator's mirror reference) is shared by every method's attribute figures, so runs
that measured attributes on different samples are refused.
"""

import argparse
import json
from pathlib import Path

from refacex_plugin.bench.report import markdown

#: What identifies the attribute sample: runs that differ here judged different faces.
ATTRIBUTE_SAMPLE = ("faces", "images_sampled", "images_without_central_face", "original_groups", "original_skin_unmeasured")


def merge(runs: list[dict]) -> dict:
    out = dict(runs[0])
    out["methods"], out["sections"], out["data"] = {}, [], dict(runs[0]["data"])
    out["command"] = " ; ".join(r["command"] for r in runs)
    out["elapsed_s"] = max(r.get("elapsed_s", 0) for r in runs)
    for r in runs:
        assert r["data"]["path"] == out["data"]["path"] and r["mode"] == out["mode"] and r["seed"] == out["seed"], "runs differ"
        for key, value in r["data"].items():  # e.g. images_without_central_face: only runs that measured the originals
            out["data"].setdefault(key, value)
        for name, m in r["methods"].items():
            out["methods"].setdefault(name, {}).update(m)
        for key in ("naturalness", "reference", "recognizers", "watermarks", "attacks"):
            if r.get(key):
                out[key] = {**out.get(key, {}), **r[key]} if isinstance(r[key], dict) else r[key]
        if r.get("attributes"):
            if out.get("attributes"):
                mine, theirs = ({k: a.get(k) for k in ATTRIBUTE_SAMPLE} for a in (out["attributes"], r["attributes"]))
                assert mine == theirs, f"runs measured attributes on different samples: {mine} vs {theirs}"
            else:
                out["attributes"] = r["attributes"]
        out["sections"] += [s for s in r["sections"] if s not in out["sections"]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--report", type=Path, required=True)
    args = ap.parse_args()
    out = merge([json.loads(p.read_text()) for p in args.inputs])
    args.json.write_text(json.dumps(out, indent=2))
    args.report.write_text(markdown(out) + "\n")
    print(f"wrote {args.json} and {args.report}")


if __name__ == "__main__":
    main()
