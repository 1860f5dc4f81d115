"""The registry of scored systems: every name and label comes from it, every list is derived
from it, an extension inside the kit reaches the CLI's `all`, Table 2 and the figures, and per-user
scores are kept per params."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import llmtrsr_utils
from llmtrsr_utils import systems
from tests.conftest import smoke_config, smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(llmtrsr_utils.__file__).resolve().parent


def registered_words() -> set[str]:
    """Every registered system's name and label, and every paradigm's name."""
    words = {w for s in systems.all_systems() for w in (s.name, s.label)}
    return words | set(systems.paradigm_names())


def spelled_strings(path: Path, words: set[str]) -> list[str]:
    """String literals of ``path`` (docstrings aside; f-string parts included) equal to one of
    ``words``, as 'file:line 'word''."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [f"{path.name}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings and node.value in words]


def test_every_system_name_and_label_is_spelled_only_in_the_registry():
    words = registered_words()
    assert {"tallrec", "TALLRec", "zero-shot", "Zero-shot LLM", "core", "CORE", "hierarchical",
            "LLM-TRSR-Recurrent", "Text embedding (MiniLM)"} <= words
    spelled = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "systems.py"
               for hit in spelled_strings(path, words)]
    assert spelled == [], "use the constants and labels of llmtrsr_utils.systems"


def test_the_scan_sees_a_spelled_name(tmp_path):
    source = tmp_path / "x.py"
    source.write_text('"""tallrec in a docstring is documentation."""\n'
                      'def f(name):\n    """So is TALLRec here."""\n'
                      '    return name == "tallrec" or f"{name}" == "CORE"\n')
    assert spelled_strings(source, registered_words()) == ["x.py:4 'tallrec'", "x.py:4 'CORE'"]


def test_the_registry_orders_table2_and_knows_each_kind():
    # Table 2's order: the untrained LLM, the reference scorers, the classical models, the LLMs,
    # the kit's variants, the controls.
    assert systems.names() == [
        "zero-shot", "embedding", "popularity", "random", "ncf", "din", "dien", "gru4rec",
        "narm", "sasrec", "core", "tallrec", "llmtrsr-hierarchical", "llmtrsr-recurrent",
        "llmtrsr-hierarchical-fields", "null-summary", "oracle-older"]
    from llmtrsr_utils import baselines, classical, summarize

    assert set(classical.MODELS) == set(systems.names("classical"))
    assert all(systems.find(n).score is not None for n in systems.names("reference"))
    assert baselines.find(systems.RANDOM).label == "Random"
    assert summarize.find_paradigm(systems.RECURRENT) is summarize.recurrent
    assert systems.find("llmtrsr-recurrent").recommender["summary"] == systems.RECURRENT
    assert systems.order_names(["unknown", "tallrec", "random"]) == ["random", "tallrec",
                                                                      "unknown"]
    with pytest.raises(ValueError, match="unknown system"):
        systems.find("nope")
    with pytest.raises(ValueError, match="registered twice"):
        systems.register("random", "Chance", "reference")


TOY_EXTENSION = '''
"""A toy extension inside the kit: a paradigm and a baseline, registered by plain name."""

import numpy as np

from llmtrsr_utils.systems import baseline, paradigm


@paradigm("{paradigm}")
def last_block_only(summarizer, users):
    """Summarize only each user's most recent block (one call per user, batched)."""
    states = summarizer.start(users, "{paradigm}")
    jobs = [(state, "last block", state.blocks[-1].fitted.prompt) for state in states]
    for state, text in zip(states, summarizer.generate_texts(jobs, "last block")):
        state.steps.append(text)
    return states


@baseline("{baseline}", "Toy recency")
def recency(frame, split, context):
    """1 for a candidate in the user's last 3 items, else 0 (ties go to the metrics)."""
    return np.array([[float(c in set(h[-3:])) for c in [t, *n]]
                     for h, t, n in zip(frame["history"], frame["target"], frame["negatives"])])
'''

