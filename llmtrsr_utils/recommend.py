"""The LLM recommender: five-part prompts, LoRA SFT with trl, checkpoints per epoch.

Systems (paper Table 2):

- ``llmtrsr-hierarchical`` / ``llmtrsr-recurrent``: preference summary + the ``item_num`` most
  recent items + candidate (Figure 8);
- ``tallrec``: no summary, the whole history + candidate (the paper's LLM baseline).

Training text = prompt + answer word + end token, tokenized exactly as trl's SFTTrainer does for
prompt-completion data (``tokenizer(prompt)``, ``tokenizer(prompt + completion)``); scoring uses
the same tokenization, and :func:`answer_token_ids` refuses answer words that are not one token
in that position. A prompt longer than ``max_length`` never loses its candidate or answer: the
summary is shortened first, then the oldest items are dropped, and both are counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from llmtrsr_utils import systems
from llmtrsr_utils.artifacts import check_writable, provenance, write_json
from llmtrsr_utils.config import Config, ConfigError, RecommenderConfig
from llmtrsr_utils.datasets.base import HISTORY, ITEM_ID, TARGET, USER_ID
from llmtrsr_utils.datasets.splits import (
    NEGATIVES,
    load_items,
    load_split,
    prepared_dir,
    read_manifest,
    with_donor_histories,
)
from llmtrsr_utils.models import (
    context_length,
    default_device,
    library_deprecations_silenced,
    load_model,
    load_model_tokenizer,
    model_slug,
    select_dtype,
)
from llmtrsr_utils.packing import TreeCollator, build_tree, loss_items
from llmtrsr_utils.prompts import PromptFormatter, recommendation
from llmtrsr_utils.records import TrainingRecord
from llmtrsr_utils.segmentation import PromptTooLongError, shortened_text
from llmtrsr_utils.summarize import load_summaries

log = logging.getLogger("llmtrsr")

class AnswerTokenError(ValueError):
    """An answer word that the tokenizer does not turn into exactly one token after the prompt."""


@dataclass(frozen=True)
class SystemRun:
    """One system resolved once under one run's params: what every stage is handed.

    Attributes:
        name: the system as it was asked for (a registered name or a module path).
        spec: its entry in the registry of systems (label, kind, settings).
        cfg: the system's own config: the run's params with the system's recommender (and a
            variant's summarizer) settings laid over them (a zero-shot system: those of the
            system whose prompts it reads).
        params_hash: the run's params fingerprint; results rows and score files are keyed by it.
    """

    name: str
    spec: systems.System
    cfg: Config
    params_hash: str

    @property
    def seed(self) -> int:
        """The training seed of a system trained per seed (``seeds``), else the data seed: the
        seed its results rows and score files carry."""
        seeded = self.spec.kind in systems.SEEDED_KINDS
        return self.cfg.training_seed if seeded else self.cfg.seed

    @property
    def fingerprint(self) -> str:
        """The system's own config fingerprint (the results rows' ``system_params_hash``)."""
        return self.cfg.fingerprint()

    @property
    def adapter_dir(self) -> Path:
        """One folder per trained system and training setting, so grid points never share an
        adapter and identical settings (an ablation point equal to the main run) reuse one."""
        if not self.spec.trained:
            raise ValueError(f"{self.name} is a {self.spec.kind} system: it has no adapter")
        rec = self.cfg.recommender
        return (self.cfg.work_path / "adapters" /
                f"{self.name}_{model_slug(rec.model)}_{training_fingerprint(self.cfg)[:10]}")


def resolve(cfg: Config, name: str) -> SystemRun:
    """Resolve a system once: its registry entry and its config under the run's params.

    Raises:
        ValueError: an unknown system (listing the known ones).
    """
    spec = systems.find(name)
    source = systems.find(spec.prompts_of) if spec.kind == "untrained" else spec
    own = cfg
    if source.recommender:
        own = dataclasses.replace(own, recommender=dataclasses.replace(own.recommender,
                                                                       **source.recommender))
    if source.summarizer:
        own = dataclasses.replace(own, summarizer=dataclasses.replace(own.summarizer,
                                                                      **source.summarizer))
    return SystemRun(name=name, spec=spec, cfg=own, params_hash=cfg.fingerprint())


def is_llm_system(name: str) -> bool:
    """True for a system trained by the recommender (an LLM system or a control)."""
    try:
        return systems.find(name).trained
    except ValueError:
        return False


def training_fingerprint(cfg: Config) -> str:
    """Hash of everything that changes a trained adapter: seed, training seed, data,
    recommender settings, and the summarizer's when the prompt carries a summary. Not the epoch
    count or checkpoints kept, so that asking for more epochs resumes the same run from its
    last checkpoint."""
    sections = ["seed", "data", "recommender"]
    if cfg.recommender.summary != systems.NO_SUMMARY:
        sections.append("summarizer")
    base = cfg.fingerprint(*sections, ignore=("recommender.epochs", "recommender.select",
                                              "recommender.save_total_limit"))
    if cfg.training_seed == cfg.seed:  # one seed: the adapter of before seeds existed
        return base
    return hashlib.sha256(f"{base}/train_seed={cfg.training_seed}".encode()).hexdigest()


def is_trained(run: SystemRun) -> bool:
    """True when the system's training finished (its record exists and names every epoch)."""
    path = run.adapter_dir / "training.json"
    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    return record.get("global_step") == record.get("max_steps") and record.get(
        "epochs", 0) >= run.cfg.recommender.epochs and bool(list_checkpoints(run.adapter_dir))


