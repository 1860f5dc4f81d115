from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from llmtrsr_utils.config import load_config
from llmtrsr_utils.datasets.splits import DataMissingError
from llmtrsr_utils.generation import GenerationCache
from llmtrsr_utils.pipeline import ensure_splits
from llmtrsr_utils.summarize import (
    Summarizer,
    UserHistory,
    load_summaries,
    summaries_path,
    summarize_split,
)
from tests.conftest import smoke_config, smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"


def history(n: int, user: str = "u1") -> UserHistory:
    return UserHistory(user, [str(i) for i in range(n)],
                       [f"Title: Movie {i}; Genres: Drama" for i in range(n)])


def test_hierarchical_fan_in_two_on_23_items_has_four_layers(tmp_path, movielens_dir):
    cfg = smoke_config(tmp_path, movielens_dir, "summarizer.fan_in=2")
    summarizer = Summarizer(cfg, "movies", progress=False)
    (result,) = summarizer.run("hierarchical", [history(23)])
    # 5 blocks -> 3 (pairs, one carried) -> 2 -> 1
    assert [len(layer) for layer in result.layers] == [5, 3, 2, 1]
    assert result.layers[1][2] == result.layers[0][4]  # the odd one out is carried up unchanged
    assert result.n_calls == 5 + 2 + 1 + 1
    assert result.final_summary == result.layers[-1][0]


def test_hierarchical_default_is_the_papers_two_levels(tmp_path, movielens_dir):
    cfg = smoke_config(tmp_path, movielens_dir)
    summarizer = Summarizer(cfg, "movies", progress=False)
    long_user, short_user = summarizer.run("hierarchical", [history(23), history(4, "u2")])
    assert [len(layer) for layer in long_user.layers] == [5, 1]
    assert [len(layer) for layer in short_user.layers] == [1]  # one block: no merge call
    assert short_user.n_calls == 1


def test_recurrent_calls_in_order_with_previous_summary(tmp_path, movielens_dir):
    cfg = smoke_config(tmp_path, movielens_dir)
    summarizer = Summarizer(cfg, "movies", progress=False)
    seen: list[list[str]] = []
    original = summarizer.generator.generate

    def spy(prompts, desc=""):
        seen.append(list(prompts))
        return original(prompts, desc)

    summarizer.generator.generate = spy
    users = [history(13, "a"), history(5, "b")]
    a, b = summarizer.run("recurrent", users)
    assert [len(call) for call in seen] == [2, 1, 1]  # step 1 both users, then only 'a'
    assert len(a.steps) == 3 and len(b.steps) == 1
    assert "Movie 0" in seen[0][0] and "Movie 5" not in seen[0][0]
    assert a.steps[0] in seen[1][0] and "Movie 5" in seen[1][0] and "Movie 10" not in seen[1][0]
    assert a.steps[1] in seen[2][0] and "Movie 12" in seen[2][0]
    assert "[Previous Preference Summary]" in seen[1][0]


def test_recurrent_first_block_shares_the_hierarchical_cache_entry(tmp_path, movielens_dir):
    cfg = smoke_config(tmp_path, movielens_dir)
    summarizer = Summarizer(cfg, "movies", progress=False)
    summarizer.run("hierarchical", [history(10)])
    before = summarizer.generator.stats.generated
    summarizer.run("recurrent", [history(10)])
    assert summarizer.generator.stats.generated == before + 1  # only the step-2 update


def test_batched_and_unbatched_first_step_logits_agree(tmp_path, movielens_dir):
    cfg = smoke_config(tmp_path, movielens_dir)
    summarizer = Summarizer(cfg, "movies", progress=False)
    model = summarizer.generator.model
    prompts = [summarizer.segment(history(n))[0].fitted.prompt for n in (1, 3, 5)]
    encoded = [summarizer.formatter.encode(p) for p in prompts]
    width = max(map(len, encoded))
    pad = summarizer.formatter.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask).logits[:, -1]
        for row, e in enumerate(encoded):
            single = model(input_ids=torch.tensor([e])).logits[0, -1]
            assert torch.allclose(batched[row], single, atol=1e-4), row


def prepared(tmp_path, movielens_dir, *extra):
    """Smoke params with their data prepared (only the pipeline's ensure_splits builds data)."""
    cfg = smoke_config(tmp_path, movielens_dir, *extra)
    ensure_splits(cfg)
    return cfg


