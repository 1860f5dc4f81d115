"""Notebook 08: what summarization buys, measured (the paper's motivation).

For each system, on the same users: prompt tokens per example (the fitted prompts the recommender
reads), SFT seconds per optimizer step (a few steps of the real trl trainer, nothing saved),
scoring candidates per second (the fast scorer) and peak memory. Each system is measured in its
own subprocess so that its peak memory is its own: the process's peak resident set on CPU
(``ru_maxrss``), ``torch.cuda.max_memory_allocated`` on a GPU. Rows go to
``<work_dir>/efficiency/efficiency.parquet`` with the params and device that produced them.

:func:`prompt_growth` adds the curve behind the method: TALLRec's prompt grows with every item of
history while LLM-TRSR's stays flat, against the model's context limit.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmtrsr_utils import systems
from llmtrsr_utils.artifacts import git_commit, library_versions, write_parquet
from llmtrsr_utils.config import Config, load_config, override_list
from llmtrsr_utils.results import upsert


def systems_compared() -> list[str]:
    """The LLM systems whose cost is measured: every registered one (LLM-TRSR with each
    paradigm, TALLRec), from the registry of systems."""
    return systems.names("llm")

log = logging.getLogger("llmtrsr")

RESULT_MARK = "EFFICIENCY_RESULT "


def efficiency_path(cfg: Config) -> Path:
    return cfg.work_path / "efficiency" / "efficiency.parquet"


def prompt_growth_path(cfg: Config) -> Path:
    return cfg.work_path / "efficiency" / "prompt_growth.parquet"


def _peak_memory_gib(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure_system(cfg: Config, system: str, *, n_users: int, sft_steps: int) -> dict[str, Any]:
    """Measure one system in this process (call through :func:`measure` for clean peaks)."""
    from transformers import TrainerCallback

    from llmtrsr_utils.models import default_device, load_model
    from llmtrsr_utils.pipeline import ensure_system_inputs
    from llmtrsr_utils.recommend import answer_token_ids, build_trainer, resolve, split_prompts
    from llmtrsr_utils.scoring import score_llm

    ensure_system_inputs(cfg, system, ("train", "test"), progress=False)
    run = resolve(cfg, system)
    rec = run.cfg.recommender
    device = default_device()
    model, tokenizer = load_model(rec, cache_dir=cfg.cache_dir)
    users, counts = split_prompts(run, "test", tokenizer, max_users=n_users)
    lengths = np.array([len(tokenizer(p)["input_ids"]) for u in users for p in u.prompts])
    row: dict[str, Any] = {"system": system, "device": device, "users": len(users),
                           "prompt_tokens_mean": float(lengths.mean()),
                           "prompt_tokens_max": int(lengths.max()),
                           "prompt_summaries_shortened": counts["summaries_shortened"],
                           "prompt_recent_items_dropped": counts["recent_items_dropped"]}

    # Scoring first, so its peak is not the trainer's.
    yes_id, no_id = answer_token_ids(tokenizer, users[0].prompts[0], rec.answer_words)
    scores = score_llm(model, tokenizer, users, yes_id, no_id, rec)
    row["candidates_per_second"] = scores.scores.size / scores.seconds
    row["scoring_peak_memory_gib"] = _peak_memory_gib(device)
    del model
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as scratch:
        trainer, info = build_trainer(run, Path(scratch), progress=False,
                                      max_steps=sft_steps + 1, save_strategy="no")
        timer = StepTimes()
        trainer.add_callback(timer)
        began = time.perf_counter()
        trainer.train()
    steps = np.diff([began, *timer.times])
    # The first step pays for warm-up (allocation, autograd graph); the rest are the cost.
    row["sft_seconds_per_step"] = float(steps[1:].mean()) if len(steps) > 1 else float(steps[0])
    row["sft_tokens_per_step"] = rec.global_batch_size * float(lengths.mean())
    row["peak_memory_gib"] = _peak_memory_gib(device)
    row["train_examples"] = info["examples"]
    return row


def measure(cfg: Config, params_file: str | Path, overrides: str | Sequence[str] = (),
            system_list: Sequence[str] | None = None, *, n_users: int = 2,
            sft_steps: int = 3) -> pd.DataFrame:
    """Measure each system (default: :func:`systems_compared`) in a fresh subprocess; add the
    rows to the efficiency table (replacing earlier rows of the same system and params) and
    return them."""
    rows = []
    for system in system_list or systems_compared():
        command = [sys.executable, "-m", "llmtrsr_utils.efficiency", "--params",
                   str(params_file), "--system", system, "--users", str(n_users),
                   "--steps", str(sft_steps)]
        for override in override_list(overrides):
            command += ["--set", override]
        log.info("measuring %s", system)
        done = subprocess.run(command, capture_output=True, text=True)
        marked = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
        if done.returncode != 0 or not marked:
            raise RuntimeError(f"efficiency measurement of {system} failed (exit "
                               f"{done.returncode}):\n{done.stderr[-3000:]}")
        rows.append(json.loads(marked[-1][len(RESULT_MARK):]))
    table = pd.DataFrame(rows)
    table["params_hash"] = cfg.fingerprint()
    table["recommender"] = cfg.recommender.model
    table["library_versions"] = json.dumps(library_versions())
    table["git_commit"] = git_commit()
    upsert(efficiency_path(cfg), table, keys=("system", "params_hash"))
    return table


def prompt_growth(cfg: Config, lengths: Sequence[int] = (1, 5, 10, 20, 40, 80, 160, 320)
                  ) -> pd.DataFrame:
    """Prompt tokens for histories of each length: TALLRec (every item) against LLM-TRSR
    (a test user's real summary and the ``item_num`` most recent items). Histories are drawn
    from the catalogue with the run's seed; nothing is shortened, to show the raw growth.
    Written to ``<work_dir>/efficiency/prompt_growth.parquet`` for `llmtrsr figures`."""
    from llmtrsr_utils.datasets.splits import load_items, read_manifest
    from llmtrsr_utils.models import load_model_tokenizer
    from llmtrsr_utils.pipeline import ensure_splits, summaries_for
    from llmtrsr_utils.recommend import RecommendationPrompts, resolve

    data_dir = ensure_splits(cfg)
    domain = read_manifest(data_dir)["domain"]
    texts = load_items(data_dir)["text"].tolist()
    rec = cfg.recommender
    tokenizer = load_model_tokenizer(rec, cache_dir=cfg.cache_dir)
    llmtrsr = systems.paradigm_system(systems.HIERARCHICAL)  # LLM-TRSR, against TALLRec
    summary = next(iter(summaries_for(resolve(cfg, llmtrsr).cfg, "test", systems.HIERARCHICAL,
                                      progress=False).values()))
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for n in lengths:
        history = [texts[i] for i in rng.choice(len(texts), size=n, replace=n > len(texts))]
        candidate = history.pop()
        for system in (systems.TALLREC, llmtrsr):
            builder = RecommendationPrompts(resolve(cfg, system).cfg, tokenizer, domain)
            if system == systems.TALLREC:
                prompt = builder.render(None, history, candidate)
            else:
                recent = history[-rec.item_num:] if rec.item_num else []
                prompt = builder.render(summary, recent, candidate)
            rows.append({"history_length": n, "system": system,
                         "tokens": len(builder.tokens(prompt)), "limit": builder.limit})
    curve = pd.DataFrame(rows)
    write_parquet(curve, prompt_growth_path(cfg))
    return curve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure one system (used by measure()).")
    parser.add_argument("--params", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--system", required=True, choices=systems_compared())
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    cfg = load_config(args.params, args.overrides)
    row = measure_system(cfg, args.system, n_users=args.users, sft_steps=args.steps)
    print(RESULT_MARK + json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
