"""The data stage's package: the canonical dataset form and the loaders that produce it.

- :mod:`~llmtrsr_utils.datasets.base`: :class:`RawDataset`, the form every loader returns, and
  strict readers for raw files;
- :mod:`~llmtrsr_utils.datasets.loaders`: one module per dataset (a file there is a dataset,
  found by its name, ``data.name``) and the loader contract; a loader outside the kit is named
  by its module path (``data.name: my_package.my_loader``);
- :mod:`~llmtrsr_utils.datasets.download` and :mod:`~llmtrsr_utils.datasets.render`: fetching
  archives, rendering items as text;
- :mod:`~llmtrsr_utils.datasets.splits`: the data stage itself (filter, split by user, draw
  negatives, write parquet), written once for every dataset, and
  :mod:`~llmtrsr_utils.datasets.stats`, the statistics of its output.
"""

from __future__ import annotations

from llmtrsr_utils.datasets.base import DataFormatError, RawDataset
from llmtrsr_utils.datasets.loaders import dataset_names, loader_module

__all__ = ["DataFormatError", "RawDataset", "dataset_names", "loader_module"]