def test_summaries_written_and_rerun_makes_no_model_call(tmp_path, movielens_dir):
    with pytest.raises(DataMissingError, match="run `llmtrsr data"):  # the stage builds no data
        summarize_split(smoke_config(tmp_path, movielens_dir), "test", "hierarchical")
    cfg = prepared(tmp_path, movielens_dir)
    first = summarize_split(cfg, "test", "hierarchical", progress=False)
    assert first["model_calls"] > 0 and first["users"] == 3
    frame = load_summaries(cfg, "test", "hierarchical")
    assert list(frame.columns[:3]) == ["user_id", "paradigm", "n_items"]
    assert (frame["n_blocks"] == 2).all() and frame["layers"].map(len).eq(2).all()
    assert summaries_path(cfg, "test", "hierarchical").with_suffix(".json").is_file()
    second = summarize_split(cfg, "test", "hierarchical", progress=False)
    assert second["model_calls"] == 0 and second["model_loaded"] is False
    assert second["cache_hits"] == second["calls_requested"] == first["calls_requested"]
    pd.testing.assert_frame_equal(frame, load_summaries(cfg, "test", "hierarchical"))


def test_summaries_cut_at_max_new_tokens_are_counted(tmp_path, movielens_dir):
    """A random tiny model never emits its end token: every call stops at max_new_tokens and is
    counted as cut, in the summary record and in the recommender's prompt counts."""
    from llmtrsr_utils.models import load_tokenizer
    from llmtrsr_utils.recommend import resolve, split_prompts

    cfg = prepared(tmp_path, movielens_dir)
    record = summarize_split(cfg, "test", "hierarchical", progress=False)
    frame = load_summaries(cfg, "test", "hierarchical")
    assert record["calls_cut_at_max_new_tokens"] == record["calls_requested"] == 9  # 3 x (2 + 1)
    assert record["final_summaries_cut"] == 3 and frame["final_summary_cut"].all()
    assert record["flags"]["hit_max_new_tokens"] == 9
    assert all(any(f.endswith("hit_max_new_tokens") for f in flags) for flags in frame["flags"])
    assert record["prompt_format"] == "plain" and record["format_version"] == 2
    _, counts = split_prompts(resolve(cfg, "llmtrsr-hierarchical"), "test",
                              load_tokenizer("tiny-random-llama"))
    assert counts["summaries_cut_at_max_new_tokens"] == 3


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmtrsr_utils.cli", *args]


def test_kill_nine_mid_run_then_resume(tmp_path, movielens_dir):
    overrides = smoke_overrides(tmp_path, movielens_dir,
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}",
                                "summarizer.batch_size=1", "summarizer.max_new_tokens=24",
                                "data.n_train_users=16", "data.max_history=15")
    args = cli("summarize", "--params", str(SMOKE), "--split", "train", "--paradigm",
               "hierarchical", "--no-progress", *[x for o in overrides for x in ("--set", o)])
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    db = tmp_path / "gen.sqlite"
    deadline = time.time() + 120
    done_before_kill = 0
    while time.time() < deadline and process.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as connection:
                    done_before_kill = connection.execute(
                        "SELECT COUNT(*) FROM generations").fetchone()[0]
            except sqlite3.OperationalError:
                done_before_kill = 0
            if done_before_kill >= 5:
                break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    cache = GenerationCache(db)
    assert cache.integrity_ok()
    stored = cache.count()
    cache.close()
    assert stored >= done_before_kill
    output = summaries_path(load_config(SMOKE, overrides), "train", "hierarchical")
    assert output.name.startswith("movielens_train_hierarchical_tiny-random-llama_")
    assert not output.exists()

    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    frame = pd.read_parquet(output)
    assert len(frame) == 16 and (frame["n_blocks"] == 3).all()
    assert frame["final_summary"].map(lambda s: isinstance(s, str)).all()
    record = pd.read_json(output.with_suffix(".json"), typ="series")
    # Every call that finished before the kill is answered by the store, none is generated
    # again: the store grows by exactly the rerun's model calls.
    assert record["cache_hits"] >= stored
    cache = GenerationCache(db)
    assert cache.integrity_ok()
    assert cache.count() == stored + record["model_calls"]
    cache.close()


