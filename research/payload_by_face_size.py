"""Which faces of a keyed folder run carry a payload a reader opens, by face size and faces per image.

Reads the ``--records`` file of ``refacex anonymise ... --key-file K --records records.jsonl`` and
tabulates each face's ``payload`` status (``embedded``: re-detected in the written image where the
reader's search starts and read back with at most BCH's 10 wrong bits; else ``embedded-unverified``,
split into not re-detected / too many wrong bits or too far) by the width of its detection box and by
the number of faces in its image.

    python research/payload_by_face_size.py records.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

WIDTHS = ((0, 30), (30, 45), (45, 60), (60, 80), (80, 120), (120, 10_000))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records")
    args = ap.parse_args()
    by_width, by_count = defaultdict(lambda: [0, 0, 0]), defaultdict(lambda: [0, 0, 0])
    for line in open(args.records, encoding="utf-8"):
        faces = json.loads(line)["faces"]
        for f in faces:
            w = f["box"][2] - f["box"][0]
            row = next(r for r in WIDTHS if r[0] <= w < r[1])
            for table, key in ((by_width, row), (by_count, min(len(faces), 4))):
                table[key][0] += 1
                table[key][1] += f["payload"] == "embedded"
                table[key][2] += f["payload"] != "embedded" and f["payload_bit_errors"] is None
    print("| face box width (px) | faces | payload read back | not re-detected |\n| --- | --- | --- | --- |")
    for lo, hi in WIDTHS:
        n, ok, lost = by_width[(lo, hi)]
        if n:
            print(f"| {lo}-{hi if hi < 10_000 else ''} | {n:,} | {100 * ok / n:.1f} % | {100 * lost / n:.1f} % |")
    print("\n| faces in the image | faces | payload read back | not re-detected |\n| --- | --- | --- | --- |")
    for k in sorted(by_count):
        n, ok, lost = by_count[k]
        print(f"| {k if k < 4 else '4 or more'} | {n:,} | {100 * ok / n:.1f} % | {100 * lost / n:.1f} % |")


if __name__ == "__main__":
    main()
