from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from llmtrsr_utils import recommend
from llmtrsr_utils.datasets.splits import DataMissingError
from llmtrsr_utils.models import load_causal_lm, load_tokenizer
from llmtrsr_utils.pipeline import ensure_splits
from llmtrsr_utils.prompts import PromptFormatter, recommendation
from llmtrsr_utils.recommend import (
    AnswerTokenError,
    RecommendationPrompts,
    answer_token_ids,
    attention_projections,
    list_checkpoints,
    resolve,
)
from llmtrsr_utils.scoring import (
    score_dynamic,
    score_fast,
    score_padded_full,
    score_reference,
    score_tree,
)
from llmtrsr_utils.segmentation import PromptTooLongError
from tests.conftest import smoke_config, smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"
TRAIN = ["recommender.batch_size=2", "recommender.global_batch_size=4"]


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
    assert "[Historical Movies]\nNULL" in content and content.endswith("[Next Movie]\nTitle: Up")
    # TALLRec as the authors ran it: the same instruction, the summary written as NULL.
    tallrec = recommendation("movies", None, ["Title: A", "Title: B"], "Title: Up")
    assert "[Preference Summary]\nNULL" in tallrec and "1. Title: A\n2. Title: B" in tallrec
    dropped = recommendation("movies", None, ["Title: A"], "Title: Up",
                             no_summary="drop_summary")
    assert "Preference Summary" not in dropped and "preference summary" not in dropped


FIGURE_8 = ("### User:\nGiven a preference summary of the user, and information related to the "
            "historical items the user has purchased, predict whether the user will click on the "
            "given next product. Note that the preference summary captures long-term interests, "
            "while the recent items indicate short term interests. Both of them should be "
            "holistically considered for a more comprehensive understanding of user behavior. "
            "Please output 'Yes' or 'No'.\n\n[Preference Summary]\nS\n\n[Historical Items]\n"
            "1. Title: A\n\n[Next Item]\nTitle: B\n\n### Assistant:\n")


def test_shopping_prompt_is_figure_8_word_for_word():
    tokenizer = load_tokenizer("tiny-random-llama")
    rendered = PromptFormatter(tokenizer, "plain").render(
        recommendation("shopping", "S", ["Title: A"], "Title: B"))
    assert rendered == FIGURE_8
    news = recommendation("news", "S", ["Title: A"], "Title: B")
    assert news.startswith("Given a news reading preference summary of the user, and "
                           "information related to the historical news the user has read, "
                           "predict whether the user will click on the given next news.")
    assert "[Historical News]" in news and "[Next News]" in news


def test_prompt_format_is_a_setting_not_the_tokenizer(tmp_path, movielens_dir):
    from llmtrsr_utils.prompts import ChatTemplateMissingError

    tokenizer = load_tokenizer("tiny-random-llama")  # SmolLM2's tokenizer: has a chat template
    assert tokenizer.chat_template
    plain = smoke_config(tmp_path, movielens_dir)
    assert plain.recommender.prompt_format == "plain"
    builder = RecommendationPrompts(plain, tokenizer, "movies")
    assert builder.render("S", [], "Title: B").startswith("### User:\n")
    chat = smoke_config(tmp_path, movielens_dir, "recommender.prompt_format=chat")
    rendered = RecommendationPrompts(chat, tokenizer, "movies").render("S", [], "Title: B")
    assert rendered.startswith("<|im_start|>") and "### User:" not in rendered
    tokenizer.chat_template = None
    with pytest.raises(ChatTemplateMissingError, match="no chat template"):
        RecommendationPrompts(chat, tokenizer, "movies")


