"""Candidate scoring throughput: the authors' way vs dynamic padding vs the fast scorer.

One run, same model, same users and prompts (LLM-TRSR hierarchical prompts of the test split):

(a) authors: each prompt padded to ``max_length`` (2048), batch 1, logits at every position;
(b) dynamic: left padding to the batch's longest prompt, batches of ``--batch-size``;
(c) fast: a user's shared prefix computed once, its KV cache reused, logits at one position.

(a) is slow, so it runs on the first ``--authors-users`` users only; rates are candidates/s.
Prints ``ratio_vs_authors X``, ``ratio_vs_dynamic X``, ``max_abs_diff X`` (c against a and b)
and ``flop_share X``: the fast scorer's achieved float32 rate (2 x non-embedding parameters x
tokens processed) as a share of a plain float32 matrix product's rate measured in the same run.
Goals with smollm2-135m on 2 cores: (c)/(a) >= 50, (c)/(b) >= 5, difference <= 1e-4.

    .venv/bin/python benchmarks/score_bench.py --users 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from llmtrsr_utils.config import load_config
from llmtrsr_utils.models import load_causal_lm
from llmtrsr_utils.recommend import answer_token_ids, split_prompts, system_config
from llmtrsr_utils.scoring import (
    score_dynamic,
    score_fast,
    score_padded_full,
    shared_prefix_length,
)


def matmul_rate(size: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--authors-users", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8, help="dynamic padding batch size")
    args = parser.parse_args()

    cfg = system_config(load_config(args.params, args.overrides), "llmtrsr-hierarchical")
    rec = cfg.recommender
    model, tokenizer = load_causal_lm(rec.model, dtype=rec.dtype, cache_dir=cfg.cache_dir)
    users, _ = split_prompts(cfg, "test", tokenizer, max_users=args.users)
    yes_id, no_id = answer_token_ids(tokenizer, users[0].prompts[0], rec.answer_words)
    per_user = [[tokenizer(p)["input_ids"] for p in u.prompts] for u in users]
    pad = tokenizer.pad_token_id
    n_cands = sum(map(len, per_user))
    lengths = [len(r) for rows in per_user for r in rows]
    prefixes = [shared_prefix_length(rows) for rows in per_user]
    print(f"model {rec.model}, {len(users)} users, {n_cands} candidates, prompts "
          f"{min(lengths)}-{max(lengths)} tokens, shared prefix {min(prefixes)}-{max(prefixes)} "
          f"tokens, torch threads {torch.get_num_threads()}")
    score_fast(model, per_user[0][:2], yes_id, no_id, pad)  # warm-up

    authors_rows = [r for rows in per_user[:args.authors_users] for r in rows]
    began = time.perf_counter()
    authors = score_padded_full(model, authors_rows, yes_id, no_id, pad, rec.max_length)
    authors_rate = len(authors_rows) / (time.perf_counter() - began)

    began = time.perf_counter()
    dynamic = np.concatenate([score_dynamic(model, rows, yes_id, no_id, pad, args.batch_size)
                              for rows in per_user])
    dynamic_rate = n_cands / (time.perf_counter() - began)

    began = time.perf_counter()
    fast = np.concatenate([score_fast(model, rows, yes_id, no_id, pad, rec.score_batch_size)
                           for rows in per_user])
    fast_seconds = time.perf_counter() - began
    fast_rate = n_cands / fast_seconds

    embedding = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - embedding
    tokens = sum(p + sum(len(r) - p for r in rows) for p, rows in zip(prefixes, per_user,
                                                                       strict=True))
    achieved = 2 * body * tokens / fast_seconds
    reference = matmul_rate()
    print(f"(a) authors (padded to {rec.max_length}, batch 1, all logits): "
          f"{authors_rate:.2f} candidates/s on {len(authors_rows)} candidates")
    print(f"(b) dynamic padding, batch {args.batch_size}: {dynamic_rate:.2f} candidates/s")
    print(f"(c) fast (shared prefix, one logit row): {fast_rate:.2f} candidates/s")
    print(f"fast scorer: {achieved / 1e9:.1f} GFLOP/s; float32 matmul: {reference / 1e9:.1f} "
          f"GFLOP/s")
    print(f"ratio_vs_authors {fast_rate / authors_rate:.1f}")
    print(f"ratio_vs_dynamic {fast_rate / dynamic_rate:.2f}")
    diff = max(np.abs(fast[:len(authors)] - authors).max(), np.abs(fast - dynamic).max())
    print(f"max_abs_diff {diff:.2e}")
    print(f"flop_share {achieved / reference:.3f}")


if __name__ == "__main__":
    main()
