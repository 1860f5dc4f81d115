"""Prefix-tree packing: a user's candidates share one prefix, computed once per row.

A training user gives 1 + k examples (the positive and k negatives) whose token sequences are
identical up to the candidate: instruction, preference summary, recent items. Packed, the row
holds that shared prefix once, then each candidate's suffix (candidate text, answer, end token):

    [prefix .............][suffix 0 .....][suffix 1 ....] ... [suffix k ...]
    positions 0 .. P-1     P .. P+n0-1     P .. P+n1-1         (restart after the prefix)

with a 4-D attention mask in which a token sees the prefix and the earlier tokens of its own
suffix, never another suffix. Every token then has exactly the context it has in its own
unpacked sequence, so its hidden state, logits and loss are the same (up to float rounding);
the prefix is computed once instead of 1 + k times.

The loss is the unpacked batch's: each unpacked (position, next token) pair is mapped to its
packed position; a prefix pair shared by the k + 1 sequences becomes one item of weight k + 1;
the last prefix position predicts each suffix's first token (k + 1 items of weight 1). With
``loss_on: answer`` only the answer and end-token pairs remain, so logits are needed at two
positions per candidate (transformers' ``logits_to_keep`` takes the positions).

Scoring packs a user's 21 prompts the same way: one forward, p(yes) read at the last token of
each suffix, no KV cache copied.

Written by hand: transformers packs *independent* sequences (``position_ids`` restarting per
sequence, trl's ``padding_free``), not sequences sharing a prefix; the 4-D mask and the loss
bookkeeping are the part no library does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

PREFIX = -1  # segment id of the shared prefix
PAD = -2  # segment id of padding


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Longest common token prefix, leaving every row at least one token of its own."""
    limit = min(len(ids) for ids in rows) - 1
    first = rows[0]
    length = 0
    while length < limit and all(ids[length] == first[length] for ids in rows):
        length += 1
    return length


@dataclass
class Tree:
    """One packed row: a shared prefix and one suffix per sequence."""

    input_ids: list[int]
    position_ids: list[int]
    segments: list[int]  # PREFIX for the prefix, i for sequence i's suffix
    prefix_length: int
    ends: list[int]  # packed index of each sequence's last token (where scoring reads)
    # Packed index of each unpacked (sequence, position): offsets[i] + (t - prefix_length)
    offsets: list[int] = field(default_factory=list)

    def packed_position(self, sequence: int, position: int) -> int:
        """Where token ``position`` of sequence ``sequence`` sits in the packed row."""
        if position < self.prefix_length:
            return position
        return self.offsets[sequence] + position - self.prefix_length

    @property
    def length(self) -> int:
        return len(self.input_ids)

    def as_row(self) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids, "position_ids": self.position_ids,
                "segments": self.segments}


def build_tree(rows: Sequence[Sequence[int]], prefix_length: int | None = None) -> Tree:
    """Pack token sequences that share a prefix (the longest common one by default)."""
    rows = [list(r) for r in rows]
    if not rows or min(map(len, rows)) == 0:
        raise ValueError("build_tree needs at least one non-empty sequence")
    prefix = shared_prefix_length(rows) if prefix_length is None else prefix_length
    if len(rows) == 1:
        prefix = len(rows[0]) - 1 if prefix_length is None else prefix
    input_ids = rows[0][:prefix]
    positions = list(range(prefix))
    segments = [PREFIX] * prefix
    offsets, ends = [], []
    for index, row in enumerate(rows):
        if row[:prefix] != input_ids[:prefix]:
            raise ValueError(f"sequence {index} does not start with the shared prefix")
        suffix = row[prefix:]
        if not suffix:
            raise ValueError(f"sequence {index} has no token after the shared prefix")
        offsets.append(len(input_ids))
        input_ids += suffix
        positions += range(prefix, prefix + len(suffix))
        segments += [index] * len(suffix)
        ends.append(len(input_ids) - 1)
    return Tree(input_ids, positions, segments, prefix, ends, offsets)


@dataclass
class LossItems:
    """Weighted next-token targets of one packed row, equal to its unpacked sequences' loss."""

    positions: list[int]  # packed position whose logits predict the target
    targets: list[int]
    weights: list[int]  # how many unpacked sequences hold this (position, target) pair
    n_items: int  # the unpacked label count: sum of weights

    @property
    def positions_needed(self) -> list[int]:
        """Distinct packed positions where logits must be computed, in order."""
        return sorted(set(self.positions))


