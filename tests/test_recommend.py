from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from llmtrsr_utils.models import load_causal_lm, load_tokenizer
from llmtrsr_utils.prompts import PromptFormatter, recommendation
from llmtrsr_utils.recommend import (
    AnswerTokenError,
    RecommendationPrompts,
    adapter_dir,
    answer_token_ids,
    attention_projections,
    list_checkpoints,
    system_config,
    train_system,
)
from llmtrsr_utils.scoring import score_dynamic, score_fast, score_padded_full, score_reference
from llmtrsr_utils.segmentation import PromptTooLongError
from tests.conftest import smoke_config, smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"
TRAIN = ["recommender.batch_size=2", "recommender.gradient_accumulation_steps=2"]




def candidate_prompts(tokenizer, n: int = 21) -> list[list[int]]:
    formatter = PromptFormatter(tokenizer)
    summary = "Enjoys animated family films and 1990s comedies; avoids horror. " * 2
    recent = [f"Title: Movie {i}; Year: 199{i}; Genres: Comedy" for i in range(3)]
    candidates = [f"Title: Candidate {i}{' with a longer title' * (i % 3)}; Genres: Action"
                  for i in range(n)]
    return [tokenizer(formatter.render(recommendation("movies", summary, recent, c)))["input_ids"]
            for c in candidates]


def test_prompt_has_five_parts_and_null_for_no_items():
    content = recommendation("movies", "likes comedies", [], "Title: Up")
    assert "[Preference Summary]\nlikes comedies" in content
    assert "[Historical Items]\nNULL" in content and content.endswith("[Next Item]\nTitle: Up")
    tallrec = recommendation("movies", None, ["Title: A", "Title: B"], "Title: Up")
    assert "Preference Summary" not in tallrec and "1. Title: A\n2. Title: B" in tallrec


def test_answer_words_are_single_tokens_as_trained():
    tokenizer = load_tokenizer("tiny-random-llama")
    prompt = PromptFormatter(tokenizer).render("Will the user watch it?")
    yes_id, no_id = answer_token_ids(tokenizer, prompt, ["yes", "no"])
    assert tokenizer.decode([yes_id]) == "yes" and tokenizer.decode([no_id]) == "no"
    with pytest.raises(AnswerTokenError, match="'absolutely' is not a single token"):
        answer_token_ids(tokenizer, prompt, ["absolutely", "no"])


def test_long_prompt_shortens_summary_then_drops_oldest_items(tmp_path, movielens_dir):
    cfg = smoke_config(tmp_path, movielens_dir, "recommender.max_length=260",
                       "recommender.min_summary_tokens=8")
    tokenizer = load_tokenizer("tiny-random-llama")
    builder = RecommendationPrompts(cfg, tokenizer, "movies")
    items = pd.Series({str(i): f"Title: Movie number {i}; Genres: Drama, Comedy" for i in range(9)})
    row = {"user_id": "u1", "history": ["0", "1", "2", "3"], "target": "7",
           "negatives": ["8"]}
    prompts = builder.user_prompts(row, items, "a long summary of tastes " * 40)
    assert prompts.summary_shortened and prompts.items_dropped == 0
    assert all(len(tokenizer(p)["input_ids"]) <= builder.budget for p in prompts.prompts)
    for prompt, candidate in zip(prompts.prompts, prompts.candidates, strict=True):
        assert items[candidate] in prompt  # the candidate is never cut
    tight = smoke_config(tmp_path, movielens_dir, "recommender.max_length=190",
                         "recommender.min_summary_tokens=8")
    dropped = RecommendationPrompts(tight, tokenizer, "movies").user_prompts(
        row, items, "a long summary of tastes " * 40)
    assert dropped.summary_shortened and dropped.items_dropped == 1  # the oldest goes first
    assert "Movie number 1;" not in dropped.prompts[0] and "Movie number 3;" in dropped.prompts[0]
    impossible = smoke_config(tmp_path, movielens_dir, "recommender.max_length=140")
    with pytest.raises(PromptTooLongError, match="the candidate is never cut"):
        RecommendationPrompts(impossible, tokenizer, "movies").user_prompts(
            row, items, "summary " * 40)


def test_lora_targets_found_from_modules():
    model, _ = load_causal_lm("tiny-random-llama")
    assert attention_projections(model) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    neox = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=64))
    assert attention_projections(neox) == ["dense", "query_key_value"]