def test_runs_under_accelerate_launch(tmp_path, movielens_dir):
    overrides = smoke_overrides(tmp_path, movielens_dir,
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}")
    args = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "llmtrsr_utils.cli", "summarize", "--params", str(SMOKE), "--split", "valid",
            "--paradigm", "recurrent", "--no-progress",
            *[x for o in overrides for x in ("--set", o)]]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "recurrent    valid" in result.stdout
    assert len(list((tmp_path / "summaries").glob(
        "movielens_valid_recurrent_tiny-random-llama_*.parquet"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_batched_and_unbatched_text_agree_on_real_models(tmp_path, movielens_dir, model):
    cfg = smoke_config(tmp_path, movielens_dir, f"summarizer.model={model}",
                       "summarizer.max_new_tokens=24")
    summarizer = Summarizer(cfg, "movies", progress=False)
    prompts = [summarizer.segment(history(n))[0].fitted.prompt for n in (2, 4, 5)]
    encoded = [summarizer.formatter.encode(p) for p in prompts]
    batched = summarizer.generator.generate_ids(encoded)
    single = [summarizer.generator.generate_reference(e) for e in encoded]  # generate, batch 1
    assert [r.text for r in batched] == [r.text for r in single]
    assert all(r.text for r in batched)


def test_shared_prefix_path_matches_left_padding(tmp_path, movielens_dir):
    """Reusing the batch's shared-prefix KV cache must not change what is generated."""
    from llmtrsr_utils import generation

    cfg = smoke_config(tmp_path, movielens_dir, "summarizer.max_new_tokens=12")
    summarizer = Summarizer(cfg, "movies", progress=False)
    encoded = [summarizer.formatter.encode(summarizer.segment(history(n))[0].fitted.prompt)
               for n in (1, 2, 3, 5)]
    assert generation.shared_prefix_length(encoded) >= generation.MIN_SHARED_PREFIX
    with_prefix = summarizer.generator.generate_ids(encoded)
    original = generation.MIN_SHARED_PREFIX
    generation.MIN_SHARED_PREFIX = 10**9  # force plain left padding
    try:
        left_padded = summarizer.generator.generate_ids(encoded)
    finally:
        generation.MIN_SHARED_PREFIX = original
    single = [summarizer.generator.generate_reference(e) for e in encoded]
    assert [r.text for r in with_prefix] == [r.text for r in left_padded] == \
        [r.text for r in single]
    assert [r.new_tokens for r in with_prefix] == [r.new_tokens for r in single]


def test_static_greedy_loop_equals_generate_token_for_token(tmp_path, movielens_dir):
    """The hand-written static-cache loop (the greedy default) against transformers' generate on
    the same [prefix | padding | suffix] batch: identical new tokens, end tokens included; a
    model with a logits processor in its generation config falls back to generate."""
    from llmtrsr_utils import generation

    cfg = smoke_config(tmp_path, movielens_dir, "summarizer.max_new_tokens=10")
    summarizer = Summarizer(cfg, "movies", progress=False)
    generator = summarizer.generator
    encoded = [summarizer.formatter.encode(summarizer.segment(history(n))[0].fitted.prompt)
               for n in (1, 3, 5)]
    model, pad = generator.model, generator.tokenizer.pad_token_id
    assert generation.static_greedy_supported(model)
    for prefix in (0, generation.shared_prefix_length(encoded)):
        ends = generation._end_token_ids(model, generator.tokenizer)
        loop = generation.greedy_static(model, encoded, prefix, pad, 10, ends)
        reference = generator._generate(encoded, prefix, 0)
        assert [row[:len(mine)] for row, mine in zip(reference, loop, strict=True)] == loop
        assert len(loop[0]) == 10 or all(set(row) & ends for row in loop)
    model.generation_config.repetition_penalty = 1.3
    assert not generation.static_greedy_supported(model)


def test_grouped_prefill_keeps_each_row_its_own_tokens(tmp_path, movielens_dir, monkeypatch):
    """Rows prefilled in groups (each padded only to its own longest suffix) and given in no
    particular order: every row's greedy tokens equal ``generate`` at batch 1 on that row alone,
    with and without a shared prefix, so no row reads another group's keys or comes back in
    another row's place."""
    from llmtrsr_utils import generation

    cfg = smoke_config(tmp_path, movielens_dir, "summarizer.max_new_tokens=8")
    summarizer = Summarizer(cfg, "movies", progress=False)
    generator = summarizer.generator
    encoded = [summarizer.formatter.encode(summarizer.segment(history(n))[0].fitted.prompt)
               for n in (3, 1, 5, 2, 4)]
    assert len({len(e) for e in encoded}) == len(encoded)  # every group has its own width
    model, pad = generator.model, generator.tokenizer.pad_token_id
    torch.manual_seed(0)
    with torch.no_grad():  # the tiny model's own init answers one token to everything
        for weight in model.parameters():
            weight.normal_(std=0.5)
    ends = generation._end_token_ids(model, generator.tokenizer)
    alone = [generator._generate([e], 0, 0)[0] for e in encoded]
    assert len({tuple(row) for row in alone}) == len(alone)  # a swapped row would show
    monkeypatch.setattr(generation, "PREFILL_GROUP_ROWS", 2)  # 3 groups: 2 + 2 + 1 rows
    for prefix in (0, generation.shared_prefix_length(encoded)):
        grouped = generation.greedy_static(model, encoded, prefix, pad, 8, ends)
        assert [row[:len(mine)] for row, mine in zip(alone, grouped, strict=True)] == grouped
        assert all(len(row) == 8 or set(row) & ends for row in grouped)


def test_shared_prefix_length_leaves_each_row_a_token():
    from llmtrsr_utils.generation import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 9]]) == 2
    assert shared_prefix_length([[5, 1], [6, 1]]) == 0


