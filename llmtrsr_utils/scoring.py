"""p(yes) scoring of candidates (paper equations 2 and 3): softmax(logit yes, logit no)[yes].

The two answer logits are computed in float32 from the model's final hidden state and the
lm_head rows of the two answer tokens only (:class:`AnswerHead`), whatever the model's dtype. A
bfloat16 model's own logits keep 8 bits of mantissa: logits near 20 come in steps of 0.125, so
p(yes) takes few distinct values and many candidates tie (the authors' test.py reads those
rounded bf16 logits). The hidden state is still the model's (bf16 on a GPU); only the last
product and the softmax are done in float32 and float64.

Two scorers that must agree:

- :func:`score_reference`: one full forward per prompt; kept for tests and benchmarks.
- :func:`score_fast`: a user's candidate prompts share everything up to the candidate. Their
  longest common token prefix is run once; its KV cache is repeated for the candidates, whose
  suffixes are padded *between* prefix and suffix, so every row ends at the same position and
  logits are computed there only (``logits_to_keep=1``). Position ids follow the attention mask,
  so each row is computed as if it were unpadded.

Hand-written because this prefix-sharing scorer is specific to ranking many candidates behind
one long prompt; transformers offers the pieces (``DynamicCache``, ``logits_to_keep``), not the
procedure.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmtrsr_utils.config import RecommenderConfig
from llmtrsr_utils.metrics import UserScores
from llmtrsr_utils.models import library_deprecations_silenced
from llmtrsr_utils.packing import (
    build_tree,
    mask_for,
    pad_rows,
    shared_prefix_length,
    tree_attention_mask,
)


def causal_lm(model):
    """The transformers CausalLM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_of(model):
    """The decoder stack that returns the final hidden state (LoRA layers live inside it)."""
    return causal_lm(model).get_decoder()


class AnswerHead:
    """The output layer restricted to the two answer tokens, in float32.

    Holds the (2, hidden) rows of the lm_head for (yes, no), its bias if any, and applies the
    model's own final logit transform where its config has one (Gemma 2's
    ``final_logit_softcapping``, Cohere's ``logit_scale``), so that for a float32 model its
    logits equal the model's own at those two ids.
    """

    def __init__(self, model, yes_id: int, no_id: int):
        lm = causal_lm(model)
        head = lm.get_output_embeddings()
        ids = torch.tensor([yes_id, no_id], device=head.weight.device)
        self.weight = head.weight.detach()[ids].float()
        bias = getattr(head, "bias", None)
        self.bias = bias.detach()[ids].float() if bias is not None else None
        config = lm.config.get_text_config()
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.scale = getattr(config, "logit_scale", None)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., hidden) in any dtype -> (..., 2) float32 logits of (yes, no), float32 under
        an autocast too."""
        with torch.autocast(hidden.device.type, enabled=False):
            logits = hidden.float() @ self.weight.to(hidden.device).T
            if self.bias is not None:
                logits = logits + self.bias.to(hidden.device)
            if self.scale is not None:
                logits = logits * self.scale
            if self.softcap is not None:
                logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def yes_probability(pair: torch.Tensor) -> torch.Tensor:
    """softmax over the (yes, no) logit pair, taking 'yes' (float64 for stable comparisons)."""
    return torch.softmax(pair.double(), dim=-1)[..., 0]


def final_hidden(model, **inputs) -> tuple[torch.Tensor, object]:
    """The decoder's last hidden state (and its KV cache when ``use_cache``)."""
    out = decoder_of(model)(**inputs)
    return out.last_hidden_state, getattr(out, "past_key_values", None)


@torch.no_grad()
def score_reference(model, prompts_ids: Sequence[Sequence[int]], yes_id: int, no_id: int
                    ) -> np.ndarray:
    """One unpadded forward per prompt; p(yes) from the last position's hidden state."""
    device = model.device
    head = AnswerHead(model, yes_id, no_id)
    scores = []
    for ids in prompts_ids:
        hidden, _ = final_hidden(model, input_ids=torch.tensor([list(ids)], device=device),
                                 use_cache=False)
        scores.append(float(yes_probability(head(hidden[0, -1]))))
    return np.asarray(scores)