def test_fast_scorer_equals_reference_on_tiny_llama():
    model, tokenizer = load_causal_lm("tiny-random-llama")
    # Make the random model's answers depend visibly on the candidate.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(8)
    rows = candidate_prompts(tokenizer)
    yes_id, no_id = 10407, 4607
    reference = score_reference(model, rows, yes_id, no_id)
    assert reference.std() > 1e-4
    for batch_size in (32, 5):
        fast = score_fast(model, rows, yes_id, no_id, tokenizer.pad_token_id, batch_size)
        assert np.abs(fast - reference).max() < 1e-4
    dynamic = score_dynamic(model, rows, yes_id, no_id, tokenizer.pad_token_id)
    padded = score_padded_full(model, rows[:3], yes_id, no_id, tokenizer.pad_token_id, 512)
    assert np.abs(dynamic - reference).max() < 1e-4
    assert np.abs(padded - reference[:3]).max() < 1e-4


@pytest.mark.slow
def test_fast_scorer_equals_reference_on_smollm2():
    model, tokenizer = load_causal_lm("smollm2-135m")
    rows = candidate_prompts(tokenizer, n=8)
    reference = score_reference(model, rows, 10407, 4607)
    fast = score_fast(model, rows, 10407, 4607, tokenizer.pad_token_id)
    assert np.abs(fast - reference).max() < 1e-4


def test_training_saves_each_epoch_and_resumes(tmp_path, movielens_dir):
    one_epoch = smoke_config(tmp_path, movielens_dir, *TRAIN, "recommender.epochs=1")
    first = train_system(one_epoch, "tallrec", progress=False)
    assert first["lora_targets"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert first["examples"] == 12  # 6 users x (1 positive + 1 negative)
    steps_per_epoch = first["global_step"]
    two_epochs = smoke_config(tmp_path, movielens_dir, *TRAIN, "recommender.epochs=2")
    second = train_system(two_epochs, "tallrec", progress=False)
    assert second["resumed_from"] and second["resumed_from"].endswith(f"-{steps_per_epoch}")
    assert second["global_step"] == 2 * steps_per_epoch
    epochs = [epoch for epoch, _ in list_checkpoints(Path(second["output_dir"]))]
    assert epochs == [1.0, 2.0]
    # An uninterrupted two-epoch run in another folder ends with the same number of steps.
    fresh = smoke_config(tmp_path / "fresh", movielens_dir, *TRAIN, "recommender.epochs=2")
    assert train_system(fresh, "tallrec", progress=False)["global_step"] == 2 * steps_per_epoch


def test_train_then_evaluate_fills_the_results_table(tmp_path, movielens_dir):
    from llmtrsr_utils.evaluate import evaluate, load_results, table2

    cfg = smoke_config(tmp_path, movielens_dir, *TRAIN, "recommender.epochs=2")
    for system in ("llmtrsr-hierarchical", "tallrec"):
        train_system(cfg, system, progress=False)
    evaluate(cfg, ["llmtrsr-hierarchical", "tallrec"], ["random", "popularity"], progress=False)
    results = load_results(cfg)
    valid = results[(results["system"] == "tallrec") & (results["split"] == "valid")]
    assert sorted(valid["epoch"]) == [1.0, 2.0] and valid["selected"].sum() == 1
    test = results[results["split"] == "test"]
    assert set(test["system"]) == {"llmtrsr-hierarchical", "tallrec", "random", "popularity"}
    for column in ("recall@3", "mrr@10_ci_low", "ndcg@5_ci_high", "params_hash", "git_commit"):
        assert test[column].notna().all(), column
    assert set(table2(results).index) == {"LLM-TRSR-Hierarchical", "TALLRec", "Random",
                                          "Popularity"}
    out = tmp_path / "results"
    assert (out / "table2.md").is_file() and (out / "paired_tests.csv").is_file()
    scores = pd.read_parquet(out / "scores" / "tallrec_test.parquet")
    assert len(scores) == 3 and all(len(s) == 21 for s in scores["scores"])
    # Evaluating again replaces rows rather than duplicating them.
    evaluate(cfg, [], ["random"], progress=False)
    again = load_results(cfg)
    assert len(again[(again["system"] == "random")]) == 2


def test_train_runs_under_accelerate_launch(tmp_path, movielens_dir):
    overrides = smoke_overrides(tmp_path, movielens_dir,
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}", *TRAIN,
                                "recommender.epochs=1")
    args = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "llmtrsr_utils.cli", "train", "--params", str(SMOKE), "--system", "tallrec",
            "--no-progress", *[x for o in overrides for x in ("--set", o)]]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = smoke_config(tmp_path, movielens_dir, *TRAIN, "recommender.epochs=1")
    record = json.loads((adapter_dir(cfg, "tallrec") / "training.json").read_text())
    assert record["global_step"] > 0


def test_systems_differ_only_in_prompt_settings(tmp_path, movielens_dir):
    cfg = smoke_config(tmp_path, movielens_dir)
    assert system_config(cfg, "tallrec").recommender.item_num is None
    assert system_config(cfg, "tallrec").recommender.summary == "none"
    assert system_config(cfg, "llmtrsr-recurrent").recommender.summary == "recurrent"
    assert system_config(cfg, "llmtrsr-recurrent").recommender.item_num == 3