def test_answer_words_are_single_tokens_as_trained():
    tokenizer = load_tokenizer("tiny-random-llama")
    prompt = PromptFormatter(tokenizer, "chat").render("Will the user watch it?")
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
    tight = smoke_config(tmp_path, movielens_dir, "recommender.max_length=170",
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
    # The authors adapted Pythia's query_key_value only (and Llama's q/k/v/o_proj).
    from llmtrsr_utils.recommend import lora_targets

    assert lora_targets(neox, "authors") == ["query_key_value"]
    assert lora_targets(model, "authors") == ["k_proj", "o_proj", "q_proj", "v_proj"]
    # all-linear adds the MLP's projections, never the output head.
    assert lora_targets(model, "all-linear") == ["down_proj", "gate_proj", "k_proj", "o_proj",
                                                 "q_proj", "up_proj", "v_proj"]
    assert lora_targets(neox, "all-linear") == ["dense", "dense_4h_to_h", "dense_h_to_4h",
                                                "query_key_value"]


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
    # The tree scorer: one user per row, or several users padded into one batch.
    other = [r[:5] + [7] + r[5:] for r in rows[:4]]  # a second user, another prefix
    for per_batch in (1, 2):
        first, second = score_tree(model, [rows, other], yes_id, no_id, tokenizer.pad_token_id,
                                   per_batch)
        assert np.abs(first - reference).max() < 1e-4
        assert np.abs(second - score_reference(model, other, yes_id, no_id)).max() < 1e-4
    dynamic = score_dynamic(model, rows, yes_id, no_id, tokenizer.pad_token_id)
    padded = score_padded_full(model, rows[:3], yes_id, no_id, tokenizer.pad_token_id, 512)
    assert np.abs(dynamic - reference).max() < 1e-4
    assert np.abs(padded - reference[:3]).max() < 1e-4


def test_answer_logits_are_float32_so_bfloat16_rounding_does_not_tie():
    """A bfloat16 model whose yes/no logits round to the same bf16 value: the model's own
    logits tie (p = 0.5 for every candidate), the float32 answer head does not."""
    from llmtrsr_utils.scoring import AnswerHead, final_hidden

    model, tokenizer = load_causal_lm("tiny-random-llama")
    model = model.to(torch.bfloat16)
    yes_id, no_id = 10407, 4607
    rows = candidate_prompts(tokenizer, n=6)
    with torch.no_grad():
        hidden = torch.stack([final_hidden(model, input_ids=torch.tensor([r]))[0][0, -1].float()
                              for r in rows])
        # yes and no rows equal but for one coordinate j (0 for yes, 2^-6 for no): the logits
        # are ~100, where bf16 has steps of 0.5, and differ by 2^-6 * h_j ~ 0.04.
        j = int(hidden.abs().mean(0).argmax())
        direction = hidden.mean(0)
        direction[j] = 0
        row = direction / direction.norm() ** 2 * 100
        head = model.get_output_embeddings().weight
        head[yes_id] = row.to(head.dtype)
        head[no_id] = row.to(head.dtype)
        head[no_id, j] = 2.0 ** -6
        own = [model(input_ids=torch.tensor([ids])).logits[0, -1, [yes_id, no_id]].tolist()
               for ids in rows]
    assert all(yes == no for yes, no in own)  # the model's bf16 logits tie
    assert set(score_padded_full(model, rows, yes_id, no_id, tokenizer.pad_token_id,
                                 256)) == {0.5}  # the authors' way: every candidate at 0.5
    scores = score_reference(model, rows, yes_id, no_id)
    assert np.all(np.abs(scores - 0.5) > 1e-3) and len(set(scores.round(9))) > 1
    pair = AnswerHead(model, yes_id, no_id).weight
    assert pair.dtype == torch.float32 and pair.shape == (2, head.shape[1])
    fast = score_fast(model, rows, yes_id, no_id, tokenizer.pad_token_id)
    assert np.abs(fast - scores).max() < 1e-4


@pytest.mark.slow
def test_fast_scorer_equals_reference_on_smollm2():
    model, tokenizer = load_causal_lm("smollm2-135m")
    rows = candidate_prompts(tokenizer, n=8)
    reference = score_reference(model, rows, 10407, 4607)
    fast = score_fast(model, rows, 10407, 4607, tokenizer.pad_token_id)
    assert np.abs(fast - reference).max() < 1e-4
    (tree,) = score_tree(model, [rows], 10407, 4607, tokenizer.pad_token_id)
    assert np.abs(tree - reference).max() < 1e-4


def train_system(cfg, system: str, **kwargs):
    """The training stage on prepared data (the pipeline's order, without its summarizing)."""
    ensure_splits(cfg)
    return recommend.train_system(resolve(cfg, system), **kwargs)


def test_training_saves_each_epoch_and_resumes(tmp_path, movielens_dir, capsys, caplog):
    one_epoch = smoke_config(tmp_path, movielens_dir, *TRAIN, "recommender.epochs=1")
    with caplog.at_level(logging.INFO, logger="llmtrsr"):
        first = train_system(one_epoch, "tallrec", progress=False)
    # Without progress bars: no log dict per step on stdout, one log line per epoch instead;
    # every step's loss still in the record.
    assert "'loss'" not in capsys.readouterr().out
    epoch_lines = [r.getMessage() for r in caplog.records if "mean training loss" in
                   r.getMessage()]
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("tallrec: epoch 1 of 1, step ")
    assert sum("loss" in h for h in first["log_history"]) == first["global_step"]
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
    from llmtrsr_utils.evaluate import evaluate
    from llmtrsr_utils.pipeline import run_evaluation, train
    from llmtrsr_utils.recommend import AdapterMissingError
    from llmtrsr_utils.results import load_results, table2
    from llmtrsr_utils.summarize import SummariesMissingError

    cfg = smoke_config(tmp_path, movielens_dir, *TRAIN, "recommender.epochs=2")
    # A stage does not run the stages before it: it names what is missing and how to make it.
    with pytest.raises(DataMissingError, match="run `llmtrsr data --params"):
        recommend.train_system(resolve(cfg, "tallrec"), progress=False)
    with pytest.raises(SummariesMissingError, match="llmtrsr summarize --split train"):
        train_system(cfg, "llmtrsr-hierarchical", progress=False)
    with pytest.raises(AdapterMissingError, match="llmtrsr train --systems tallrec"):
        evaluate(cfg, ["tallrec"], [], progress=False)
    for system in ("llmtrsr-hierarchical", "tallrec"):
        train(cfg, system, progress=False)  # the pipeline summarizes first
    run_evaluation(cfg, ["llmtrsr-hierarchical", "tallrec"], ["random", "popularity"],
                   progress=False)
    results = load_results(cfg)
    valid = results[(results["system"] == "tallrec") & (results["split"] == "valid")]
    # The untrained model (epoch 0, the learning curve's first point) is scored, never selected.
    assert sorted(valid["epoch"]) == [0.0, 1.0, 2.0] and valid["selected"].sum() == 1
    assert not valid[valid["checkpoint"] == "untrained"]["selected"].any()
    test = results[results["split"] == "test"]
    assert set(test["system"]) == {"llmtrsr-hierarchical", "tallrec", "random", "popularity"}
    for column in ("recall@3", "mrr@10_ci_low", "ndcg@5_ci_high", "params_hash", "git_commit",
                   "recall@5_pessimistic", "tied_positive_share", "recommender_prompt_format"):
        assert test[column].notna().all(), column
    assert (test["recommender_prompt_format"] == "plain").all()
    assert (test["recall@5_pessimistic"] <= test["recall@5"] + 1e-12).all()
    assert set(table2(results).index) == {"LLM-TRSR-Hierarchical", "TALLRec", "Random",
                                          "Popularity"}
    out = tmp_path / "results"
    assert (out / "table2.md").is_file() and (out / "paired_tests.csv").is_file()
    row = test[test["system"] == "tallrec"].iloc[0]
    scores = pd.read_parquet(out / row["scores_file"])
    assert row["scores_file"] == (f"scores/tallrec_test_{row['params_hash'][:16]}_seed"
                                  f"{row['seed']}.parquet")
    assert len(scores) == 3 and all(len(s) == 21 for s in scores["scores"])
    # Evaluating again replaces rows rather than duplicating them.
    evaluate(cfg, [], ["random"], progress=False)
    again = load_results(cfg)
    assert len(again[(again["system"] == "random")]) == 2


def test_learning_curve_scores_each_checkpoint_once(tmp_path, movielens_dir, monkeypatch):
    from llmtrsr_utils import evaluate as evaluation
    from llmtrsr_utils import learning, plots
    from llmtrsr_utils.results import load_results

    # 6 users x 2 examples = 12 examples, 3 steps of 4; 2 checkpoints per epoch: a share of 1/2
    # -> every ceil(1.5) = 2 steps, then the end: steps 2 and 3.
    cfg = smoke_config(tmp_path, movielens_dir, *TRAIN, "recommender.checkpoints_per_epoch=2")
    record = train_system(cfg, "tallrec", progress=False)
    assert [Path(p).name for p in record["checkpoints"]] == ["checkpoint-2", "checkpoint-3"]
    calls = []
    real = evaluation.score_llm
    monkeypatch.setattr(evaluation, "score_llm", lambda *a, **k: calls.append(1) or real(*a, **k))
    curve, levels = learning.learning_curve(cfg, ["tallrec"], progress=False)
    assert len(calls) == 3  # the untrained model and two checkpoints
    assert curve["examples_seen"].tolist() == [0, 8, 12]
    assert curve["checkpoint"].iloc[0] == "untrained" and (curve["n_users"] == 3).all()
    assert set(levels["system"]) == {"random", "popularity"}
    assert (tmp_path / "results" / "learning_curve.csv").is_file()
    assert plots.plot_learning_curve(curve, levels, tmp_path / "figures")[0].is_file()
    # Evaluation selects among the cached checkpoints: only the test users are scored again.
    calls.clear()
    evaluation.evaluate(cfg, ["tallrec"], [], progress=False)
    assert len(calls) == 1
    valid = load_results(cfg).query("split == 'valid'").sort_values("epoch")
    assert np.allclose(valid["recall@5"], curve["recall@5"])
    assert valid["selected"].sum() == 1


def test_global_batch_is_kept_for_any_process_count(tmp_path, movielens_dir):
    from llmtrsr_utils.config import ConfigError
    from llmtrsr_utils.recommend import accumulation_steps, sft_settings

    plain = smoke_config(tmp_path, movielens_dir, "recommender.batch_size=2",
                         "recommender.global_batch_size=64", "recommender.packing=none")
    tree = smoke_config(tmp_path, movielens_dir, "recommender.batch_size=2",
                        "recommender.global_batch_size=64", "data.train_negatives=3")
    for processes in (1, 2, 4, 8):
        settings = sft_settings(plain, tmp_path, processes=processes, dtype=torch.float32,
                                device="cpu")
        assert settings["per_device_train_batch_size"] * settings[
            "gradient_accumulation_steps"] * processes == 64
        # Tree-packed: a row is one user's 1 + 3 examples.
        packed = sft_settings(tree, tmp_path, processes=processes, dtype=torch.float32,
                              device="cpu")
        assert packed["per_device_train_batch_size"] * 4 * packed[
            "gradient_accumulation_steps"] * processes == 64
    assert accumulation_steps(plain, 4) == 8 and accumulation_steps(tree, 4) == 2
    odd = smoke_config(tmp_path, movielens_dir, "recommender.batch_size=3",
                       "recommender.global_batch_size=64", "recommender.packing=none")
    with pytest.raises(ConfigError, match="global_batch_size 64 cannot be made from "
                                          "recommender.batch_size 3 x 1 process"):
        accumulation_steps(odd, 1)
    settings = sft_settings(plain, tmp_path, processes=1, dtype=torch.float32, device="cpu")
    # The authors' optimizer settings reach the trainer.
    assert (settings["weight_decay"], settings["adam_beta2"]) == (5e-4, 0.95)
    assert settings["lr_scheduler_type"] == "constant" and settings["max_grad_norm"] == 0.0


def test_train_runs_under_accelerate_launch(tmp_path, movielens_dir):
    """One process under ``accelerate launch`` (CPU), as a user would start it."""
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
    record = json.loads((resolve(cfg, "tallrec").adapter_dir / "training.json").read_text())
    batch = (record["processes"], record["examples_per_row"], record["global_batch_size"])
    assert batch == (1, 2, 4)
    assert record["global_step"] > 0


def test_four_processes_train_with_the_configured_global_batch(tmp_path, movielens_dir):
    """Four CPU processes (torchrun, gloo): per-device 1 user row x 2 examples (tree-packed) x
    accumulation 2 x 4 processes = the configured global batch of 16, and the optimizer steps
    that global batch gives."""
    from llmtrsr_utils.datasets.splits import prepare_dataset

    batch = ["recommender.batch_size=1", "recommender.global_batch_size=16",
             "recommender.epochs=1"]
    cfg = smoke_config(tmp_path, movielens_dir, *batch)
    prepare_dataset(cfg)  # once, before four processes read it
    overrides = smoke_overrides(tmp_path, movielens_dir,
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}", *batch)
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4",
            "--master_port", "29517", "-m", "llmtrsr_utils.cli", "train", "--params",
            str(SMOKE), "--system", "tallrec", "--no-progress",
            *[x for o in overrides for x in ("--set", o)]]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((resolve(cfg, "tallrec").adapter_dir / "training.json").read_text())
    assert (record["processes"], record["per_device_batch_size"], record["examples_per_row"],
            record["gradient_accumulation_steps"], record["global_batch_size"]) == (4, 1, 2, 2, 16)
    assert record["global_step"] == 1  # 6 users x 2 examples = 12 < 16 per step: one step


