"""Identity-labelled face folders (``<Name>/<Name>_NNNN.jpg``) and the benchmark's seeded split."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..image_io import IMAGE_SUFFIXES


@dataclass
class Split:
    """``gallery``: one original image per identity; ``probes``: other images of identities that
    have two or more. Labels are identity names."""

    gallery: list[Path] = field(default_factory=list)
    gallery_labels: list[str] = field(default_factory=list)
    probes: list[Path] = field(default_factory=list)
    probe_labels: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[Path]:
        return list(dict.fromkeys([*self.gallery, *self.probes]))


def list_identities(data: Path) -> dict[str, list[Path]]:
    people = {}
    for d in sorted(p for p in Path(data).iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            people[d.name] = files
    if not people:
        raise FileNotFoundError(f"{data}: no <identity>/<image> folders found")
    return people


def make_split(
    data: Path, seed: int = 0, quick: bool = False, probes_per_person: int = 1, quick_identities: int = 120, quick_distractors: int = 380
) -> Split:
    """Seeded gallery/probe split.

    Full mode: every identity in the gallery (one image each; single-image people are
    distractors) and up to ``probes_per_person`` probes (0 = all) for each identity with two or
    more images. Quick mode: ``quick_identities`` identities with probes plus
    ``quick_distractors`` others.
    """
    rng = random.Random(seed)
    people = list_identities(data)
    multi = [n for n, f in people.items() if len(f) >= 2]
    if quick:
        chosen = rng.sample(multi, min(quick_identities, len(multi)))
        rest = [n for n in people if n not in set(chosen)]
        distractors = rng.sample(rest, min(quick_distractors, len(rest)))
        selected = sorted(chosen + distractors)
        with_probes = set(chosen)
        probes_per_person = 1
    else:
        selected = list(people)
        with_probes = set(multi)
    split = Split()
    for name in selected:
        files = list(people[name])
        rng.shuffle(files)
        split.gallery.append(files[0])
        split.gallery_labels.append(name)
        if name in with_probes:
            others = files[1:] if probes_per_person == 0 else files[1 : 1 + probes_per_person]
            split.probes.extend(others)
            split.probe_labels.extend([name] * len(others))
    return split


def read_pairs(data: Path) -> list[tuple[Path, Path, bool]]:
    """LFW ``pairs.txt``: ``(image a, image b, same person)``; indices count from 1."""
    out = []
    for line in (Path(data) / "pairs.txt").read_text().splitlines():
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) == 3:
            n, i, j = parts
            out.append((_lfw_path(data, n, i), _lfw_path(data, n, j), True))
        elif len(parts) == 4:
            n1, i, n2, j = parts
            out.append((_lfw_path(data, n1, i), _lfw_path(data, n2, j), False))
    return out


def _lfw_path(data: Path, name: str, idx: str) -> Path:
    return Path(data) / name / f"{name}_{int(idx):04d}.jpg"
