"""Writing run outputs safely and recording what produced them.

Every file is written to a temporary name in the same folder and renamed into place, so a crash
or a full disk never leaves a half-written file that looks complete. Every output folder gets a
record of the parameters, kit and library versions, and git commit that produced it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import llmtrsr_utils

TRACKED_LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "pandas", "pyarrow")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        os.replace(temp, final)
    finally:
        if temp.exists():
            temp.unlink()


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a DataFrame to parquet atomically; same data and library versions: same bytes."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with atomic_path(path) as temp:
        pq.write_table(table, temp, compression="zstd")
    return Path(path)


def write_json(payload: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n",
                        encoding="utf-8")
    return Path(path)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks so large files do not fill memory."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    """Read once per process: installed packages do not change under a running job."""
    versions = {"python": platform.python_version(), "llmtrsr": llmtrsr_utils.__version__}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return tuple(versions.items())


def library_versions() -> dict[str, str]:
    """Python, the kit and the tracked libraries, name -> version (a fresh dict per call)."""
    return dict(_installed_versions())


def git_commit(folder: str | os.PathLike | None = None) -> str | None:
    """The kit checkout's commit (with '+dirty' for local changes), or None outside git.

    Changes under ``figures/`` do not count: that folder holds the kit's own committed outputs,
    which a run rewrites while it runs, so counting them would mark every run that redraws a
    figure as made by uncommitted code.
    """
    where = Path(folder) if folder else Path(llmtrsr_utils.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ":(top)", ":(top,exclude)figures"],
                               cwd=where, capture_output=True, text=True, check=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def hardware() -> str:
    """What ran it, in words: the GPU when torch sees one, else the CPU cores and machine.
    torch is asked only when already imported (no foundation module imports it)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"{count} x {torch.cuda.get_device_name(0)}" if count > 1 else \
            torch.cuda.get_device_name(0)
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU"


def provenance(params: Any = None) -> dict[str, Any]:
    """What made an output, for every record the kit writes: the params (a ``Config``, a dict,
    or None to leave them out), the library versions and the git commit of the kit.

    Returns:
        ``{"params": ..., "library_versions": {...}, "git_commit": "<sha>[+dirty]" | None,
        "hardware": "..."}``.
    """
    record: dict[str, Any] = {}
    if params is not None:
        record["params"] = params.to_dict() if hasattr(params, "to_dict") else params
    record["library_versions"] = library_versions()
    record["git_commit"] = git_commit()
    record["hardware"] = hardware()
    return record


def check_writable(folder: str | os.PathLike) -> Path:
    """Fail before any work starts when the output folder cannot be created or written."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as err:
        raise PermissionError(f"{path}: output folder is not writable ({err.strerror})") from None
    return path
