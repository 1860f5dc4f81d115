"""GPU verification of the kit (issue 13): correctness on CUDA, throughput, the full MovieLens run.

Stages (run from the repo root; each appends its rows to ``<log_dir>/gpu_checks.jsonl`` and the
last stage prints the whole table):

    python benchmarks/gpu_check.py --stage checks      # tiny-random-llama, built in code
    python benchmarks/gpu_check.py --stage throughput  # smollm2-135m: the three benchmarks
    python benchmarks/gpu_check.py --stage full        # params/gpu_movielens.yaml, every step
    python benchmarks/gpu_check.py --stage table       # print the table of checks

``checks``: bfloat16 SFT steps run on CUDA and the loss falls; the tree and prefix-cache scorers
equal the reference scorer (one unpadded forward per prompt) within 1e-3 in bfloat16 and 1e-5 in
float32; CPU and CUDA agree within 1e-4 in float32; an 8-bit (bitsandbytes) load runs and
scores; ``accelerate launch --num_processes 2`` summarizes into one shared cache without
repeating a call (two processes on the GPU, else ``--cpu`` processes).

``throughput``: ``score_bench.py``, ``summarize_bench.py`` and ``sft_bench.py`` (each a ratio
measured side by side in one run) with their peak GPU memory.

``full``: the notebook series' calls in this process (no Jupyter kernel on a GPU node): data,
both paradigms' summaries for every split, the three LLM systems and the baselines that need
no embedding model, then the ablation grids with ``executor="inprocess"``. The embedding and
classical baselines need MiniLM (88 MB), which does not travel with the GPU call: run them
afterwards on the same work folder (``llmtrsr baselines --params params/gpu_movielens.yaml``).

Rows: check, value, limit, pass (True/False/None for a measurement), note. Exit status 1 when
a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmtrsr_utils.config import load_config  # noqa: E402

SMOKE = ROOT / "params" / "smoke.yaml"


class Log:
    """Rows of the table of checks, appended to a JSON-lines file as they are measured."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "gpu_checks.jsonl"

    def row(self, check: str, value, limit=None, passed: bool | None = None, note: str = ""):
        row = {"check": check, "value": value, "limit": limit, "pass": passed, "note": note,
               "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, default=str) + "\n")
        print(f"[{'PASS' if passed else 'FAIL' if passed is False else '----'}] {check}: "
              f"{value} (limit {limit}) {note}", flush=True)

    def guarded(self, check: str, function: Callable[[], None]) -> None:
        """Run one check; an exception is a failed row with its message, never silence."""
        try:
            function()
        except Exception as err:  # recorded as a failure with its traceback in the log
            (self.folder / f"{check}.traceback.txt").write_text(traceback.format_exc())
            self.row(check, None, None, False, f"{type(err).__name__}: {str(err)[:300]}")

    def table(self) -> str:
        if not self.path.is_file():
            return "no rows"
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        lines = ["| check | value | limit | pass | note |", "|---|---|---|---|---|"]
        for r in rows:
            mark = {True: "pass", False: "FAIL", None: "measured"}[r["pass"]]
            value = f"{r['value']:.3g}" if isinstance(r["value"], float) else r["value"]
            lines.append(f"| {r['check']} | {value} | {r['limit']} | {mark} | "
                         f"{r['note'].replace('|', '/')} |")
        return "\n".join(lines)


def device_note() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device"
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"


def smoke_overrides(work: Path, *extra: str) -> list[str]:
    return [f"work_dir={work}", f"runs_dir={work / 'runs'}",
            f"summarizer.cache_file={work / 'gen.sqlite'}", *extra]


# -- stage 1: correctness with tiny-random-llama ---------------------------------------------

def check_sft_bf16(log: Log, work: Path) -> None:
    from llmtrsr_utils.pipeline import ensure_system_inputs
    from llmtrsr_utils.recommend import build_trainer, resolve

    dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    cfg = load_config(SMOKE, smoke_overrides(
        work / "sft", f"recommender.dtype={dtype}", "recommender.learning_rate=3e-3",
        "recommender.epochs=8", "data.n_train_users=6", "recommender.lora_dropout=0.0"))
    ensure_system_inputs(cfg, "llmtrsr-hierarchical", ("train",), progress=False)
    trainer, info = build_trainer(resolve(cfg, "llmtrsr-hierarchical"),
                                  work / "sft" / "adapter", progress=False, save_strategy="no")
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    first, last = float(np.mean(losses[:3])), float(np.mean(losses[-3:]))
    base_dtype = next(p.dtype for n, p in trainer.model.named_parameters() if "lora_" not in n)
    log.row("sft_loss_falls", round(last / first, 4), "< 1", last < first,
            f"{dtype} on {info['device']} (base weights {base_dtype}), {len(losses)} steps, "
            f"loss {first:.4f} -> {last:.4f}")


def _tiny_prompts(work: Path):
    from llmtrsr_utils.models import build_tiny_random_llama
    from llmtrsr_utils.pipeline import ensure_system_inputs
    from llmtrsr_utils.recommend import answer_token_ids, resolve, split_prompts

    run_cfg = load_config(SMOKE, smoke_overrides(work / "score"))
    ensure_system_inputs(run_cfg, "tallrec", ("test",), progress=False)
    run = resolve(run_cfg, "tallrec")
    cfg = run.cfg
    model, tokenizer = build_tiny_random_llama(cfg.cache_dir)
    users, _ = split_prompts(run, "test", tokenizer, max_users=3)
    yes, no = answer_token_ids(tokenizer, users[0].prompts[0], cfg.recommender.answer_words)
    per_user = [[tokenizer(p)["input_ids"] for p in u.prompts] for u in users]
    return model.float().eval(), tokenizer, per_user, yes, no


def check_scorers(log: Log, work: Path) -> None:
    from llmtrsr_utils.scoring import score_fast, score_reference, score_tree

    model, tokenizer, per_user, yes, no = _tiny_prompts(work)
    pad = tokenizer.pad_token_id
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scores = {}
    for dtype, limit in ((torch.bfloat16, 1e-3), (torch.float32, 1e-5)):
        moved = model.to(device=device, dtype=dtype)
        reference = np.concatenate([score_reference(moved, rows, yes, no) for rows in per_user])
        tree = np.concatenate(score_tree(moved, per_user, yes, no, pad))
        fast = np.concatenate([score_fast(moved, rows, yes, no, pad, batch_size=32)
                               for rows in per_user])
        name = str(dtype).removeprefix("torch.")
        for scorer, values in (("tree", tree), ("prefix_cache", fast)):
            diff = float(np.abs(values - reference).max())
            log.row(f"scorer_{scorer}_vs_reference_{name}", diff, limit, diff <= limit,
                    f"{len(reference)} candidates on {device}")
        scores[name] = tree
    cpu = np.concatenate(score_tree(model.to(device="cpu", dtype=torch.float32), per_user, yes,
                                    no, pad))
    diff = float(np.abs(cpu - scores["float32"]).max())
    log.row("scores_cpu_vs_cuda_float32", diff, 1e-4, diff <= 1e-4 if device == "cuda" else None,
            "tree scorer, same weights")


def check_8bit(log: Log, work: Path) -> None:
    from llmtrsr_utils.models import load_causal_lm
    from llmtrsr_utils.scoring import score_tree

    model, tokenizer, per_user, yes, no = _tiny_prompts(work)
    folder = work / "tiny-llama-safetensors"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if not torch.cuda.is_available():
        log.row("load_in_8bit_scores", None, None, None, "skipped: needs CUDA")
        return
    quantized, _ = load_causal_lm(str(folder), load_in_8bit=True, device="cuda")
    kinds = {type(m).__name__ for m in quantized.modules()}
    eight = "Linear8bitLt" in kinds
    scores = np.concatenate(score_tree(quantized, per_user, yes, no, tokenizer.pad_token_id))
    exact = np.concatenate(score_tree(model.to("cuda"), per_user, yes, no,
                                      tokenizer.pad_token_id))
    finite = bool(np.isfinite(scores).all())
    diff = float(np.abs(scores - exact).max())
    log.row("load_in_8bit_scores", diff, "finite, Linear8bitLt", finite and eight,
            f"max |8-bit - float32| p(yes) over {len(scores)} candidates; "
            f"Linear8bitLt present: {eight}")


def _summarize_cmd(params_overrides: list[str], *launch: str) -> list[str]:
    sets = [arg for o in params_overrides for arg in ("--set", o)]
    return [*launch, "-m", "llmtrsr_utils.cli", "summarize", "--params", str(SMOKE), *sets,
            "--split", "test", "--no-progress"]


def check_two_processes(log: Log, work: Path) -> None:
    """Two processes (torchrun) summarize the test split into one SQLite cache: each makes the
    calls of its own users, the cache ends with one row per call made (a repeated call would
    leave fewer rows than calls), and a single-process rerun makes none."""
    import sqlite3

    # accelerate binds process i to cuda:i, so two processes need two GPUs (on one GPU, rank 1
    # fails with "invalid device ordinal"); with one GPU the check runs gloo CPU processes.
    modes = [("gpu", {})] if torch.cuda.device_count() >= 2 else []
    modes.append(("cpu", {"CUDA_VISIBLE_DEVICES": ""}))
    for mode, extra_env in modes:
        folder = work / f"launch-{mode}"
        overrides = smoke_overrides(folder, "data.n_test_users=8")
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                  "--master_port", "29531"]
        env = {**os.environ, **extra_env,
               "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
        began = time.perf_counter()
        try:  # two ranks on one GPU may hang in NCCL: bounded, then the CPU processes
            first = subprocess.run(_summarize_cmd(overrides, *launch), cwd=ROOT, env=env,
                                   capture_output=True, text=True,
                                   timeout=60 if mode == "gpu" else 180)
        except subprocess.TimeoutExpired as err:
            log.row(f"accelerate_2_processes_{mode}", None, None, None,
                    f"no answer within {err.timeout} s")
            continue
        (log.folder / f"launch-{mode}.log").write_text(first.stdout + first.stderr)
        if first.returncode != 0:
            log.row(f"accelerate_2_processes_{mode}", None, None,
                    False if mode == "cpu" else None,
                    f"exit {first.returncode}: {first.stderr.strip()[-300:]}")
            continue
        shares = re.findall(r"process (\d)/2 made (\d+) of the (\d+) model calls", first.stderr)
        made = sum(int(calls) for _, calls, _ in shares)
        final = [int(m) for m in re.findall(r"model calls: (\d+)", first.stdout)]
        again = subprocess.run(_summarize_cmd(overrides, sys.executable), cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=600)
        rerun_calls = [int(m) for m in re.findall(r"model calls: (\d+)", again.stdout)]
        with sqlite3.connect(folder / "gen.sqlite") as db:
            rows = db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
        # two paradigms x two processes; each paradigm's shares add up to its record's count
        ok = (len(shares) == 4 and {p for p, _, _ in shares} == {"1", "2"} and made == rows
              and sum(final) == made and again.returncode == 0 and rerun_calls == [0, 0]
              and rows > 0)
        log.row(f"accelerate_2_processes_{mode}", made, f"== {rows} cache rows", ok,
                f"per process and paradigm (process, calls, calls of all): {shares}; records "
                f"count {final}; single-process rerun made {sum(rerun_calls)} calls; "
                f"{time.perf_counter() - began:.0f} s")
        if ok:
            break


CHECKS = {"sft": ("sft_loss_falls", check_sft_bf16), "scorers": ("scorers", check_scorers),
          "8bit": ("load_in_8bit_scores", check_8bit),
          "launch": ("accelerate_2_processes", check_two_processes)}


def stage_checks(log: Log, which: list[str]) -> None:
    log.row("device", device_note(), None, None, "")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for key in which:
            name, check = CHECKS[key]
            log.guarded(name, lambda c=check: c(log, work))
        try:
            import deepspeed  # noqa: F401
            note = "installed (not exercised by this script)"
        except ImportError:
            note = "deepspeed not installed on this machine: ZeRO-2 config not exercised"
        log.row("deepspeed_zero2", None, None, None, note)


# -- stage 2: throughput with smollm2-135m -----------------------------------------------------

BENCHES = {
    "score_bench": (["--users", "8"], ["ratio_vs_authors", "ratio_vs_dynamic",
                                       "ratio_vs_prefix_cache", "max_abs_diff", "flop_share",
                                       "peak_gpu_memory_gib"]),
    "summarize_bench": (["--users", "32", "--batch-size", "64"], ["ratio", "identical texts",
                                                                  "peak_gpu_memory_gib"]),
    "sft_bench": (["--users", "16", "--steps", "5", "--dtype", "bfloat16"],
                  ["ratio_vs_trl", "ratio_vs_trl_k1", "max_loss_diff", "floor_ratio",
                   "flop_share", "peak_gpu_memory_gib"]),
}


def stage_throughput(log: Log, params: str) -> None:
    from llmtrsr_utils.artifacts import sha256_of
    from llmtrsr_utils.models import REGISTRY, resolve_model

    gguf = resolve_model("smollm2-135m").spec.gguf_path(Path(tempfile.gettempdir()))
    digest = sha256_of(gguf)
    expected = REGISTRY["smollm2-135m"].file_sha256  # the kit's pin: never unset
    log.row("smollm2_file_sha256", digest[:16], expected[:16], digest == expected, str(gguf))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    for bench, (args, keys) in BENCHES.items():
        command = [sys.executable, str(ROOT / "benchmarks" / f"{bench}.py"), "--params", params,
                   *args]
        began = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=900)
        (log.folder / f"{bench}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            log.row(bench, None, None, False, f"exit {done.returncode}: "
                    f"{done.stderr.strip()[-300:]}")
            continue
        for key in keys:
            match = re.search(rf"^{re.escape(key)}:? ([0-9.e+-]+)", done.stdout, re.MULTILINE)
            value = float(match.group(1)) if match else None
            log.row(f"{bench}.{key}", value, None, None if match else False,
                    f"{time.perf_counter() - began:.0f} s for the whole benchmark")
        for line in done.stdout.splitlines():
            if "/s" in line and not line.startswith(("ratio", "flop")):
                log.row(f"{bench}.rate", line.strip()[:160], None, None, "")


