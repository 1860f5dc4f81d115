"""Extension by convention: a name finds a dataset loader, a summarization paradigm or a
baseline, and a dotted name (``package.module``) imports a module written outside the kit.

One small machinery for the three registries (RecBole's ``get_model`` finds a model class by
its name; here a name finds a registered entry, and an unknown dotted name is imported first,
so a user's own file extends the kit without editing it). Imports neither torch nor any stage,
so the config, the CLI's help and the notebooks can list what is registered cheaply.

Written by hand: the standard entry-points mechanism (``importlib.metadata.entry_points``)
needs an installed distribution, and a researcher's one-file extension usually is not one.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Generic, TypeVar

T = TypeVar("T")


def import_named(kind: str, name: str, setting: str) -> ModuleType:
    """Import the module ``name`` that a setting names.

    Args:
        kind: what the module provides, for the message ("baseline", "paradigm", "loader").
        name: a dotted module path (``package.module``).
        setting: the key or option that named it (``data.name``, ``--baselines``).

    Returns:
        The imported module.

    Raises:
        ValueError: naming the setting and the import error when it cannot be imported.
    """
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ValueError(f"{setting}={name!r}: cannot import {kind} module {name} ({err})"
                         ) from None


class Registry(dict[str, T], Generic[T]):
    """Entries by name, each remembering the module that registered it.

    :meth:`find` looks a name up; a missing name with a dot is imported as a module path, and
    the module's registration is then found under that path (the entry registered under the
    path itself, or the single entry the module registered under another name).
    """

    def __init__(self, kind: str, setting: str) -> None:
        super().__init__()
        self.kind = kind  # "baseline", "paradigm": in messages
        self.setting = setting  # the key or option that takes a name: in messages
        self.origin: dict[str, str] = {}  # entry name -> module that registered it

    def add(self, name: str, entry: T, module: str) -> T:
        """Register ``entry`` under ``name``; a second, different entry under one name is an
        error (two files claiming one name would otherwise depend on import order)."""
        if name in self and self[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = entry
        self.origin[name] = module
        return entry

    def find(self, name: str) -> T:
        """The entry registered as ``name``, importing a dotted name's module first.

        Raises:
            ValueError: unknown name (listing the known ones), a module that cannot be
                imported, or a module that registered no entry or several.
        """
        if name not in self and "." in name:
            import_named(self.kind, name, self.setting)
            if name not in self:
                found = [n for n, module in self.origin.items() if module == name]
                if len(found) != 1:
                    raise ValueError(f"{self.setting}={name!r}: the module must register "
                                     f"exactly one {self.kind}; it registered {len(found)}")
                self[name] = self[found[0]]
                self.origin[name] = name
        if name not in self:
            raise ValueError(f"{self.setting}={name!r}: unknown {self.kind}; known: "
                             f"{', '.join(self)} (or a module path package.module that "
                             f"registers one)")
        return self[name]
