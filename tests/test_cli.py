from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmtrsr_utils.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "llmtrsr_utils.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("command", [[], *([c] for c in subcommands())])
def test_help_on_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: llmtrsr" in capsys.readouterr().out


def test_data_twice_gives_identical_parquet(tmp_path, movielens_dir):
    hashes = []
    for name in ("one", "two"):
        result = run_cli("data", "--params", "params/default.yaml",
                         "--set", f"work_dir={tmp_path / name}",
                         "--set", f"data.dir={movielens_dir}",
                         "--set", "data.n_train_users=10", "--set", "data.n_test_users=8",
                         "--set", "data.n_valid_users=4")
        assert result.returncode == 0, result.stderr
        out = tmp_path / name / "data"
        assert {p.name for p in out.iterdir()} == {"items.parquet", "train.parquet",
                                                    "valid.parquet", "test.parquet",
                                                    "manifest.json"}
        manifest = json.loads((out / "manifest.json").read_text())
        hashes.append({n: f["sha256"] for n, f in manifest["files"].items()})
        assert manifest["files"]["test.parquet"]["sha256"] in result.stdout
    assert hashes[0] == hashes[1]


def test_data_on_real_movielens_with_default_params(tmp_path, real_movielens_root):
    """The acceptance command itself: default params, real data via LLMTRSR_DATA_DIR."""
    hashes = []
    for name in ("one", "two"):
        result = run_cli("data", "--params", "params/default.yaml",
                         "--set", f"work_dir={tmp_path / name}",
                         env_extra={"LLMTRSR_DATA_DIR": str(real_movielens_root)})
        assert result.returncode == 0, result.stderr
        manifest = json.loads((tmp_path / name / "data" / "manifest.json").read_text())
        assert manifest["counts"]["users_loaded"] == 610
        folder = tmp_path / name / "data"
        hashes.append({p.name: p.read_bytes() for p in folder.glob("*.parquet")})
    assert hashes[0] == hashes[1]


def test_models_lists_offline_llms():
    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for name in ("smollm2-135m", "gemma3-270m"):
        assert " yes " in lines[name], lines[name]
    as_json = json.loads(run_cli("models", "--json").stdout)
    assert {row["name"] for row in as_json} >= {"smollm2-135m", "gemma3-270m", "minilm-l6"}


def test_bad_params_give_one_clear_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  n_trian_users: 3\n")
    result = run_cli("data", "--params", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}: unknown key 'data.n_trian_users'" in result.stderr
    result = run_cli("data", "--set", "data.n_test_users=-1")
    assert result.returncode == 2 and "must be at least 1" in result.stderr


def test_systems_lists_the_registry_in_table2_order():
    from llmtrsr_utils import systems

    listed = json.loads(run_cli("systems", "--json").stdout)
    assert [row["name"] for row in listed] == systems.names()
    tallrec = next(row for row in listed if row["name"] == systems.TALLREC)
    assert tallrec["kind"] == "llm" and tallrec["settings"] == {"summary": "none",
                                                                "item_num": None}
    table = run_cli("systems").stdout
    assert "LLM-TRSR-Hierarchical" in table and "paradigms: hierarchical, recurrent" in table