# -- stage 3: the whole protocol ---------------------------------------------------------------

def stage_full(log: Log, params: str, steps: list[str]) -> None:
    from llmtrsr_utils import systems
    from llmtrsr_utils.datasets.splits import SPLITS
    from llmtrsr_utils.grid import run_grid
    from llmtrsr_utils.pipeline import ensure_splits, run_evaluation, system_names
    from llmtrsr_utils.summarize import summarize_split

    cfg = load_config(params)
    timings = {}

    def timed(name: str, function: Callable[[], object]) -> None:
        began = time.perf_counter()
        log.guarded(name, function)
        timings[name] = time.perf_counter() - began
        log.row(f"full.{name}.seconds", round(timings[name], 1), None, None,
                f"peak GPU memory {peak_gib():.2f} GiB")

    if "data" in steps:
        timed("data", lambda: ensure_splits(cfg))
    if "summaries" in steps:
        for split in SPLITS:
            for paradigm in systems.paradigm_names():
                timed(f"summaries_{split}_{paradigm}",
                      lambda s=split, p=paradigm: _summary_row(log, cfg, s, p, summarize_split))
    if "systems" in steps:
        timed("systems", lambda: run_evaluation(cfg, system_names("all"), (
            systems.RANDOM, systems.POPULARITY, systems.ZERO_SHOT), reuse=True, progress=False))
    for name in ("item_count", "recommender_size", "summarizer_size"):
        if name in steps:
            grid_file = ROOT / "params" / "ablations" / f"{name}.yaml"
            from llmtrsr_utils.grid import profile_axes

            timed(f"grid_{name}", lambda g=grid_file: _grid_row(
                log, run_grid(g, params, axes=profile_axes(cfg, g), executor="inprocess")))


