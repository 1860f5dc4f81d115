"""SFT throughput: trl's ordinary path against the prefix-tree packed path, at k = 1 and k = 4.

One run, the same model, users, prompts and LoRA settings. For each k (negatives per training
user), both paths train on the same users with the same number of examples per micro-step
(trl: 1 + k examples, right-padded; packed: 1 user row holding its 1 + k examples), no
gradient accumulation, loss on the answer (``--set recommender.loss_on=all`` for eq. 1),
gradient checkpointing as ``--checkpointing`` (off by default on both sides), float32.
Timed: ``--steps`` optimizer steps after one warm-up step (nothing saved).

Prints, per path and k, examples/s; then

    ratio_vs_trl X        packed / trl examples/s at k = 4
    ratio_vs_trl_k1 X     the same at k = 1
    max_loss_diff X       |trl loss - packed loss| on the same batch and LoRA weights
    floor_ratio X         trl's matmul FLOPs / packed matmul FLOPs at k = 4, counted from the
                          tokens each path runs and the positions where each computes logits:
                          the best packing can do (floor_ratio_k1 for k = 1)
    flop_share X          packed path's achieved FLOP rate (3 x forward matmul FLOPs per step)
                          over a float32 matrix product's rate measured in the same run

Goals on 2 CPU cores with smollm2-135m: ratio >= 4 at k = 4 and >= 1.8 at k = 1, i.e. within 80%
of floor_ratio.

    .venv/bin/python benchmarks/sft_bench.py --users 8 --steps 3
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from device_rates import matmul_rate, peak_memory_line
from transformers import TrainerCallback

from llmtrsr_utils.config import load_config
from llmtrsr_utils.pipeline import ensure_system_inputs
from llmtrsr_utils.recommend import build_trainer, resolve

SYSTEM = "llmtrsr-hierarchical"


class StepTimes(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # a step's kernels finish before its time is read
        self.times.append(time.perf_counter())


def body_parameters(model) -> tuple[int, int]:
    """(non-embedding parameters, lm_head hidden x vocab) of the base model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings().weight
    embedding = base.get_input_embeddings().weight.numel()
    total = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
    tied = head.data_ptr() == base.get_input_embeddings().weight.data_ptr()
    return total - embedding - (0 if tied else head.numel()), head.numel()


def forward_flops(trainer, batch_rows: list[dict], packed: bool) -> float:
    """Matmul FLOPs of one forward over ``batch_rows`` as the path runs them: every (padded)
    token through the body, logits at every position (trl on CPU) or at the loss positions."""
    body, head = body_parameters(trainer.model)
    width = max(len(r["input_ids"]) for r in batch_rows)
    tokens = len(batch_rows) * width
    logits = sum(len(set(r["loss_positions"])) for r in batch_rows) if packed else tokens
    return 2.0 * body * tokens + 2.0 * head * logits


def with_recommender(cfg, **changes):
    return dataclasses.replace(cfg, recommender=dataclasses.replace(cfg.recommender, **changes))


def measure(cfg, packing: str, steps: int, checkpointing: bool, out: Path) -> dict:
    per_step = 1 + cfg.data.train_negatives  # examples per micro-step on both paths
    cfg = with_recommender(cfg, packing=packing, batch_size=1 if packing == "tree" else per_step,
                           global_batch_size=per_step, gradient_checkpointing=checkpointing)
    ensure_system_inputs(cfg, SYSTEM, ("train",), progress=False)
    trainer, _ = build_trainer(resolve(cfg, SYSTEM), out, progress=False, max_steps=steps + 1,
                               save_strategy="no", logging_steps=1000)
    dataset = trainer.train_dataset
    rows = [dataset[i] for i in range(len(dataset))]
    if packing == "tree":
        flops = sum(forward_flops(trainer, [r], True) for r in rows[:steps + 1]) / (steps + 1)
    else:
        groups = [rows[i:i + per_step] for i in range(0, (steps + 1) * per_step, per_step)]
        flops = sum(forward_flops(trainer, g, False) for g in groups) / len(groups)
    timer = StepTimes()
    trainer.add_callback(timer)
    began = time.perf_counter()
    trainer.train()
    durations = [b - a for a, b in zip([began, *timer.times], timer.times, strict=False)][1:]
    seconds = sum(durations) / len(durations)
    return {"examples_per_second": per_step / seconds, "seconds_per_step": seconds,
            "forward_flops": flops, "trainer": trainer}


