"""The dataset loaders: every module in this folder is one, and its file name is the dataset's
name (``data.name``, with "-" for "_": ``amazon_m2.py`` is ``amazon-m2``), so adding a dataset is
adding a file here, with no other edit. A loader outside the kit is named by its module path
(``data.name: my_package.my_loader``). Loaders share one place in
:data:`llmtrsr_utils.MODULE_ORDER`, so one may not import another: what they share lives below
them, in :mod:`llmtrsr_utils.datasets.base` and :mod:`llmtrsr_utils.datasets.render`.

Every loader exposes the same small contract, so the data stage
(:mod:`llmtrsr_utils.datasets.splits`) treats them alike; its functions are handed the data
settings, ``data: DataConfig`` (``cfg.data``):

- ``DOMAIN``: a key of :data:`llmtrsr_utils.prompts.DOMAINS` ("movies", "news", "shopping" or
  "generic"): the prompts' wording;
- ``DEFAULT_ATTRIBUTES``: the attribute columns rendered into item text, in order;
- ``FOLDER_NAMES``: folder names looked for under ``data.dir`` or ``$LLMTRSR_DATA_DIR``;
- ``REQUIRED_FILES``: the raw files that folder must hold (or ``required_files(data)`` and
  ``folder_names(data)`` when they depend on the settings, as RecBole's ``<name>.inter``);
- ``download(data: DataConfig, dest_root: Path) -> Path``: fetch the raw files into a folder
  under ``dest_root`` and return it (or raise with instructions);
- ``load(data: DataConfig, raw_dir: Path) -> RawDataset``: parse them, strictly.
"""

from __future__ import annotations

import pkgutil
from types import ModuleType

from llmtrsr_utils.registry import import_named

__all__ = ["CONTRACT", "dataset_names", "loader_module"]

CONTRACT = ("DOMAIN", "DEFAULT_ATTRIBUTES", "download", "load")


def dataset_names() -> list[str]:
    """The built-in loaders' names: every module of this folder, named like its file with "-"
    for "_". Read from the folder without importing them, so the config can list them."""
    return sorted(info.name.replace("_", "-") for info in pkgutil.iter_modules(__path__))


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
                         f"{', '.join(missing)} (the contract in {__name__})")
    return module
