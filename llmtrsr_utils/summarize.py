"""Preference summaries: hierarchical (CNN-like) and recurrent (RNN-like), paper sections 4.1-4.2.

Both paradigms work on all users at once, one stage at a time, so every call that can be
batched is: all blocks of all users at a hierarchical layer, all users at the same recurrent
step. Every intermediate summary (per block, per layer or step) is kept with the final one.
Generations go through :class:`llmtrsr_utils.generation.CachedGenerator`, so an interrupted run
resumes where it stopped and the recurrent paradigm's first-block calls are the hierarchical
block-1 calls (identical prompts, one cache entry).

Under ``accelerate launch`` (or torchrun) every process walks the same stages over all users,
and at each stage the generator splits the stage's cache misses among the processes: each
generates its share into the shared cache, then all read every answer from it (see
:class:`~llmtrsr_utils.generation.CachedGenerator`). Splitting prompts rather than users means no
prompt is generated twice even when two users share one (identical blocks, identical merged
summaries), which splitting users could not promise. The main process writes the output.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from llmtrsr_utils import systems
from llmtrsr_utils.artifacts import (
    check_writable,
    provenance,
    sha256_of,
    write_json,
    write_parquet,
)
from llmtrsr_utils.config import Config, ConfigError, config_from_dict
from llmtrsr_utils.datasets.base import HISTORY, ITEM_ID, USER_ID
from llmtrsr_utils.datasets.splits import load_items, load_split, prepared_dir, read_manifest
from llmtrsr_utils.generation import CachedGenerator, GenerationCache, GenerationSettings
from llmtrsr_utils.models import (
    context_length,
    load_model,
    load_model_tokenizer,
    model_identity,
    model_slug,
)
from llmtrsr_utils.prompts import PromptFormatter, hierarchical_merge, recurrent_update
from llmtrsr_utils.records import SummaryRecord
from llmtrsr_utils.segmentation import Block, PromptFitter, split_into_blocks

log = logging.getLogger("llmtrsr")

# Bump when summaries made by an older kit must not be reused (summaries of version 2 record
# their prompt_format; earlier ones may carry a chat template the params did not ask for).
SUMMARY_FORMAT_VERSION = 2


@dataclass
class UserHistory:
    user_id: str
    item_ids: list[str]
    texts: list[str]


@dataclass
class UserSummary:
    user_id: str
    paradigm: str
    n_items: int
    blocks: list[Block]
    layers: list[list[str]] = field(default_factory=list)  # hierarchical: layer 0 = blocks
    steps: list[str] = field(default_factory=list)  # recurrent: running summary per block
    # "<stage>: <flag>" for every flagged call: empty, degenerate, hit_max_new_tokens (a text cut
    # at summarizer.max_new_tokens: a shortening like any other, counted in the records)
    flags: list[str] = field(default_factory=list)
    texts_shortened: int = 0  # summaries or items cut in merge/update prompts
    n_calls: int = 0
    # The user's last call, whose text is the final summary (a lone summary is only carried up
    # between hierarchical layers when it has siblings, so the last call is the final one).
    final_summary_cut: bool = False

    # A paradigm fills either ``layers`` (a tree: layer 0 the blocks' summaries, the last layer
    # one summary) or ``steps`` (a chain: the running summary after each step, the last final).

    @property
    def final_summary(self) -> str:
        return self.layers[-1][0] if self.layers else self.steps[-1]

    @property
    def block_summaries(self) -> list[str]:
        return self.layers[0] if self.layers else self.steps

    @property
    def calls_cut_at_max_new_tokens(self) -> int:
        return sum(flag.endswith(": hit_max_new_tokens") for flag in self.flags)

    @property
    def items_shortened(self) -> int:
        return sum(block.fitted.shortened for block in self.blocks)

    def record(self) -> dict[str, Any]:
        return {USER_ID: self.user_id, "paradigm": self.paradigm, "n_items": self.n_items,
                "n_blocks": len(self.blocks), "block_summaries": self.block_summaries,
                "layers": self.layers if self.layers else [[s] for s in self.steps],
                "final_summary": self.final_summary, "flags": self.flags,
                "n_flagged_calls": len(self.flags), "items_shortened": self.items_shortened,
                "texts_shortened": self.texts_shortened, "n_calls": self.n_calls,
                "calls_cut_at_max_new_tokens": self.calls_cut_at_max_new_tokens,
                "final_summary_cut": self.final_summary_cut,
                "final_prompt_tokens_max": max(b.fitted.tokens for b in self.blocks)}


class Summarizer:
    """One summarizer model, its prompt fitter and its generation cache."""

    def __init__(self, cfg: Config, domain: str, *, progress: bool = True, processes=None):
        """``processes``: an accelerate ``PartialState`` to share generation among processes."""
        scfg = cfg.summarizer
        self.cfg = cfg
        self.domain = domain
        self.style = scfg.summary_style
        tokenizer = load_model_tokenizer(scfg, cache_dir=cfg.cache_dir)
        self.formatter = PromptFormatter(tokenizer, scfg.prompt_format, scfg.model)
        self.fitter = PromptFitter(
            self.formatter, max_length=scfg.max_length, max_new_tokens=scfg.max_new_tokens,
            model_max_length=context_length(scfg.model, revision=scfg.revision,
                                            trust_remote_code=scfg.trust_remote_code,
                                            cache_dir=cfg.cache_dir),
            min_text_tokens=scfg.min_text_tokens)
        self.cache = GenerationCache(cache_file(cfg))
        settings = GenerationSettings(max_new_tokens=scfg.max_new_tokens,
                                      do_sample=scfg.do_sample, temperature=scfg.temperature,
                                      top_p=scfg.top_p, seed=cfg.seed,
                                      repetition_penalty=scfg.repetition_penalty,
                                      no_repeat_ngram_size=scfg.no_repeat_ngram_size)
        self.generator = CachedGenerator(
            model_identity=model_identity(scfg.model, scfg.revision, cfg.cache_dir),
            formatter=self.formatter, load_model=self._load_model, settings=settings,
            cache=self.cache, batch_size=scfg.batch_size, progress=progress,
            processes=processes)

    def _load_model(self):
        scfg = self.cfg.summarizer
        log.info("loading summarizer %s", scfg.model)
        model, _ = load_model(scfg, cache_dir=self.cfg.cache_dir)
        return model

    def segment(self, user: UserHistory) -> list[Block]:
        return self.fitter.segment(self.domain, user.item_ids, user.texts,
                                   self.cfg.summarizer.block_size, user.user_id,
                                   style=self.style)

    def start(self, users: list[UserHistory], paradigm: str) -> list[UserSummary]:
        """One empty summary per user, its history cut into fitted blocks."""
        states = []
        for user in users:
            if not user.item_ids:
                raise ValueError(f"user {user.user_id}: empty history, nothing to summarize")
            states.append(UserSummary(user.user_id, paradigm, len(user.item_ids),
                                      self.segment(user)))
        return states

    def generate_texts(self, jobs: list[tuple[UserSummary, str, str]], desc: str
                       ) -> list[str]:
        """jobs: (state, stage label, rendered prompt); returns texts, recording flags."""
        results = self.generator.generate([prompt for _, _, prompt in jobs], desc=desc)
        for (state, stage, _), result in zip(jobs, results, strict=True):
            state.n_calls += 1
            state.flags.extend(f"{stage}: {flag}" for flag in result.flags)
            state.final_summary_cut = "hit_max_new_tokens" in result.flags
        return [r.text for r in results]

    def run(self, paradigm: str, users: list[UserHistory]) -> list[UserSummary]:
        """Summarize every user with a registered paradigm (see :func:`find_paradigm`)."""
        return find_paradigm(paradigm)(self, users)


# -- paradigms: a name and a function (summarizer, users) -> summaries ---------------------------

Paradigm = Callable[[Summarizer, list[UserHistory]], list[UserSummary]]


def paradigm(name: str, label: str | None = None) -> Callable[[Paradigm], Paradigm]:
    """Decorator that registers a summarization paradigm under ``name`` in the registry of
    systems (:func:`llmtrsr_utils.systems.paradigm`), and with it the system
    ``llmtrsr-<name>``.

    A paradigm takes the :class:`Summarizer` and every user of a split and returns one
    :class:`UserSummary` per user (start them with ``summarizer.start(users, name)``, generate
    with ``summarizer.generate_texts``, batched across users); it fills ``steps`` (a chain) or
    ``layers`` (a tree), whose last entry is the final summary. The paper's two paradigms
    below are written this way. See the README's recipe.
    """
    return systems.paradigm(name, label)


def find_paradigm(name: str) -> Paradigm:
    """A registered paradigm by name, or by the module path of a file that registers one
    (``--paradigm package.module``, ``llmtrsr-package.module``)."""
    systems.load_extensions()
    function = systems.PARADIGMS.find(name)
    if function is None:
        raise ValueError(f"paradigm {name!r} is declared but no function was registered for it")
    return function


@paradigm(systems.HIERARCHICAL)
def hierarchical(summarizer: Summarizer, users: list[UserHistory]) -> list[UserSummary]:
    """Figure 3(a): summarize each block, then merge the summaries layer by layer (groups of
    ``summarizer.fan_in``), every user's calls of one layer batched together."""
    states = summarizer.start(users, systems.HIERARCHICAL)
    jobs = [(s, f"block {b.index + 1}", b.fitted.prompt) for s in states for b in s.blocks]
    texts = iter(summarizer.generate_texts(jobs, f"hierarchical layer 0, {len(states)} users"))
    for state in states:
        state.layers.append([next(texts) for _ in state.blocks])
    fan_in = summarizer.cfg.summarizer.fan_in
    layer = 1
    while any(len(s.layers[-1]) > 1 for s in states):
        jobs, plans = [], []
        for state in states:
            current = state.layers[-1]
            if len(current) == 1:
                continue
            groups = split_into_blocks(current, fan_in or len(current))
            plan = []
            for g, group in enumerate(groups):
                if len(group) == 1:  # nothing to merge: carried up unchanged
                    plan.append(group[0])
                    continue
                fitted = summarizer.fitter.fit(
                    lambda t: hierarchical_merge(summarizer.domain, t, summarizer.style), group,
                    what=f"user {state.user_id} layer {layer} merge prompt")
                state.texts_shortened += fitted.shortened
                plan.append(None)
                jobs.append((state, f"layer {layer} group {g + 1}", fitted.prompt))
            plans.append((state, plan))
        texts = iter(summarizer.generate_texts(jobs, f"hierarchical layer {layer}, "
                                               f"{len(plans)} users"))
        for state, plan in plans:
            state.layers.append([text if text is not None else next(texts)
                                 for text in plan])
        layer += 1
    return states


