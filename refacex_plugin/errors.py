"""Exceptions raised by refacex. Each carries a one-line, user-facing message."""

from __future__ import annotations


class RefacexError(Exception):
    """Base class: a failure the CLI reports as one line and moves past."""


class ImageReadError(RefacexError):
    """An input file is missing, empty, truncated, corrupt or not an image."""


class ImageWriteError(RefacexError):
    """An output could not be written safely."""


class ModelNotAvailableError(RefacexError):
    """An operator needs trained weights that this installation does not have."""


class DetectorNotAvailableError(RefacexError):
    """The requested face detector (or its weights) is not installed."""


class KeyFileError(RefacexError):
    """A key file is missing, malformed, too permissive or would be overwritten."""