def _summary_row(log: Log, cfg, split: str, paradigm: str, summarize_split) -> None:
    record = summarize_split(cfg, split, paradigm, progress=False)
    log.row(f"full.summaries_{split}_{paradigm}", record["tokens_per_second"], None, None,
            f"{record['users']} users, {record['model_calls']} calls "
            f"({record['cache_hits']} cached), cut at max_new_tokens "
            f"{record['calls_cut_at_max_new_tokens']}")


def _grid_row(log: Log, report) -> None:
    log.row(f"full.grid_{report.grid}", len(report.ran) + len(report.skipped), None,
            not report.failed, f"ran {len(report.ran)}, skipped {len(report.skipped)}, failed "
            f"{report.failed}")


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["checks", "throughput", "full", "table"],
                        required=True)
    parser.add_argument("--params", default="params/gpu_movielens.yaml",
                        help="params of the full run (throughput uses params/default.yaml)")
    parser.add_argument("--steps", default="data,summaries,systems,item_count,"
                        "recommender_size,summarizer_size", help="full stage: what to run")
    parser.add_argument("--checks", default=",".join(CHECKS),
                        help=f"checks stage: which of {', '.join(CHECKS)}")
    parser.add_argument("--log-dir", default="work/gpu_check")
    args = parser.parse_args()
    log = Log(Path(args.log_dir))
    if args.stage == "checks":
        stage_checks(log, args.checks.split(","))
    elif args.stage == "throughput":
        stage_throughput(log, "params/default.yaml")
    elif args.stage == "full":
        stage_full(log, args.params, args.steps.split(","))
    print(log.table())
    rows = [json.loads(line) for line in log.path.read_text().splitlines() if line] \
        if log.path.is_file() else []
    return 1 if any(r["pass"] is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