@paradigm(systems.RECURRENT)
def recurrent(summarizer: Summarizer, users: list[UserHistory]) -> list[UserSummary]:
    """Figure 3(b): summarize block 1, then update the summary with each next block, every
    user's calls of one step batched together."""
    states = summarizer.start(users, systems.RECURRENT)
    jobs = [(s, "block 1", s.blocks[0].fitted.prompt) for s in states]
    texts = summarizer.generate_texts(jobs, f"recurrent step 1, {len(states)} users")
    for state, text in zip(states, texts, strict=True):
        state.steps.append(text)
    step = 1
    while True:
        active = [s for s in states if len(s.blocks) > step]
        if not active:
            break
        jobs = []
        for state in active:
            block = state.blocks[step]
            fitted = summarizer.fitter.fit(
                lambda t: recurrent_update(summarizer.domain, t[0], t[1:], summarizer.style),
                [state.steps[-1], *block.items],
                what=f"user {state.user_id} step {step + 1} update prompt")
            state.texts_shortened += fitted.shortened
            jobs.append((state, f"step {step + 1}", fitted.prompt))
        texts = summarizer.generate_texts(jobs, f"recurrent step {step + 1}, {len(active)} users")
        for state, text in zip(active, texts, strict=True):
            state.steps.append(text)
        step += 1
    return states


