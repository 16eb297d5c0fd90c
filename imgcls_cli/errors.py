"""User-facing errors.

Every mistake a user can make (unknown component, bad option value, missing or corrupt file)
raises `ImgclsError` with one line that names the option or file and what would be valid.  The
CLI prints that line and exits with status 2; nothing else is shown.
"""

from __future__ import annotations


class ImgclsError(ValueError):
    """An error caused by user input; the message is one line meant for the user."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class CheckpointError(ImgclsError):
    """A checkpoint file that is missing, corrupt, unsafe or not an imgcls checkpoint."""


class DataError(ImgclsError):
    """A data set that is missing, empty or malformed."""
