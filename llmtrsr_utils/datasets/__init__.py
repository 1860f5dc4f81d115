"""Dataset loaders, one module per source, each producing the canonical :class:`RawDataset`.

A dataset is one file: every module here that is not machinery is a loader, found by its name
(``data.name``), and a loader outside the kit is named by its module path (``data.name:
my_package.my_loader``). Every loader exposes the same small contract, so the data stage treats
them alike:

- ``DOMAIN``: "movies", "news", "shopping" or "generic" (prompt wording, attribute labels);
- ``DEFAULT_ATTRIBUTES``: the attribute columns rendered into item text, in order;
- ``FOLDER_NAMES``: folder names looked for under ``$LLMTRSR_DATA_DIR``;
- ``REQUIRED_FILES``: the raw files that folder must hold (or ``required_files(data)`` and
  ``folder_names(data)`` when they depend on the settings, as RecBole's ``<name>.inter``);
- ``download(cfg, dest_root) -> Path``: fetch the raw files (or raise with instructions);
- ``load(cfg, raw_dir) -> RawDataset``: parse them, strictly.
"""

from __future__ import annotations

import pkgutil
from types import ModuleType

from llmtrsr_utils.datasets.base import DataFormatError, RawDataset
from llmtrsr_utils.registry import import_named

__all__ = ["DataFormatError", "RawDataset", "dataset_names", "loader_module"]

# Modules of this package that are machinery, not loaders; every other module is a loader,
# named like its file with "-" for "_" (amazon_m2.py is data.name amazon-m2).
MACHINERY = frozenset({"base", "download", "render", "splits", "stats"})
CONTRACT = ("DOMAIN", "DEFAULT_ATTRIBUTES", "download", "load")


def dataset_names() -> list[str]:
    """The built-in loaders' names, found by convention (a file here is a dataset); read from
    the folder without importing them, so the config can list them."""
    return sorted(info.name.replace("_", "-") for info in pkgutil.iter_modules(__path__)
                  if info.name not in MACHINERY and not info.name.startswith("_"))


def loader_module(name: str) -> ModuleType:
    """The loader for ``data.name``: a built-in (:func:`dataset_names`), or a module path
    with a dot (``package.module``) for a loader written outside the kit. Checked against the
    contract above."""
    path = name if "." in name else f"{__name__}.{name.replace('-', '_')}"
    if "." not in name and name not in dataset_names():
        raise ValueError(f"data.name={name!r}: no such dataset; built in: "
                         f"{', '.join(dataset_names())}, or a module path package.module")
    module = import_named("loader", path, "data.name")
    missing = [attribute for attribute in CONTRACT if not hasattr(module, attribute)]
    if not (hasattr(module, "REQUIRED_FILES") or hasattr(module, "required_files")):
        missing.append("REQUIRED_FILES")
    if not (hasattr(module, "FOLDER_NAMES") or hasattr(module, "folder_names")):
        missing.append("FOLDER_NAMES")
    if missing:
        raise ValueError(f"data.name={name!r}: loader module {path} lacks "
                         f"{', '.join(missing)} (the contract in llmtrsr_utils.datasets)")
    return module
