"""The four operators on batches of aligned face crops ``(B, 3, S, S)`` in [0, 1].

``anonymise`` works with every available method; ``embed`` and ``extract`` need a watermark and
``codes``/``recover`` the refacex networks. Without their weights they raise
:class:`ModelNotAvailableError` with a clear message rather than pretending.
"""

from __future__ import annotations

import torch

from .anonymisers import default_method, get_anonymiser
from .errors import ModelNotAvailableError

_NO_WATERMARK = "no watermark is available"
_NO_RECOVERY = "the recovery network is not available in this version (no weights in models/)"


def anonymise(crops: torch.Tensor, donor: torch.Tensor | None = None, method: str | None = None, strength: float = 1.0) -> torch.Tensor:
    """Replace the identity in each crop.

    Args:
        crops: ``(B, 3, S, S)`` aligned faces in [0, 1].
        donor: ``(B, D)`` donor identity codes, or None for the method's default.
        method: a name from :func:`~refacex_plugin.anonymisers.available_methods`; default the best.
        strength: privacy/utility dial, 1.0 = the method's default.

    Returns:
        ``(B, 3, S, S)`` anonymised crops in [0, 1].
    """
    return get_anonymiser(method or default_method())(crops, donor, strength).clamp(0.0, 1.0)


def _watermark():
    from .watermark import load_watermark

    try:
        return load_watermark()
    except ModelNotAvailableError as exc:
        raise ModelNotAvailableError(f"{_NO_WATERMARK}: {exc}") from None


def embed(crops: torch.Tensor, payload_bits: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Hide channel bits ``(B, CHANNEL_BITS)`` in ``crops``; returns watermarked ``(B, 3, S, S)``."""
    return _watermark().embed(crops, payload_bits, strength)


def extract(crops: torch.Tensor) -> torch.Tensor:
    """Read channel-bit logits ``(B, CHANNEL_BITS)`` back from ``crops`` (> 0 means 1)."""
    return _watermark().extract(crops)


def _recovery_model():
    from .anonymisers import available_methods, get_anonymiser

    if "generator" not in available_methods():
        raise ModelNotAvailableError(_NO_RECOVERY)
    return get_anonymiser("generator")


def codes(crops: torch.Tensor):
    """The ``(B, CODE_BITS)`` uint8 recovery codes of original ``crops``."""
    return _recovery_model().codes(crops)


def recover(crops: torch.Tensor, code) -> torch.Tensor:
    """Reconstruct the original faces ``(B, 3, S, S)`` from anonymised crops and ``(B, CODE_BITS)`` codes."""
    return _recovery_model().recover(crops, code)


def recovery_available() -> bool:
    try:
        _recovery_model()
        return True
    except ModelNotAvailableError:
        return False
