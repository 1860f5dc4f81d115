"""The README's recipes, each exercised by adding a toy extension in a few lines and running it
through the command line on smoke params."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

TOY_PARADIGM = '''
from llmtrsr_utils.systems import paradigm


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
    from llmtrsr_utils import systems
    from llmtrsr_utils.config import ConfigError
    from llmtrsr_utils.pipeline import baseline_names, classical_names, system_names

    assert system_names("all") == ["tallrec", "llmtrsr-hierarchical", "llmtrsr-recurrent"]
    assert system_names("all,controls") == [*system_names("all"), "null-summary", "oracle-older"]
    assert system_names("controls, tallrec") == ["null-summary", "oracle-older", "tallrec"]
    assert system_names("") == []
    assert system_names("tallrec, llmtrsr-recurrent") == ["tallrec", "llmtrsr-recurrent"]
    assert system_names(["llmtrsr-my.paradigm"]) == ["llmtrsr-my.paradigm"]  # a module path
    everything = baseline_names("all")
    assert everything == systems.names(("untrained", "reference", "classical"))
    assert {"zero-shot", "random", "embedding", "core"} <= set(everything)
    assert classical_names("ncf,core") == ["ncf", "core"]
    with pytest.raises(ConfigError, match="baselines: unknown nope; choose from zero-shot, "):
        baseline_names("random,nope")
    with pytest.raises(ConfigError, match="models: unknown random"):
        classical_names("random")