@torch.no_grad()
def score_tree(model, users: Sequence[Sequence[Sequence[int]]], yes_id: int, no_id: int,
               pad_id: int, users_per_batch: int = 1) -> list[np.ndarray]:
    """p(yes) for each user's candidate prompts, prefix-tree packed (:mod:`llmtrsr_utils.packing`):
    a user's shared prefix once, then every candidate's suffix, one forward per batch of users,
    read at each suffix's last token. No KV cache is copied."""
    device = model.device
    head = AnswerHead(model, yes_id, no_id)
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    out: list[np.ndarray] = []
    for start in range(0, len(users), users_per_batch):
        trees = [build_tree(rows) for rows in users[start:start + users_per_batch]]
        batch = pad_rows([t.as_row() for t in trees], pad_id)
        mask = mask_for(model, tree_attention_mask(batch["segments"]), dtype)
        hidden, _ = final_hidden(model, input_ids=batch["input_ids"].to(device),
                                 position_ids=batch["position_ids"].to(device),
                                 attention_mask=mask.to(device), use_cache=False)
        for row, tree in enumerate(trees):
            pair = head(hidden[row, tree.ends])
            out.append(yes_probability(pair).cpu().numpy())
    return out


@torch.no_grad()
def score_fast(model, prompts_ids: Sequence[Sequence[int]], yes_id: int, no_id: int,
               pad_id: int, batch_size: int = 32) -> np.ndarray:
    """p(yes) for prompts that share a prefix (one user's candidates), prefix computed once."""
    rows = [list(r) for r in prompts_ids]
    if len(rows) == 1:
        return score_reference(model, rows, yes_id, no_id)
    device = model.device
    head = AnswerHead(model, yes_id, no_id)
    prefix = shared_prefix_length(rows)
    scores = np.empty(len(rows))
    prefix_ids = torch.tensor([rows[0][:prefix]], device=device)
    prefilled = final_hidden(model, input_ids=prefix_ids, use_cache=True)[1] if prefix \
        else None
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        suffixes = [r[prefix:] for r in chunk]
        width = max(len(s) for s in suffixes)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), prefix + width), dtype=torch.long)
        attention[:, :prefix] = 1
        for row, suffix in enumerate(suffixes):
            input_ids[row, width - len(suffix):] = torch.tensor(suffix)
            attention[row, prefix + width - len(suffix):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, prefix:]
        kwargs = {}
        if prefilled is not None:
            cache = _copy_cache(prefilled)
            cache.batch_repeat_interleave(len(chunk))
            kwargs["past_key_values"] = cache
        hidden, _ = final_hidden(model, input_ids=input_ids.to(device),
                                 attention_mask=attention.to(device),
                                 position_ids=positions.to(device),
                                 use_cache=prefilled is not None, **kwargs)
        scores[start:start + len(chunk)] = yes_probability(head(hidden[:, -1])).cpu().numpy()
    return scores


def _copy_cache(cache):
    """A fresh copy: each candidate chunk extends the prefix cache in place."""
    import copy

    return copy.deepcopy(cache)


@torch.no_grad()
def score_padded_full(model, prompts_ids: Sequence[Sequence[int]], yes_id: int, no_id: int,
                      pad_id: int, max_length: int) -> np.ndarray:
    """The authors' way, for benchmarks only: every prompt padded to ``max_length``, batch 1,
    logits at every position."""
    device = model.device
    scores = []
    for ids in prompts_ids:
        padded = torch.full((1, max_length), pad_id, dtype=torch.long)
        padded[0, :len(ids)] = torch.tensor(list(ids))
        mask = torch.zeros_like(padded)
        mask[0, :len(ids)] = 1
        logits = model(input_ids=padded.to(device), attention_mask=mask.to(device)).logits
        pair = logits[0, len(ids) - 1, [yes_id, no_id]]  # the model's own (rounded) logits
        scores.append(float(yes_probability(pair)))
    return np.asarray(scores)


