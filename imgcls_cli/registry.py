"""One registry per kind of component (backbone, attention, loss, sampler, ...).

Components are looked up by the name in the validated config; the CLI choices, `--help`, the
config validators and the contract tests all read `Registry.names()`, so registering a component
is the only step needed to expose it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ImgclsError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, option: str | None = None, also_valid: tuple[str, ...] = ()):
        self.kind = kind  # e.g. "backbone"
        self.option = option or f"--{kind}"  # the CLI option users type, for error messages
        self.also_valid = also_valid  # values the option accepts that are not components (e.g. `none`)
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        # prefix -> (resolve(rest) -> (obj, meta), pattern shown in listings): open families such as `timm/<name>`
        self._namespaces: dict[str, tuple[Callable[[str], tuple[T, dict[str, Any]]], str]] = {}
        self._resolved: dict[str, tuple[T, dict[str, Any]]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: `@BACKBONES.register("resnet50", family="resnet")`."""

        def deco(obj: T) -> T:
            self.add(name, obj, **meta)
            return obj

        return deco

    def add(self, name: str, obj: T, **meta: Any) -> None:
        if name in self._items:
            raise KeyError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        self._meta[name] = dict(meta)

    def add_namespace(self, prefix: str, resolve: Callable[[str], tuple[T, dict[str, Any]]], pattern: str) -> None:
        """Names `prefix + rest` resolved on first use by `resolve(rest)` -> (obj, meta), which raises ImgclsError
        (one line: unknown name, missing extra) when `rest` is not valid.  Resolved names are not in `names()`:
        the family is open (timm has ~1000 models), so listings show `pattern` instead."""
        if prefix in self._namespaces:
            raise KeyError(f"{self.kind} namespace {prefix!r} is registered twice")
        self._namespaces[prefix] = (resolve, pattern)

    def _namespace_entry(self, name: str) -> tuple[T, dict[str, Any]] | None:
        """(obj, meta) of a namespaced name; None when no namespace matches; raises its ImgclsError if invalid."""
        if name in self._resolved:
            return self._resolved[name]
        for prefix, (resolve, _pattern) in self._namespaces.items():
            if isinstance(name, str) and name.startswith(prefix):
                entry = resolve(name[len(prefix):])
                self._resolved[name] = entry
                return entry
        return None

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        entry = self._namespace_entry(name)
        if entry is None:
            raise ImgclsError(self.unknown_message(name))
        return entry[0]

    def meta(self, name: str) -> dict[str, Any]:
        if name in self._items:
            return self._meta[name]
        self.get(name)
        return self._resolved[name][1]

    def unknown_message(self, name: str) -> str:
        try:
            if self._namespace_entry(name) is not None:
                return f"{self.option}: {name!r} is valid"  # not unknown; callers ask only after a failed lookup
        except ImgclsError as e:  # the namespace's own reason (unknown timm model, timm not installed)
            return str(e)
        valid = self.valid_values()
        close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"{self.option}: unknown {self.kind} {name!r}{hint}; valid: {', '.join(valid)}"

    def names(self) -> list[str]:
        return list(self._items)

    def valid_values(self) -> list[str]:
        """What the option accepts: `also_valid` (e.g. `none`), then the registered names."""
        return [*self.also_valid, *self._items, *(pattern for _r, pattern in self._namespaces.values())]

    def __contains__(self, name: object) -> bool:
        if name in self._items:
            return True
        try:
            return isinstance(name, str) and self._namespace_entry(name) is not None
        except ImgclsError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


BACKBONES: Registry[Callable[..., Any]] = Registry("backbone")
ATTENTION: Registry[Callable[..., Any]] = Registry("attn", option="--attn", also_valid=("none",))
HEADS: Registry[Callable[..., Any]] = Registry("head")
LOSSES: Registry[Callable[..., Any]] = Registry("loss")
SAMPLERS: Registry[Callable[..., Any]] = Registry("sampler")
AUTOAUGMENT: Registry[Callable[..., Any]] = Registry("autoaugment policy", option="--autoaugment",
                                                     also_valid=("none",))
METHODS: Registry[Callable[..., Any]] = Registry("method")
CAM_METHODS: Registry[Callable[..., Any]] = Registry("cam method", option="--method")

ALL = {
    "backbone": BACKBONES,
    "attn": ATTENTION,
    "head": HEADS,
    "loss": LOSSES,
    "sampler": SAMPLERS,
    "autoaugment": AUTOAUGMENT,
    "method": METHODS,
    "cam": CAM_METHODS,
}
