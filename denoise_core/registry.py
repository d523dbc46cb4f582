"""One small registry serves noise models, losses, networks, schedules, tasks and report figures.

Everything is built from a name plus keyword arguments that round-trip through YAML/JSON, so a
study spec can name any of them.

A registry may own a package (`Registry("model", package="denoise_core.models")`): the first
lookup imports every module of that package, and each module registers what it defines. A new
model, task or figure is then one new file in its package; nothing else lists it, and the
package's `__init__` never imports its own modules (no import cycle through the parent package).
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self.package = package
        self._builders: dict[str, Callable[..., T]] = {}
        self._discovered = package is None

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def add(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders and self._builders[name] is not builder:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self._builders[name] = builder
            return builder

        return add

    def add(self, name: str, item: T) -> T:
        """Register a ready object (a task description, say) rather than a builder."""
        return self.register(name)(item)

    def _discover(self) -> None:
        """Import every module of the registry's package once; each registers its own entries."""
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    @property
    def names(self) -> list[str]:
        self._discover()
        return sorted(self._builders)

    def check(self, name: str) -> None:
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names)}")

    def get(self, name: str) -> Callable[..., T]:
        """The registered builder itself (a class, say), or the object `add` registered."""
        self.check(name)
        return self._builders[name]

    def parameters(self, name: str) -> list[str]:
        """The keyword arguments `name`'s builder accepts (what a spec may set for it)."""
        return [p.name for p in inspect.signature(self.get(name)).parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def check_params(self, name: str, params: dict[str, Any]) -> None:
        """Bind `params` against the builder's signature: an unknown name fails as a ValueError that
        lists what the builder takes (never a TypeError from deep inside a trial)."""
        if any(p.kind == p.VAR_KEYWORD for p in inspect.signature(self.get(name)).parameters.values()):
            return  # the builder takes any keyword: it checks its own
        takes = self.parameters(name)
        unknown = [k for k in params if k not in takes]
        if unknown:
            raise ValueError(f"{self.kind} {name!r} takes no parameter {unknown[0]!r}; "
                             f"it takes: {', '.join(takes) or 'none'}")

    def build(self, name: str, **params: Any) -> T:
        self.check_params(name, params)
        return self.get(name)(**params)

    def __contains__(self, name: object) -> bool:
        if name not in self._builders:
            self._discover()
        return name in self._builders
