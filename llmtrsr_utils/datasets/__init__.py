"""Dataset loaders, one module per source, each producing the canonical :class:`RawDataset`.

Every loader module exposes the same small contract, so the data stage treats them alike:

- ``DOMAIN``: "movies", "news", "shopping" or "generic" (prompt wording, attribute labels);
- ``DEFAULT_ATTRIBUTES``: the attribute columns rendered into item text, in order;
- ``FOLDER_NAMES``: folder names looked for under ``$LLMTRSR_DATA_DIR``;
- ``REQUIRED_FILES``: the raw files that folder must hold (or ``required_files(data)`` and
  ``folder_names(data)`` when they depend on the settings, as RecBole's ``<name>.inter``);
- ``download(cfg, dest_root) -> Path``: fetch the raw files (or raise with instructions);
- ``load(cfg, raw_dir) -> RawDataset``: parse them, strictly.
"""

from llmtrsr_utils.datasets.base import DataFormatError, RawDataset

__all__ = ["DataFormatError", "RawDataset"]
