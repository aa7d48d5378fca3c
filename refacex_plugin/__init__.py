"""refacex: reversible, donor-driven face anonymisation for image datasets.

Public API::

    from refacex_plugin import Pipeline, read_image, write_image
    pipe = Pipeline()                       # best available method, CenterFace detector
    result = pipe.anonymise_image(read_image("photo.jpg").rgb)
    write_image("anon.jpg", result.image, "JPEG")
"""

__version__ = "0.2.0.dev0"

from .errors import ImageReadError, ModelNotAvailableError, RefacexError  # noqa: E402
from .image_io import read_image, write_image  # noqa: E402
from .operators import anonymise, embed, extract, recover  # noqa: E402
from .pipeline import FaceRecord, ImageResult, Pipeline  # noqa: E402

__all__ = [
    "Pipeline", "FaceRecord", "ImageResult", "read_image", "write_image",
    "anonymise", "embed", "extract", "recover",
    "RefacexError", "ImageReadError", "ModelNotAvailableError", "__version__",
]
