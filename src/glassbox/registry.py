"""Named registries: ``@REG.register("name")`` and ``REG.build("name", **cfg)``.

Every pluggable family (attention kinds, tokenizers, data sources, optimizers)
is a Registry, so a new entry is found by name from a recipe and covered by
the contract test that runs over ``REG.names()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from glassbox.errors import UserError, did_you_mean

T = TypeVar("T")


def _same_definition(a: object, b: object) -> bool:
    """True when ``b`` is ``a`` defined again by a second import of the same file.

    pytest's importlib mode imports a module a second time under another
    name to collect its doctests; that must not count as a name clash.
    """
    import inspect

    try:
        return a.__qualname__ == b.__qualname__ and inspect.getfile(a) == inspect.getfile(b)  # type: ignore[attr-defined, arg-type]
    except (AttributeError, TypeError):
        return False


class Registry(Generic[T]):
    """A mapping from names to factories with helpful errors on unknown names."""

    def __init__(self, what: str) -> None:
        self.what = what  # used in error messages: "unknown attention kind 'x'"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries and not _same_definition(self._entries[name], obj):
                raise ValueError(f"{self.what} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UserError(f"unknown {self.what} '{name}': {did_you_mean(name, self._entries)}")
        return self._entries[name]

    def build(self, name: str, **cfg: Any) -> Any:
        factory = self.get(name)
        return factory(**cfg)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
