"""Privacy/utility of composite variants side by side (quick bench sample by default).

python research/composite_ablation.py --data ../shared/data/lfw donors=2,layout_push=1.0 donors=3,layout_push=1.0
"""

import argparse
import json
from pathlib import Path

from refacex_plugin.anonymisers import register_anonymiser
from refacex_plugin.bench.recognizers import default_recognizer_specs
from refacex_plugin.bench.runner import BenchConfig, run
from refacex_plugin.composite import CompositeAnonymiser, shipped_bank


def parse(spec: str) -> dict:
    out = {}
    for part in filter(None, spec.split(",")):
        k, v = part.split("=")
        out[k] = int(v) if v.isdigit() else float(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--sections", default="privacy,utility")
    ap.add_argument("--json", type=Path)
    ap.add_argument("variants", nargs="+", help="CompositeConfig fields, e.g. donors=2,layout_push=1.0")
    args = ap.parse_args()
    names = []
    for spec in args.variants:
        name = "refacex[" + spec + "]"
        register_anonymiser(name, lambda c=parse(spec): CompositeAnonymiser(shipped_bank()).configured(**c))
        names.append(name)
    cfg = BenchConfig(
        data=args.data,
        methods=names,
        sections=tuple(args.sections.split(",")),
        recognizers=default_recognizer_specs(),
        quick=not args.full,
        progress=False,
        cache_dir=Path.home() / ".cache" / "refacex" / "bench",
        command="python research/composite_ablation.py " + " ".join(args.variants),
    )
    res = run(cfg)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    for name in names:
        m = res["methods"][name]
        p, u = m.get("privacy", {}), m.get("utility", {})
        cells = [
            f"{r.split(':')[-1]} match {q['match_rate']:.1%} rank1 {q['rank1']:.1%} donor {q['donor_match_rate'] or 0:.1%}"
            for r, q in p.items()
        ]
        print(
            name,
            "|",
            " | ".join(cells),
            "| NME",
            round(u.get("landmark_nme", float("nan")), 3),
            "pose",
            round(u.get("head_pose_diff_deg", float("nan")), 2),
            "| natural",
            res.get("naturalness", {}).get(name, {}).get("accuracy"),
        )


if __name__ == "__main__":
    main()
