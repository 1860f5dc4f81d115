"""p(yes) scoring of candidates (paper equations 2 and 3): softmax(logit yes, logit no)[yes].

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

from collections.abc import Sequence

import numpy as np
import torch

from llmtrsr_utils.generation import shared_prefix_length


def yes_probability(logits: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """softmax over the two answer logits, taking 'yes' (float64 for stable comparisons)."""
    pair = torch.stack([logits[..., yes_id], logits[..., no_id]], dim=-1).double()
    return torch.softmax(pair, dim=-1)[..., 0]


@torch.no_grad()
def score_reference(model, prompts_ids: Sequence[Sequence[int]], yes_id: int, no_id: int
                    ) -> np.ndarray:
    """One unpadded forward per prompt; p(yes) from the last position's logits."""
    device = model.device
    scores = []
    for ids in prompts_ids:
        logits = model(input_ids=torch.tensor([list(ids)], device=device)).logits[0, -1]
        scores.append(float(yes_probability(logits, yes_id, no_id)))
    return np.asarray(scores)


@torch.no_grad()
def score_fast(model, prompts_ids: Sequence[Sequence[int]], yes_id: int, no_id: int,
               pad_id: int, batch_size: int = 32) -> np.ndarray:
    """p(yes) for prompts that share a prefix (one user's candidates), prefix computed once."""
    rows = [list(r) for r in prompts_ids]
    if len(rows) == 1:
        return score_reference(model, rows, yes_id, no_id)
    device = model.device
    prefix = shared_prefix_length(rows)
    scores = np.empty(len(rows))
    prefix_ids = torch.tensor([rows[0][:prefix]], device=device)
    prefilled = model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1) if prefix else None
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
            cache = _copy_cache(prefilled.past_key_values)
            cache.batch_repeat_interleave(len(chunk))
            kwargs["past_key_values"] = cache
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                       position_ids=positions.to(device), use_cache=prefilled is not None,
                       logits_to_keep=1, **kwargs).logits[:, -1]
        scores[start:start + len(chunk)] = yes_probability(logits, yes_id, no_id).cpu().numpy()
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
        scores.append(float(yes_probability(logits[0, len(ids) - 1], yes_id, no_id)))
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
        scores[start:start + len(chunk)] = yes_probability(logits, yes_id, no_id).cpu().numpy()
    return scores
