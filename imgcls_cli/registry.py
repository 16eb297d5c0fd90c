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

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ImgclsError(self.unknown_message(name)) from None

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def unknown_message(self, name: str) -> str:
        valid = self.valid_values()
        close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"{self.option}: unknown {self.kind} {name!r}{hint}; valid: {', '.join(valid)}"

    def names(self) -> list[str]:
        return list(self._items)

    def valid_values(self) -> list[str]:
        """What the option accepts: `also_valid` (e.g. `none`), then the registered names."""
        return [*self.also_valid, *self._items]

    def __contains__(self, name: object) -> bool:
        return name in self._items

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
