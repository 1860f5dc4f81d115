"""The README's recipes, each exercised by adding a toy extension in a few lines and running it
through the command line on smoke params."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from llmtrsr_utils.config import ConfigError, load_config
from llmtrsr_utils.datasets import dataset_names, loader_module

ROOT = Path(__file__).resolve().parents[1]

TOY_LOADER = '''
import pandas as pd

from llmtrsr_utils.datasets.base import RawDataset

DOMAIN = "generic"
DEFAULT_ATTRIBUTES = ["title"]
FOLDER_NAMES = ("toy",)
REQUIRED_FILES = ("toy.txt",)


def download(cfg, dest_root):
    raise FileNotFoundError("the toy dataset is written by the test")


def load(cfg, raw_dir):
    """toy.txt: one user per line, 'user: item item ... item' (oldest first)."""
    rows = [line.split(":") for line in (raw_dir / "toy.txt").read_text().splitlines()]
    ids = [(user.strip(), items.split()) for user, items in rows]
    sequences = pd.DataFrame({"user_id": [u for u, _ in ids],
                              "history": [s[:-1] for _, s in ids],
                              "target": [s[-1] for _, s in ids]})
    catalogue = sorted({i for _, s in ids for i in s})
    items = pd.DataFrame({"item_id": catalogue, "title": [f"Toy item {i}" for i in catalogue]})
    return RawDataset(name=cfg.name, domain=DOMAIN, items=items, sequences=sequences,
                      attributes=DEFAULT_ATTRIBUTES)
'''


def test_built_in_datasets_are_found_by_convention():
    assert dataset_names() == ["amazon-m2", "generic", "mind", "movielens", "recbole"]
    assert loader_module("amazon-m2").__name__ == "llmtrsr_utils.datasets.amazon_m2"
    with pytest.raises(ValueError, match="no such dataset"):
        loader_module("nope")
    with pytest.raises(ConfigError, match="or a module path"):
        load_config(None, ["data.name=nope"])


def test_recipe_add_a_dataset_in_one_file(tmp_path):
    """A loader module outside the kit, named by its module path, runs through llmtrsr data."""
    package = tmp_path / "plugins" / "my_data"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "toy.py").write_text(TOY_LOADER)
    raw = tmp_path / "raw" / "toy"
    raw.mkdir(parents=True)
    (raw / "toy.txt").write_text("".join(
        f"u{n:02d}: " + " ".join(str((n * 5 + k) % 40) for k in range(12)) + "\n"
        for n in range(14)))
    work = tmp_path / "work"
    done = subprocess.run(
        [sys.executable, "-m", "llmtrsr_utils.cli", "data", "--params",
         str(ROOT / "params" / "smoke.yaml"), "--set", f"work_dir={work}",
         "--set", "data.name=my_data.toy", "--set", f"data.dir={raw.parent}"],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{tmp_path / 'plugins'}:{ROOT}"})
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((work / "data" / "manifest.json").read_text())
    assert manifest["dataset"] == "my_data.toy" and manifest["attributes"] == ["title"]
    assert pd.read_parquet(work / "data" / "items.parquet")["text"].iloc[0].startswith(
        "Title: Toy item")
    assert len(pd.read_parquet(work / "data" / "test.parquet")) == 3


def test_a_loader_missing_its_contract_is_named(tmp_path, monkeypatch):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "__init__.py").write_text("")
    (tmp_path / "half" / "loader.py").write_text("DOMAIN = 'generic'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="lacks DEFAULT_ATTRIBUTES, download, load, "
                                         "REQUIRED_FILES, FOLDER_NAMES"):
        loader_module("half.loader")
    with pytest.raises(ValueError, match="cannot import loader module"):
        loader_module("half.missing")


TOY_PARADIGM = '''
from llmtrsr_utils.summarize import paradigm


@paradigm(__name__)  # registered under its module path
def last_block_only(summarizer, users):
    """Summarize only each user's most recent block (one call per user, batched)."""
    states = summarizer.start(users, __name__)
    jobs = [(state, "last block", state.blocks[-1].fitted.prompt) for state in states]
    for state, text in zip(states, summarizer.generate_texts(jobs, "last block")):
        state.steps.append(text)
    return states
'''


def test_recipe_add_a_paradigm_in_one_file(tmp_path, movielens_dir):
    """A third paradigm outside the kit: summarized by llmtrsr summarize, then trained and
    scored as the system llmtrsr-<its module path> by llmtrsr evaluate."""
    from tests.conftest import smoke_overrides

    package = tmp_path / "plugins" / "my_paradigms"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "last_block.py").write_text(TOY_PARADIGM)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'plugins'}:{ROOT}"}
    overrides = [arg for o in smoke_overrides(tmp_path, movielens_dir,
                                              f"summarizer.cache_file={tmp_path / 'g.sqlite'}")
                 for arg in ("--set", o)]
    base = [sys.executable, "-m", "llmtrsr_utils.cli"]
    params = ["--params", str(ROOT / "params" / "smoke.yaml"), *overrides]
    for command in (["summarize", *params, "--paradigm", "my_paradigms.last_block",
                     "--split", "test", "--no-progress"],
                    ["evaluate", *params, "--systems", "llmtrsr-my_paradigms.last_block",
                     "--baselines", "", "--no-progress"]):
        done = subprocess.run([*base, *command], capture_output=True, text=True, cwd=ROOT,
                              env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    summaries = pd.read_parquet(next((tmp_path / "summaries").glob(
        "*_test_my_paradigms.last_block_*.parquet")))
    assert len(summaries) == 3 and (summaries["n_calls"] == 1).all()
    results = pd.read_parquet(tmp_path / "results" / "metrics.parquet")
    assert set(results["system"]) == {"llmtrsr-my_paradigms.last_block"}
    assert "test" in set(results["split"])
    with pytest.raises(ValueError, match="paradigm='nope': unknown paradigm"):
        from llmtrsr_utils.summarize import find_paradigm

        find_paradigm("nope")


def test_names_are_read_as_people_write_them():
    """The CLI's --systems/--baselines and notebook 04's parameters share one reader: "all"
    is every built-in name (from the registries), "" none, a comma string or a list."""
    from llmtrsr_utils.baselines import REGISTRY
    from llmtrsr_utils.config import ConfigError
    from llmtrsr_utils.pipeline import baseline_names, classical_names, system_names
    from llmtrsr_utils.recommend import SYSTEMS

    assert system_names("all") == list(SYSTEMS) and system_names("") == []
    assert system_names("tallrec, llmtrsr-recurrent") == ["tallrec", "llmtrsr-recurrent"]
    assert system_names(["llmtrsr-my.paradigm"]) == ["llmtrsr-my.paradigm"]  # a module path
    everything = baseline_names("all")
    assert set(REGISTRY) <= set(everything) and {"zero-shot", "core"} <= set(everything)
    assert classical_names("ncf,core") == ["ncf", "core"]
    with pytest.raises(ConfigError, match="baselines: unknown nope; choose from random"):
        baseline_names("random,nope")
    with pytest.raises(ConfigError, match="models: unknown random"):
        classical_names("random")