class AdapterMissingError(FileNotFoundError):
    """An LLM system is evaluated before its training finished; ``llmtrsr train`` or
    ``llmtrsr_utils.pipeline.ensure_adapter`` trains it."""


def require_trained(run: SystemRun) -> None:
    """Raise :class:`AdapterMissingError` unless the system's training finished."""
    if not is_trained(run):
        raise AdapterMissingError(f"{run.adapter_dir}: {run.name} has no finished adapter for "
                                  f"these params; run `llmtrsr train --systems {run.name}` (or "
                                  f"llmtrsr evaluate, which trains first)")


# -- prompts ---------------------------------------------------------------------------------------

@dataclass
class UserPrompts:
    """One user's candidates ([target, *negatives]), labels and rendered prompts (no answer)."""

    user_id: str
    candidates: list[str]
    labels: list[int]
    prompts: list[str]
    summary_shortened: bool
    items_dropped: int


class RecommendationPrompts:
    """Builds fitted prompts for one recommender tokenizer and one system's settings."""

    def __init__(self, cfg: Config, tokenizer, domain: str):
        rec = cfg.recommender
        self.cfg = cfg
        self.domain = domain
        self.tokenizer = tokenizer
        self.formatter = PromptFormatter(tokenizer, rec.prompt_format, rec.model)
        limit = context_length(rec.model, revision=rec.revision,
                               trust_remote_code=rec.trust_remote_code, cache_dir=cfg.cache_dir)
        self.limit = min(rec.max_length, limit) if limit else rec.max_length
        self.budget = self.limit - 2  # room for the answer token and the end token

    def tokens(self, prompt: str) -> list[int]:
        """Token ids exactly as trl tokenizes a prompt-completion example's prompt."""
        return self.tokenizer(prompt)["input_ids"]

    def render(self, summary: str | None, recent: list[str], candidate: str) -> str:
        rec = self.cfg.recommender
        content = recommendation(self.domain, summary, recent, candidate, rec.answer_words,
                                 no_summary=rec.no_summary_prompt)
        return self.formatter.render(content)

    def fit(self, summary: str | None, recent: list[str], longest_candidate: str,
            user_id: str) -> tuple[str | None, list[str], bool, int]:
        """Shorten the summary, then drop the oldest items, until the longest candidate fits."""
        shortened, dropped = False, 0
        tokens = len(self.tokens(self.render(summary, recent, longest_candidate)))
        if tokens > self.budget and summary is not None:
            ids = self.tokenizer(summary, add_special_tokens=False)["input_ids"]
            floor = self.cfg.recommender.min_summary_tokens
            keep = len(ids)
            while tokens > self.budget and keep > floor:
                keep = max(floor, keep - (tokens - self.budget))
                summary = shortened_text(self.tokenizer, ids, keep)
                shortened = True
                tokens = len(self.tokens(self.render(summary, recent, longest_candidate)))
        while tokens > self.budget and recent:
            recent = recent[1:]
            dropped += 1
            tokens = len(self.tokens(self.render(summary, recent, longest_candidate)))
        if tokens > self.budget:
            raise PromptTooLongError(
                f"user {user_id}: the recommendation prompt needs {tokens} tokens with no recent "
                f"item and a {self.cfg.recommender.min_summary_tokens}-token summary, over the "
                f"budget of {self.budget}; the candidate is never cut: raise "
                f"recommender.max_length or use fewer item attributes")
        return summary, recent, shortened, dropped

    def user_prompts(self, row: dict[str, Any], item_text: pd.Series, summary: str | None,
                     negatives: list[str] | None = None) -> UserPrompts:
        rec = self.cfg.recommender
        history = list(row[HISTORY])
        if rec.item_num is None:
            recent_ids = history
        else:
            recent_ids = history[-rec.item_num:] if rec.item_num else []
        recent = item_text.loc[recent_ids].tolist()
        candidates = [row[TARGET], *(row[NEGATIVES] if negatives is None else negatives)]
        texts = item_text.loc[candidates].tolist()
        longest = max(texts, key=lambda t: len(self.tokenizer(t, add_special_tokens=False)
                                                ["input_ids"]))
        summary, recent, shortened, dropped = self.fit(summary, recent, longest, row[USER_ID])
        prompts = [self.render(summary, recent, text) for text in texts]
        return UserPrompts(row[USER_ID], candidates, [1] + [0] * (len(candidates) - 1), prompts,
                           shortened, dropped)


