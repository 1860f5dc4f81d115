"""Startup drift guard: name the installed versions of the fast-moving libraries and warn when
they fall outside the ranges the kit was tested with.

transformers, peft and trl change their APIs between minor releases (argument renames, new
defaults for ``torch.load``, SFT data handling); a silent upgrade is a common reason peer
projects' numbers stop reproducing. The ranges below are where the test suite passed; the exact
pins are in ``pyproject.toml``.
"""

from __future__ import annotations

import logging
import warnings
from importlib import metadata

from packaging.version import InvalidVersion, Version

log = logging.getLogger("llmtrsr")

# name -> (lowest tested, first untested); the suite ran with the pins in pyproject.toml.
TESTED_RANGES: dict[str, tuple[str, str]] = {
    "torch": ("2.13.0", "2.14"),
    "transformers": ("5.23.0", "5.24"),
    "peft": ("0.21.2", "0.22"),
    "trl": ("1.16.0", "1.17"),
}


class VersionDriftWarning(UserWarning):
    """An installed library outside the versions the kit was tested with."""


def installed_versions(names=tuple(TESTED_RANGES)) -> dict[str, str | None]:
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def drift(versions: dict[str, str | None] | None = None) -> list[str]:
    """One message per library outside its tested range (or missing)."""
    versions = installed_versions() if versions is None else versions
    problems = []
    for name, (low, high) in TESTED_RANGES.items():
        version = versions.get(name)
        if version is None:
            problems.append(f"{name} is not installed (tested: >={low},<{high})")
            continue
        try:
            parsed = Version(version)
        except InvalidVersion:
            problems.append(f"{name} {version} is not a version the kit can read "
                            f"(tested: >={low},<{high})")
            continue
        if not Version(low) <= Version(parsed.base_version) < Version(high):
            problems.append(f"{name} {version} is outside the tested range >={low},<{high}")
    return problems


def check_versions(versions: dict[str, str | None] | None = None) -> list[str]:
    """Log the versions; warn (VersionDriftWarning) for each one outside its tested range."""
    versions = installed_versions() if versions is None else versions
    log.info("versions: %s", ", ".join(f"{k} {v}" for k, v in versions.items()))
    problems = drift(versions)
    for problem in problems:
        warnings.warn(f"{problem}; results may differ from the kit's tests. Install the pinned "
                      f"versions: pip install -e . (see pyproject.toml)", VersionDriftWarning,
                      stacklevel=2)
    return problems


def process_state():
    """accelerate's ``PartialState`` for this launch. ``cpu=True`` where there is no GPU:
    accelerate otherwise treats torchrun's CPU processes as one undistributed run each, and
    every process would do every process's work."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
