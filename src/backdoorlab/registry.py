"""Name -> object registries that reject unknown names with a did-you-mean (as PEFT does)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import BackdoorlabError, unknown

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of attacks, defenses, triggers, judges...

    >>> judges = Registry("judge")
    >>> @judges.register("refusal")
    ... def refusal(text): ...
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise BackdoorlabError(f"{self.what} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise unknown(self.what, name, self._items) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