def answer_token_ids(tokenizer, prompt: str, answers: list[str]) -> tuple[int, int]:
    """Ids of the (positive, negative) answer words as the training text tokenizes them.

    Checks on a real prompt that ``prompt + word + end token`` tokenizes to the prompt's own ids
    followed by exactly one token for the word (then the end token): a word split in two would
    make p(yes) meaningless.
    """
    prompt_ids = tokenizer(prompt)["input_ids"]
    eos = tokenizer.eos_token or ""
    found = []
    for word in answers:
        full = tokenizer(prompt + word + eos)["input_ids"]
        tail = full[len(prompt_ids):]
        expected_tail = 2 if eos else 1
        if full[:len(prompt_ids)] != prompt_ids or len(tail) != expected_tail or (
                eos and tail[-1] != tokenizer.eos_token_id):
            pieces = tokenizer.convert_ids_to_tokens(tail)
            raise AnswerTokenError(
                f"answer word {word!r} is not a single token after the prompt as the training "
                f"text tokenizes it (it becomes {pieces}); set recommender.answer_words to words "
                f"that are single tokens for this tokenizer")
        found.append(tail[0])
    if found[0] == found[1]:
        raise AnswerTokenError(f"answer words {answers} map to the same token {found[0]}")
    return found[0], found[1]


# -- data for a split ------------------------------------------------------------------------------

def older_items_text(history: list[str], item_text: pd.Series, item_num: int | None) -> str:
    """The ``oracle-older`` control's summary: the texts of the history items older than the
    ``item_num`` recent ones (all of them at item_num 0), oldest first, one per line, verbatim.

    Raises:
        ConfigError: item_num null (the whole history is already in the prompt).
    """
    if item_num is None:
        raise ConfigError(f"recommender.item_num: null puts the whole history in the prompt; "
                          f"the {systems.ORACLE_OLDER} control needs a number of recent items")
    older = list(history)[:-item_num] if item_num else list(history)
    return "\n".join(item_text.loc[older].tolist())