def test_systems_differ_only_in_prompt_settings(tmp_path, movielens_dir):
    cfg = smoke_config(tmp_path, movielens_dir)
    assert resolve(cfg, "tallrec").cfg.recommender.item_num is None
    assert resolve(cfg, "tallrec").cfg.recommender.summary == "none"
    assert resolve(cfg, "llmtrsr-recurrent").cfg.recommender.summary == "recurrent"
    assert resolve(cfg, "llmtrsr-recurrent").cfg.recommender.item_num == 3
    # The zero-shot LLM reads the prompts of the system its registry entry names.
    assert resolve(cfg, "zero-shot").cfg.recommender == resolve(
        cfg, "llmtrsr-hierarchical").cfg.recommender
    # A system resolved once carries the run's params hash and its own fingerprint.
    run = resolve(cfg, "tallrec")
    assert run.params_hash == cfg.fingerprint() != run.fingerprint
    with pytest.raises(ValueError, match="random is a reference system: it has no adapter"):
        _ = resolve(cfg, "random").adapter_dir


def test_merged_adapter_scores_equal_unmerged_and_leave_the_base_clean(tmp_path):
    """recommender.merge_adapter: scores through W + BA folded in equal the peft model's, and
    merging for one checkpoint (keep_base) leaves the base's weights bit-identical."""
    from peft import LoraConfig, get_peft_model

    from llmtrsr_utils.models import library_deprecations_silenced
    from llmtrsr_utils.scoring import with_adapter

    model, tokenizer = load_causal_lm("tiny-random-llama")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(8)
    with library_deprecations_silenced():  # peft reads a deprecated attribute, as in the kit
        lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear",
                                                init_lora_weights=False))  # B != 0: a change
    lora.save_pretrained(tmp_path / "checkpoint-1")
    base = lora.unload()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    rows = candidate_prompts(tokenizer, n=8)
    yes_id, no_id = 10407, 4607
    plain = score_reference(base, rows, yes_id, no_id)
    merged = with_adapter(base, tmp_path / "checkpoint-1", True, keep_base=True)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    unmerged = with_adapter(base, tmp_path / "checkpoint-1", False, keep_base=True)
    with_lora = score_reference(unmerged, rows, yes_id, no_id)
    assert np.abs(with_lora - plain).max() > 1e-3  # the adapter changes the scores
    assert np.abs(score_reference(merged, rows, yes_id, no_id) - with_lora).max() < 1e-5
    assert all(torch.equal(before[k], v) for k, v in unmerged.unload().state_dict().items())


