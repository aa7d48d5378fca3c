"""Carrying payload bits in whole images: embed in each face, read back after re-detection."""

from .search import (
    EARLIER_READ_BUDGET,
    EmbedResult,
    FacePayload,
    PayloadOpener,
    ReadingBudget,
    embed_codes,
    embed_in_image,
    eye_distances,
    face_logits,
    is_codeword,
    match_faces,
    payload_opener,
    read_from_image,
    read_marks,
    read_payloads,
    reader_frames,
)

__all__ = [
    "EARLIER_READ_BUDGET",
    "EmbedResult",
    "FacePayload",
    "PayloadOpener",
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