def split_prompts(run: SystemRun, split: str, tokenizer, *, max_users: int | None = None,
                  donors: dict[str, str] | None = None
                  ) -> tuple[list[UserPrompts], dict[str, int]]:
    """Prompts for every user of a split under the system's recommender settings (the data
    and summaries must be there and current: ``pipeline.ensure_system_inputs``). The counts
    say what was shortened: summaries cut to fit the prompt, recent items dropped, and final
    summaries the summarizer cut at max_new_tokens. ``donors`` (the history shuffle) gives
    each user the history and summary of another user, with the user's own candidates."""
    cfg = run.cfg
    data_dir = prepared_dir(cfg)
    domain = read_manifest(data_dir)["domain"]
    item_text = load_items(data_dir).set_index(ITEM_ID)["text"]
    frame = load_split(data_dir, split, windows=True)
    if max_users is not None:
        frame = frame.head(max_users)
    summaries: dict[str, str] = {}
    cut: dict[str, bool] = {}
    if run.spec.options.get("summary_source") == systems.OLDER_ITEMS:
        summaries = {row[USER_ID]: older_items_text(row[HISTORY], item_text,
                                                    cfg.recommender.item_num)
                     for row in frame.to_dict("records")}
    elif cfg.recommender.summary != systems.NO_SUMMARY:
        table = load_summaries(cfg, split, cfg.recommender.summary, current=True)
        summaries = dict(zip(table[USER_ID], table["final_summary"], strict=True))
        cut = dict(zip(table[USER_ID], table["final_summary_cut"], strict=True))
    if donors is not None:
        frame = with_donor_histories(frame, donors)
        summaries = {u: summaries[donors[u]] for u in frame[USER_ID] if donors[u] in summaries}
    builder = RecommendationPrompts(cfg, tokenizer, domain)
    users = [builder.user_prompts(row, item_text, summaries.get(row[USER_ID]))
             for row in frame.to_dict("records")]
    counts = {"users": len(users),
              "summaries_shortened": sum(u.summary_shortened for u in users),
              "recent_items_dropped": sum(u.items_dropped for u in users),
              "users_with_items_dropped": sum(u.items_dropped > 0 for u in users),
              "summaries_cut_at_max_new_tokens": sum(bool(cut.get(u.user_id)) for u in users)}
    if counts["summaries_shortened"] or counts["recent_items_dropped"]:
        log.warning("%s %s: %d summaries shortened, %d recent items dropped to fit %d tokens",
                    split, cfg.recommender.summary, counts["summaries_shortened"],
                    counts["recent_items_dropped"], builder.limit)
    if counts["summaries_cut_at_max_new_tokens"]:
        log.warning("%s %s: %d of %d final summaries were cut at summarizer.max_new_tokens "
                    "(%d)", split, cfg.recommender.summary,
                    counts["summaries_cut_at_max_new_tokens"], len(users),
                    cfg.summarizer.max_new_tokens)
    return users, counts


# -- training --------------------------------------------------------------------------------------

# The authors' train.py: LoRA on q/k/v/o_proj for Llama, on query_key_value for Pythia.
AUTHORS_LORA_TARGETS = {"gpt_neox": ["query_key_value"],
                        "llama": ["k_proj", "o_proj", "q_proj", "v_proj"]}


def lora_targets(model, rule: str = "attention") -> list[str]:
    """LoRA target module names: ``attention`` finds every linear layer inside the attention
    blocks; ``authors`` uses the authors' lists by architecture, falling back to ``attention``
    for an architecture they did not train; ``all-linear`` every linear layer of the decoder
    blocks (attention and MLP; the output head excluded), as QLoRA."""
    if rule == "all-linear":
        head = model.get_output_embeddings()
        names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                 if (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D")
                 and module is not head}
        if not names:
            raise ValueError(f"no linear layer found in {type(model).__name__}; cannot place "
                             f"LoRA adapters")
        return sorted(names)
    if rule == "authors":
        model_type = getattr(model.config, "model_type", "")
        if model_type in AUTHORS_LORA_TARGETS:
            return AUTHORS_LORA_TARGETS[model_type]
        log.warning("lora_targets: authors has no list for %s; using every attention linear "
                    "layer", model_type)
    return attention_projections(model)


def attention_projections(model) -> list[str]:
    """Names of the linear layers inside the model's attention blocks (LoRA targets), found
    from the modules themselves: q/k/v/o_proj for Llama and Gemma, query_key_value/dense for
    GPT-NeoX (Pythia), c_attn/c_proj for GPT-2."""
    names: set[str] = set()
    for module in model.modules():
        if type(module).__name__.endswith(("Attention", "SelfAttention", "Attention2")):
            for child_name, child in module.named_children():
                if isinstance(child, torch.nn.Linear) or type(child).__name__ == "Conv1D":
                    names.add(child_name)
    if not names:
        raise ValueError(f"no linear layer found inside attention modules of "
                         f"{type(model).__name__}; cannot place LoRA adapters")
    return sorted(names)


