"""Run the numbered notebook series with papermill (the kit's main job, `make reproduce`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from llmtrsr_utils.config import load_config, override_list, project_root
from llmtrsr_utils.kernels import ipc_kernel_manager

log = logging.getLogger("llmtrsr")


def series(root: Path | None = None) -> list[Path]:
    """The notebooks in run order: notebooks/NN_name.ipynb."""
    folder = (root or project_root()) / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def run_series(params_file: str | os.PathLike, overrides: str | Sequence[str] = (),
               only: Sequence[str] = (), output_dir: str | os.PathLike | None = None) -> list[Path]:
    """Execute each notebook with the params injected into its `parameters` cell.

    Executed copies go to ``output_dir`` (default ``<work_dir>/notebooks``), never over the
    sources, which stay output-free in git. ``only`` keeps notebooks whose name starts with one
    of the given prefixes (e.g. "00").
    """
    import papermill as pm

    root = project_root()
    params_path = Path(params_file).resolve()
    cfg = load_config(params_path, overrides)  # fail on bad params before starting a kernel
    out_dir = Path(output_dir) if output_dir else cfg.work_path / "notebooks"
    if not out_dir.is_absolute():
        out_dir = Path.cwd() / out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = [nb for nb in series(root) if not only or nb.name.startswith(tuple(only))]
    if not notebooks:
        raise FileNotFoundError(f"no notebook in {root / 'notebooks'} matches {list(only)}")
    executed = []
    for notebook in notebooks:
        target = out_dir / notebook.name
        log.info("running %s -> %s", notebook.name, target)
        pm.execute_notebook(str(notebook), str(target), cwd=str(Path.cwd()),
                            parameters={"params_file": str(params_path),
                                        "overrides": override_list(overrides)},
                            kernel_name="python3", progress_bar=False, log_output=False,
                            kernel_manager_class=ipc_kernel_manager())
        executed.append(target)
    return executed
