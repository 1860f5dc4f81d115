"""The README's dataset recipe: a loader is one file, inside the kit (a file of
llmtrsr_utils/datasets/loaders/, found by its name) or outside it (named by its module path),
run through the command line on smoke params; and the data rule the stages read splits by."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import llmtrsr_utils
from llmtrsr_utils.config import ConfigError, load_config
from llmtrsr_utils.datasets import dataset_names, loader_module

ROOT = Path(__file__).resolve().parents[1]
LOADERS = Path(llmtrsr_utils.__file__).resolve().parent / "datasets" / "loaders"

TOY_LOADER = '''
import pandas as pd

from llmtrsr_utils.config import DataConfig
from llmtrsr_utils.datasets.base import RawDataset

DOMAIN = "generic"
DEFAULT_ATTRIBUTES = ["title"]
FOLDER_NAMES = ("toy",)
REQUIRED_FILES = ("toy.txt",)


def download(data: DataConfig, dest_root):
    raise FileNotFoundError(f"{data.name}: the toy dataset is written by the test")


def load(data: DataConfig, raw_dir) -> RawDataset:
    """toy.txt: one user per line, 'user: item item ... item' (oldest first)."""
    rows = [line.split(":") for line in (raw_dir / "toy.txt").read_text().splitlines()]
    ids = [(user.strip(), items.split()) for user, items in rows]
    sequences = pd.DataFrame({"user_id": [u for u, _ in ids],
                              "history": [s[:-1] for _, s in ids],
                              "target": [s[-1] for _, s in ids]})
    catalogue = sorted({i for _, s in ids for i in s})
    items = pd.DataFrame({"item_id": catalogue, "title": [f"Toy item {i}" for i in catalogue]})
    return RawDataset(name=data.name, domain=DOMAIN, items=items, sequences=sequences,
                      attributes=DEFAULT_ATTRIBUTES)
'''


def write_toy_raw(tmp_path: Path) -> Path:
    """The toy dataset's raw folder (14 users of 12 items each) under tmp_path/raw/toy."""
    raw = tmp_path / "raw" / "toy"
    raw.mkdir(parents=True)
    (raw / "toy.txt").write_text("".join(
        f"u{n:02d}: " + " ".join(str((n * 5 + k) % 40) for k in range(12)) + "\n"
        for n in range(14)))
    return raw


def run_data(work: Path, name: str, raw: Path, **env: str) -> None:
    """``llmtrsr data`` on smoke params for dataset ``name``, its raw folder under raw.parent."""
    done = subprocess.run(
        [sys.executable, "-m", "llmtrsr_utils.cli", "data", "--params",
         str(ROOT / "params" / "smoke.yaml"), "--set", f"work_dir={work}",
         "--set", f"data.name={name}", "--set", f"data.dir={raw.parent}"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-2000:]


def check_toy_output(work: Path, name: str) -> None:
    manifest = json.loads((work / "data" / "manifest.json").read_text())
    assert manifest["dataset"] == name and manifest["attributes"] == ["title"]
    assert pd.read_parquet(work / "data" / "items.parquet")["text"].iloc[0].startswith(
        "Title: Toy item")
    assert len(pd.read_parquet(work / "data" / "test.parquet")) == 3


def test_built_in_datasets_are_found_by_convention():
    assert dataset_names() == ["amazon-m2", "generic", "mind", "movielens", "recbole"]
    assert loader_module("amazon-m2").__name__ == "llmtrsr_utils.datasets.loaders.amazon_m2"
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
    raw = write_toy_raw(tmp_path)
    work = tmp_path / "work"
    run_data(work, "my_data.toy", raw, PYTHONPATH=f"{tmp_path / 'plugins'}:{ROOT}")
    check_toy_output(work, "my_data.toy")


def test_recipe_a_loader_file_inside_the_kit(tmp_path):
    """A file dropped into llmtrsr_utils/datasets/loaders/ is a dataset named like the file,
    with no other edit: listed, run through llmtrsr data, and given its place in the line."""
    from tests.test_architecture import import_graph, upward_imports

    path = LOADERS / "toy_recipe_test.py"
    assert not path.exists(), f"{path} is left over from an earlier run: remove it"
    try:
        path.write_text(TOY_LOADER)
        listed = subprocess.run(
            [sys.executable, "-c", "from llmtrsr_utils.datasets import dataset_names; "
             "print(dataset_names())"], capture_output=True, text=True, cwd=ROOT, check=True)
        assert "'toy-recipe-test'" in listed.stdout

        raw = write_toy_raw(tmp_path)
        work = tmp_path / "work"
        run_data(work, "toy-recipe-test", raw)
        check_toy_output(work, "toy-recipe-test")

        module = "datasets.loaders.toy_recipe_test"
        assert llmtrsr_utils.module_rank(module) == \
            llmtrsr_utils.MODULE_ORDER.index("datasets.loaders.*")
        graph = import_graph()
        assert graph[module] == {"config", "datasets.base"}
        assert [line for line in upward_imports(graph, llmtrsr_utils.MODULE_ORDER)
                if line.startswith(f"{module} ")] == []
    finally:
        path.unlink(missing_ok=True)
        for cached in (LOADERS / "__pycache__").glob("toy_recipe_test.*"):
            cached.unlink(missing_ok=True)
    assert "toy-recipe-test" not in dataset_names()


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


def test_prepared_dir_reads_only_current_data(tmp_path, movielens_dir):
    """The stages' data rule: the prepared folder when it holds these data settings' splits,
    else DataMissingError naming the folder and the command that makes it."""
    from llmtrsr_utils.datasets.splits import DataMissingError, prepare_dataset, prepared_dir
    from tests.conftest import smoke_config

    cfg = smoke_config(tmp_path, movielens_dir)
    with pytest.raises(DataMissingError, match="llmtrsr data --params") as missing:
        prepared_dir(cfg)
    assert str(cfg.data_output_dir) in str(missing.value)
    assert "ensure_splits" in str(missing.value)

    assert prepare_dataset(cfg) == cfg.data_output_dir
    assert prepared_dir(cfg) == cfg.data_output_dir

    other = smoke_config(tmp_path, movielens_dir, f"data.n_test_users={cfg.data.n_test_users + 1}")
    assert other.data_output_dir == cfg.data_output_dir
    with pytest.raises(DataMissingError, match="other settings") as stale:
        prepared_dir(other)
    assert str(cfg.data_output_dir) in str(stale.value)
    assert "llmtrsr data --params" in str(stale.value)
    assert prepared_dir(cfg) == cfg.data_output_dir  # the stale check changed nothing