def test_two_cpu_processes_share_the_calls_and_the_cache(tmp_path, movielens_dir):
    """torchrun with two CPU processes: each generates its share of every stage's calls into the
    one SQLite cache, no prompt is generated twice (calls made by both == cache rows, also when
    two users share a prompt), the record counts both processes' calls, and a rerun makes none.
    Before, accelerate saw each CPU process as a run of its own and both summarized every user;
    then, with users split, a prompt two users shared could be generated by both processes."""
    import re

    overrides = smoke_overrides(tmp_path, movielens_dir, "data.n_test_users=6",
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}")
    args = ["-m", "llmtrsr_utils.cli", "summarize", "--params", str(SMOKE), "--split", "test",
            "--paradigm", "hierarchical", "--no-progress",
            *[x for o in overrides for x in ("--set", o)]]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
              "--master_port", "29533"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([*launch, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    shares = re.findall(r"process (\d)/2 made (\d+) of the (\d+) model calls", result.stderr)
    assert sorted(p for p, _, _ in shares) == ["1", "2"], result.stderr[-3000:]
    made = [int(c) for _, c, _ in shares]
    total = {int(t) for _, _, t in shares}
    assert total == {sum(made)} and min(made) > 0  # both worked, and the shares add up
    assert GenerationCache(tmp_path / "gen.sqlite").count() == sum(made)
    final = re.findall(r"model calls: (\d+)", result.stdout)
    assert final == [str(sum(made))]  # only the main process writes; its record counts both
    again = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.findall(r"model calls: (\d+)", again.stdout) == ["0"]


def test_two_processes_prepare_the_splits_once(tmp_path, movielens_dir):
    """torchrun with two CPU processes on an empty work dir: the main process writes the splits,
    the other waits and reuses them (one 'reusing' line). Before the fix both wrote the same
    files at once, and on the GPU machine rank 1 read a manifest rank 0 had just removed."""
    overrides = smoke_overrides(tmp_path, movielens_dir)
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", "29534", "-m", "llmtrsr_utils.cli", "data", "--params",
            str(SMOKE), *[x for o in overrides for x in ("--set", o)]]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("already holds these splits; reusing them") == 1, \
        result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 2  # both processes read a complete manifest


def test_summary_switches_change_the_prompt_and_the_decoding(tmp_path, movielens_dir):
    """Issue 22, item 5: summary_style fields appends the fixed form to every summarizer
    prompt (paper: the printed prompts, unchanged); a repetition penalty or an n-gram block
    goes through generate with that processor, enters the cache key only when on, and changes
    the fingerprint only when on."""
    from llmtrsr_utils import generation, prompts
    from llmtrsr_utils.config import ConfigError

    items = ["Title: Heat; Genres: Crime", "Title: Alien; Genres: Horror"]
    paper = prompts.block_summary("movies", items)
    fields = prompts.block_summary("movies", items, "fields")
    assert "Genres: ...\nThemes: ...\nEras: ..." in fields and "Themes: ..." not in paper
    assert fields.replace(prompts.summary_form("movies", "fields"), "") == paper
    for build in (lambda s: prompts.hierarchical_merge("news", ["a", "b"], s),
                  lambda s: prompts.recurrent_update("news", "prior", items, s)):
        assert "Categories: ...\nTopics: ...\nRegions: ..." in build("fields")
        assert "Categories: ..." not in build("paper")
    with pytest.raises(ValueError, match="summary style"):
        prompts.block_summary("movies", items, "poem")

    base = smoke_config(tmp_path, movielens_dir)
    styled = smoke_config(tmp_path, movielens_dir, "summarizer.summary_style=fields")
    blocked = smoke_config(tmp_path, movielens_dir, "summarizer.no_repeat_ngram_size=2",
                           "summarizer.max_new_tokens=24")
    assert len({base.fingerprint(), styled.fingerprint(), blocked.fingerprint()}) == 3
    assert smoke_config(tmp_path, movielens_dir, "summarizer.no_repeat_ngram_size=0"
                        ).fingerprint() == base.fingerprint()
    with pytest.raises(ConfigError, match="repetition_penalty"):
        smoke_config(tmp_path, movielens_dir, "summarizer.repetition_penalty=0.5")
    summarizer = Summarizer(styled, "movies", progress=False)
    assert summarizer.segment(history(3))[0].fitted.prompt.count("Eras: ...") == 1

    plain = generation.GenerationSettings(max_new_tokens=24)
    settings = generation.GenerationSettings(max_new_tokens=24, no_repeat_ngram_size=2)
    assert "no_repeat_ngram_size" not in plain.key_fields()
    assert settings.key_fields()["no_repeat_ngram_size"] == 2
    generator = Summarizer(blocked, "movies", progress=False).generator
    assert generator.settings.no_repeat_ngram_size == 2
    encoded = [generator.formatter.encode(summarizer.segment(history(n))[0].fitted.prompt)
               for n in (2, 4)]
    made = []
    original = generator._generate
    generator._generate = lambda *a: made.append(original(*a)) or made[-1]
    generator.generate_ids(encoded)
    assert made, "an n-gram block must go through generate, not the static loop"
    ends = generation._end_token_ids(generator.model, generator.tokenizer)
    for prompt, new in zip(encoded, made[0], strict=True):
        new = new[:next((i for i, t in enumerate(new) if t in ends), len(new))]
        ids = [*prompt, *new]
        bigrams = [tuple(ids[i:i + 2]) for i in range(len(prompt) - 1, len(ids) - 1)]
        assert len(new) > 4 and len(bigrams) == len(set(bigrams)), "a bigram came twice"
    loop = generation.greedy_static(generator.model, encoded, 0,
                                    generator.tokenizer.pad_token_id, 24, ends)
    assert loop != made[0]  # the random model repeats itself unless blocked


def test_corrupted_summaries_and_cache_are_remade_and_nothing_else_is_lost(
        tmp_path, movielens_dir, caplog):
    """Issue 23: a truncated summary parquet, a garbled summary record and an unreadable
    generation cache each gave a traceback. Now: the summaries are made again from the cache
    (no model call) with a warning; an unreadable cache is moved aside (kept for salvage) and a
    new one started; the other split's summaries and the splits are untouched."""
    from llmtrsr_utils.pipeline import ensure_summaries
    from llmtrsr_utils.summarize import SummariesMissingError, summaries_current

    cfg = prepared(tmp_path, movielens_dir)
    for split in ("valid", "test"):
        summarize_split(cfg, split, "hierarchical", progress=False)
    path = summaries_path(cfg, "test", "hierarchical")
    good = load_summaries(cfg, "test", "hierarchical")
    other = summaries_path(cfg, "valid", "hierarchical")
    other_bytes, split_bytes = other.read_bytes(), (cfg.data_output_dir / "test.parquet"
                                                    ).read_bytes()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with pytest.raises(SummariesMissingError, match="unreadable"):
        load_summaries(cfg, "test", "hierarchical")
    with caplog.at_level("WARNING", logger="llmtrsr"):
        assert not summaries_current(cfg, "test", "hierarchical")
        assert "does not match the sha256" in caplog.text
        ensure_summaries(cfg, "test", "hierarchical", progress=False)
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["model_calls"] == 0 and record["sha256"]  # remade from the cache
    pd.testing.assert_frame_equal(load_summaries(cfg, "test", "hierarchical"), good)
    path.with_suffix(".json").write_text('{"format_version": 1, "spl')  # garbled record
    caplog.clear()
    with caplog.at_level("WARNING", logger="llmtrsr"):
        assert not summaries_current(cfg, "test", "hierarchical")
    assert "unreadable" in caplog.text
    ensure_summaries(cfg, "test", "hierarchical", progress=False)
    assert summaries_current(cfg, "test", "hierarchical")
    # An unreadable generation cache: moved aside, a new one made, the summaries remade.
    cache = Path(cfg.summarizer.cache_file)
    cache.write_bytes(b"this is not a database" * 100)
    path.unlink()
    caplog.clear()
    with caplog.at_level("WARNING", logger="llmtrsr"):
        made = summarize_split(cfg, "test", "hierarchical", progress=False)
    assert "generation cache is unreadable" in caplog.text and made["model_calls"] > 0
    assert list(cache.parent.glob(f"{cache.name}.corrupt-*"))
    assert GenerationCache(cache).integrity_ok()
    pd.testing.assert_frame_equal(load_summaries(cfg, "test", "hierarchical"), good)
    assert other.read_bytes() == other_bytes  # nothing else touched
    assert (cfg.data_output_dir / "test.parquet").read_bytes() == split_bytes
