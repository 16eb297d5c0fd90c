"""Argument checks for the Python API: a wrong option name or type is an `ImgclsError` naming it and what
is valid, not a TypeError from deep inside a constructor."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from .errors import ImgclsError

_SIMPLE = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _fits(value: Any, annotation: Any) -> bool:
    """Whether `value` fits a simple annotation (int, float, bool, str, optionally `| None`); others pass."""
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", "")
    parts = [p.strip() for p in annotation.split("|")]
    if value is None:
        return "None" in parts or not set(parts) & set(_SIMPLE)
    kinds = [_SIMPLE[p] for p in parts if p in _SIMPLE]
    if not kinds or len(kinds) + ("None" in parts) != len(parts):
        return True  # not a simple annotation: the callee checks it
    if isinstance(value, bool) and "bool" not in parts:
        return False  # True is an int to Python, not a class count or a margin
    return any(isinstance(value, k) for k in kinds)


def check_options(fn: Callable[..., Any], given: dict[str, Any], what: str, skip: Iterable[str] = ()) -> None:
    """Refuse options `fn` does not take, a required one that is missing, or a value of the wrong simple type."""
    skip = set(skip)
    params = {n: p for n, p in inspect.signature(fn).parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in skip}
    valid = ", ".join(params) or "none"
    for name, value in given.items():
        if name not in params:
            raise ImgclsError(f"{what}: unknown option {name!r}; valid: {valid}")
        p = params[name]
        if p.annotation is not p.empty and not _fits(value, p.annotation):
            raise ImgclsError(f"{what}: {name} must be {p.annotation}, got {value!r}")
    missing = [n for n, p in params.items() if p.default is p.empty and n not in given]
    if missing:
        raise ImgclsError(f"{what}: needs {', '.join(f'{n}=...' for n in missing)}")


def check_count(value: Any, name: str) -> int:
    """A count such as num_classes: an int >= 1 (not a bool, a float or a string)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImgclsError(f"{name} must be an int >= 1, got {value!r}")
    return value
