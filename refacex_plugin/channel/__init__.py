"""Carrying payload bits in whole images: embed in each face, read back after re-detection.

- :mod:`~refacex_plugin.channel.config`: :class:`EmbedConfig` and :class:`ReaderConfig`, every
  setting of the embedder and the reader, with the measurement behind its value.
- :mod:`~refacex_plugin.channel.faces`: matching re-detections to faces, and the frames a face is
  embedded and read in.
- :mod:`~refacex_plugin.channel.embed`: :func:`embed_in_image`, :func:`embed_codes`.
- :mod:`~refacex_plugin.channel.search`: the search for a face's mark around its re-detection.
- :mod:`~refacex_plugin.channel.fallbacks`: what a reader tries on a face the search did not open.
- :mod:`~refacex_plugin.channel.opening`: when a search ends (a codeword, a payload that opens, a
  spent budget).
- :mod:`~refacex_plugin.channel.reading`: :func:`read_payloads`, :func:`read_marks`: whole images.
"""

from .config import EmbedConfig, ReaderConfig
from .embed import EmbedResult, embed_codes, embed_in_image
from .faces import eye_distances, match_faces, reader_frames
from .opening import Accept, PayloadOpener, ReadingBudget, is_codeword, payload_opener
from .reading import FacePayload, read_from_image, read_marks, read_payloads
from .search import face_logits

#: The default reader's :attr:`ReaderConfig.earlier_read_budget`, for callers that pass it as
#: :func:`read_payloads`' ``budget``.
EARLIER_READ_BUDGET = ReaderConfig().earlier_read_budget

__all__ = [
    "EARLIER_READ_BUDGET",
    "Accept",
    "EmbedConfig",
    "EmbedResult",
    "FacePayload",
    "PayloadOpener",
    "ReaderConfig",
    "ReadingBudget",
    "embed_codes",
    "embed_in_image",
    "eye_distances",
    "face_logits",
    "is_codeword",
    "match_faces",
    "payload_opener",
    "read_from_image",
    "read_marks",
    "read_payloads",
    "reader_frames",
]
