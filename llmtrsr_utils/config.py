"""One config object for the whole pipeline, plus the kit's paths.

Parameters live in YAML files under ``params/`` and load into nested dataclasses. Loading is
strict because a typo in a research config silently changes an experiment: an unknown key or a
value of the wrong type is an error that names the file and the dotted key. ``--set key=value``
overrides (CLI, papermill) go through the same validation.

Validation is written here rather than with pydantic: the schema is plain dataclasses (typed,
commented fields that the notebooks and records share) and the rules are few (type, choices,
lower bound), so a dependency would add more than it saves.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmtrsr_utils import systems
from llmtrsr_utils.datasets.loaders import dataset_names

ENV_DATA_DIR = "LLMTRSR_DATA_DIR"
ENV_CACHE_DIR = "LLMTRSR_CACHE_DIR"

# data.negative_exclusion values; the first is the default.
NEGATIVE_EXCLUSIONS = ("history_and_target", "target", "none")


# Where outputs go and how fast they are made: no effect on any number a run reports.
NOT_IN_FINGERPRINT = ("work_dir", "runs_dir", "figures_dir", "cache_dir", "ablations",
                      "seeds", "train_seed",
                      "summarizer.batch_size", "summarizer.cache_file",
                      "recommender.score_batch_size", "recommender.scorer",
                      "recommender.merge_adapter")


# Keys added after results were made with the settings they default to: left out of every
# fingerprint while at that default, so those results, summaries and adapters stay current.
ADDED_KEYS = {"summarizer.summary_style": "paper", "summarizer.repetition_penalty": 1.0,
              "summarizer.no_repeat_ngram_size": 0, "data.repeats": "keep",
              "recommender.mixed_precision": "none"}


# Keys that existed once: an old params file gets told what replaced them.
RENAMED_KEYS = {
    "recommender.gradient_accumulation_steps": (
        "replaced by recommender.global_batch_size (examples per optimizer step over all "
        "processes; accumulation is derived from it, batch_size and the process count)"),
}


class ConfigError(ValueError):
    """A params file or override that does not fit the schema."""


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


def _at_least(bound: float) -> dict[str, Any]:
    return {"min": bound}


def _share(*, closed: bool = False) -> dict[str, Any]:
    """A probability-like value: in [0, 1], or [0, 1) unless ``closed``."""
    return {"min": 0.0, **({"max": 1.0} if closed else {"below": 1.0})}


@dataclass
class DataConfig:
    """Which dataset, how users are filtered and split, how negatives are drawn."""

    # A built-in loader (a file of llmtrsr_utils/datasets/loaders/, found by convention:
    # amazon-m2, generic, mind, movielens, recbole) or a loader's module path, package.module.
    name: str = field(default="movielens",
                      metadata={**_choices(*dataset_names()), "or_module_path": True})
    # Folder with the raw files; None: $LLMTRSR_DATA_DIR/<dataset folder>, else download.
    dir: str | None = None
    # MIND: "small" or "large"; MovieLens: "latest-small"; recbole: the dataset's name, the
    # stem of its atomic files (ml-1m for ml-1m.inter, ml-1m.item). Ignored by the others.
    variant: str | None = None
    download: bool = True
    # MIND's licence must be accepted explicitly before the kit downloads it.
    accept_licence: bool = False
    n_train_users: int = field(default=64, metadata=_at_least(1))
    n_valid_users: int = field(default=16, metadata=_at_least(1))
    n_test_users: int = field(default=32, metadata=_at_least(1))
    min_history: int = field(default=10, metadata=_at_least(1))
    max_history: int = field(default=25, metadata=_at_least(1))
    # filter: drop users outside [min_history, max_history] (paper);
    # truncate: keep the most recent max_history items of users with at least min_history.
    history_policy: str = field(default="filter", metadata=_choices("filter", "truncate"))
    min_rating: float = 0.0  # MovieLens: ratings below this are not interactions
    n_tags: int = field(default=3, metadata=_at_least(0))  # MovieLens: most common tags kept
    locale: str | None = "UK"  # Amazon-M2 locale filter (the authors used UK); None keeps all
    train_negatives: int = field(default=1, metadata=_at_least(1))
    eval_negatives: int = field(default=20, metadata=_at_least(1))
    # (history, target) windows per training user, the last one first: window j ends j items
    # earlier in the user's own sequence (more training examples from the same users; never for
    # validation or test users). 1: the paper's single window.
    train_windows: int = field(default=1, metadata=_at_least(1))
    # catalogue: uniform over all items (paper); impressions: MIND's non-clicked items.
    negative_source: str = field(default="catalogue", metadata=_choices("catalogue", "impressions"))
    # What a sampled negative may not be. history_and_target: neither the positive nor an item
    # of the user's history (the kit); target: not the positive; none: anything in the
    # catalogue, as the authors' pandas .sample() over every product (it may draw the positive).
    negative_exclusion: str = field(default=NEGATIVE_EXCLUSIONS[0],
                                    metadata=_choices(*NEGATIVE_EXCLUSIONS))
    # MIND only. history_last: one behaviors row per user (the first), target = the last item
    # of its History, history = the rest (the authors' build_dataset.py); latest_impression_click:
    # the user's latest impression with a click, target = its last clicked news in display
    # order, history = that row's History (a later snapshot of the same user).
    mind_target: str = field(default="history_last",
                             metadata=_choices("history_last", "latest_impression_click"))
    # Item attributes rendered into text, in order; None: the dataset's default list (recbole:
    # every token/token_seq field of the .item file).
    attributes: list[str] | None = None
    include_item_id: bool = False
    # A history item missing from the catalogue: drop it, drop its user (both counted in the
    # manifest), or stop with an error naming the user and item.
    missing_item_policy: str = field(default="drop_item",
                                     metadata=_choices("drop_item", "drop_user", "error"))
    # Repeated interactions with one item (issue 23): keep them (the paper and the authors'
    # code are silent; MovieLens has none, a rating is one per user and movie);
    # drop_consecutive: an item repeated right after itself counts once (a re-click, a
    # re-purchase in one go); drop_all: only each item's first interaction stays. Applied to
    # the whole sequence, target included, before the history rules; counted in the manifest
    # (under keep, how many users' target is also in their history).
    repeats: str = field(default="keep",
                         metadata=_choices("keep", "drop_consecutive", "drop_all"))


@dataclass
class ModelSettings:
    """Which model and how to load it: shared by the summarizer and the recommender."""

    model: str = "smollm2-135m"
    revision: str | None = None
    # plain: the paper's "### User:\n...\n\n### Assistant:\n" text (which is also the prompt
    # format of the paper's summarizer, upstage/llama-30b-instruct-2048); chat: the tokenizer's
    # chat template (an error for a model without one); auto: chat when the tokenizer has a
    # template, else plain. The format used is recorded in every output.
    prompt_format: str = field(default="plain", metadata=_choices("plain", "chat", "auto"))
    dtype: str = field(default="auto", metadata=_choices("auto", "float32", "bfloat16", "float16"))
    load_in_8bit: bool = False
    trust_remote_code: bool = False
    max_length: int = field(default=2048, metadata=_at_least(64))


@dataclass
class SummarizerConfig(ModelSettings):
    """The frozen LLM that writes preference summaries (paper section 4.1, 4.2)."""

    block_size: int = field(default=5, metadata=_at_least(1))
    # Hierarchical: summaries merged per group of fan_in, layer after layer; 0 = all at once
    # (the paper's two levels).
    fan_in: int = field(default=0, metadata=_at_least(0))
    max_new_tokens: int = field(default=150, metadata=_at_least(1))
    batch_size: int = field(default=16, metadata=_at_least(1))
    # Texts are never cut below this many tokens to make a prompt fit.
    min_text_tokens: int = field(default=16, metadata=_at_least(1))
    do_sample: bool = False  # greedy by default (reproducible)
    temperature: float = field(default=1.0, metadata=_at_least(0.0))
    top_p: float = field(default=1.0, metadata=_share(closed=True))
    # Issue 22, item 5: switches that may make a small summarizer's summary carry more (the
    # paper's prompts and plain greedy decoding by default; FIDELITY.md).
    # paper: the prompts of Figures 4, 6 and 7; fields: the same prompts asking for the answer
    # in a fixed short form (movies: "Genres: ... / Themes: ... / Eras: ...").
    summary_style: str = field(default="paper", metadata=_choices("paper", "fields"))
    # > 1 divides the logit of every token already in the prompt or output (transformers'
    # repetition_penalty); 1.0: off.
    repetition_penalty: float = field(default=1.0, metadata=_at_least(1.0))
    # > 0: no n-gram of this size is generated twice (transformers'); 0: off.
    no_repeat_ngram_size: int = field(default=0, metadata=_at_least(0))
    # SQLite generation cache; None: <cache_dir>/generations.sqlite (shared by every run).
    cache_file: str | None = None


@dataclass
class RecommenderConfig(ModelSettings):
    """The causal LM fine-tuned with LoRA to answer yes/no (paper section 4.3)."""

    # Recent items shown in the prompt (paper: 3; 0 writes NULL); null: the whole history.
    item_num: int | None = field(default=3, metadata=_at_least(0))
    # Which paradigm's summaries the prompt carries: a registered paradigm (the choices come
    # from llmtrsr_utils.systems: hierarchical, recurrent, and any extension's), a paradigm's
    # module path (package.module), or none: no summary (TALLRec's prompt, with item_num null).
    summary: str = field(default=systems.HIERARCHICAL,
                         metadata={"choices": lambda: (*systems.paradigm_names(),
                                                       systems.NO_SUMMARY),
                                   "or_module_path": True})
    # The answer tokens as the authors score them (lowercase; Figure 8 prints 'Yes'/'No').
    answer_words: list[str] = field(default_factory=lambda: ["yes", "no"])
    # A prompt without summary (TALLRec): null_summary keeps Figure 8's instruction and writes
    # "[Preference Summary]\nNULL" (the authors' no_summary); drop_summary drops both.
    no_summary_prompt: str = field(default="null_summary",
                                   metadata=_choices("null_summary", "drop_summary"))
    # A too-long prompt first cuts the summary to this many tokens, then drops oldest items.
    min_summary_tokens: int = field(default=32, metadata=_at_least(1))
    # attention: every linear layer inside the attention blocks (the kit); authors: q/k/v/o_proj
    # for Llama-like models and query_key_value only for GPT-NeoX (Pythia), as their train.py;
    # all-linear: every linear layer of the decoder blocks, MLP included (QLoRA's choice).
    lora_targets: str = field(default="attention",
                              metadata=_choices("attention", "authors", "all-linear"))
    lora_r: int = field(default=8, metadata=_at_least(1))
    lora_alpha: int = field(default=16, metadata=_at_least(1))
    lora_dropout: float = field(default=0.05, metadata=_share())
    learning_rate: float = field(default=1e-4, metadata=_at_least(0.0))
    # AdamW as the authors' train.py: weight decay 5e-4, betas (0.9, 0.95).
    weight_decay: float = field(default=5e-4, metadata=_at_least(0.0))
    adam_beta1: float = field(default=0.9, metadata=_share())
    adam_beta2: float = field(default=0.95, metadata=_share())
    # constant: the authors' DeepSpeed WarmupLR with 0 warmup steps; linear/cosine: decay to 0.
    lr_scheduler: str = field(default="constant", metadata=_choices("constant", "linear",
                                                                    "cosine"))
    warmup_ratio: float = field(default=0.0, metadata=_share())
    # 0 disables clipping (the authors' DeepSpeed config sets none).
    max_grad_norm: float = field(default=0.0, metadata=_at_least(0.0))
    # tree: one training row per user, its 1 + data.train_negatives examples packed behind one
    # shared prefix (llmtrsr_utils.packing; the loss equals the unpacked batch's); none: trl's
    # ordinary rows, one example each.
    packing: str = field(default="tree", metadata=_choices("tree", "none"))
    # Per device (process) and micro-step: examples (packing none) or users (packing tree).
    batch_size: int = field(default=1, metadata=_at_least(1))
    # Examples per optimizer step over all processes: accumulation = global / (batch_size x
    # examples per row x processes), refused when that is not a whole number. Paper: 64.
    global_batch_size: int = field(default=64, metadata=_at_least(1))
    epochs: int = field(default=8, metadata=_at_least(1))
    # all: loss on every token (paper, eq. 1); answer: on the answer token only.
    loss_on: str = field(default="all", metadata=_choices("all", "answer"))
    # Recompute activations in the backward pass: about 35% less memory, but a step about
    # 1.5x slower on 2 CPU cores, the weights unchanged (benchmarks/precision_bench.py on the
    # gate's oracle-older prompts: nockpt_ratio 1.54 in bf16, nockpt_weight_diff 0).
    gradient_checkpointing: bool = True
    save_total_limit: int | None = None  # kept checkpoints; None keeps all (for selection)
    # Checkpoints saved per epoch, evenly spaced in optimizer steps (the last at the end of
    # training). Each is scored on validation users, which selects the one scored on test and
    # draws the learning curve (validation Recall@5 against training examples seen). 1: one per
    # epoch, the authors' selection.
    checkpoints_per_epoch: int = field(default=1, metadata=_at_least(1))
    # Which checkpoint is scored on test. best_valid: the best on validation by Recall@3+5+10
    # (the authors' rule); a warning states the validation interval when it is wider than the
    # checkpoints' spread (the choice is then noise). final: the last checkpoint, validation
    # users not scored. A single checkpoint is scored whatever this says.
    select: str = field(default="best_valid", metadata=_choices("best_valid", "final"))
    # tree: a user's shared prefix once and every candidate behind it in one packed row
    # (llmtrsr_utils.packing; the faster on 2 CPU cores: 10.9 against 8.5 candidates/s);
    # prefix_cache: the prefix's KV cache repeated for batches of candidates. Equal scores.
    scorer: str = field(default="tree", metadata=_choices("tree", "prefix_cache"))
    # Candidates per forward pass (tree: whole users, at least one per forward).
    score_batch_size: int = field(default=32, metadata=_at_least(1))
    # bf16: the matrix products of training and scoring in bfloat16 under autocast, while the
    # weights, the LoRA adapter, the optimizer state and the scorer's answer head stay float32
    # (transformers' `bf16: true` on float32 weights: mixed precision). On a CPU with
    # avx512_bf16 a bf16 product runs ~4x a float32 one, and an SFT step of SmolLM2-135M ~1.8x
    # (benchmarks/precision_bench.py); a CPU without it emulates bf16, slower than float32.
    # none: every product in the weights' dtype (recommender.dtype). Changes the numbers a little,
    # so it is part of the fingerprint.
    mixed_precision: str = field(default="none", metadata=_choices("none", "bf16"))
    # Fold the LoRA weights into the base linears before scoring (peft merge_and_unload): one
    # matmul per linear instead of three. SmolLM2-135M, all-linear LoRA, 2 cores: 1.22x faster
    # forward, logits within 6e-5 in float32 (rounding of W + BA), so like `scorer` it is left
    # out of the fingerprint. false: score through the unmerged peft model.
    merge_adapter: bool = True


@dataclass
class ClassicalConfig:
    """Table 2's classical baselines (NCF ... CORE) over frozen text embeddings of the items."""

    # Item text encoder: a registry name (minilm-l6, offline), a local folder, or a hub id (the
    # paper: pre-trained BERT, google-bert/bert-base-uncased, mean-pooled and frozen).
    encoder: str = "minilm-l6"
    # text: projected frozen text vectors (paper); id: a learned embedding per item id;
    # text+id: their sum.
    item_representation: str = field(default="text", metadata=_choices("text", "id", "text+id"))
    # paper: each model's own paper's loss (classical.PAPER_LOSSES: BCE for NCF/DIN/DIEN/SASRec,
    # cross-entropy over the sampled candidates for NARM/CORE, TOP1-max for GRU4Rec); or one
    # loss for all: bce, cross-entropy, top1-max.
    loss: str = field(default="paper",
                      metadata=_choices("paper", "bce", "cross-entropy", "top1-max"))
    # Sampled negatives per training example (the last prefix keeps its frozen negatives first).
    train_negatives: int = field(default=1, metadata=_at_least(1))
    dim: int = field(default=64, metadata=_at_least(1))
    dropout: float = field(default=0.1, metadata=_share())
    learning_rate: float = field(default=1e-3, metadata=_at_least(0.0))
    weight_decay: float = field(default=1e-4, metadata=_at_least(0.0))
    batch_size: int = field(default=64, metadata=_at_least(1))
    max_epochs: int = field(default=30, metadata=_at_least(1))
    patience: int = field(default=5, metadata=_at_least(1))  # epochs without validation gain