def test_select_final_scores_the_last_checkpoint(tmp_path, movielens_dir, caplog):
    """recommender.select: final scores the last checkpoint on test without scoring validation
    users; best_valid scores every checkpoint on validation and states the interval; both use
    one adapter (an evaluation setting), and every row says which rule picked it."""
    from llmtrsr_utils.evaluate import evaluate
    from llmtrsr_utils.pipeline import train
    from llmtrsr_utils.results import load_results

    final = smoke_config(tmp_path, movielens_dir, *TRAIN, "recommender.epochs=2",
                         "recommender.select=final")
    record = train(final, "tallrec", progress=False)
    best = smoke_config(tmp_path, movielens_dir, *TRAIN, "recommender.epochs=2")
    assert resolve(best, "tallrec").adapter_dir == resolve(final, "tallrec").adapter_dir
    evaluate(final, ["tallrec"], [], progress=False)
    rows = load_results(final, current=True)
    assert rows["split"].tolist() == ["test"]  # no validation user scored
    assert rows["checkpoint"].iloc[0] == record["checkpoints"][-1]
    assert rows["selection_rule"].iloc[0] == "final"
    with caplog.at_level("INFO", logger="llmtrsr"):
        evaluate(best, ["tallrec"], [], progress=False)
    rows = load_results(best, current=True)
    assert sorted(rows[rows["split"] == "valid"]["epoch"]) == [0.0, 1.0, 2.0]
    assert set(rows["selection_rule"]) == {"best_valid"}
    assert "95% interval" in caplog.text and "3 validation users" in caplog.text


