"""Named, lazily built components: one pattern for detectors, anonymisers and watermarks.

A :class:`Registry` maps a name to a factory. A factory that needs weights raises
:class:`~refacex_plugin.errors.ModelNotAvailableError` when they are missing; the registry keeps the
reason and says it when the name is asked for. A component is built once per name and arguments
(factories of shared models, such as a 100 MB network, must not run per image). The default is the
first name of ``preference`` whose component is not ``experimental`` (an attribute a component may
declare: usable by name only, its shipped weights have not met their bars); when its weights are
missing that is an error, never a quiet step down to the next name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from .errors import ModelNotAvailableError

T = TypeVar("T")


class Registry(Generic[T]):
    """``kind``: what the registry holds, for messages (``"method"``, ``"detector"``, ...);
    ``preference``: names in the order the default is picked from; ``hint``: appended to the
    message of a name whose weights are missing (what to use instead)."""

    def __init__(self, kind: str, preference: tuple[str, ...] = (), hint: str = "", error: type[Exception] = ModelNotAvailableError):
        self.kind = kind
        self.preference = preference
        self.hint = hint
        self.error = error
        self._absent = (ModelNotAvailableError, error)  # what a factory raises when its weights are missing
        self._factories: dict[str, Callable[..., T]] = {}
        self._built: dict[tuple[str, tuple], T] = {}
        self._missing: dict[str, str] = {}
        self._lock = threading.RLock()  # a folder run's threads may ask for the same component at once

    def register(self, name: str, factory: Callable[..., T]) -> None:
        """Make ``name`` available (replacing any earlier factory and what it built)."""
        with self._lock:
            self._factories[name] = factory
            self._forget(name)

    def _forget(self, name: str) -> None:
        self._missing.pop(name, None)
        for built in [k for k in self._built if k[0] == name]:
            del self._built[built]

    def reset(self) -> None:
        """Forget every built component and every missing-weights reason (after the models folder changed)."""
        with self._lock:
            self._built.clear()
            self._missing.clear()

    def names(self) -> list[str]:
        """Every registered name, preferred ones first."""
        return list(dict.fromkeys([n for n in self.preference if n in self._factories] + list(self._factories)))

    def get(self, name: str, *args: Hashable) -> T:
        """The component ``name`` built with ``args`` (once); a clear error when unknown or missing."""
        if name not in self._factories:
            raise self.error(f"unknown {self.kind} {name!r} (choose from {', '.join(self.names())})")
        with self._lock:
            if (name, args) not in self._built:
                if name in self._missing:
                    raise self.error(self._missing[name])
                try:
                    self._built[(name, args)] = self._factories[name](*args)
                except self._absent as exc:
                    self._missing[name] = f"{self.kind} {name!r} not available: {exc}" + (f"; {self.hint}" if self.hint else "")
                    raise self.error(self._missing[name]) from None
            return self._built[(name, args)]

    def loads(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except self._absent:
            return False

    def is_experimental(self, name: str) -> bool:
        """Whether ``name``'s component says its weights are not the shipped default (builds it)."""
        return bool(getattr(self.get(name), "experimental", False))

    def available(self, experimental: bool = True) -> list[str]:
        """The names whose components build here (experimental ones only if asked)."""
        return [n for n in self.names() if self.loads(n) and (experimental or not self.is_experimental(n))]

    def default(self) -> str:
        """The first preferred name whose component is not ``experimental``. When it does not build,
        the error says why and what to do; the next name is never silently put in its place (a
        user who asked for the default method must not be handed a mosaic)."""
        for name in self.names():
            self.get(name)  # raises its reason (and the hint) when its weights are missing
            if not self.is_experimental(name):
                return name
        raise self.error(f"no {self.kind} available: every one is experimental, usable by name only")
