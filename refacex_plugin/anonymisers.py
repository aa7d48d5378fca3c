"""The registry of anonymisers: ``(crops, strength) -> Anonymised`` on aligned face crops.

The baselines (:mod:`.baselines`) and the learned methods (the donor composite, the generator)
register here by name; :func:`default_method` is the preferred one, never a quiet substitute.
"""

from __future__ import annotations

from collections.abc import Callable

from .anonymised import Anonymiser
from .baselines import BaselineAnonymiser, blur_faces, mask_faces, pixelate_faces
from .registry import Registry

#: Preference order for the default: the donor composite, then the baselines (``generator``, the
#: learned network kept for its approximate recovery, is experimental: used only when named).
PREFERENCE = ("refacex", "generator", "pixelate", "blur", "mask")
BASELINES = ("blur", "pixelate", "mask")

ANONYMISERS: Registry[Anonymiser] = Registry("method", PREFERENCE, hint="use blur, pixelate or mask")
ANONYMISERS.register("blur", lambda: BaselineAnonymiser("blur", blur_faces))
ANONYMISERS.register("pixelate", lambda: BaselineAnonymiser("pixelate", pixelate_faces))
ANONYMISERS.register("mask", lambda: BaselineAnonymiser("mask", mask_faces))


def _load_composite() -> Anonymiser:
    from .composite import load_composite

    return load_composite()


def _load_generator() -> Anonymiser:
    from .generator.model import load_generator

    return load_generator()


ANONYMISERS.register("refacex", _load_composite)
ANONYMISERS.register("generator", _load_generator)


def register_anonymiser(name: str, factory: Callable[[], Anonymiser]) -> None:
    """Make a method available by name (e.g. an ablation's configured composite)."""
    ANONYMISERS.register(name, factory)


def reset_learned() -> None:
    """Forget the methods loaded so far (after the models folder changed)."""
    ANONYMISERS.reset()


def is_experimental(name: str) -> bool:
    """A method whose shipped weights are not the default: usable by name, with a warning."""
    return ANONYMISERS.is_experimental(name)


def known_methods() -> list[str]:
    return ANONYMISERS.names()


def available_methods() -> list[str]:
    return ANONYMISERS.available()


def default_method() -> str:
    """The best method this installation can run."""
    return ANONYMISERS.default()


def get_anonymiser(name: str) -> Anonymiser:
    return ANONYMISERS.get(name)