# -- the stage -------------------------------------------------------------------------------

def cache_file(cfg: Config) -> Path:
    return Path(cfg.summarizer.cache_file) if cfg.summarizer.cache_file else \
        cfg.cache_path / "generations.sqlite"


def summaries_path(cfg: Config, split: str, paradigm: str) -> Path:
    """One parquet per (dataset, split, paradigm, summarizer and its settings): the name ends
    in the first 10 hex digits of the data and summarizer fingerprint, so two settings (a
    variant's and the params') keep their own summaries in one work folder."""
    settings = cfg.fingerprint("seed", "data", "summarizer")[:10]
    return (cfg.work_path / "summaries" / f"{cfg.data.name}_{split}_{paradigm}_"
            f"{model_slug(cfg.summarizer.model)}_{settings}.parquet")


def split_histories(cfg: Config, split: str) -> tuple[list[UserHistory], str]:
    data_dir = prepared_dir(cfg)
    items = load_items(data_dir).set_index(ITEM_ID)["text"]
    frame = load_split(data_dir, split, windows=True)
    users = [UserHistory(row[USER_ID], list(row[HISTORY]), items.loc[list(row[HISTORY])].tolist())
             for row in frame.to_dict("records")]
    return users, read_manifest(data_dir)["domain"]


def summarize_split(cfg: Config, split: str, paradigm: str, *, progress: bool = True
                    ) -> dict[str, Any] | None:
    """Summarize one split with one paradigm; write parquet + JSON record; return the record.

    Returns None on non-main processes of a multi-process launch.
    """
    from llmtrsr_utils.environment import process_state

    state = process_state()
    check_writable(summaries_path(cfg, split, paradigm).parent)  # before any model call
    users, domain = split_histories(cfg, split)
    began = time.perf_counter()
    summarizer = Summarizer(cfg, domain, progress=progress and state.is_local_main_process,
                            processes=state)
    results = summarizer.run(paradigm, users)
    elapsed = time.perf_counter() - began
    stats = summarizer.generator.stats
    if state.num_processes > 1:
        log.info("%s %s: process %d/%d made %d of the %d model calls", split, paradigm,
                 state.process_index + 1, state.num_processes, stats.generated,
                 stats.generated_by_all)
        if not state.is_main_process:
            return None
    frame = pd.DataFrame([r.record() for r in results])
    out = write_parquet(frame, summaries_path(cfg, split, paradigm))
    flag_counts = Counter(flag.split(": ", 1)[1] for r in results for flag in r.flags)
    record = SummaryRecord(
        format_version=SUMMARY_FORMAT_VERSION,
        split=split, paradigm=paradigm, summarizer=cfg.summarizer.model,
        dataset=cfg.data.name, users=len(results), output=str(out),
        calls_requested=stats.requested, cache_hits=stats.cache_hits,
        model_calls=stats.generated_by_all, processes=state.num_processes,
        model_calls_main_process=stats.generated,
        model_loaded=summarizer.generator.model_loaded,
        new_tokens=stats.new_tokens, generation_seconds=round(stats.seconds, 3),
        tokens_per_second=round(stats.tokens_per_second, 2),
        seconds=round(elapsed, 3), seconds_per_user=round(elapsed / max(1, len(results)), 3),
        items_shortened=int(frame["items_shortened"].sum()),
        texts_shortened=int(frame["texts_shortened"].sum()),
        calls_cut_at_max_new_tokens=int(frame["calls_cut_at_max_new_tokens"].sum()),
        final_summaries_cut=int(frame["final_summary_cut"].sum()),
        prompt_format=summarizer.formatter.prompt_format,
        flags=dict(flag_counts), provenance=provenance(cfg), sha256=sha256_of(out),
    ).to_dict()
    write_json(record, out.with_suffix(".json"))
    summarizer.cache.close()
    return record


