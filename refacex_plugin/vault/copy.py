"""Copying a vault's records into another vault, of either backend.

Both backends seal records the same way under the same key (:mod:`.core`), so records are copied
sealed, as they are: the same ids, nonces and ciphertexts, the same times (which order
duplicates). Each image's records are authenticated with the key before they are written (a wrong
key, or a tampered record, stops the copy before anything of that image is written) and written
in one commit, so an interrupted copy leaves whole images, and a re-run copies what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .core import VaultBase


@dataclass
class CopySummary:
    images: int = 0
    faces: int = 0
    originals: int = 0
    skipped: int = 0  # images whose every record the destination already held

    def line(self) -> str:
        return (
            f"copied {self.images} image(s): {self.faces} face record(s), {self.originals} original(s); "
            f"{self.skipped} image(s) already there (skipped)"
        )


def copy_vault(src: VaultBase, dst: VaultBase, progress: Callable[[], None] = lambda: None) -> CopySummary:
    """Copy every record of ``src`` that ``dst`` does not hold (face records by id, originals by
    their nonce) into ``dst``, image by image; both must be open with the same key.
    ``progress`` is called once per image."""
    summary = CopySummary()
    for image_hash in src.image_hashes():
        faces, originals = src.sealed(image_hash)
        known = dst.known_record_ids([f.record_id for f in faces]) if faces else set()
        faces = [f for f in faces if f.record_id not in known]
        if originals:
            have = dst.known_originals(image_hash)
            originals = [o for o in originals if o.nonce not in have]
        if not faces and not originals:
            summary.skipped += 1
            progress()
            continue
        for face in faces:
            src.open_face(face)  # authenticates (raises VaultError on a wrong key or a tampered record)
        for original in originals:
            src.open_original(original)
        dst.store_sealed(image_hash, faces, originals)
        summary.images += 1
        summary.faces += len(faces)
        summary.originals += len(originals)
        progress()
    return summary
