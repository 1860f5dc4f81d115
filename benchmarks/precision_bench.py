"""Mixed precision on the CPU: ``recommender.mixed_precision: bf16`` against float32, for the
SFT step and for scoring, on the laptop profile's real prompts.

One run, the same model, users, prompts, LoRA settings and batch (the profile's: 2 user rows of
1 + 6 tree-packed examples per micro-step), only the precision differs:

(a) float32: what the kit runs on a CPU by default (``mixed_precision: none``, activation
    checkpointing on);
(b) bf16: the same trainer and scorer with bfloat16 autocast over float32 weights;
(c) bf16 without activation checkpointing (``gradient_checkpointing: false``, the laptop
    profile's training: 2 rows of at most ~600 tokens fit without it), training only.

Timed: ``--steps`` optimizer steps after one warm-up step (nothing saved), then the test
split's first ``--users`` users scored with the tree scorer (1 + 20 candidates each). Prints
the rates of both, then

    sft_ratio X          bf16 / float32 training examples/s (both with checkpointing)
    nockpt_ratio X       bf16 without / with activation checkpointing, examples/s
    laptop_ratio X       bf16 without checkpointing / float32 with it, examples/s
    nockpt_weight_diff X max |LoRA weight| difference between (b) and (c) after the same
                         seeded steps on the same batches (checkpointing only recomputes)
    score_ratio X        bf16 / float32 candidates/s
    loss_diff X          |float32 loss - bf16 loss| on the same batch and LoRA weights (nats)
    max_score_diff X     max |p(yes) float32 - p(yes) bf16| over the scored candidates
    score_spread X       mean over users of the float32 scores' standard deviation
    rank_correlation X   mean over users of the Spearman correlation of the 21 candidates'
                         float32 and bf16 ranks
    same_rank_share X    share of users whose positive keeps its rank among the 21
    bf16_matmul_ratio X  a plain bf16 / float32 matrix product's rate (the hardware's ceiling)

Goal on 2 CPU cores with avx512_bf16 (this machine): sft_ratio >= 1.5 with loss_diff < 0.05,
and laptop_ratio >= 2 with nockpt_weight_diff about 0 (checkpointing changes the time, not the
result).
A CPU without native bf16 shows bf16_matmul_ratio < 1: keep float32 there.

    .venv/bin/python benchmarks/precision_bench.py --params params/laptop.yaml --steps 3

Scores and ranks mean something only for a trained adapter (``--adapter``), e.g. the gate's
``oracle-older`` (``--params params/laptop_gate.yaml --system oracle-older --adapter
work/laptop/adapters/oracle-older_.../checkpoint-144``).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from device_rates import matmul_rate
from sft_bench import StepTimes, seed_lora

from llmtrsr_utils.config import load_config
from llmtrsr_utils.models import load_causal_lm
from llmtrsr_utils.pipeline import ensure_system_inputs
from llmtrsr_utils.recommend import answer_token_ids, build_trainer, resolve, split_prompts
from llmtrsr_utils.scoring import mixed_precision, score_llm, with_adapter

PRECISIONS = ("none", "bf16")


# (name, mixed_precision, gradient_checkpointing) of the trainings timed, in this order.
TRAININGS = (("none", "none", True), ("bf16", "bf16", True), ("bf16-nockpt", "bf16", False))


def with_precision(cfg, precision: str, checkpointing: bool):
    return dataclasses.replace(cfg, recommender=dataclasses.replace(
        cfg.recommender, mixed_precision=precision, dtype="float32",
        gradient_checkpointing=checkpointing))


def train_rate(cfg, system: str, steps: int, out: Path, with_loss: bool
               ) -> tuple[float, float | None, dict[str, torch.Tensor]]:
    """(examples/s over ``steps`` timed steps, loss of the first batch at fixed LoRA weights
    when ``with_loss`` (else None: one forward saved), the LoRA weights after the steps)."""
    trainer, info = build_trainer(resolve(cfg, system), out, progress=False,
                                  max_steps=steps + 1, save_strategy="no", logging_steps=1000)
    loss = fixed_batch_loss(trainer, cfg.recommender) if with_loss else None
    timer = StepTimes()
    trainer.add_callback(timer)
    began = time.perf_counter()
    trainer.train()
    durations = [b - a for a, b in zip([began, *timer.times], timer.times, strict=False)][1:]
    examples = info["batch"]["global_batch_size"]
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    return examples / (sum(durations) / len(durations)), loss, lora


def fixed_batch_loss(trainer, rec) -> float:
    """The loss of the first micro-batch at seeded LoRA weights (restored afterwards), under
    the autocast accelerate wraps a training step's forward in (``scoring.mixed_precision``)."""
    saved = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    seed_lora(trainer.model)
    trainer.model.eval()
    dataset = trainer.train_dataset
    batch = trainer.data_collator([dataset[i] for i in range(trainer.args.train_batch_size)])
    items = trainer._get_num_items_in_batch([batch], trainer.model.device)
    with torch.no_grad(), mixed_precision(rec, trainer.model.device):
        loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=items).item()
    with torch.no_grad():
        for name, parameter in trainer.model.named_parameters():
            if name in saved:
                parameter.copy_(saved[name])
    trainer.model.train()
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/laptop.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--system", default="tallrec",
                        help="a trained system with no summarizer call (tallrec: the longest "
                             "prompts; oracle-older; null-summary)")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    parser.add_argument("--users", type=int, default=4, help="test users scored")
    parser.add_argument("--adapter", default=None,
                        help="a trained LoRA checkpoint of --system to score with (an untrained "
                             "model's p(yes) barely differs between candidates, so its ranks "
                             "say nothing)")
    args = parser.parse_args()

    base = load_config(args.params, args.overrides)
    ensure_system_inputs(base, args.system, ("train", "test"), progress=False)
    sft, losses, weights, scores, score_rates = {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, precision, checkpointing in TRAININGS:
            cfg = with_precision(base, precision, checkpointing)
            sft[name], losses[name], weights[name] = train_rate(
                cfg, args.system, args.steps, Path(scratch) / name,
                with_loss=name in PRECISIONS)
    run = resolve(base, args.system)
    rec = run.cfg.recommender
    model, tokenizer = load_causal_lm(rec.model, dtype="float32", cache_dir=base.cache_dir)
    if args.adapter:
        model = with_adapter(model, Path(args.adapter), rec.merge_adapter, keep_base=False)
    users, _ = split_prompts(run, "test", tokenizer, max_users=args.users)
    yes_id, no_id = answer_token_ids(tokenizer, users[0].prompts[0], rec.answer_words)
    score_llm(model, tokenizer, users[:1], yes_id, no_id, rec)  # warm-up
    for precision in PRECISIONS:
        own = dataclasses.replace(rec, mixed_precision=precision)
        found = score_llm(model, tokenizer, users, yes_id, no_id, own)
        scores[precision] = found.scores
        score_rates[precision] = found.scores.size / found.seconds
        print(f"{precision:<5} SFT {sft[precision]:6.2f} examples/s  (loss {losses[precision]:.4f})"
              f"  scoring {score_rates[precision]:6.2f} candidates/s")
    print(f"bf16  SFT {sft['bf16-nockpt']:6.2f} examples/s without activation checkpointing")
    ranks = {p: s.argsort(axis=1).argsort(axis=1) for p, s in scores.items()}
    spearman = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(ranks["none"], ranks["bf16"],
                                                                 strict=True)])
    positive = {p: (s[:, 1:] >= s[:, :1]).sum(axis=1) for p, s in scores.items()}
    full_rate = matmul_rate(dtype=torch.float32)
    half_rate = matmul_rate(dtype=torch.bfloat16)
    print(f"system {args.system}, {args.steps} timed steps, {len(users)} test users scored "
          f"{'with ' + args.adapter if args.adapter else 'without adapter'}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"sft_ratio {sft['bf16'] / sft['none']:.2f}")
    print(f"nockpt_ratio {sft['bf16-nockpt'] / sft['bf16']:.2f}")
    print(f"laptop_ratio {sft['bf16-nockpt'] / sft['none']:.2f}")
    drift = max((weights["bf16"][name] - w).abs().max().item()
                for name, w in weights["bf16-nockpt"].items())
    print(f"nockpt_weight_diff {drift:.2e}")
    print(f"score_ratio {score_rates['bf16'] / score_rates['none']:.2f}")
    print(f"loss_diff {abs(losses['bf16'] - losses['none']):.2e}")
    print(f"max_score_diff {np.abs(scores['bf16'] - scores['none']).max():.2e}")
    print(f"score_spread {scores['none'].std(axis=1).mean():.2e}")
    print(f"rank_correlation {spearman:.3f}")
    print(f"same_rank_share {float(np.mean(positive['bf16'] == positive['none'])):.2f}")
    print(f"bf16_matmul_ratio {half_rate / full_rate:.2f}")


if __name__ == "__main__":
    main()