def summaries_current(cfg: Config, split: str, paradigm: str) -> bool:
    """True when the split's summaries on disk were made with these data and summarizer
    settings (a grid point that changes either regenerates; the generation cache makes repeated
    prompts free)."""
    path = summaries_path(cfg, split, paradigm)
    record_path = path.with_suffix(".json")
    if not (path.is_file() and record_path.is_file()):
        return False
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        log.warning("%s: unreadable (%s); summarizing again (the generation cache answers "
                    "every call already made)", record_path, err)
        return False
    if record.get("format_version") != SUMMARY_FORMAT_VERSION:
        return False
    if record.get("sha256") and record["sha256"] != sha256_of(path):
        log.warning("%s: does not match the sha256 its record %s gives (changed or corrupted "
                    "since written); summarizing again (the generation cache answers every "
                    "call already made)", path, record_path.name)
        return False
    try:
        made_with = config_from_dict(record.get("params", {}), source=str(record_path))
    except ConfigError:  # written by a kit whose params no longer load: regenerate
        return False
    sections = ("seed", "data", "summarizer")
    return made_with.fingerprint(*sections) == cfg.fingerprint(*sections)


class SummariesMissingError(FileNotFoundError):
    """A later stage asked for summaries that are not there (or were made with other
    settings); ``llmtrsr_utils.pipeline.ensure_summaries`` or ``llmtrsr summarize`` makes
    them."""


