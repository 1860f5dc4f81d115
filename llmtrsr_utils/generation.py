"""Batched, cached, deterministic text generation for the summarizer.

Every generation is keyed by sha256 of (model identity, generation settings, exact prompt text)
and stored in SQLite in WAL mode, one transaction per batch: a run killed with SIGKILL loses at
most the batch in flight, the store stays consistent, and the rerun skips what is stored. The
model itself is loaded only when a prompt is missing from the cache, so a fully cached rerun
makes no model call at all.

Prompts are batched by token length (few pad tokens per batch) and the prefix a batch shares
(chat template, instruction) is computed once. Greedy decoding is the default; with sampling
the seed is part of the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llmtrsr_utils.kernels import in_kernel
from llmtrsr_utils.packing import shared_prefix_length

log = logging.getLogger("llmtrsr")

_TURN_MARKER = re.compile(r"\n?###\s*(User|Assistant)\s*:")


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 150
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    repetition_penalty: float = 1.0  # 1.0: off
    no_repeat_ngram_size: int = 0  # 0: off

    @property
    def processors(self) -> dict[str, Any]:
        """The logits processors asked for (transformers' names), off ones left out."""
        return {k: v for k, v in (("repetition_penalty", self.repetition_penalty),
                                  ("no_repeat_ngram_size", self.no_repeat_ngram_size))
                if v != _GREEDY_PROCESSORS[k]}

    def key_fields(self) -> dict[str, Any]:
        """What changes the output: sampling knobs only matter when sampling; a processor only
        when on (so the cache keys of plain decoding stay as they were)."""
        if not self.do_sample:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False,
                    **self.processors}
        fields = asdict(self)
        for name in ("repetition_penalty", "no_repeat_ngram_size"):
            fields.pop(name)
        return {**fields, **self.processors}


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    new_tokens: int
    stopped: bool  # the model ended its answer (end token) before max_new_tokens
    cached: bool = False
    flags: list[str] = field(default_factory=list)


