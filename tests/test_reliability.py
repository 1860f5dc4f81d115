"""Faults survived and results reproduced, with real subprocesses killed by SIGKILL.

(The summarize kill test lives in test_summarize.py; unwritable output in test_splits.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from llmtrsr_utils.config import load_config
from llmtrsr_utils.recommend import list_checkpoints, resolve
from tests.conftest import smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"


def cli(*args: str, overrides: list[str]) -> list[str]:
    command = [sys.executable, "-m", "llmtrsr_utils.cli", *args, "--params", str(SMOKE)]
    for override in overrides:
        command += ["--set", override]
    return command


def kill_when(command: list[str], ready, timeout: float = 300) -> subprocess.Popen:
    """Start ``command`` in its own process group; SIGKILL the whole group as soon as
    ``ready()`` is true. Fails if the command finished first (the kill must land mid-run)."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"finished (exit {process.returncode}) before the kill could land: "
                        f"{process.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("never reached the point to kill at")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    return process


def test_kill_nine_mid_training_then_resume(tmp_path, movielens_dir):
    """Killed after its first epoch's checkpoint, training resumes from the last complete
    checkpoint and ends with the optimizer steps of an uninterrupted run (3 epochs x 5 steps;
    test_recommend.py compares a resumed run with an uninterrupted one step for step)."""
    settings = ["data.n_train_users=10", "recommender.epochs=3", "recommender.batch_size=2",
                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}"]
    overrides = smoke_overrides(tmp_path / "killed", movielens_dir, *settings)
    folder = resolve(load_config(SMOKE, overrides), "tallrec").adapter_dir

    def first_checkpoint_saved() -> bool:
        return bool(list_checkpoints(folder))

    kill_when(cli("train", "--system", "tallrec", "--no-progress", overrides=overrides),
              first_checkpoint_saved)
    assert not (folder / "training.json").is_file()  # it really died mid-run
    saved = [int(path.name.split("-")[1]) for _, path in list_checkpoints(folder)]

    rerun = subprocess.run(cli("train", "--system", "tallrec", "--no-progress",
                               overrides=overrides), cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = json.loads((folder / "training.json").read_text())
    assert record["resumed_from"].endswith(f"checkpoint-{saved[-1]}")
    # 10 users, 2 user rows (4 examples) per optimizer step: 5 steps per epoch
    assert record["global_step"] == record["max_steps"] == 3 * 5
    assert [int(p.name.split("-")[1]) for _, p in list_checkpoints(folder)] == [5, 10, 15]


def test_kill_nine_mid_grid_then_rerun(tmp_path, movielens_dir):
    """Killed while its second point runs, a rerun finishes the grid without running the first
    point again and without a duplicate row."""
    overrides = smoke_overrides(tmp_path / "work", movielens_dir,
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}")
    grid_file = tmp_path / "three.yaml"
    grid_file.write_text(yaml.safe_dump({
        "notebook": "notebooks/grid_point.ipynb",
        "axes": {"recommender.item_num": [0, 1, 2], "system": ["llmtrsr-hierarchical"]}}))
    results = tmp_path / "runs" / "three" / "results.parquet"

    def first_row_written() -> bool:
        return results.is_file()

    command = cli("run-grid", str(grid_file), "--runs-dir", str(tmp_path / "runs"),
                  overrides=overrides)
    kill_when(command, first_row_written)
    assert len(pd.read_parquet(results)) == 1

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "1 skipped (done)" in rerun.stdout and "2 ran" in rerun.stdout
    table = pd.read_parquet(results)
    assert sorted(table["axis.recommender.item_num"]) == [0, 1, 2]
    assert table["point_key"].is_unique


def test_same_seed_same_files_and_metrics(tmp_path, movielens_dir):
    """Two runs of the pipeline with the same params, in two folders with their own caches:
    byte-identical splits and summaries, equal metrics; every results row records the kit
    version, the commit, the library versions and the params hash."""
    runs = []
    for name in ("one", "two"):
        work = tmp_path / name
        overrides = smoke_overrides(work, movielens_dir, f"summarizer.cache_file={work}/g.sqlite",
                                    "classical.max_epochs=3")
        for args in (["data"], ["summarize", "--no-progress"],
                     ["train", "--system", "llmtrsr-hierarchical", "--no-progress"],
                     ["evaluate", "--systems", "llmtrsr-hierarchical", "--baselines",
                      "random,popularity,sasrec", "--no-progress"]):
            done = subprocess.run(cli(*args, overrides=overrides), cwd=ROOT, capture_output=True,
                                  text=True)
            assert done.returncode == 0, (args, done.stderr[-3000:])
        runs.append(work)

    one, two = runs
    summaries = [p.relative_to(one).as_posix() for p in (one / "summaries").glob(
        "movielens_*_tiny-random-llama_*.parquet")]
    assert {p.split("_tiny-random-llama_")[0] for p in summaries} >= {
        "summaries/movielens_test_hierarchical", "summaries/movielens_train_recurrent"}
    for relative in ("data/train.parquet", "data/valid.parquet", "data/test.parquet",
                     "data/items.parquet", *summaries):
        assert (one / relative).read_bytes() == (two / relative).read_bytes(), relative
    metric_columns = [c for c in pd.read_parquet(one / "results" / "metrics.parquet").columns
                      if c.startswith(("recall@", "mrr@", "ndcg@")) or c == "selection_score"]
    tables = [pd.read_parquet(w / "results" / "metrics.parquet").sort_values(
        ["system", "split"]).reset_index(drop=True) for w in runs]
    pd.testing.assert_frame_equal(tables[0][["system", "split", *metric_columns]],
                                  tables[1][["system", "split", *metric_columns]])
    for column in ("kit_version", "git_commit", "library_versions", "params_hash"):
        assert tables[0][column].notna().all(), column
    versions = json.loads(tables[0]["library_versions"].iloc[0])
    assert {"torch", "transformers", "peft", "trl"} <= set(versions)


@pytest.mark.parametrize("command", [
    ["data"], ["summarize", "--split", "test", "--paradigm", "hierarchical"],
    ["train", "--system", "tallrec"], ["evaluate", "--baselines", "random", "--systems", ""],
    ["run-grid", str(ROOT / "params" / "ablations" / "item_count.yaml")],
])
def test_unwritable_output_fails_before_work(tmp_path, movielens_dir, command):
    """An output folder that cannot be made (here: under a regular file, since root ignores
    permission bits) is a one-line error before any model loads; nothing is half-written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = "runs_dir" if command[0] == "run-grid" else "work_dir"
    overrides = smoke_overrides(tmp_path / "work", movielens_dir,
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}",
                                f"{target}={blocker / 'out'}")
    done = subprocess.run(cli(*command, overrides=overrides), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{blocker / 'out'}" in done.stderr and "not writable (Not a directory)" in \
        done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_full_disk_mid_write_leaves_no_file(tmp_path, monkeypatch):
    import errno

    import pyarrow.parquet as pq

    from llmtrsr_utils.artifacts import write_parquet

    target = tmp_path / "results" / "metrics.parquet"
    write_parquet(pd.DataFrame({"a": [1]}), target)
    before = target.read_bytes()

    def disk_full(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_parquet(pd.DataFrame({"a": [1, 2]}), target)
    assert target.read_bytes() == before  # the old complete file, not the half one
    assert [p.name for p in target.parent.iterdir()] == ["metrics.parquet"]  # no temp left