def load_summaries(cfg: Config, split: str, paradigm: str, *, current: bool = False
                   ) -> pd.DataFrame:
    """A split's saved summaries, one row per user (``final_summary``, ``final_summary_cut``,
    the chain or tree, flags).

    Args:
        cfg: the run's config (data and summarizer settings locate the file).
        split: train, valid or test.
        paradigm: a registered paradigm.
        current: also refuse summaries made with other data or summarizer settings.

    Raises:
        SummariesMissingError: no file, or (``current``) a file made with other settings.
    """
    path = summaries_path(cfg, split, paradigm)
    if not path.is_file():
        raise SummariesMissingError(f"{path}: no summaries yet; run `llmtrsr summarize "
                                    f"--split {split} --paradigm {paradigm}`")
    if current and not summaries_current(cfg, split, paradigm):
        raise SummariesMissingError(f"{path}: made with other data or summarizer settings; "
                                    f"run `llmtrsr summarize --split {split} --paradigm "
                                    f"{paradigm}` again")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise SummariesMissingError(f"{path}: unreadable ({err}); run `llmtrsr summarize "
                                    f"--split {split} --paradigm {paradigm}` again (the "
                                    f"generation cache answers every call already made)"
                                    ) from None


# -- inspection helpers for the notebooks ------------------------------------------------------

def segmentation_table(summarizer: Summarizer, users: list[UserHistory]) -> pd.DataFrame:
    """One row per block: its items, prompt tokens against the budget, items shortened."""
    rows = []
    for user in users:
        for block in summarizer.segment(user):
            rows.append({USER_ID: user.user_id, "block": block.index + 1,
                         "items": len(block.item_ids), "prompt_tokens": block.fitted.tokens,
                         "budget": summarizer.fitter.budget,
                         "items_shortened": block.fitted.shortened})
    return pd.DataFrame(rows)


def side_by_side(frames: dict[str, pd.DataFrame], n_users: int = 3) -> pd.DataFrame:
    """Final summaries of the first users, one column per paradigm."""
    joined = None
    for paradigm, frame in frames.items():
        part = frame[[USER_ID, "final_summary"]].rename(columns={"final_summary": paradigm})
        joined = part if joined is None else joined.merge(part, on=USER_ID)
    return joined.head(n_users).set_index(USER_ID)


def summary_lengths(frames: dict[str, pd.DataFrame], tokenizer) -> pd.DataFrame:
    """Long form: paradigm, user, tokens of the final summary."""
    rows = []
    for paradigm, frame in frames.items():
        counts = tokenizer(frame["final_summary"].tolist(), add_special_tokens=False)["input_ids"]
        rows += [{"paradigm": paradigm, USER_ID: u, "tokens": len(c)}
                 for u, c in zip(frame[USER_ID], counts, strict=True)]
    return pd.DataFrame(rows)


def read_record(cfg: Config, split: str, paradigm: str) -> dict[str, Any]:
    return json.loads(summaries_path(cfg, split, paradigm).with_suffix(".json").read_text())