def loss_items(tree: Tree, rows: Sequence[Sequence[int]], loss_starts: Sequence[int]
               ) -> LossItems:
    """The unpacked causal-LM loss of ``rows`` as weighted items of the packed row.

    ``loss_starts[i]``: the first token of sequence i that is a target (1 for every token, the
    completion's first token for completion-only loss); token t is predicted at position t - 1.
    """
    weights: dict[tuple[int, int], int] = {}
    for index, (row, start) in enumerate(zip(rows, loss_starts, strict=True)):
        for t in range(max(1, start), len(row)):
            key = (tree.packed_position(index, t - 1), row[t])
            weights[key] = weights.get(key, 0) + 1
    ordered = sorted(weights)
    return LossItems([p for p, _ in ordered], [t for _, t in ordered],
                     [weights[k] for k in ordered], sum(weights.values()))


def tree_attention_mask(segments: torch.Tensor) -> torch.Tensor:
    """Boolean 4-D mask (B, 1, T, T), True where attention is allowed, for padded rows of
    segment ids.

    Query q sees key k when k <= q and k is in the prefix or in q's own suffix. A padding
    position sees only itself, so no softmax row is empty (an empty row gives NaN, which
    gradient arithmetic would spread).
    """
    length = segments.shape[1]
    arange = torch.arange(length, device=segments.device)
    causal = arange[None, :] <= arange[:, None]  # (T, T): key <= query
    query = segments[:, :, None]
    key = segments[:, None, :]
    allowed = causal[None] & ((key == PREFIX) | (key == query)) & (query != PAD)
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device)[None] & (query == PAD)
    return allowed[:, None]


def mask_for(model, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The 4-D mask in the form the model's attention takes: boolean for sdpa and flash-style
    kernels, additive (0 / dtype's minimum) for eager attention, which adds it to the scores."""
    implementation = getattr(getattr(model, "config", None), "_attn_implementation", "sdpa")
    if implementation != "eager":
        return allowed
    additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return additive.masked_fill_(~allowed, torch.finfo(dtype).min)


def pad_rows(rows: Sequence[Mapping[str, Sequence[int]]], pad_id: int
             ) -> dict[str, torch.Tensor]:
    """Right-pad packed rows (``input_ids``, ``position_ids``, ``segments``) into (B, T)."""
    width = max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), PAD, dtype=torch.long)
    for index, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[index, :n] = torch.tensor(row["input_ids"])
        positions[index, :n] = torch.tensor(row["position_ids"])
        segments[index, :n] = torch.tensor(row["segments"])
    return {"input_ids": input_ids, "position_ids": positions, "segments": segments}


class TreeCollator:
    """Batches packed training rows for :class:`llmtrsr_utils.recommend.TreeSFTTrainer`.

    Each dataset row holds ``input_ids``, ``position_ids``, ``segments`` and the loss items
    (``loss_positions``, ``loss_targets``, ``loss_weights``, ``n_items``). The batch gets the
    padded rows (the trainer builds the 4-D mask from ``segments``), the flat loss items indexed
    into the (B, T) grid, and ``shift_labels`` (also as ``labels``): a vector with one entry per
    unpacked label, which transformers' Trainer counts for ``num_items_in_batch`` exactly as it
    counts trl's labels, so gradient accumulation normalises the same way.
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_rows(rows, self.pad_id)
        width = batch["input_ids"].shape[1]
        flat_positions, targets, weights = [], [], []
        for index, row in enumerate(rows):
            flat_positions += [index * width + p for p in row["loss_positions"]]
            targets += row["loss_targets"]
            weights += row["loss_weights"]
        batch["loss_positions"] = torch.tensor(flat_positions, dtype=torch.long)
        batch["loss_targets"] = torch.tensor(targets, dtype=torch.long)
        batch["loss_weights"] = torch.tensor(weights, dtype=torch.float32)
        # Trainer counts num_items_in_batch only when the batch has "labels", then reads
        # "shift_labels" when present: both hold one entry per unpacked label.
        batch["shift_labels"] = torch.zeros(sum(r["n_items"] for r in rows), dtype=torch.long)
        batch["labels"] = batch["shift_labels"]
        return batch
