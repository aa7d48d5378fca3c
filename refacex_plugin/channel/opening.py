"""When a reader's search for a face's mark ends: at a codeword, at a reading that opens under a
key, or once the face's budget of readings is spent."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..geometry import AlignConfig
from .config import ReaderConfig
from .faces import frame_landmarks

#: ``accept(logits (bits,), m (1, 2, 3)) -> bool``: whether a reading of a face, taken in frame ``m``
#: (image to crop, in the image's pixels), ends the reader's search for it (:func:`is_codeword`,
#: :func:`payload_opener`).
Accept = Callable[[np.ndarray, torch.Tensor], bool]


class ReadingBudget:
    """One face's ``accept`` (:data:`Accept`) that counts the readings it is asked about: spent
    after ``readings`` (:attr:`~refacex_plugin.channel.ReaderConfig.read_budget`); remembers
    whether it took one."""

    def __init__(self, accept: Accept, readings: int = ReaderConfig().read_budget):
        self.accept, self.readings, self.left, self.taken = accept, int(readings), int(readings), False

    def __call__(self, logits: np.ndarray, m: torch.Tensor) -> bool:
        self.left -= 1
        self.taken = bool(self.accept(logits, m))
        return self.taken

    @property
    def spent(self) -> bool:
        return self.left <= 0


def is_spent(accept: Accept) -> bool:
    """Whether ``accept`` is a :class:`ReadingBudget` with no readings left (any other never is)."""
    return isinstance(accept, ReadingBudget) and accept.spent


def face_accept(accept: Accept | list[Accept], i: int) -> Accept:
    """Face ``i``'s ``accept``: one per face (a sequence) or one for all."""
    return accept[i] if isinstance(accept, (list, tuple)) else accept


def is_codeword(logits: np.ndarray, m: torch.Tensor | None = None) -> bool:
    """Whether a reading's hard bits ``logits (bits,) > 0`` are a codeword of the payload's error
    correction (needs no key; ``m`` is not looked at)."""
    from ..payload import correct_channel

    return correct_channel((logits > 0).astype(np.uint8)) is not None


def payload_opener(rgb: np.ndarray, keys: list[bytes], align: AlignConfig = AlignConfig()) -> PayloadOpener:
    """The search's ``accept`` for a reader holding ``keys``: a codeword (:func:`is_codeword`), or a
    reading that soft decoding opens under one of ``keys``, bound to the face as ``rgb (H, W, 3)``
    shows it in the reading's frame (as :func:`~refacex_plugin.channel.read_payloads` opens it).

    Why: without a key the search stops only at a hard codeword (at most ``t`` wrong bits), and a
    face it never reads one from gets its most confident reading, which after WebP Q80 or a
    half-size resize is often a chance point; soft decoding opens readings with 11-19 wrong bits.
    Every reading tried is one more chance for unmarked pixels to authenticate: at most
    :attr:`~refacex_plugin.channel.ReaderConfig.read_budget` readings of a face
    (:class:`~refacex_plugin.channel.FacePayload`), each ``8 * 1024 * 2^-40 = 2^-27``
    (:func:`~refacex_plugin.payload.open_payload`), at most 2^-23 a face and key. Costs an unmarked
    face ~12 ms a reading (ordered statistics' elimination, mostly)."""
    return PayloadOpener(rgb, keys, align)


class PayloadOpener:
    """:func:`payload_opener`'s ``accept``; remembers what each reading it tried opened to (so
    :func:`~refacex_plugin.channel.read_payloads` does not open a face's last reading again)."""

    def __init__(self, rgb: np.ndarray, keys: list[bytes], align: AlignConfig):
        self.rgb, self.keys, self.align = rgb, keys, align
        self._tried: dict[bytes, object | None] = {}  # logits + frame -> opened payload or None

    def __call__(self, logits: np.ndarray, m: torch.Tensor) -> bool:
        if is_codeword(logits):
            return True
        return self.opened(logits, frame_landmarks(m, self.align)) is not None

    def opened(self, logits: np.ndarray, frame: np.ndarray):
        """The payload ``logits (bits,)`` open to under the keys, bound to the face in ``frame``
        (its five landmarks ``(1, 5, 2)``), or None; each reading opened once."""
        from .. import payload
        from ..binding import candidate_hashes, face_signatures

        seen = logits.tobytes() + np.asarray(frame, np.float32).tobytes()
        if seen not in self._tried:
            bindings = candidate_hashes(face_signatures(self.rgb, np.asarray(frame, np.float32).reshape(1, 5, 2), self.align)[0])
            self._tried[seen] = payload.open_payload(logits, self.keys, bindings=bindings)
        return self._tried[seen]