@torch.no_grad()
def score_dynamic(model, prompts_ids: Sequence[Sequence[int]], yes_id: int, no_id: int,
                  pad_id: int, batch_size: int = 8) -> np.ndarray:
    """Dynamic padding in batches (left padding, last position), for benchmarks."""
    device = model.device
    rows = [list(r) for r in prompts_ids]
    scores = np.empty(len(rows))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, r in enumerate(chunk):
            ids[row, width - len(r):] = torch.tensor(r)
            mask[row, width - len(r):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       position_ids=positions.to(device), logits_to_keep=1).logits[:, -1]
        scores[start:start + len(chunk)] = yes_probability(
            logits[:, [yes_id, no_id]]).cpu().numpy()
    return scores


# -- a system's scores -------------------------------------------------------------------

def mixed_precision(rec: RecommenderConfig, device: torch.device | str):
    """The autocast of ``recommender.mixed_precision``: bf16 products for 'bf16', and for 'none'
    a context that turns any enclosing autocast off (products in the weights' dtype)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                          enabled=rec.mixed_precision == "bf16")


@contextmanager
def bf16_linear_weights(model, enabled: bool = True) -> Iterator[int]:
    """The decoder's float32 linear weights held in bfloat16 for the duration of the block;
    the original tensors are put back on exit. Yields how many were cast.

    Under bf16 autocast a linear layer casts its float32 weight to bf16 on every call (autocast
    caches a cast only for leaves that require grad, and scoring's weights are frozen): one
    copy of the decoder's weights per forward. Autocast rounds a float32 weight to bf16 exactly
    as ``.to(torch.bfloat16)`` does, so the products, and the scores, are bitwise the same
    (tested); on 2 cores a laptop scoring forward is ~8% faster (4.95 to 4.56 s for 8 test users
    of SmolLM2-135M, torch profiler: the casts were ``aten::copy_``).
    """
    if not enabled:
        yield 0
        return
    saved = []
    for module in decoder_of(model).modules():
        if isinstance(module, torch.nn.Linear) and module.weight.dtype == torch.float32:
            saved.append((module, module.weight))
            module.weight = torch.nn.Parameter(module.weight.detach().to(torch.bfloat16),
                                               requires_grad=False)
    try:
        yield len(saved)
    finally:
        for module, weight in saved:
            module.weight = weight


def score_llm(model, tokenizer, users: Sequence[Any], yes_id: int, no_id: int,
              rec: RecommenderConfig) -> UserScores:
    """p(yes) of every user's candidates with the configured scorer (``recommender.scorer``),
    under the recommender's ``mixed_precision`` (as it was trained; for bf16 the linear weights
    are cast once for the whole call, :func:`bf16_linear_weights`).

    Args:
        users: each with ``user_id``, ``candidates`` and ``prompts`` (recommend.UserPrompts).
    """
    began = time.perf_counter()
    ids = [[tokenizer(p)["input_ids"] for p in user.prompts] for user in users]
    bf16 = rec.mixed_precision == "bf16"
    with mixed_precision(rec, model.device), bf16_linear_weights(model, bf16):
        if rec.scorer == "tree":
            per_batch = max(1, rec.score_batch_size // max(1, len(ids[0]) if ids else 1))
            rows = score_tree(model, ids, yes_id, no_id, tokenizer.pad_token_id, per_batch)
        else:
            rows = [score_fast(model, user, yes_id, no_id, tokenizer.pad_token_id,
                               batch_size=rec.score_batch_size) for user in ids]
    return UserScores([u.user_id for u in users], [u.candidates for u in users],
                      np.vstack(rows), time.perf_counter() - began)


def with_adapter(base, checkpoint: Path, merge: bool, *, keep_base: bool):
    """``base`` with the LoRA adapter saved at ``checkpoint``, in eval mode.

    Args:
        base: the recommender without adapter.
        checkpoint: a folder peft saved (adapter_config.json, adapter_model.safetensors).
        merge: fold the adapter into the base weights (``merge_and_unload``); faster scoring.
        keep_base: merge into a copy, so ``base`` stays clean for the next checkpoint (merging
            in place and subtracting again would leave rounding in the weights, and a later
            checkpoint's scores would depend on whether an earlier one was cached).

    Returns:
        A model to score with: a merged plain model, or the peft model (``unload()`` gives the
        clean base back).
    """
    from peft import PeftModel

    if merge and keep_base:
        base = copy.deepcopy(base)
    with library_deprecations_silenced():
        model = PeftModel.from_pretrained(base, str(checkpoint)).eval()
    return model.merge_and_unload().eval() if merge else model
