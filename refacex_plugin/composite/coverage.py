"""How well a donor bank covers the kinds of people it will be asked to stand in for."""

from __future__ import annotations

import numpy as np

from ..attributes import AGE_BAND_NAMES, DARKER_L, age_band
from .bank import DonorBank


def coverage(bank: DonorBank) -> list[dict]:
    """One row per (gender, age band): donors, and how many of them have darker skin (L* < 50)."""
    a = bank.attributes
    bands = np.array([age_band(x) for x in a[:, 1]])
    rows = []
    for gender, female in (("female", True), ("male", False)):
        for b, name in enumerate(AGE_BAND_NAMES):
            sel = ((a[:, 0] >= 0.5) == female) & (bands == b)
            rows.append({"gender": gender, "age": name, "donors": int(sel.sum()), "darker_skin": int((sel & (a[:, 2] < DARKER_L)).sum())})
    return rows


def coverage_table(bank: DonorBank) -> str:
    """:func:`coverage` as a Markdown table, with the bank's size and origin above it."""
    lines = [
        f"{len(bank)} donors ({bank.choices} choices with mirror images); {bank.origin or 'origin not recorded'}",
        "",
        f"| gender | age | donors | darker skin (L* < {DARKER_L:.0f}) |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {r['gender']} | {r['age']} | {r['donors']} | {r['darker_skin']} |" for r in coverage(bank)]
    return "\n".join(lines)
