"""Batched summarization vs one generate call per block at batch 1 (the authors' way).

Same users, same model, greedy, same block prompts (hierarchical layer 0). The baseline is
transformers' ``generate`` at batch 1 per block (``CachedGenerator.generate_reference``); the
kit's path is ``generate_ids`` over batches sorted by length (the static-cache greedy loop).
The batched path is timed over ``--repeats`` passes (default 3) and the median taken: one
pass lasts about 30 s, short enough for this 2-core VM's noise to move it by 10% or more (28 to
38 s for the same code in one session), while the batch-1 path is 64 calls over about 4 minutes
and runs once. Prints tokens/s of both paths, the share of identical texts (left padding can
flip a near-tie; the first divergence is shown) and a line `ratio X` = batched tokens/s /
batch-1 tokens/s.
Run from the repo root:

    .venv/bin/python benchmarks/summarize_bench.py   # 32 users, 64 prompts, batch 64

When the profile's split has fewer users than ``--users`` (``params/default.yaml`` has 10 test
users), the benchmark draws more into its own work dir. Goal (issue 12): ratio >= 8 with
identical greedy texts.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from llmtrsr_utils.config import load_config
from llmtrsr_utils.summarize import Summarizer, split_histories


def first_divergence(a: str, b: str) -> str:
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
              min(len(a), len(b)))
    window = slice(max(0, at - 30), at + 30)
    return f"at char {at}: batch-1 {a[window]!r} | batched {b[window]!r}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--split", default="test")
    parser.add_argument("--users", type=int, default=32, help="users (2 block prompts each "
                        "in the default profile)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="batched passes (median "
                        "taken; the batch-1 pass runs once)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.params, args.overrides)
    available = getattr(cfg.data, f"n_{args.split}_users")
    if available < args.users:  # fill the batch: the profile's own split is too small
        # Its own work dir, so the profile's splits and caches are left as they are.
        extra = [f"work_dir={cfg.work_path / 'summarize_bench'}",
                 f"data.n_{args.split}_users={args.users}"]
        print(f"{args.params} has {available} {args.split} users; the benchmark draws "
              f"{args.users} into {extra[0].split('=', 1)[1]}")
        cfg = load_config(args.params, [*args.overrides, *extra])
    users, domain = split_histories(cfg, args.split)
    users = users[:args.users]
    summarizer = Summarizer(cfg, domain, progress=False)
    generator = summarizer.generator
    prompts = [block.fitted.prompt for user in users for block in summarizer.segment(user)]
    encoded = [summarizer.formatter.encode(p) for p in prompts]
    print(f"model {cfg.summarizer.model}, {len(users)} users, {len(prompts)} block prompts "
          f"({min(map(len, encoded))}-{max(map(len, encoded))} tokens), max_new_tokens "
          f"{cfg.summarizer.max_new_tokens}, torch threads {torch.get_num_threads()}")
    generator.generate_ids([encoded[0][:16]])  # warm-up: load weights, first-call overheads

    began = time.perf_counter()
    single = [generator.generate_reference(ids) for ids in encoded]
    single_seconds = time.perf_counter() - began
    single_tokens = sum(r.new_tokens for r in single)

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    passes: list[float] = []
    texts_per_pass: list[list[str]] = []
    for _ in range(args.repeats):
        batched: dict[int, object] = {}
        began = time.perf_counter()
        for start in range(0, len(order), args.batch_size):
            chunk = order[start:start + args.batch_size]
            batched.update(zip(chunk, generator.generate_ids([encoded[i] for i in chunk]),
                               strict=True))
        passes.append(time.perf_counter() - began)
        batched_results = [batched[i] for i in range(len(encoded))]
        texts_per_pass.append([r.text for r in batched_results])
    if any(texts != texts_per_pass[0] for texts in texts_per_pass):
        raise SystemExit("the batched passes disagree: greedy generation is not deterministic")
    batched_seconds = statistics.median(passes)
    batched_tokens = sum(r.new_tokens for r in batched_results)

    same = [a.text == b.text for a, b in zip(single, batched_results, strict=True)]
    single_rate = single_tokens / single_seconds
    batched_rate = batched_tokens / batched_seconds
    print(f"batch-1 (authors): {single_tokens} tokens in {single_seconds:.1f} s = "
          f"{single_rate:.1f} tokens/s")
    print(f"batched (size {args.batch_size}, by length): {batched_tokens} tokens in "
          f"{batched_seconds:.1f} s (median of {len(passes)} passes: "
          f"{', '.join(f'{p:.1f}' for p in passes)} s) = {batched_rate:.1f} tokens/s")
    print(f"identical texts: {sum(same)}/{len(same)} = {sum(same) / len(same):.3f}")
    if not all(same):
        index = same.index(False)
        print(f"first divergence (prompt {index}) "
              f"{first_divergence(single[index].text, batched_results[index].text)}")
    print(f"ratio {batched_rate / single_rate:.2f}")
    if torch.cuda.is_available():
        print(f"peak_gpu_memory_gib {torch.cuda.max_memory_allocated() / 2**30:.2f}")


if __name__ == "__main__":
    main()