@pytest.mark.parametrize("precision", ["none", "bf16"])
def test_mixed_precision_trains_bf16_products_on_float32_weights(tmp_path, movielens_dir,
                                                                  precision):
    """recommender.mixed_precision: bf16 runs the trainer's products in bfloat16 (autocast) while
    the weights, the LoRA adapter and its optimizer stay float32; none keeps float32 products."""
    from llmtrsr_utils.pipeline import ensure_system_inputs

    cfg = smoke_config(tmp_path, movielens_dir, *TRAIN,
                       f"recommender.mixed_precision={precision}", "recommender.dtype=float32")
    ensure_system_inputs(cfg, "tallrec", ("train",), progress=False)
    trainer, _ = recommend.build_trainer(resolve(cfg, "tallrec"), tmp_path / "out",
                                         progress=False, max_steps=1, save_strategy="no")
    assert trainer.args.bf16 is (precision == "bf16")
    seen = []
    projection = next(m for n, m in trainer.model.named_modules() if n.endswith("q_proj"))
    projection.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    lora = lora_weights(trainer.model)
    trainer.train()
    assert seen and set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    assert any(not torch.equal(before, after)
               for before, after in zip(lora, lora_weights(trainer.model), strict=True))


def lora_weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for n, p in model.named_parameters() if "lora_" in n]


