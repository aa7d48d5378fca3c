"""Donor-composite anonymisation: real donor pixels on the target's dense face geometry."""

from __future__ import annotations

import threading

from .anonymiser import CompositeAnonymiser
from .bank import DonorBank, DonorChooser, build_bank, collect_faces
from .config import CompositeConfig

#: Manifest name of the shipped donor bank.
BANK = "refacex-donor-bank"

_BANKS: dict[str, DonorBank] = {}
_LOCK = threading.Lock()


def shipped_bank() -> DonorBank:
    """The shipped bank, loaded once per file (the zoo checks its hash on every call, so a models
    folder that changed under a running process is noticed)."""
    from ..zoo import weights_path

    path = str(weights_path(BANK))
    with _LOCK:
        if path not in _BANKS:
            _BANKS[path] = DonorBank.load(path)
        return _BANKS[path]


def load_composite() -> CompositeAnonymiser:
    """The composite anonymiser over the shipped bank."""
    return CompositeAnonymiser(shipped_bank())


__all__ = [
    "BANK",
    "CompositeAnonymiser",
    "CompositeConfig",
    "DonorBank",
    "DonorChooser",
    "build_bank",
    "collect_faces",
    "load_composite",
    "shipped_bank",
]
