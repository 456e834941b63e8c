"""Package attributes imported on first use (PEP 562), so that `import reslab` and
`reslab --help` do not pay for torch: each package names what it exports and where from."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


def exports(package: str, where: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for `package`; where: exported name -> relative module ("" for a submodule)."""
    namespace = importlib.import_module(package).__dict__

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(where[name] or f".{name}", package)
        value = module if not where[name] else getattr(module, name)
        namespace[name] = value  # later lookups do not come here again
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *where})

    return getattr_, dir_


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__dict__[self.__name__.rsplit(".", 1)[1]](*args, **kwargs)


def callable_module(name: str) -> None:
    """Makes module `name` callable as its function of the same name: `reslab.optimize(...)` and
    `reslab.summary(...)` work whether or not the module was imported first (an import of a
    submodule sets the package attribute to the module, not to the lazily exported function)."""
    sys.modules[name].__class__ = _CallableModule
