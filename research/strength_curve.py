"""The strength dial's privacy/utility curve from `refacex bench --strength S --json` runs.

python research/strength_curve.py runs/sweep/s*.json -o docs/images/strength-curve.png
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    rows = []
    for p in args.inputs:
        r = json.loads(p.read_text())
        strength = float(r["command"].split("--strength")[1].split()[0])
        m = next(iter(r["methods"].values()))
        rows.append((strength, m["privacy"], m["utility"]))
    rows.sort(key=lambda x: x[0])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for name in rows[0][1]:
        ax1.plot([s for s, _, _ in rows], [100 * p[name]["match_rate"] for _, p, _ in rows], "o-", label=f"{name.split(':')[-1]} match")
        ax1.plot(
            [s for s, _, _ in rows],
            [100 * (p[name]["donor_match_rate"] or 0) for _, p, _ in rows],
            "x--",
            label=f"{name.split(':')[-1]} donor match",
        )
    ax1.set_xlabel("--strength")
    ax1.set_ylabel("% of faces")
    ax1.legend(fontsize=7)
    ax1.set_title("privacy (lower is better)")
    ax2.plot([s for s, _, _ in rows], [u["landmark_nme"] for _, _, u in rows], "o-", label="68-point NME")
    ax2b = ax2.twinx()
    ax2b.plot([s for s, _, _ in rows], [u["head_pose_diff_deg"] for _, _, u in rows], "s--", color="C1", label="head-pose diff (°)")
    ax2.set_xlabel("--strength")
    ax2.set_ylabel("NME")
    ax2b.set_ylabel("degrees")
    ax2.set_title("utility (lower is better)")
    lines = ax2.get_lines() + ax2b.get_lines()
    ax2.legend(lines, [line.get_label() for line in lines], fontsize=7, loc="upper left")
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    for s, p, u in rows:
        cells = ", ".join(
            f"{n.split(':')[-1]} {100 * q['match_rate']:.1f} % (donor {100 * (q['donor_match_rate'] or 0):.1f} %)" for n, q in p.items()
        )
        print(f"strength {s}: {cells}; NME {u['landmark_nme']:.3f}, pose {u['head_pose_diff_deg']:.1f}")


if __name__ == "__main__":
    main()
