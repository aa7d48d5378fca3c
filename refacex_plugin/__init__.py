"""refacex: reversible, donor-driven face anonymisation for image datasets.

Public API::

    from refacex_plugin import make_writer, read_image, write_image
    writer = make_writer()                  # best available method, CenterFace detector
    result = writer.anonymise_image(read_image("photo.jpg").rgb)
    write_image("anon.jpg", result.image, "JPEG")

With a key, ``make_writer(key=...)`` also embeds a payload per face and ``make_reader(key)`` reads
them back; :mod:`refacex_plugin.api` runs whole files with a vault, as the CLI does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0.dev0"

# The public names resolve on first use (PEP 562): importing the package, or any light submodule
# such as the CLI, must not pull in torch and the models.
_EXPORTS = {
    "RefacexError": "errors",
    "ImageReadError": "errors",
    "ModelNotAvailableError": "errors",
    "read_image": "image_io",
    "write_image": "image_io",
    "anonymise": "operators",
    "embed": "operators",
    "extract": "operators",
    "recover": "operators",
    "make_writer": "writer",
    "make_reader": "reader",
    "FaceWriter": "writer",
    "FaceReader": "reader",
    "FaceRecord": "records",
    "ImageResult": "records",
}

__all__ = [
    "make_writer",
    "make_reader",
    "FaceWriter",
    "FaceReader",
    "FaceRecord",
    "ImageResult",
    "read_image",
    "write_image",
    "anonymise",
    "embed",
    "extract",
    "recover",
    "RefacexError",
    "ImageReadError",
    "ModelNotAvailableError",
    "__version__",
]

if TYPE_CHECKING:
    from .errors import ImageReadError, ModelNotAvailableError, RefacexError
    from .image_io import read_image, write_image
    from .operators import anonymise, embed, extract, recover
    from .reader import FaceReader, make_reader
    from .records import FaceRecord, ImageResult
    from .writer import FaceWriter, make_writer


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