def seed_lora(model) -> None:
    """Every LoRA weight from one seeded normal draw (x 0.02), so that two trainers compared on
    the same batch have the same, non-zero adapter."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)


def same_batch_losses(cfg, out: Path) -> float:
    """|trl - packed| loss on all training examples in one batch, same LoRA weights."""
    losses = []
    for packing in ("none", "tree"):
        per_step = 1 + cfg.data.train_negatives
        trainer, _ = build_trainer(resolve(
            with_recommender(cfg, packing=packing, batch_size=1 if packing == "tree" else
                             per_step, global_batch_size=per_step), SYSTEM), out / packing,
            progress=False)
        seed_lora(trainer.model)
        trainer.model.eval()
        dataset = trainer.train_dataset
        batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
        batch = {k: v.to(trainer.model.device) if torch.is_tensor(v) else v
                 for k, v in batch.items()}
        items = trainer._get_num_items_in_batch([batch], trainer.model.device)
        with torch.no_grad():
            losses.append(trainer.compute_loss(trainer.model, dict(batch),
                                               num_items_in_batch=items).item())
    return abs(losses[0] - losses[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--users", type=int, default=8, help="training users")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per path")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="both paths' training dtype (bfloat16 on a GPU)")
    parser.add_argument("--checkpointing", action="store_true",
                        help="gradient checkpointing on both paths")
    args = parser.parse_args()

    results: dict[int, dict[str, dict]] = {}
    loss_diffs = []
    with tempfile.TemporaryDirectory() as scratch:
        for k in (1, 4):
            cfg = load_config(args.params, [*args.overrides, f"data.n_train_users={args.users}",
                                            f"data.train_negatives={k}",
                                            f"recommender.dtype={args.dtype}",
                                            "recommender.loss_on=answer",
                                            "recommender.lora_dropout=0.0"])
            results[k] = {p: measure(cfg, p, args.steps, args.checkpointing,
                                     Path(scratch) / f"{p}{k}") for p in ("none", "tree")}
            loss_diffs.append(same_batch_losses(cfg, Path(scratch) / f"loss{k}"))
            for packing, row in results[k].items():
                name = "trl" if packing == "none" else "packed"
                print(f"k={k} {name:<6} {row['examples_per_second']:6.2f} examples/s "
                      f"({row['seconds_per_step']:.2f} s per step of {1 + k} examples, "
                      f"{row['forward_flops'] / 1e9:.0f} GFLOP forward)")
    tree4 = results[4]["tree"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    reference = matmul_rate(device=device, dtype=getattr(torch, args.dtype))
    achieved = 3 * tree4["forward_flops"] / tree4["seconds_per_step"]
    print(f"threads {torch.get_num_threads()}; {args.dtype} matmul on {device} "
          f"{reference / 1e9:.1f} GFLOP/s; "
          f"packed path {achieved / 1e9:.1f} GFLOP/s")
    ratio = {k: results[k]["tree"]["examples_per_second"]
             / results[k]["none"]["examples_per_second"] for k in (1, 4)}
    floor = {k: results[k]["none"]["forward_flops"] / results[k]["tree"]["forward_flops"]
             for k in (1, 4)}
    print(f"ratio_vs_trl {ratio[4]:.2f}")
    print(f"ratio_vs_trl_k1 {ratio[1]:.2f}")
    print(f"max_loss_diff {max(loss_diffs):.2e}")
    print(f"floor_ratio {floor[4]:.2f}")
    print(f"floor_ratio_k1 {floor[1]:.2f}")
    print(f"flop_share {achieved / reference:.3f}")
    if peak_memory_line():
        print(peak_memory_line())


if __name__ == "__main__":
    main()