def generation_key(model_identity: dict[str, Any], settings: GenerationSettings,
                   prompt: str) -> str:
    payload = json.dumps({"model": model_identity, "settings": settings.key_fields(),
                          "prompt": prompt}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def quality_flags(text: str, stopped: bool) -> list[str]:
    """Flags a reader should see: empty output, repetition loops, cut at max_new_tokens."""
    flags = []
    words = text.split()
    if not words:
        flags.append("empty")
    elif len(words) >= 12:
        trigrams = list(zip(words, words[1:], words[2:], strict=False))
        if len(set(trigrams)) / len(trigrams) < 0.5:
            flags.append("degenerate")
    if not stopped:
        flags.append("hit_max_new_tokens")
    return flags


class GenerationCache:
    """SQLite store of generations; safe against kill -9 and shared by concurrent processes."""

    def __init__(self, path: str | Path):
        """Open (or create) the store; an unreadable file (truncated, overwritten, not SQLite)
        is moved aside, kept for salvage, and a new store started: its generations are made
        again, with a warning naming both files."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as err:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                part = Path(f"{self.path}{suffix}")
                if part.exists():
                    part.rename(Path(f"{aside}{suffix}"))
            log.warning("%s: the generation cache is unreadable (%s); moved it to %s and "
                        "started a new one: its generations will be made again", self.path,
                        err, aside)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=120)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, model TEXT NOT "
                "NULL, settings TEXT NOT NULL, prompt TEXT NOT NULL, text TEXT NOT NULL, "
                "prompt_tokens INTEGER NOT NULL, new_tokens INTEGER NOT NULL, "
                "stopped INTEGER NOT NULL, created REAL NOT NULL)")
            db.commit()
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {verdict}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def get_many(self, keys: Iterable[str]) -> dict[str, GenerationResult]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, GenerationResult] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = self._db.execute(
                f"SELECT key, text, prompt_tokens, new_tokens, stopped FROM generations "
                f"WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            for key, text, prompt_tokens, new_tokens, stopped in rows:
                found[key] = GenerationResult(text, prompt_tokens, new_tokens, bool(stopped),
                                              cached=True, flags=quality_flags(text, stopped))
        return found

    def put_many(self, rows: Sequence[tuple[str, str, str, str, GenerationResult]]) -> None:
        """rows: (key, model json, settings json, prompt, result); one atomic transaction."""
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(key, model, settings, prompt, r.text, r.prompt_tokens, r.new_tokens,
                  int(r.stopped), now) for key, model, settings, prompt, r in rows])

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        self._db.close()


@dataclass
class GenerationStats:
    requested: int = 0
    cache_hits: int = 0  # requests answered by the store
    generated: int = 0  # distinct prompts this process sent to the model (repeats count once)
    generated_by_all: int = 0  # the same, summed over the processes of a multi-process launch
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


class CachedGenerator:
    """Generate answers for prompt texts, from the cache when possible, else in batches.

    ``formatter`` (a :class:`llmtrsr_utils.prompts.PromptFormatter`) turns rendered prompt text
    into token ids; ``load_model`` is called once, at the first cache miss.
    """

    def __init__(self, *, model_identity: dict[str, Any], formatter, load_model,
                 settings: GenerationSettings, cache: GenerationCache, batch_size: int = 16,
                 progress: bool = True, processes=None):
        self.model_identity = model_identity
        self.formatter = formatter
        self.tokenizer = formatter.tokenizer
        self._load_model = load_model
        self._model = None
        self.settings = settings
        self.cache = cache
        self.batch_size = batch_size
        self.progress = progress
        self.stats = GenerationStats()
        # An accelerate PartialState with several processes: every process calls generate()
        # with the same prompts, each generates its share of the cache misses (every
        # num_processes-th missing key, in key order), and after a barrier all read all answers
        # from the shared cache. The misses are the same on every process because each
        # generate() starts after the previous one's barrier, so no prompt is generated twice.
        self.processes = processes if processes is not None and processes.num_processes > 1 \
            else None
        self._model_json = json.dumps(model_identity, sort_keys=True)
        self._settings_json = json.dumps(settings.key_fields(), sort_keys=True)

    @property
    def model(self):
        if self._model is None:
            self._model = self._load_model()
        return self._model

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def key(self, prompt: str) -> str:
        return generation_key(self.model_identity, self.settings, prompt)

    def generate(self, prompts: Sequence[str], desc: str = "generating") -> list[GenerationResult]:
        keys = [self.key(p) for p in prompts]
        found = self.cache.get_many(keys)
        self.stats.requested += len(prompts)
        missing: dict[str, str] = {}
        for key, prompt in zip(keys, prompts, strict=True):
            if key not in found and key not in missing:
                missing[key] = prompt
        self.stats.cache_hits += sum(1 for k in keys if k in found)  # answered by the store
        self.stats.generated_by_all += len(missing)
        if self.processes is None:
            if missing:
                found.update(self._run_batches(missing, desc))
            return [found[k] for k in keys]
        rank, world = self.processes.process_index, self.processes.num_processes
        mine = {k: missing[k] for k in sorted(missing)[rank::world]}
        if mine:
            found.update(self._run_batches(mine, desc))
        self.processes.wait_for_everyone()  # every share is in the cache now
        found.update(self.cache.get_many([k for k in missing if k not in found]))
        absent = [k for k in keys if k not in found]
        if absent:  # a share was not written: never answer from nothing
            raise RuntimeError(f"{len(absent)} answer(s) missing from the shared cache "
                               f"{self.cache.path} after every process finished its share")
        return [found[k] for k in keys]

    def _run_batches(self, missing: dict[str, str], desc: str) -> dict[str, GenerationResult]:
        encoded = {key: self.formatter.encode(prompt) for key, prompt in missing.items()}
        order = sorted(missing, key=lambda k: len(encoded[k]), reverse=True)
        out: dict[str, GenerationResult] = {}
        # In a notebook the finished bar stays (one widget line per stage); in a terminal it
        # goes, so a run's log is not a stack of bars.
        bar = tqdm(total=len(order), desc=desc, unit="prompt", disable=not self.progress,
                   leave=in_kernel())
        for start in range(0, len(order), self.batch_size):
            batch_keys = order[start:start + self.batch_size]
            began = time.perf_counter()
            results = self.generate_ids([encoded[k] for k in batch_keys], seed_offset=start)
            elapsed = time.perf_counter() - began
            self.stats.seconds += elapsed
            self.stats.generated += len(batch_keys)
            self.stats.new_tokens += sum(r.new_tokens for r in results)
            self.cache.put_many([(k, self._model_json, self._settings_json, missing[k], r)
                                 for k, r in zip(batch_keys, results, strict=True)])
            out.update(zip(batch_keys, results, strict=True))
            bar.update(len(batch_keys))
            bar.set_postfix(tok_s=f"{self.stats.tokens_per_second:.1f}")
        bar.close()
        return out

    @torch.no_grad()
    def generate_ids(self, batch: Sequence[Sequence[int]], seed_offset: int = 0
                     ) -> list[GenerationResult]:
        """Generate for a batch of token id lists (greedy: the static-cache loop; sampling, a
        repetition penalty or n-gram block, or a model whose generation settings or cache
        layout the loop does not cover: ``generate``).

        Prompts of one stage share a long prefix (chat template, instruction): it is run once
        and its KV cache reused by every row, with padding placed between prefix and suffix
        (positions follow the attention mask, so each row reads as if unpadded). Without such a
        prefix, rows are left-padded as usual.
        """
        model = self.model
        prefix = shared_prefix_length(batch) if len(batch) > 1 else 0
        if prefix < MIN_SHARED_PREFIX:
            prefix = 0
        if (not self.settings.do_sample and not self.settings.processors
                and static_greedy_supported(model)):
            new = greedy_static(model, batch, prefix, self.tokenizer.pad_token_id,
                                self.settings.max_new_tokens,
                                _end_token_ids(model, self.tokenizer))
        else:
            new = self._generate(batch, prefix, seed_offset)
        return self._results(batch, new)

    @torch.no_grad()
    def generate_reference(self, ids: Sequence[int]) -> GenerationResult:
        """One prompt through transformers' ``generate`` at batch 1, as the authors' scripts
        run every block (benchmarks and tests compare the batched path against it)."""
        return self._results([ids], self._generate([ids], 0, 0))[0]

    def _generate(self, batch: Sequence[Sequence[int]], prefix: int, seed_offset: int
                  ) -> list[list[int]]:
        """transformers' ``generate`` on the [prefix | padding | suffix] layout."""
        model = self.model
        pad_id = self.tokenizer.pad_token_id
        input_ids, attention, width = _layout(batch, prefix, pad_id)
        kwargs: dict[str, Any] = {"max_new_tokens": self.settings.max_new_tokens,
                                  "do_sample": self.settings.do_sample, "pad_token_id": pad_id,
                                  **self.settings.processors}
        if self.settings.do_sample:
            torch.manual_seed(self.settings.seed + seed_offset)
            kwargs.update(temperature=self.settings.temperature, top_p=self.settings.top_p)
        else:  # greedy: clear sampling defaults a model's generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        device = model.device
        if prefix:
            prefilled = model(input_ids=input_ids[:1, :prefix].to(device), use_cache=True,
                              logits_to_keep=1)
            cache = prefilled.past_key_values
            cache.batch_repeat_interleave(len(batch))
            kwargs["past_key_values"] = cache
        output = model.generate(input_ids=input_ids.to(device),
                                attention_mask=attention.to(device), **kwargs)
        return output[:, prefix + width:].cpu().tolist()

    def _results(self, batch: Sequence[Sequence[int]], new: list[list[int]]
                 ) -> list[GenerationResult]:
        end_ids = _end_token_ids(self.model, self.tokenizer)
        results = []
        for ids, tokens in zip(batch, new, strict=True):
            stop_at = next((i for i, t in enumerate(tokens) if t in end_ids), None)
            stopped = stop_at is not None
            kept = tokens[:stop_at] if stopped else tokens
            text = clean_output(self.tokenizer.decode(kept, skip_special_tokens=True))
            results.append(GenerationResult(text, len(ids), len(kept), stopped,
                                            flags=quality_flags(text, stopped)))
        return results


def _layout(batch: Sequence[Sequence[int]], prefix: int, pad_id: int
            ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Rows as [shared prefix | padding | own suffix]: (input_ids, attention mask, width)."""
    width = max(len(ids) for ids in batch) - prefix
    input_ids = torch.full((len(batch), prefix + width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for row, ids in enumerate(batch):
        suffix = ids[prefix:]
        input_ids[row, :prefix] = torch.tensor(ids[:prefix], dtype=torch.long)
        input_ids[row, prefix + width - len(suffix):] = torch.tensor(suffix, dtype=torch.long)
        attention[row, :prefix] = 1
        attention[row, prefix + width - len(suffix):] = 1
    return input_ids, attention, width


# generation_config fields whose non-default values change greedy decoding: the hand loop below
# applies none of them, so a model that sets one is decoded by ``generate`` instead.
_GREEDY_PROCESSORS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
                      "encoder_repetition_penalty": 1.0, "bad_words_ids": None,
                      "forced_bos_token_id": None, "forced_eos_token_id": None,
                      "suppress_tokens": None, "begin_suppress_tokens": None,
                      "min_new_tokens": None, "min_length": 0}


def static_greedy_supported(model) -> bool:
    """The static-cache loop covers decoder-only models whose layers all use full attention
    (no sliding window, no linear attention) and whose generation config asks for no logits
    processor."""
    config = model.config.get_text_config()
    layer_types = getattr(config, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    generation = model.generation_config
    return all(getattr(generation, name, default) in (default, None)
               for name, default in _GREEDY_PROCESSORS.items())


@torch.no_grad()
def greedy_static(model, batch: Sequence[Sequence[int]], prefix: int, pad_id: int,
                  max_new_tokens: int, end_ids: set[int]) -> list[list[int]]:
    """Greedy decoding of a batch with a preallocated KV cache, the shared prefix run once.

    Why by hand: ``generate``'s default dynamic cache concatenates every layer's keys and values
    at every step (at batch 64 on 2 CPU cores, 53% of the time went to ``torch.cat``), and its
    static cache cannot be seeded with one row's prefix for the whole batch, nor prefilled in
    groups. Here the prefix runs at batch 1; the rows, sorted by length, are prefilled in groups
    of ``PREFILL_GROUP_ROWS``, each group padded only to its own longest suffix (one padded
    prefill of 64 block prompts of 122 to 182 suffix tokens computes 64 x 182 = 11,648 positions
    for 9,056 real ones: 22% padding; groups of 8 leave about 3%); each group's keys and values
    are copied into a transformers ``StaticCache`` laid out as [prefix | padding | suffix] for
    the whole batch, and each decoding step writes one token per row in place. The argmax of
    each step's last logits is the same greedy rule as ``generate``'s.

    Returns the new token ids per row, in the order of ``batch`` (``max_new_tokens`` of them, or
    up to the step where every row has produced an end token; the caller cuts at the first end
    token).
    """
    import copy

    from transformers import DynamicCache, StaticCache

    device = model.device
    order = sorted(range(len(batch)), key=lambda i: len(batch[i]), reverse=True)
    input_ids, attention, width = _layout([batch[i] for i in order], prefix, pad_id)
    rows, length = input_ids.shape
    total = length + max_new_tokens
    mask = torch.ones((rows, total), dtype=torch.long)
    mask[:, :length] = attention  # future slots are hidden by causality until written
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    seeded = None
    if prefix:
        seeded = DynamicCache(config=model.config)
        model(input_ids=input_ids[:1, :prefix].to(device), use_cache=True,
              past_key_values=seeded, logits_to_keep=1)
    cache = StaticCache(config=model.config, max_cache_len=total)
    last_logits = []
    for first in range(0, rows, PREFILL_GROUP_ROWS):
        group = slice(first, min(first + PREFILL_GROUP_ROWS, rows))
        suffix = int(attention[group, prefix:].sum(-1).max())  # rows are right-aligned
        window = slice(length - suffix, length)
        group_mask = attention[group, window]
        if seeded is None:
            group_cache = DynamicCache(config=model.config)
        else:
            group_cache = copy.deepcopy(seeded)
            group_cache.batch_repeat_interleave(group.stop - group.start)
            group_mask = torch.cat([attention[group, :prefix], group_mask], dim=1)
        out = model(input_ids=input_ids[group, window].to(device),
                    attention_mask=group_mask.to(device),
                    position_ids=positions[group, window].to(device),
                    past_key_values=group_cache, use_cache=True, logits_to_keep=1)
        last_logits.append(out.logits[:, -1])
        for target, source in zip(cache.layers, group_cache.layers, strict=True):
            if not target.is_initialized:  # shapes and dtype from the first group's states
                target.lazy_initialization(source.keys[:1].expand(rows, -1, -1, -1),
                                           source.values[:1].expand(rows, -1, -1, -1))
            if seeded is not None and first == 0:
                target.keys[:, :, :prefix] = source.keys[:1, :, :prefix]
                target.values[:, :, :prefix] = source.values[:1, :, :prefix]
            target.keys[group, :, window] = source.keys[:, :, prefix:]
            target.values[group, :, window] = source.values[:, :, prefix:]
    for layer in cache.layers:
        layer.cumulative_length.fill_(length)
    logits = torch.cat(last_logits)
    full_mask = mask.to(device)  # the static cache's length: every step sees all its slots
    next_position = positions[:, -1] + 1
    generated = torch.empty((rows, max_new_tokens), dtype=torch.long)
    ended = torch.zeros(rows, dtype=torch.bool)
    ends = torch.tensor(sorted(end_ids), dtype=torch.long)
    steps = 0
    for step in range(max_new_tokens):
        token = logits.argmax(-1).cpu()
        token = torch.where(ended, torch.full_like(token, pad_id), token)
        generated[:, step] = token
        steps = step + 1
        ended |= torch.isin(token, ends)
        if bool(ended.all()) or step == max_new_tokens - 1:
            break
        logits = model(input_ids=token[:, None].to(device), attention_mask=full_mask,
                       position_ids=next_position[:, None].to(device), past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1]
        next_position += 1
    unsorted = torch.empty_like(generated[:, :steps])
    unsorted[order] = generated[:, :steps]
    return unsorted.tolist()


# Rows per prefill forward: 8 rows of ~140 tokens are ~1,100 positions per matmul, still at the
# float32 matmul rate on a CPU, while the padding to a group's longest row stays small.
PREFILL_GROUP_ROWS = 8
MIN_SHARED_PREFIX = 16  # below this, a separate prefix pass costs more than it saves


def _end_token_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ends = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ends.add(tokenizer.eos_token_id)
    return ends


def clean_output(text: str) -> str:
    """Strip whitespace and anything after the model starts a new '### User:' turn itself."""
    match = _TURN_MARKER.search(text)
    if match:
        text = text[:match.start()]
    return text.strip()
