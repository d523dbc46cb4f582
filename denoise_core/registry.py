"""One small registry serves noise models, losses, networks and schedules.

Everything is built from a name plus keyword arguments that round-trip through
YAML/JSON, so a study spec can name any of them.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def add(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self._builders[name] = builder
            return builder

        return add

    def add(self, name: str, item: T) -> T:
        """Register a ready object (a task description, say) rather than a builder."""
        return self.register(name)(item)

    @property
    def names(self) -> list[str]:
        return sorted(self._builders)

    def check(self, name: str) -> None:
        if name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names)}")

    def get(self, name: str) -> Callable[..., T]:
        """The registered builder itself (a class, say), or the object `add` registered."""
        self.check(name)
        return self._builders[name]

    def build(self, name: str, **params: Any) -> T:
        return self.get(name)(**params)

    def __contains__(self, name: object) -> bool:
        return name in self._builders
