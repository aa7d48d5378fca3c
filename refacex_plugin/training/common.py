"""Small pieces every training loop shares: atomic checkpoints, image grids, JSON-lines logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch


def save_checkpoint(path: Path, **state) -> None:
    """Write ``state`` to ``path`` atomically (a crash never leaves a half-written checkpoint)."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, device) -> dict | None:
    return torch.load(path, map_location=device, weights_only=False) if path.is_file() else None


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    """Rows of ``(N, 3, H, W)`` images in [0, 1] -> one PNG (a row per tensor)."""
    from PIL import Image

    grid = torch.cat([torch.cat(list(r.detach().float().cpu().clamp(0, 1)), dim=2) for r in rows], dim=1)
    Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


class Budget:
    """A training run's time budget (``minutes``; None: unlimited), counted from its creation."""

    def __init__(self, minutes: float | None = None):
        self.seconds = None if minutes is None else 60.0 * minutes
        self.start = time.monotonic()

    def spent(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.start >= self.seconds

    def progress(self, step: int, steps: int) -> float:
        """How far along the run is, in [0, 1]: of its steps, or of its time if that is further."""
        p = step / max(steps, 1)
        if self.seconds is not None:
            p = max(p, 1.0 if self.seconds <= 0 else (time.monotonic() - self.start) / self.seconds)
        return min(p, 1.0)


class JsonLog:
    """Append-only JSON-lines log that also prints a compact line."""

    def __init__(self, path: Path, echo=print):
        self.fh = open(path, "a", encoding="utf-8")
        self.echo = echo

    def write(self, rec: dict) -> None:
        self.fh.write(json.dumps(rec) + "\n")
        self.fh.flush()
        self.echo(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))

    def close(self) -> None:
        self.fh.close()


def base_parser(description: str, default_out: str, zoo_name: str):
    """The arguments every ``refacex train`` loop takes (config names are added by the caller)."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(default_out))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--init", help=f"start from these weights (a file, or 'zoo' for models/'s {zoo_name})")
    return ap


def check_init_width(path: Path, weights: dict, width: int) -> None:
    """Refuse, in one line, to start a run of ``width`` networks from weights of another width."""
    if "width" in weights and int(weights["width"]) != width:
        raise SystemExit(
            f"{path} holds width-{int(weights['width'])} networks and this config trains width {width}: "
            "pick a config of that width (cpu and device continue the zoo's) or leave out --init"
        )


def resolve_init(init: str | None, zoo_name: str) -> Path | None:
    """``--init``: None, ``zoo`` (the named zoo weights) or a path."""
    if not init:
        return None
    if init == "zoo":
        from ..zoo import weights_path

        return weights_path(zoo_name)
    return Path(init)