CHECK_FROM_THE_REGISTRY = '''
import json, sys
from llmtrsr_utils import plots, systems
from llmtrsr_utils.config import load_config
from llmtrsr_utils.pipeline import baseline_names, system_names
from llmtrsr_utils.results import load_results, selected_test_rows

cfg = load_config(sys.argv[1], sys.argv[2:])
rows = selected_test_rows(load_results(cfg, current=True))
print(json.dumps({"systems_all": system_names("all"), "baselines_all": baseline_names("all"),
                  "paradigms": systems.paradigm_names(), "table2": list(rows["label"]),
                  "figure9": plots.paradigm_series(rows["system"])}))
'''


@pytest.fixture
def toy_extension():
    """A paradigm and a baseline in one file of llmtrsr_utils/extensions/, removed after."""
    stem = f"toy_recipe_{os.getpid()}"
    path = PACKAGE / "extensions" / f"{stem}.py"
    names = {"paradigm": f"toy_last_{os.getpid()}", "baseline": f"toy-recency-{os.getpid()}"}
    path.write_text(TOY_EXTENSION.format(**names), encoding="utf-8")
    try:
        yield names
    finally:
        path.unlink()
        for cached in (PACKAGE / "extensions" / "__pycache__").glob(f"{stem}.*"):
            cached.unlink()


