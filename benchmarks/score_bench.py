"""Candidate scoring throughput: the authors' way, dynamic padding, the prefix-cache scorer and
the prefix-tree scorer, all on the same users.

One run, same model, same users and prompts (LLM-TRSR hierarchical prompts of the test split,
each user's 1 + 20 candidates), every path timed on every user:

(a) authors: each prompt right-padded to ``max_length`` (2048), batch 1, logits at every
    position, the model's own logits (their test.py);
(b) dynamic: left padding to the batch's longest prompt, logits at the last position only, at
    the same batch as the tree scorer: one user's candidates per forward;
(c) prefix cache: a user's shared prefix run once, its KV cache repeated for the candidates'
    suffixes (``score_fast``);
(d) tree: a user's prefix once and every suffix behind it in one packed row with a tree
    attention mask (``score_tree``, the kit's default), one user per forward.

Rates are candidates/s. Prints ``ratio_vs_authors X``, ``ratio_vs_dynamic X`` (tree over
dynamic at equal batch), ``ratio_vs_prefix_cache X``, ``max_abs_diff X`` (every path against
one unpadded forward per prompt), ``floor_ratio X`` (the token-count floor: tokens dynamic
padding runs over tokens the tree runs) and ``flop_share X``: the tree scorer's achieved
float32 rate (2 x non-embedding parameters x tokens) as a share of a plain float32 matrix
product's rate measured in the same run. Goals with smollm2-135m on 2 cores: tree / dynamic
>= 7 and flop_share >= 0.75.

    .venv/bin/python benchmarks/score_bench.py --users 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from device_rates import matmul_rate, peak_memory_line

from llmtrsr_utils.config import load_config
from llmtrsr_utils.models import load_causal_lm
from llmtrsr_utils.packing import build_tree
from llmtrsr_utils.pipeline import ensure_system_inputs
from llmtrsr_utils.recommend import answer_token_ids, resolve, split_prompts
from llmtrsr_utils.scoring import (
    score_dynamic,
    score_fast,
    score_padded_full,
    score_reference,
    score_tree,
)


def timed(function) -> tuple[np.ndarray, float]:
    began = time.perf_counter()
    scores = function()
    return np.concatenate(scores), time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--users", type=int, default=2)
    args = parser.parse_args()

    run_cfg = load_config(args.params, args.overrides)
    ensure_system_inputs(run_cfg, "llmtrsr-hierarchical", ("test",), progress=False)
    run = resolve(run_cfg, "llmtrsr-hierarchical")
    cfg = run.cfg
    rec = cfg.recommender
    model, tokenizer = load_causal_lm(rec.model, dtype=rec.dtype, cache_dir=cfg.cache_dir)
    users, _ = split_prompts(run, "test", tokenizer, max_users=args.users)
    yes_id, no_id = answer_token_ids(tokenizer, users[0].prompts[0], rec.answer_words)
    per_user = [[tokenizer(p)["input_ids"] for p in u.prompts] for u in users]
    pad = tokenizer.pad_token_id
    n_candidates = sum(map(len, per_user))
    lengths = [len(r) for rows in per_user for r in rows]
    trees = [build_tree(rows) for rows in per_user]
    per_batch = len(per_user[0])  # one user's candidates per forward, on every batched path
    print(f"model {rec.model}, {len(users)} users, {n_candidates} candidates, prompts "
          f"{min(lengths)}-{max(lengths)} tokens, shared prefix "
          f"{min(t.prefix_length for t in trees)}-{max(t.prefix_length for t in trees)} "
          f"tokens, batch {per_batch} candidates, torch threads {torch.get_num_threads()}")
    score_tree(model, per_user[:1], yes_id, no_id, pad)  # warm-up

    reference = np.concatenate([score_reference(model, rows, yes_id, no_id)
                                for rows in per_user])
    paths = {
        "authors": lambda: [score_padded_full(model, rows, yes_id, no_id, pad, rec.max_length)
                            for rows in per_user],
        "dynamic": lambda: [score_dynamic(model, rows, yes_id, no_id, pad, per_batch)
                            for rows in per_user],
        "prefix cache": lambda: [score_fast(model, rows, yes_id, no_id, pad, per_batch)
                                 for rows in per_user],
        "tree": lambda: score_tree(model, per_user, yes_id, no_id, pad, users_per_batch=1),
    }
    rates, diffs, seconds = {}, {}, {}
    for name, function in paths.items():
        scores, seconds[name] = timed(function)
        rates[name] = n_candidates / seconds[name]
        diffs[name] = float(np.abs(scores - reference).max())
        print(f"{name:<13} {rates[name]:7.2f} candidates/s  (max |diff| vs one forward per "
              f"prompt {diffs[name]:.1e})")

    embedding = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - embedding
    tree_tokens = sum(t.length for t in trees)
    dynamic_tokens = sum(len(rows) * max(map(len, rows)) for rows in per_user)
    achieved = 2 * body * tree_tokens / seconds["tree"]
    matmul = matmul_rate(device=str(model.device), dtype=model.dtype)
    print(f"tree scorer {achieved / 1e9:.1f} GFLOP/s; {model.dtype} matmul on {model.device} "
          f"{matmul / 1e9:.1f} GFLOP/s; "
          f"tokens: dynamic {dynamic_tokens}, tree {tree_tokens}")
    print(f"ratio_vs_authors {rates['tree'] / rates['authors']:.1f}")
    print(f"ratio_vs_dynamic {rates['tree'] / rates['dynamic']:.2f}")
    print(f"ratio_vs_prefix_cache {rates['tree'] / rates['prefix cache']:.2f}")
    print(f"max_abs_diff {max(diffs.values()):.2e}")
    print(f"floor_ratio {dynamic_tokens / tree_tokens:.2f}")
    print(f"flop_share {achieved / matmul:.3f}")
    if peak_memory_line():
        print(peak_memory_line())


if __name__ == "__main__":
    main()
