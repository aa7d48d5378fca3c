"""Merge `refacex bench --json` results of one data set run as separate processes into one report.

python research/merge_bench.py a.json b.json c.json --json all.json --report all.md
"""

import argparse
import json
from pathlib import Path

from refacex_plugin.bench.report import markdown


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--report", type=Path, required=True)
    args = ap.parse_args()
    runs = [json.loads(p.read_text()) for p in args.inputs]
    out = dict(runs[0])
    out["methods"], out["sections"] = {}, []
    out["command"] = " ; ".join(r["command"] for r in runs)
    out["elapsed_s"] = max(r.get("elapsed_s", 0) for r in runs)
    for r in runs:
        assert r["data"]["path"] == out["data"]["path"] and r["mode"] == out["mode"] and r["seed"] == out["seed"], "runs differ"
        for name, m in r["methods"].items():
            out["methods"].setdefault(name, {}).update(m)
        for key in ("naturalness", "reference", "recognizers", "watermarks", "attacks"):
            if r.get(key):
                out[key] = {**out.get(key, {}), **r[key]} if isinstance(r[key], dict) else r[key]
        out["sections"] += [s for s in r["sections"] if s not in out["sections"]]
    args.json.write_text(json.dumps(out, indent=2))
    args.report.write_text(markdown(out) + "\n")
    print(f"wrote {args.json} and {args.report}")


if __name__ == "__main__":
    main()