def list_checkpoints(out_dir: Path) -> list[tuple[float, Path]]:
    """(epoch, folder) of every saved checkpoint, oldest first."""
    found = []
    for folder in sorted(Path(out_dir).glob("checkpoint-*"),
                         key=lambda p: int(p.name.split("-")[-1])):
        state = folder / "trainer_state.json"
        if state.is_file() and (folder / "adapter_model.safetensors").is_file() and (
                folder / "optimizer.pt").is_file():
            found.append((float(json.loads(state.read_text())["epoch"]), folder))
    return found


def training_examples(users: list[UserPrompts], answers: list[str]) -> list[dict[str, str]]:
    return [{"prompt": prompt, "completion": answers[0] if label else answers[1]}
            for user in users for prompt, label in zip(user.prompts, user.labels, strict=True)]


def process_count() -> int:
    """Processes of this launch (``accelerate launch`` and torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def examples_per_row(cfg: Config) -> int:
    """Training examples in one row: a user's 1 + train_negatives when tree-packed, else 1."""
    return 1 + cfg.data.train_negatives if cfg.recommender.packing == "tree" else 1


def accumulation_steps(cfg: Config, processes: int) -> int:
    """Gradient accumulation that makes ``recommender.global_batch_size`` examples per optimizer
    step: global / (per-device rows x examples per row x processes), refused when that is not a
    whole number, so the same params are the same experiment on 1, 4 or 8 GPUs."""
    rec = cfg.recommender
    per_row = examples_per_row(cfg)
    per_step = rec.batch_size * per_row * processes
    if rec.global_batch_size % per_step:
        rows = (f"{rec.batch_size} user row(s) x {per_row} examples (packing tree, 1 + "
                f"data.train_negatives)" if per_row > 1 else f"{rec.batch_size}")
        raise ConfigError(
            f"recommender.global_batch_size {rec.global_batch_size} cannot be made from "
            f"recommender.batch_size {rows} x {processes} process(es) = {per_step} "
            f"examples per micro-step: it must be a multiple of {per_step}; change batch_size "
            f"or the number of processes")
    return rec.global_batch_size // per_step


def save_schedule(rec: RecommenderConfig) -> dict[str, Any]:
    """When checkpoints are saved: every epoch, or ``checkpoints_per_epoch`` times per epoch.

    transformers reads a ``save_steps`` below 1 as a share of all optimizer steps and saves at
    each multiple of ceil(share x steps), and once more at the end of training: 2 epochs x 4
    per epoch of 30 steps -> share 1/8 -> every ceil(7.5) = 8 steps: 8, 16, ..., 56, then 60.
    """
    if rec.checkpoints_per_epoch == 1:
        return {"save_strategy": "epoch"}
    return {"save_strategy": "steps", "save_steps": 1 / (rec.checkpoints_per_epoch * rec.epochs)}


def sft_settings(cfg: Config, out_dir: Path, *, processes: int, dtype: torch.dtype,
                 device: str, progress: bool = True) -> dict[str, Any]:
    """SFTConfig keyword arguments for one system's training (a plain dict, to test and log)."""
    rec = cfg.recommender
    return dict(
        output_dir=str(out_dir), per_device_train_batch_size=rec.batch_size,
        gradient_accumulation_steps=accumulation_steps(cfg, processes),
        num_train_epochs=rec.epochs, learning_rate=rec.learning_rate, optim="adamw_torch",
        weight_decay=rec.weight_decay, adam_beta1=rec.adam_beta1, adam_beta2=rec.adam_beta2,
        # transformers 5 takes a warmup ratio as a float warmup_steps in [0, 1).
        lr_scheduler_type=("constant_with_warmup" if rec.lr_scheduler == "constant"
                           and rec.warmup_ratio else rec.lr_scheduler),
        warmup_steps=rec.warmup_ratio,
        max_grad_norm=rec.max_grad_norm,
        bf16=dtype == torch.bfloat16 or rec.mixed_precision == "bf16", fp16=False,
        activation_checkpointing=rec.gradient_checkpointing, **save_schedule(rec),
        save_total_limit=rec.save_total_limit, logging_steps=1, report_to="none",
        seed=cfg.training_seed, data_seed=cfg.training_seed, max_length=rec.max_length,
        completion_only_loss=rec.loss_on == "answer", disable_tqdm=not progress,
        use_cpu=not device.startswith("cuda"), dataloader_num_workers=0)


