"""The README's result tables come from the committed CSVs (issue 23, item 3): every generated
block equals what its CSV gives, and a changed CSV or a hand-edited number is caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from llmtrsr_utils import readme

ROOT = Path(__file__).resolve().parents[1]


def test_every_generated_block_of_the_readme_is_current():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    specs = [m.group("spec") for m in readme.BLOCK.finditer(text)]
    assert len(specs) >= 8 and {s.split()[0] for s in specs} >= {"table2", "provenance",
                                                                 "paired", "curve"}
    assert readme.stale_blocks(text, ROOT) == [], "run `llmtrsr report --readme`"


def test_a_changed_csv_or_a_hand_edited_number_is_caught(tmp_path):
    from llmtrsr_utils.cli import main

    (tmp_path / "figures").mkdir()
    shutil.copy(ROOT / "figures" / "laptop_1epoch" / "results.csv",
                tmp_path / "figures" / "r.csv")  # one seed
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- generated: table2 figures/r.csv -->\n<!-- end generated -->\n"
                    "outro\n", encoding="utf-8")
    assert main(["report", "--readme", str(page)]) == 0
    made = page.read_text(encoding="utf-8")
    assert "| TALLRec" in made and made.startswith("intro\n") and made.endswith("outro\n")
    assert main(["report", "--readme", str(page), "--check"]) == 0
    page.write_text(made.replace("0.44 [0.34, 0.54]", "0.45 [0.34, 0.54]"), encoding="utf-8")
    assert readme.stale_blocks(page.read_text(encoding="utf-8"), tmp_path) == [
        "table2 figures/r.csv"]
    assert main(["report", "--readme", str(page), "--check"]) == 1
    page.write_text(made, encoding="utf-8")
    frame = pd.read_csv(tmp_path / "figures" / "r.csv")
    frame.loc[(frame["system"] == "tallrec") & (frame["split"] == "test"), "recall@5"] = 0.4551
    frame.to_csv(tmp_path / "figures" / "r.csv", index=False)
    assert main(["report", "--readme", str(page), "--check"]) == 1
    assert main(["report", "--readme", str(page)]) == 0
    assert "0.46 [0.34, 0.54]" in page.read_text() and main(
        ["report", "--readme", str(page), "--check"]) == 0
    with pytest.raises(readme.ReadmeError, match="kind one of"):
        readme.block("histogram figures/r.csv", tmp_path)
    with pytest.raises(readme.ReadmeError, match="not found"):
        readme.block("table2 figures/missing.csv", tmp_path)


def test_provenance_names_the_commit_of_every_seed_of_a_pooled_system():
    rows = pd.DataFrame({
        "system": ["null-summary"] * 3 + ["random"], "split": "test", "selected": True,
        "seed": [42, 43, 44, 42], "git_commit": ["a" * 40, "a" * 40, "b" * 40 + "+dirty",
                                                 "a" * 40],
        "library_versions": '{"torch": "2.13.0+cpu"}', "hardware": None})
    lines = readme.provenance(rows).splitlines()
    assert lines == [
        "- Random (seed 42), Control: no summary (NULL) (seeds 42, 43): commit aaaaaaa (clean "
        "tree), torch 2.13.0+cpu, hardware not recorded",
        "- Control: no summary (NULL) (seed 44): commit bbbbbbb (with uncommitted changes), "
        "torch 2.13.0+cpu, hardware not recorded"]


def test_an_inline_value_is_made_from_its_csv_and_a_hand_edit_is_caught(tmp_path):
    (tmp_path / "figures").mkdir()
    for name in ("paired_tests.csv", "results.csv", "learning_curve.csv"):
        shutil.copy(ROOT / "figures" / "laptop_1epoch" / name, tmp_path / "figures" / name)
    page = ("TALLRec beats zero-shot by <!-- value: diff figures/paired_tests.csv tallrec "
            "zero-shot --><!-- end value --> in Recall@5, reaching <!-- value: mean "
            "figures/results.csv tallrec --><!-- end value --> (curve <!-- value: rise "
            "figures/learning_curve.csv tallrec --><!-- end value -->).\n")
    made = readme.render(page, tmp_path)
    assert made == ("TALLRec beats zero-shot by <!-- value: diff figures/paired_tests.csv "
                    "tallrec zero-shot -->+0.19 (p 0.006)<!-- end value --> in Recall@5, "
                    "reaching <!-- value: mean figures/results.csv tallrec -->0.44<!-- end "
                    "value --> (curve <!-- value: rise figures/learning_curve.csv tallrec -->"
                    "0.25 → 0.40 → 0.60<!-- end value -->).\n")
    assert readme.stale_blocks(made, tmp_path) == []
    edited = made.replace("+0.19 (p 0.006)", "+0.20 (p 0.006)")
    assert readme.stale_blocks(edited, tmp_path) == [
        "diff figures/paired_tests.csv tallrec zero-shot"]
    with pytest.raises(readme.ReadmeError, match="no paired test of tallrec against ncf"):
        readme.value("diff figures/paired_tests.csv tallrec ncf", tmp_path)
    with pytest.raises(readme.ReadmeError, match="kind one of diff, mean, rise"):
        readme.value("median figures/results.csv tallrec", tmp_path)


def test_the_readme_quotes_its_numbers_through_values():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    kinds = [m.group("spec").split()[0] for m in readme.VALUE.finditer(text)]
    assert len(kinds) >= 20 and set(kinds) == {"diff", "gap", "mean", "rise"}


def test_a_mean_or_a_table_is_not_quoted_from_one_seed_of_several(tmp_path):
    (tmp_path / "figures").mkdir()
    shutil.copy(ROOT / "figures" / "laptop_gate" / "results.csv", tmp_path / "figures")
    shutil.copy(ROOT / "figures" / "laptop_gate" / "table2_values.csv", tmp_path / "figures")
    with pytest.raises(readme.ReadmeError, match="seeds .*42.*43.*44.*table2_values.csv"):
        readme.value("mean figures/results.csv oracle-older", tmp_path)
    assert readme.value("mean figures/table2_values.csv oracle-older", tmp_path) == "0.66"
    assert readme.value("mean figures/results.csv random", tmp_path) == "0.20"  # one seed
    with pytest.raises(readme.ReadmeError, match="seeds .*42.*43.*44.*table2_values.csv"):
        readme.block("table2 figures/results.csv", tmp_path)
