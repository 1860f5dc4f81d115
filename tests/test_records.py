"""The typed records write the flat mappings the files have always held."""

from __future__ import annotations

import dataclasses
import json

from llmtrsr_utils.records import ResultRow, SummaryRecord, TrainingRecord


def test_result_row_spreads_metrics_and_extra_in_place():
    values = {f.name: None for f in dataclasses.fields(ResultRow)}
    values.update(system="tallrec", metrics={"recall@5": 0.5, "recall@5_ci_low": 0.4},
                  extra={"checkpoint": "c-2", "display_name": "TALLRec (own)"})
    row = ResultRow(**values).to_dict()
    keys = list(row)
    assert keys[:7] == ["system", "split", "epoch", "selected", "n_users", "selection_score",
                        "tied_positive_share"]
    assert keys[7:9] == ["recall@5", "recall@5_ci_low"] and keys[9] == "display_name"
    assert row["display_name"] == "TALLRec (own)"  # an extra column overrides in its place
    assert keys[-1] == "checkpoint" and "metrics" not in row and "extra" not in row


def test_training_and_summary_records_are_flat_json(tmp_path):
    training = {f.name: 0 for f in dataclasses.fields(TrainingRecord)}
    training.update(batch={"packing": "tree", "processes": 1},
                    provenance={"git_commit": "abc", "params": {"seed": 1}})
    flat = TrainingRecord(**training).to_dict()
    assert list(flat)[list(flat).index("resumed_from") + 1:][:2] == ["packing", "processes"]
    assert flat["git_commit"] == "abc" and "batch" not in flat and "provenance" not in flat
    summary = {f.name: 1 for f in dataclasses.fields(SummaryRecord)}
    summary.update(provenance={"git_commit": None})
    text = json.dumps(SummaryRecord(**summary).to_dict())
    assert json.loads(text)["git_commit"] is None and '"provenance"' not in text


def test_git_commit_is_dirty_for_code_not_for_the_figures_a_run_writes(tmp_path):
    import subprocess

    from llmtrsr_utils.artifacts import git_commit

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "table2.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-qm", "first")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "figures" / "table2.md").write_text("redrawn by a run\n")
    assert git_commit(tmp_path / "figures") == head  # from a subfolder too
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{head}+dirty"