def tree_rows(users: list[UserPrompts], tokenizer, answers: list[str], loss_on: str
              ) -> list[dict[str, Any]]:
    """One packed training row per user (``llmtrsr_utils.packing``): each example tokenized
    exactly as trl tokenizes a prompt-completion pair (``tokenizer(prompt)``,
    ``tokenizer(prompt + completion + end token)``), then packed behind their shared prefix,
    with the loss items of the unpacked examples."""
    from trl.data_utils import common_prefix_length

    eos = tokenizer.eos_token or ""
    rows = []
    for user in users:
        sequences, starts = [], []
        for prompt, label in zip(user.prompts, user.labels, strict=True):
            completion = answers[0] if label else answers[1]
            if eos and not completion.endswith(eos):
                completion += eos
            ids = tokenizer(text=prompt + completion)["input_ids"]
            if loss_on == "answer":
                starts.append(common_prefix_length(tokenizer(text=prompt)["input_ids"], ids))
            else:
                starts.append(1)
            sequences.append(ids)
        tree = build_tree(sequences)
        items = loss_items(tree, sequences, starts)
        rows.append({**tree.as_row(), "loss_positions": items.positions,
                     "loss_targets": items.targets, "loss_weights": items.weights,
                     "n_items": items.n_items})
    return rows