def test_mixed_precision_scores_close_to_float32_with_a_float32_answer_head():
    """score_llm under mixed_precision bf16: the decoder's products in bfloat16 (scores move a
    little), the answer head's pair of logits still float32; 'none' inside an enclosing autocast
    turns it off (the float32 scores exactly)."""
    from types import SimpleNamespace

    from llmtrsr_utils.config import RecommenderConfig
    from llmtrsr_utils.scoring import AnswerHead, score_llm

    model, tokenizer = load_causal_lm("tiny-random-llama", device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(8)
    prompts = [tokenizer.decode(r) for r in candidate_prompts(tokenizer, n=6)]
    users = [SimpleNamespace(user_id="u", candidates=list(range(6)), prompts=prompts)]
    yes_id, no_id = 10407, 4607
    full = score_llm(model, tokenizer, users, yes_id, no_id, RecommenderConfig()).scores
    half = score_llm(model, tokenizer, users, yes_id, no_id,
                     RecommenderConfig(mixed_precision="bf16")).scores
    assert full.std() > 1e-3
    assert 0 < np.abs(half - full).max() < 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = score_llm(model, tokenizer, users, yes_id, no_id, RecommenderConfig()).scores
        pair = AnswerHead(model, yes_id, no_id)(torch.ones(3, model.config.hidden_size))
    np.testing.assert_array_equal(inside, full)
    assert pair.dtype == torch.float32
    # bf16 scoring casts the linear weights once (bf16_linear_weights) instead of autocast
    # casting them on every call: bitwise the same scores, the float32 weights put back.
    from llmtrsr_utils.scoring import bf16_linear_weights, mixed_precision, score_tree

    weights = {n: p for n, p in model.named_parameters()}
    ids = [[tokenizer(p)["input_ids"] for p in prompts]]
    with mixed_precision(RecommenderConfig(mixed_precision="bf16"), "cpu"):
        per_call = score_tree(model, ids, yes_id, no_id, tokenizer.pad_token_id)[0]
        with bf16_linear_weights(model) as cast:
            assert cast == 7 * model.config.num_hidden_layers
            assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
            once = score_tree(model, ids, yes_id, no_id, tokenizer.pad_token_id)[0]
    np.testing.assert_array_equal(once, per_call)
    np.testing.assert_array_equal(half[0], per_call)  # score_llm casts once: the same
    assert all(p is weights[n] and p.dtype == torch.float32
               for n, p in model.named_parameters())
