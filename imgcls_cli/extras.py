"""Optional extras: a feature that needs a package outside the core dependencies checks for it here.

The extras are declared in `pyproject.toml` (`[project.optional-dependencies]`); a missing one is a
user-input problem with a one-line fix, so it is an `ImgclsError` (exit status 2) naming the
option, the missing modules and the `pip install` line, never a raw `ModuleNotFoundError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from .errors import ImgclsError


def require(extra: str, modules: Sequence[str], what: str) -> None:
    """Import `modules` or raise one line: "`what`: needs X, Y (not installed); pip install 'imgcls[extra]'".

    `what` names the option ("--format onnx"); the text after its first ": " is the reason, the form the config
    errors use ("--backbone timm/x (model.backbone): needs ...")."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImgclsError(f"{what}: needs {', '.join(missing)} (not installed); pip install 'imgcls[{extra}]'")


__all__ = ["require"]