@dataclass
class AblationConfig:
    """Grid values notebooks 05 to 07 run (Figures 9 to 11); null: the grid file's full list.

    A CPU profile runs a reduced grid; the notebooks say which values they ran.
    """

    item_nums: list[int] | None = None
    recommenders: list[str] | None = None
    summarizers: list[str] | None = None


@dataclass
class Config:
    """Everything one run of the kit needs; recorded beside everything the run writes."""

    work_dir: str = "work"
    # Grid runs (`llmtrsr run-grid`, notebooks 05 to 07): <runs_dir>/<grid>/<point>/.
    runs_dir: str = "runs"
    # Where notebooks and `llmtrsr figures` write figures; relative to the project root.
    figures_dir: str = "figures"
    # Converted models and generation caches; None: $LLMTRSR_CACHE_DIR or ~/.cache/llmtrsr.
    cache_dir: str | None = None
    # The data seed: splits, sampled negatives, the bootstrap, Random; also the training seed
    # when ``seeds`` is empty.
    seed: int = 42
    # Training seeds (issue 22): every trained system (LLM systems, controls, classical models)
    # is trained and evaluated once per seed; splits, candidates and summaries are shared (they
    # follow ``seed``). Results rows record their seed; Table 2 and the paired tests pool them.
    # []: one training seed, ``seed``. CLI: --set 'seeds=[42,43,44]' (papermill: overrides).
    seeds: list[int] = field(default_factory=list)
    # The training seed of one system's run, set by the kit for each entry of ``seeds`` (None:
    # the first of ``seeds``, else ``seed``); it changes an adapter's fingerprint only when it
    # differs from ``seed``, so one-seed adapters keep their folders.
    train_seed: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    summarizer: SummarizerConfig = field(default_factory=SummarizerConfig)
    recommender: RecommenderConfig = field(default_factory=RecommenderConfig)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    ablations: AblationConfig = field(default_factory=AblationConfig)

    @property
    def training_seed(self) -> int:
        """The seed a training run uses: ``train_seed``, else the first of ``seeds``, else
        ``seed``."""
        return self.train_seed if self.train_seed is not None else self.training_seeds[0]

    @property
    def training_seeds(self) -> list[int]:
        """Every training seed of the run: ``seeds`` in order, else ``[seed]``."""
        return list(dict.fromkeys(self.seeds)) if self.seeds else [self.seed]

    def for_seed(self, seed: int) -> Config:
        """This config training with ``seed`` (splits and summaries unchanged)."""
        return dataclasses.replace(self, train_seed=seed)

    # -- derived paths -------------------------------------------------------------------
    @property
    def work_path(self) -> Path:
        return Path(self.work_dir)

    @property
    def data_output_dir(self) -> Path:
        """Where the data stage writes items/train/valid/test parquet and the manifest."""
        return self.work_path / "data"

    @property
    def runs_path(self) -> Path:
        return Path(self.runs_dir)

    @property
    def figures_path(self) -> Path:
        path = Path(self.figures_dir)
        return path if path.is_absolute() else project_root() / path

    @property
    def cache_path(self) -> Path:
        return resolve_cache_dir(self.cache_dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def value_at(self, key: str) -> Any:
        """The value of a dotted key (``summarizer.summary_style``)."""
        node: Any = self
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def fingerprint(self, *sections: str, ignore: Iterable[str] = ()) -> str:
        """sha256 of the canonical JSON of the settings that change results (the whole config,
        or the named top-level sections, less where things are written, batch sizes and
        ablation lists, and less the dotted keys in ``ignore``). Results rows, adapters and
        summaries carry it, so equal settings are recognised across runs."""
        payload = self.to_dict()
        if sections:
            payload = {name: payload[name] for name in sections}
        at_default = [key for key, default in ADDED_KEYS.items()
                      if self.value_at(key) == default]
        for key in (*NOT_IN_FINGERPRINT, *ignore, *at_default):
            section, _, name = key.rpartition(".")
            node = payload.get(section) if section else payload
            if isinstance(node, dict):
                node.pop(name, None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# -- paths --------------------------------------------------------------------------------

def project_root(start: Path | None = None) -> Path:
    """The kit's checkout (the folder holding pyproject.toml and params/), else the cwd."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "params").is_dir():
            return folder
    return here


def use_project_root() -> Path:
    """chdir to the kit's checkout, so params paths work from notebooks/ in JupyterLab too."""
    root = project_root()
    os.chdir(root)
    return root


def resolve_cache_dir(cache_dir: str | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    return Path.home() / ".cache" / "llmtrsr"


# -- loading and validation ---------------------------------------------------------------

# A comma starts a new override only where a key= follows it: "a=1, b.c=[0, 3]" is two.
_OVERRIDE_SPLIT = re.compile(r"\s*\n\s*|\s*,\s*(?=[A-Za-z_][\w.]*\s*=)")


def override_list(overrides: str | Iterable[str] | None) -> list[str]:
    """Overrides as a list of ``key=value`` strings, from a list or from one string.

    papermill's ``-p overrides "work_dir=work/x"`` passes a string, not a list; a string holds
    one override or several separated by newlines or by commas (a comma inside a value, as in
    ``ablations.item_nums=[0, 3]``, is kept: only a comma followed by ``key=`` separates).
    """
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [part for part in _OVERRIDE_SPLIT.split(overrides.strip()) if part]
    return [str(item) for item in overrides]


def load_config(path: str | os.PathLike | None = None,
                overrides: str | Iterable[str] = ()) -> Config:
    """Read a params YAML (defaults when ``path`` is None) and apply ``key=value`` overrides
    (a list, or one string: see :func:`override_list`)."""
    overrides = override_list(overrides)
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{source}: params file not found") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: expected a mapping of keys at the top level, "
                              f"got {type(loaded).__name__}")
        raw = loaded
    for override in overrides:
        apply_override(raw, override)
    cfg = _build(Config, raw, prefix="", source=source)
    _check_cross_field(cfg, source)
    return cfg


def config_from_dict(raw: Mapping[str, Any], source: str = "dict") -> Config:
    """Validate a plain mapping (e.g. read back from a manifest) into a Config."""
    cfg = _build(Config, dict(raw), prefix="", source=source)
    _check_cross_field(cfg, source)
    return cfg


def apply_override(raw: dict[str, Any], override: str, source: str | None = None) -> None:
    """Apply one ``dotted.key=value`` override; the value is read as YAML (5, true, null, [a]).
    Errors name ``source`` (default: ``--set <key>``)."""
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected key=value, e.g. data.n_test_users=8")
    key, _, value_text = override.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {override!r}: empty key")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value {value_text!r} is not valid YAML: {err}") from None
    # Check the path exists in the schema now, so the error says where it came from.
    _schema_type_at(key, source=source or f"--set {key}")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _schema_type_at(dotted: str, source: str) -> Any:
    cls: Any = Config
    walked = []
    for part in dotted.split("."):
        if not (dataclasses.is_dataclass(cls)):
            raise ConfigError(f"{source}: '{'.'.join(walked)}' has no sub-keys")
        names = {f.name: f for f in dataclasses.fields(cls)}
        if ".".join([*walked, part]) in RENAMED_KEYS:
            raise ConfigError(f"{source}: key '{'.'.join([*walked, part])}' was "
                              f"{RENAMED_KEYS['.'.join([*walked, part])]}")
        if part not in names:
            where = ".".join(walked) or "the top level"
            raise ConfigError(f"{source}: unknown key '{'.'.join([*walked, part])}'"
                              f"{_did_you_mean(part, names)}; known keys at {where}: "
                              f"{', '.join(sorted(names))}")
        walked.append(part)
        cls = typing.get_type_hints(cls)[part]
    return cls


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key '{prefix.rstrip('.')}' expects a mapping, "
                          f"got {type(raw).__name__} {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = unknown[0]
        if f"{prefix}{key}" in RENAMED_KEYS:
            raise ConfigError(f"{source}: key '{prefix}{key}' was {RENAMED_KEYS[prefix + key]}")
        where = prefix.rstrip(".") or "the top level"
        hint = _did_you_mean(str(key), fields)
        raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint}; "
                          f"known keys at {where}: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value if value is not None else {}, f"{key}.", source)
            continue
        kwargs[name] = _coerce(value, kind, key, source)
        _check_metadata(fields[name].metadata, kwargs[name], key, source)
    return cls(**kwargs)


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(kind))
    if origin is list:
        return f"list of {_type_name(typing.get_args(kind)[0])}"
    return "null" if kind is type(None) else getattr(kind, "__name__", str(kind))