def epoch_log_callback(system: str):
    """A trainer callback for runs without progress bars: one log line per epoch (its mean
    training loss and seconds) in place of transformers' PrinterCallback, which prints every
    step's log dict (``logging_steps=1``: 144 lines for one laptop training). Every step's
    loss is still kept in the trainer's ``log_history`` (training.json)."""
    from transformers import TrainerCallback

    class EpochLog(TrainerCallback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.began = time.perf_counter()

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.losses, self.began = [], time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

        def on_epoch_end(self, args, state, control, **kwargs):
            if state.is_local_process_zero:
                mean = sum(self.losses) / len(self.losses) if self.losses else float("nan")
                log.info("%s: epoch %.0f of %d, step %d, mean training loss %.4f, %.0f s",
                         system, state.epoch or 0, args.num_train_epochs, state.global_step,
                         mean, time.perf_counter() - self.began)

    return EpochLog()


def build_trainer(run: SystemRun, out_dir: Path, *, progress: bool = True, **overrides: Any):
    """trl's SFTTrainer with a LoRA adapter for one system, on its training users.

    With ``recommender.packing: tree`` (default) each training row is one user's candidates
    packed behind their shared prefix (:class:`TreeSFTTrainer`); with ``none`` each row is one
    prompt-completion example, trl's ordinary path. Returns (trainer, info) where info holds the
    examples count, LoRA targets, answer token ids, prompt shortening counts and the batch
    arithmetic (per-device rows, examples per row, accumulation, processes, global batch).
    ``overrides`` go to SFTConfig (e.g. max_steps, save_strategy for the efficiency study).
    """
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    cfg = run.cfg
    rec = cfg.recommender
    processes = process_count()
    accumulation_steps(cfg, processes)  # refuse an impossible global batch before any loading
    tokenizer = load_model_tokenizer(rec, cache_dir=cfg.cache_dir, padding_side="right")
    users, counts = split_prompts(run, "train", tokenizer)
    answer_ids = answer_token_ids(tokenizer, users[0].prompts[0], rec.answer_words)
    examples = training_examples(users, rec.answer_words)
    device = default_device()
    dtype = select_dtype(rec.dtype, device)
    model, _ = load_model(rec, cache_dir=cfg.cache_dir, device=device)
    targets = lora_targets(model, rec.lora_targets)
    lora = LoraConfig(r=rec.lora_r, lora_alpha=rec.lora_alpha, lora_dropout=rec.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    settings = sft_settings(cfg, out_dir, processes=processes, dtype=dtype, device=device,
                            progress=progress)
    settings.update(overrides)
    if rec.packing == "tree":
        settings.update(dataset_kwargs={"skip_prepare_dataset": True},
                        remove_unused_columns=False)
        from llmtrsr_utils.tree_trainer import TreeSFTTrainer

        with library_deprecations_silenced():
            trainer = TreeSFTTrainer(
                model=model, args=SFTConfig(**settings),
                train_dataset=Dataset.from_list(tree_rows(users, tokenizer, rec.answer_words,
                                                          rec.loss_on)),
                data_collator=TreeCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                peft_config=lora)
    else:
        with library_deprecations_silenced():
            trainer = SFTTrainer(model=model, args=SFTConfig(**settings),
                                 train_dataset=Dataset.from_list(examples),
                                 processing_class=tokenizer, peft_config=lora)
    if not progress:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(epoch_log_callback(run.name))
    per_row = examples_per_row(cfg)
    batch = {"per_device_batch_size": rec.batch_size, "examples_per_row": per_row,
             "packing": rec.packing,
             "gradient_accumulation_steps": settings["gradient_accumulation_steps"],
             "processes": processes,
             "global_batch_size": rec.batch_size * per_row
             * settings["gradient_accumulation_steps"] * processes}
    info = {"examples": len(examples), "lora_targets": targets, "answer_token_ids": answer_ids,
            "prompt_counts": counts, "device": device, "batch": batch,
            "prompt_format": PromptFormatter(tokenizer, rec.prompt_format, rec.model)
            .prompt_format}
    return trainer, info


def train_system(run: SystemRun, *, progress: bool = True) -> dict[str, Any]:
    """LoRA SFT of one system; resumes from its last complete checkpoint. Returns the run
    record."""
    cfg, system = run.cfg, run.name
    rec = cfg.recommender
    out_dir = check_writable(run.adapter_dir)  # before loading anything
    trainer, info = build_trainer(run, out_dir, progress=progress)
    # Not transformers' get_last_checkpoint: it takes the highest-numbered folder even when a
    # kill interrupted its writing; a checkpoint counts once its trainer state is written last.
    complete = list_checkpoints(out_dir)
    last = str(complete[-1][1]) if complete else None
    if last:
        log.info("%s: resuming from %s", system, last)
    began = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - began
    state = trainer.state
    record = TrainingRecord(
        system=system, model=rec.model, output_dir=str(out_dir),
        examples=info["examples"], lora_targets=info["lora_targets"],
        answer_token_ids=list(info["answer_token_ids"]),
        global_step=state.global_step, max_steps=state.max_steps,
        epochs=rec.epochs, resumed_from=last, batch=info["batch"],
        prompt_format=info["prompt_format"], train_seconds=round(seconds, 2),
        seconds_per_step=round(seconds / max(1, state.global_step - _step_of(last)), 3),
        train_loss=result.training_loss, log_history=state.log_history,
        prompt_counts=info["prompt_counts"],
        checkpoints=[str(p) for _, p in list_checkpoints(out_dir)],
        provenance=provenance(cfg),
    ).to_dict()
    if trainer.is_world_process_zero():  # one record for a multi-process launch
        write_json(record, out_dir / "training.json")
    return record


def example_prompts(run: SystemRun, n_users: int = 1) -> pd.DataFrame:
    """Training prompts of the first users, with their answer and token count (notebook 03)."""
    rec = run.cfg.recommender
    tokenizer = load_model_tokenizer(rec, cache_dir=run.cfg.cache_dir)
    users, _ = split_prompts(run, "train", tokenizer, max_users=n_users)
    rows = [{"system": run.name, USER_ID: u.user_id, "answer": rec.answer_words[1 - label],
             "tokens": len(tokenizer(prompt)["input_ids"]), "prompt": prompt}
            for u in users for prompt, label in zip(u.prompts, u.labels, strict=True)]
    return pd.DataFrame(rows)


def training_record(run: SystemRun) -> dict[str, Any]:
    """The training record a finished training wrote beside the adapter."""
    return json.loads((run.adapter_dir / "training.json").read_text())


def _step_of(checkpoint: str | None) -> int:
    return int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0
