"""Name -> object registries that refuse duplicates and list the valid names on a miss."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from alab.errors import AlabError

T = TypeVar("T")


class Registry(Generic[T]):
    """A registry of named things of one kind (acquisition functions, backends, data sets, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._summaries: dict[str, str] = {}

    def register(self, name: str, summary: str | None = None) -> Callable[[T], T]:
        """Decorator: register `obj` under `name`; the summary defaults to its docstring's first line."""

        def decorate(obj: T) -> T:
            self.add(name, obj, summary)
            return obj

        return decorate

    def add(self, name: str, obj: T, summary: str | None = None) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        doc = summary if summary is not None else (getattr(obj, "__doc__", None) or "")
        self._summaries[name] = doc.strip().splitlines()[0] if doc.strip() else ""

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise AlabError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def summary(self, name: str) -> str:
        return self._summaries[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