def _coerce(value: Any, kind: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                continue
        raise _type_error(value, kind, key, source)
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(value, kind, key, source)
        (item_kind,) = typing.get_args(kind)
        return [_coerce(v, item_kind, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(value, kind, key, source)
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(value, kind, key, source)
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string, not a number
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(value, kind, key, source)
    if kind is str:
        if isinstance(value, str):
            return value
        raise _type_error(value, kind, key, source)
    raise ConfigError(f"{source}: key '{key}' has an unsupported schema type {kind!r}")


def _type_error(value: Any, kind: Any, key: str, source: str) -> ConfigError:
    return ConfigError(f"{source}: key '{key}' expects {_type_name(kind)}, "
                       f"got {type(value).__name__} {value!r}")


def _check_metadata(meta: Mapping[str, Any], value: Any, key: str, source: str) -> None:
    if value is None:
        return
    if meta.get("or_module_path") and isinstance(value, str) and "." in value:
        return  # a module outside the kit, checked against its contract when loaded
    # Choices may be a function: a registry's names, read when a value is checked.
    choices = meta.get("choices")
    choices = choices() if callable(choices) else choices
    if choices is not None and value not in choices:
        also = " or a module path (package.module)" if meta.get("or_module_path") else ""
        raise ConfigError(f"{source}: key '{key}' must be one of {', '.join(choices)}"
                          f"{also}; got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: key '{key}' must be a finite number; got {value!r}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{source}: key '{key}' must be at least {meta['min']}; got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{source}: key '{key}' must be at most {meta['max']}; got {value!r}")
    if "below" in meta and value >= meta["below"]:
        raise ConfigError(f"{source}: key '{key}' must be below {meta['below']}; got {value!r}")


def _check_cross_field(cfg: Config, source: str) -> None:
    if len(cfg.recommender.answer_words) != 2:
        raise ConfigError(f"{source}: key 'recommender.answer_words' must list two words "
                          f"(positive, negative); got {cfg.recommender.answer_words!r}")
    if not 0 <= cfg.recommender.warmup_ratio < 1:
        raise ConfigError(f"{source}: key 'recommender.warmup_ratio' must be in [0, 1) (a share "
                          f"of the optimizer steps); got {cfg.recommender.warmup_ratio!r}")
    if cfg.data.min_history > cfg.data.max_history:
        raise ConfigError(f"{source}: key 'data.min_history' ({cfg.data.min_history}) must not "
                          f"exceed 'data.max_history' ({cfg.data.max_history})")