def test_an_extension_inside_the_kit_reaches_all_table2_and_the_figures(
        tmp_path, movielens_dir, toy_extension):
    """A paradigm and a baseline registered by plain name in a file inside the kit: the CLI's
    `all` trains and scores them, Table 2 lists them in their bands, Figure 9 draws the
    paradigm, and `llmtrsr figures` redraws Table 2 with them."""
    paradigm, baseline = toy_extension["paradigm"], toy_extension["baseline"]
    overrides = smoke_overrides(tmp_path, movielens_dir,
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}",
                                f"figures_dir={tmp_path / 'figures'}")
    params = ["--params", str(ROOT / "params" / "smoke.yaml"),
              *[arg for o in overrides for arg in ("--set", o)]]
    cli = [sys.executable, "-m", "llmtrsr_utils.cli"]
    for command in (["evaluate", *params, "--systems", "all", "--baselines",
                     f"zero-shot,random,{baseline}", "--no-progress"],
                    ["figures", *params]):
        done = subprocess.run([*cli, *command], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(subprocess.run(
        [sys.executable, "-c", CHECK_FROM_THE_REGISTRY, str(ROOT / "params" / "smoke.yaml"),
         *overrides], capture_output=True, text=True, cwd=ROOT, check=True).stdout)
    llm = f"llmtrsr-{paradigm}"
    assert seen["systems_all"] == ["tallrec", "llmtrsr-hierarchical", "llmtrsr-recurrent", llm]
    assert seen["paradigms"] == ["hierarchical", "recurrent", paradigm]
    assert baseline in seen["baselines_all"]
    label = f"LLM-TRSR-{paradigm.replace('_', ' ').title()}"
    assert seen["table2"] == ["Zero-shot LLM", "Random", "Toy recency", "TALLRec",
                              "LLM-TRSR-Hierarchical", "LLM-TRSR-Recurrent", label]
    assert seen["figure9"] == ["llmtrsr-hierarchical", "llmtrsr-recurrent", llm]
    assert "Toy recency" in (tmp_path / "figures" / "table2.md").read_text()
    assert (tmp_path / "figures" / "table2.png").stat().st_size > 0
    summaries = pd.read_parquet(next((tmp_path / "summaries").glob(
        f"*_test_{paradigm}_*.parquet")))
    assert (summaries["n_calls"] == 1).all()  # its own function made them: one call per user


def test_one_system_under_two_params_keeps_both_score_files(tmp_path, movielens_dir,
                                                            monkeypatch):
    """Per-user scores are keyed like their rows (system, split, params): evaluating the same
    system under another item_num in the same work dir keeps the first params' scores, the
    rows name their own files, and a reuse reads them back without scoring."""
    from llmtrsr_utils import evaluate, results
    from llmtrsr_utils.pipeline import run_evaluation

    @systems.baseline("item-num-probe", "Item-num probe")
    def probe(frame, split, context):  # the positive wins exactly when item_num is 3
        scores = np.zeros((len(frame), 1 + len(frame["negatives"].iloc[0])))
        scores[:, 0] = context.cfg.recommender.item_num - 2
        return scores

    try:
        configs = {n: smoke_config(tmp_path, movielens_dir, f"recommender.item_num={n}")
                   for n in (3, 0)}
        for cfg in configs.values():
            run_evaluation(cfg, [], ["item-num-probe", "random"], progress=False)
        table = results.load_results(configs[3])
        test = table[(table["system"] == "item-num-probe") & (table["split"] == "test")]
        assert sorted(test["params_hash"]) == sorted(c.fingerprint() for c in configs.values())
        assert test["scores_file"].nunique() == 2
        for _, row in test.iterrows():
            per_user = results.read_scores(configs[3], row).per_user()
            assert per_user["recall@3"].mean() == pytest.approx(row["recall@3"])
        recall = dict(zip(test["params_hash"], test["recall@3"], strict=True))
        assert recall[configs[3].fingerprint()] == 1.0  # the item_num-3 scores survived
        assert recall[configs[0].fingerprint()] < 0.5

        def refuse(*args, **kwargs):
            raise AssertionError("reuse must read the stored scores, not score again")

        monkeypatch.setattr(evaluate, "evaluate_system", refuse)
        again = evaluate.evaluate(configs[3], [], ["item-num-probe", "random"], reuse=True,
                                  progress=False)
        assert set(again["params_hash"]) == {configs[3].fingerprint()}
        # The paired tests of the reused run compare exactly the rows it read back.
        tests = pd.read_csv(tmp_path / "results" / "paired_tests.csv")
        assert tests.columns.tolist() == ["system", "versus", "metric", "diff", "ci_low",
                                          "ci_high", "p_value", "seeds", "versus_seeds"]
        diff = tests[(tests["system"] == "item-num-probe") & (tests["versus"] == "random")
                     & (tests["metric"] == "recall@3")]["diff"].iloc[0]
        random_row = again[(again["system"] == "random") & (again["split"] == "test")].iloc[0]
        assert diff == pytest.approx(1.0 - random_row["recall@3"])
    finally:
        systems.SYSTEMS.pop("item-num-probe")


def summary_slot(prompt: str) -> str:
    """The text between "[Preference Summary]" and the next section of a prompt."""
    return prompt.split("[Preference Summary]\n", 1)[1].split("\n\n[", 1)[0]


@pytest.mark.parametrize("item_num", [3, 0])
def test_controls_build_exactly_the_intended_prompts(tmp_path, movielens_dir, item_num):
    """null-summary: NULL in the summary slot; oracle-older: the older items' texts there,
    verbatim; otherwise LLM-TRSR's prompt, the same recent items and candidates, and no
    summarizer call."""
    from llmtrsr_utils.datasets.base import HISTORY, ITEM_ID
    from llmtrsr_utils.datasets.splits import load_items, load_split
    from llmtrsr_utils.models import load_tokenizer
    from llmtrsr_utils.pipeline import ensure_splits, ensure_system_inputs
    from llmtrsr_utils.recommend import resolve, split_prompts

    cfg = smoke_config(tmp_path, movielens_dir, f"recommender.item_num={item_num}")
    data_dir = ensure_splits(cfg)
    for control in (systems.NULL_CONTROL, systems.ORACLE_OLDER):
        ensure_system_inputs(cfg, control, ("test",))
    assert not (tmp_path / "summaries").exists()  # no summarizer ran
    tokenizer = load_tokenizer("tiny-random-llama")
    users = {c: split_prompts(resolve(cfg, c), "test", tokenizer)[0]
             for c in (systems.NULL_CONTROL, systems.ORACLE_OLDER)}
    text = load_items(data_dir).set_index(ITEM_ID)["text"]
    for row, null, oracle in zip(load_split(data_dir, "test").to_dict("records"),
                                 users[systems.NULL_CONTROL], users[systems.ORACLE_OLDER],
                                 strict=True):
        history = list(row[HISTORY])
        older = history[:-item_num] if item_num else history
        recent = history[-item_num:] if item_num else []
        assert null.candidates == oracle.candidates and len(null.prompts) == 21
        for plain, with_older in zip(null.prompts, oracle.prompts, strict=True):
            assert summary_slot(plain) == "NULL"
            assert summary_slot(with_older) == "\n".join(text.loc[older])
            assert with_older.replace(summary_slot(with_older), "NULL", 1) == plain
            tail = plain.split("\n\n[", 2)[2]  # the recent items and the candidate
            assert all(text.loc[i] in tail for i in recent)
            assert not any(text.loc[i] in tail for i in older if i not in recent)
    with pytest.raises(Exception, match="needs a number of recent items"):
        split_prompts(resolve(smoke_config(tmp_path, movielens_dir, "recommender.item_num=null"),
                              systems.ORACLE_OLDER), "test", tokenizer)


def test_controls_train_and_score_as_controls(tmp_path, movielens_dir):
    """`--systems controls` trains and scores both controls like any LLM system; Table 2 puts
    them last and labels them as controls, and `all` leaves them out."""
    from llmtrsr_utils.pipeline import run_evaluation, system_names
    from llmtrsr_utils.results import load_results, table2

    cfg = smoke_config(tmp_path, movielens_dir)
    run_evaluation(cfg, "controls", ["random"], progress=False)
    labels = list(table2(load_results(cfg)).index)
    assert labels == ["Random", "Control: no summary (NULL)", "Control: older items verbatim"]
    assert not set(system_names("all")) & {systems.NULL_CONTROL, systems.ORACLE_OLDER}
    assert not (tmp_path / "summaries").exists()  # neither control calls the summarizer


def test_the_history_shuffle_moves_a_reader_and_not_the_negative_controls(tmp_path,
                                                                          movielens_dir):
    """Every user gets another user's history (a derangement); Random and Popularity do not
    depend on the user and stay equal to the last digit; an LLM system's prompts now carry the
    donor's history, so its scores change; the table and the shuffled scores are written."""
    from llmtrsr_utils.datasets.splits import derangement, load_split
    from llmtrsr_utils.models import load_tokenizer
    from llmtrsr_utils.pipeline import run_evaluation, shuffle_histories
    from llmtrsr_utils.recommend import resolve, split_prompts
    from llmtrsr_utils.results import load_results, read_scores, results_dir

    donors = derangement([f"u{i}" for i in range(7)], seed=42)
    assert sorted(donors.values()) == sorted(donors) and all(k != v for k, v in donors.items())
    assert derangement([f"u{i}" for i in range(7)], seed=42) == donors
    cfg = smoke_config(tmp_path, movielens_dir)
    run_evaluation(cfg, ["tallrec"], ["random", "popularity"], progress=False)
    table = shuffle_histories(cfg, ["tallrec"], ["random", "popularity"])
    recall = table[table["metric"] == "recall@5"].set_index("system")
    for control in ("random", "popularity"):
        assert recall.loc[control, "diff"] == 0.0 and recall.loc[control, "p_value"] == 1.0
    test = load_results(cfg, current=True)
    normal = read_scores(cfg, test[(test["system"] == "tallrec") & (test["split"] == "test")]
                         .iloc[0])
    shuffled = read_scores(cfg, {"scores_file": next(
        (results_dir(cfg) / "scores").glob("tallrec_test-history-shuffle_*.parquet")
    ).relative_to(results_dir(cfg)).as_posix()})
    assert shuffled.candidates == normal.candidates
    assert not np.allclose(shuffled.scores, normal.scores)
    assert (results_dir(cfg) / "history_shuffle.csv").is_file()
    from llmtrsr_utils.history_shuffle import shuffled_scores

    with pytest.raises(ValueError, match="weights are not kept"):
        shuffled_scores(cfg, "core", pd.DataFrame(), {})
    # The prompts themselves: each user's history section is its donor's, candidates its own.
    frame = load_split(cfg.data_output_dir, "test")
    given = derangement(frame["user_id"].tolist(), cfg.seed)
    tokenizer = load_tokenizer("tiny-random-llama")
    own, _ = split_prompts(resolve(cfg, "tallrec"), "test", tokenizer)
    other, _ = split_prompts(resolve(cfg, "tallrec"), "test", tokenizer, donors=given)
    by_user = {u.user_id: u for u in own}
    for user in other:
        donor = by_user[given[user.user_id]]
        assert user.candidates == by_user[user.user_id].candidates
        assert user.prompts[0].split("\n\n[")[2] == donor.prompts[0].split("\n\n[")[2]


def test_a_variant_summarizes_under_its_own_settings_beside_the_params_own(tmp_path,
                                                                          movielens_dir):
    """The fields variant is LLM-TRSR-Hierarchical with summarizer.summary_style fields laid
    over the params: its summaries are made with that setting and stored apart from the
    params' own (both stay current in one work folder), its prompts carry its own summaries,
    its adapter is its own, and `all` leaves it out while `variants` names it."""
    from llmtrsr_utils.models import load_tokenizer
    from llmtrsr_utils.pipeline import ensure_system_inputs, system_names
    from llmtrsr_utils.recommend import resolve, split_prompts
    from llmtrsr_utils.summarize import load_summaries, summaries_current, summaries_path

    cfg = smoke_config(tmp_path, movielens_dir, f"summarizer.cache_file={tmp_path / 'g.db'}")
    paper = resolve(cfg, systems.paradigm_system(systems.HIERARCHICAL))
    variant = resolve(cfg, systems.FIELDS_VARIANT)
    assert paper.cfg.summarizer.summary_style == "paper"
    assert variant.cfg.summarizer.summary_style == "fields"
    assert variant.cfg.recommender == paper.cfg.recommender
    assert variant.adapter_dir != paper.adapter_dir
    assert variant.params_hash == paper.params_hash  # one run's params, two systems
    for run in (paper, variant):
        ensure_system_inputs(cfg, run.name, ("test",), progress=False)
    paths = {run.name: summaries_path(run.cfg, "test", systems.HIERARCHICAL)
             for run in (paper, variant)}
    assert len(set(paths.values())) == 2 and all(p.is_file() for p in paths.values())
    assert all(summaries_current(run.cfg, "test", systems.HIERARCHICAL)
               for run in (paper, variant))
    record = json.loads(paths[variant.name].with_suffix(".json").read_text())
    assert record["params"]["summarizer"]["summary_style"] == "fields"
    tokenizer = load_tokenizer("tiny-random-llama")
    for run in (paper, variant):
        own = load_summaries(run.cfg, "test", systems.HIERARCHICAL)
        users = split_prompts(run, "test", tokenizer)[0]
        assert [summary_slot(u.prompts[0]) for u in users] == own["final_summary"].tolist()
    # The variant's prompts are not the paper's: none of its calls was answered by the
    # generation cache that the paper's summaries had just filled.
    assert record["model_calls"] > 0 and record["cache_hits"] == 0
    assert systems.FIELDS_VARIANT not in system_names("all")
    assert system_names("variants") == [systems.FIELDS_VARIANT]
