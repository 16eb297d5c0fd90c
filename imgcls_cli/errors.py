"""User-facing errors.

Every mistake a user can make (unknown component, bad option value, missing or corrupt file)
raises `ImgclsError` with one line that names the option or file and what would be valid.  The
CLI prints that line and exits with status 2; nothing else is shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# what the user typed to name the data set: `--data` for train/eval, a positional argument for stats and pack
_DATA_ARGUMENT: ContextVar[str] = ContextVar("imgcls_data_argument", default="--data")


class ImgclsError(ValueError):
    """An error caused by user input; the message is one line meant for the user."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class CheckpointError(ImgclsError):
    """A checkpoint file that is missing, corrupt, unsafe or not an imgcls checkpoint."""


class DataError(ImgclsError):
    """A data set that is missing, empty or malformed.

    Messages start with `--data PATH:`; inside `data_argument(NAME)` that prefix names the command's own
    argument instead (`imgcls stats DATA_OR_CHECKPOINT`, `imgcls pack DATA`).
    """

    def __init__(self, message: str):
        name = _DATA_ARGUMENT.get()
        if name != "--data" and str(message).startswith("--data "):
            message = name + str(message)[len("--data"):]
        super().__init__(message)


@contextmanager
def data_argument(name: str) -> Iterator[None]:
    """Within this block, data-set errors name `name` (a command's positional argument) instead of --data."""
    token = _DATA_ARGUMENT.set(name)
    try:
        yield
    finally:
        _DATA_ARGUMENT.reset(token)
