"""Table 2's classical recommenders over frozen text embeddings of the items (paper 5.2.1).

Every model reads the same inputs: the history (oldest first, right-padded: a boolean mask
marks real positions) and the candidates, as items. An item is, by ``classical.
item_representation``, its frozen text vector (MiniLM 384-d by default, BERT 768-d in the paper
profiles) through a learned linear projection to the model's width (``text``, the paper's "BERT
for text embedding"), a learned embedding of its id (``id``, as the models' own papers), or the
sum (``text+id``). Each model returns one score per candidate. The core idea of each original
paper is kept; what is simplified is said in its docstring.

Why not RecBole: its models learn item-id embeddings from scratch, while the paper's baselines
read pre-trained text embeddings; and its latest release does not run with the kit's pins
(checked 2026-11 with recbole 1.2.1, numpy 2.4.6, torch 2.13.0): ``import recbole.quick_start``
fails in its dependency ray 2.6.3 (``np.bool8``), its MRR/NDCG/MAP metrics use ``np.float``
(removed in numpy 1.24), and it loads checkpoints with ``torch.load`` without
``weights_only``. Seven compact modules here are easier to check than a patched framework.

Training (:func:`train_model`): the same training users as the LLM recommender. Every prefix of
a user's sequence (history + target) predicts its next item, as GRU4Rec and SASRec train; the
last prefix is exactly the LLM's training example with its frozen negative, earlier prefixes get
negatives drawn from the catalogue with the run's seed (``classical.train_negatives`` per
prefix). The loss is each model's own (``classical.loss: paper``, :data:`PAPER_LOSSES`) or one
for all: binary cross-entropy for NCF, DIN, DIEN and SASRec (SASRec's paper, section III-E,
trains with BCE and one sampled negative per step); cross-entropy over the sampled candidates
(a sampled softmax) for NARM and CORE, whose papers use cross-entropy over every item; TOP1-max
for GRU4Rec (Hidasi and Karatzoglou, CIKM 2018), which is the original paper's TOP1 when there
is one negative. AdamW, early stopping on validation Recall@3+5+10 (the LLM's selection rule),
tqdm progress, seeded.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from llmtrsr_utils import metrics, systems
from llmtrsr_utils.artifacts import provenance, write_json
from llmtrsr_utils.baselines import candidate_ids, item_embeddings
from llmtrsr_utils.config import ClassicalConfig, Config
from llmtrsr_utils.datasets.base import HISTORY, TARGET, USER_ID
from llmtrsr_utils.datasets.splits import NEGATIVES, load_items, load_split

log = logging.getLogger("llmtrsr")


# -- shared pieces ---------------------------------------------------------------------------

def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over positions where mask is True; padded positions get exactly zero weight."""
    logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1).nan_to_num(0.0)


def recency_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted from the most recent item (0) backwards, for right-padded rows.

    SASRec left-pads to a fixed length so that the last position is always the most recent
    item; counting from the end gives every row the same property without padding on the left
    (padded slots get 0, and the mask keeps them out of every attention)."""
    lengths = mask.sum(dim=1, keepdim=True)
    steps = torch.arange(mask.size(1), device=mask.device)[None, :]
    return (lengths - 1 - steps).clamp(min=0)


def last_state(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state at each row's last real position (histories are right-padded)."""
    index = (mask.sum(dim=1) - 1).clamp(min=0)
    return states[torch.arange(states.size(0)), index]


def run_gru(gru: nn.GRU, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GRU over the real positions only (packed), zeros at padded ones."""
    lengths = mask.sum(dim=1).clamp(min=1).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(inputs, lengths, batch_first=True,
                                               enforce_sorted=False)
    out, _ = gru(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=inputs.size(1))
    return out


def mlp(sizes: Sequence[int], dropout: float = 0.1) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class SequenceModel(nn.Module):
    """Base: represent items (projected text vectors, id embeddings or both), encode the
    history, score candidates. A model is a subclass that implements :meth:`score` on items
    already at the model's width; :data:`MODELS` finds it by name."""

    max_length: int | None = None  # models with position embeddings read the most recent items

    def __init__(self, input_dim: int, dim: int = 64, dropout: float = 0.1):
        super().__init__()
        self.project: nn.Linear | None = nn.Linear(input_dim, dim)
        self.item_ids: nn.Embedding | None = None
        self.dim = dim
        self.dropout = nn.Dropout(dropout)

    def set_item_representation(self, representation: str, n_items: int = 0) -> None:
        """``text`` (default), ``id`` or ``text+id``; ``n_items`` rows for the id embedding."""
        if representation not in ITEM_REPRESENTATIONS:
            raise ValueError(f"item_representation must be one of "
                             f"{', '.join(ITEM_REPRESENTATIONS)}, got {representation!r}")
        if "id" in representation:
            if n_items < 1:
                raise ValueError(f"item_representation {representation!r} needs the number of "
                                 f"items (n_items >= 1), got {n_items}")
            self.item_ids = nn.Embedding(n_items, self.dim)
        if "text" not in representation:
            self.project = None

    def items(self, vectors: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """(…, E) text vectors and (…) item rows -> (…, dim) item representations."""
        out = self.project(vectors) if self.project is not None else 0.0
        if self.item_ids is not None:
            if rows is None:
                raise ValueError("an id item representation needs the items' rows")
            out = out + self.item_ids(rows)
        return out

    def forward(self, history: torch.Tensor, mask: torch.Tensor, candidates: torch.Tensor,
                history_rows: torch.Tensor | None = None,
                candidate_rows: torch.Tensor | None = None) -> torch.Tensor:
        """history (B, L, E), mask (B, L) bool, candidates (B, C, E) -> scores (B, C); the rows
        (B, L) and (B, C) index the item table (needed by the id representations)."""
        return self.score(self.dropout(self.items(history, history_rows)), mask,
                          self.items(candidates, candidate_rows))

    def score(self, history: torch.Tensor, mask: torch.Tensor,
              candidates: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# -- the seven models ----------------------------------------------------------------------

class NCF(SequenceModel):
    """Neural Collaborative Filtering (He et al., WWW 2017), NeuMF: a generalized matrix
    factorization branch (element-wise product) and an MLP branch over user and item towers.
    As the paper's Table 2 setting says, the user is the max-pooled history (there are no user
    ids shared between splits)."""

    def __init__(self, input_dim: int, dim: int = 64, dropout: float = 0.1):
        super().__init__(input_dim, dim, dropout)
        self.user_tower = mlp([dim, dim, dim], dropout)
        self.item_tower = mlp([dim, dim, dim], dropout)
        self.mlp_branch = mlp([2 * dim, dim, dim // 2], dropout)
        self.out = nn.Linear(dim + dim // 2, 1)

    def score(self, history, mask, candidates):
        pooled = history.masked_fill(~mask[..., None], float("-inf")).max(dim=1).values
        user = self.user_tower(pooled)[:, None, :].expand_as(candidates)
        item = self.item_tower(candidates)
        gmf = user * item
        deep = self.mlp_branch(torch.cat([user, item], dim=-1))
        return self.out(torch.cat([gmf, deep], dim=-1)).squeeze(-1)


class DIN(SequenceModel):
    """Deep Interest Network (Zhou et al., KDD 2018): a local activation unit scores each
    history item against the candidate from [h, c, h - c, h * c]; the user is the weighted sum
    (weights not normalised, as in the paper, padding masked to zero); an MLP scores
    [user, candidate, user * candidate]. Dice activation replaced by PReLU."""

    def __init__(self, input_dim: int, dim: int = 64, dropout: float = 0.1):
        super().__init__(input_dim, dim, dropout)
        self.activation = nn.Sequential(nn.Linear(4 * dim, dim), nn.PReLU(), nn.Linear(dim, 1))
        self.head = nn.Sequential(nn.Linear(3 * dim, dim), nn.PReLU(), nn.Dropout(dropout),
                                  nn.Linear(dim, 1))

    def score(self, history, mask, candidates):
        b, length, d = history.shape
        c = candidates.size(1)
        h = history[:, None].expand(b, c, length, d)
        q = candidates[:, :, None].expand(b, c, length, d)
        weights = self.activation(torch.cat([h, q, h - q, h * q], dim=-1)).squeeze(-1)
        weights = weights * mask[:, None, :]
        user = (weights[..., None] * h).sum(dim=2)
        return self.head(torch.cat([user, candidates, user * candidates], dim=-1)).squeeze(-1)


class AUGRUCell(nn.Module):
    """GRU cell whose update gate is scaled by an attention score (DIEN's AUGRU)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gates = nn.Linear(2 * dim, 2 * dim)
        self.candidate = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, h: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        reset, update = torch.sigmoid(self.gates(torch.cat([x, h], dim=-1))).chunk(2, dim=-1)
        new = torch.tanh(self.candidate(torch.cat([x, reset * h], dim=-1)))
        update = attention[..., None] * update
        return (1 - update) * h + update * new


class DIEN(SequenceModel):
    """Deep Interest Evolution Network (Zhou et al., AAAI 2019): an interest extractor GRU over
    the history, attention of the candidate over its states, and an interest evolving AUGRU
    whose update gates are scaled by that attention; the final evolved interest, the candidate
    and their product go to an MLP. Simplified: no auxiliary next-behaviour loss."""

    def __init__(self, input_dim: int, dim: int = 64, dropout: float = 0.1):
        super().__init__(input_dim, dim, dropout)
        self.extractor = nn.GRU(dim, dim, batch_first=True)
        self.attention = nn.Bilinear(dim, dim, 1)
        self.evolve = AUGRUCell(dim)
        self.head = mlp([3 * dim, dim, 1], dropout)

    def score(self, history, mask, candidates):
        b, length, d = history.shape
        c = candidates.size(1)
        states = run_gru(self.extractor, history, mask)  # (B, L, D)
        s = states[:, None].expand(b, c, length, d).reshape(b * c, length, d)
        q = candidates.reshape(b * c, 1, d).expand(b * c, length, d)
        m = mask[:, None].expand(b, c, length).reshape(b * c, length)
        logits = self.attention(s.reshape(-1, d), q.reshape(-1, d)).view(b * c, length)
        attention = masked_softmax(logits, m)
        h = torch.zeros(b * c, d, dtype=history.dtype, device=history.device)
        for t in range(length):  # padded steps have attention 0: the state does not move
            h = self.evolve(s[:, t], h, attention[:, t])
        interest = h.view(b, c, d)
        return self.head(torch.cat([interest, candidates, interest * candidates],
                                   dim=-1)).squeeze(-1)


class GRU4Rec(SequenceModel):
    """GRU4Rec (Hidasi et al., ICLR 2016): a GRU over the session; the last hidden state scores
    each candidate by dot product. Trained with TOP1-max over the sampled negatives (its
    authors' 2018 loss; the 2016 paper's TOP1 when there is one negative). Simplified: sampled
    negatives per prefix instead of the paper's session-parallel mini-batches."""

    def __init__(self, input_dim: int, dim: int = 64, dropout: float = 0.1):
        super().__init__(input_dim, dim, dropout)
        self.gru = nn.GRU(dim, dim, batch_first=True)

    def score(self, history, mask, candidates):
        user = last_state(run_gru(self.gru, history, mask), mask)
        return torch.einsum("bcd,bd->bc", candidates, user)


class NARM(SequenceModel):
    """Neural Attentive Recommendation Machine (Li et al., CIKM 2017): a GRU's last state is
    the global preference; attention with that state as query over all states is the local
    purpose; their concatenation scores candidates through a bilinear map."""

    def __init__(self, input_dim: int, dim: int = 64, dropout: float = 0.1):
        super().__init__(input_dim, dim, dropout)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.a1 = nn.Linear(dim, dim, bias=False)
        self.a2 = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, 1, bias=False)
        self.bilinear = nn.Linear(2 * dim, dim, bias=False)

    def score(self, history, mask, candidates):
        states = run_gru(self.gru, history, mask)
        global_state = last_state(states, mask)
        logits = self.v(torch.sigmoid(self.a1(states) + self.a2(global_state)[:, None]))
        weights = logits.squeeze(-1).masked_fill(~mask, 0.0)  # paper: unnormalised weights
        local = (weights[..., None] * states).sum(dim=1)
        user = self.bilinear(self.dropout(torch.cat([global_state, local], dim=-1)))
        return torch.einsum("bcd,bd->bc", candidates, user)


class SASRec(SequenceModel):
    """Self-Attentive Sequential Recommendation (Kang and McAuley, ICDM 2018): learned position
    embeddings, causal self-attention blocks; the output at the last real position scores
    candidates by dot product. Positions count back from the most recent item (0), as the
    paper's left padding places the most recent item at a fixed position whatever the length.
    Padding is masked out of every attention."""

    def __init__(self, input_dim: int, dim: int = 64, dropout: float = 0.1,
                 max_length: int = 64, layers: int = 2, heads: int = 2):
        super().__init__(input_dim, dim, dropout)
        self.max_length = max_length
        self.positions = nn.Embedding(max_length, dim)
        block = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def score(self, history, mask, candidates):
        length = history.size(1)
        x = history + self.positions(recency_positions(mask))
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool,
                                       device=history.device), diagonal=1)
        out = self.norm(self.encoder(x, mask=causal, src_key_padding_mask=~mask))
        return torch.einsum("bcd,bd->bc", candidates, last_state(out, mask))


class CORE(SequenceModel):
    """CORE (Hou et al., SIGIR 2022), the transformer variant: the session is a weighted sum of
    its own item representations (weights from a transformer over the history, masked softmax),
    so session and items live in one space (representation consistency); scores are cosine
    similarities divided by a temperature; cross-entropy over the candidates (the paper's over
    every item). Simplified: no robust distance measurement dropout on the item table."""

    def __init__(self, input_dim: int, dim: int = 64, dropout: float = 0.1,
                 max_length: int = 64, temperature: float = 0.07):
        super().__init__(input_dim, dim, dropout)
        self.max_length = max_length
        self.positions = nn.Embedding(max_length, dim)
        block = nn.TransformerEncoderLayer(dim, 2, dim_feedforward=dim, dropout=dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(block, 1, enable_nested_tensor=False)
        self.weight = nn.Linear(dim, 1)
        self.temperature = temperature

    def score(self, history, mask, candidates):
        x = history + self.positions(recency_positions(mask))  # most recent item: position 0
        out = self.encoder(x, src_key_padding_mask=~mask)
        weights = masked_softmax(self.weight(out).squeeze(-1), mask)
        session = nn.functional.normalize((weights[..., None] * history).sum(dim=1), dim=-1)
        items = nn.functional.normalize(candidates, dim=-1)
        return torch.einsum("bcd,bd->bc", items, session) / self.temperature


# A classical system of the registry (llmtrsr_utils.systems) is the class of its name.
MODELS: dict[str, type[SequenceModel]] = {
    model.__name__.lower(): model for model in (NCF, DIN, DIEN, GRU4Rec, NARM, SASRec, CORE)}


ITEM_REPRESENTATIONS = ("text", "id", "text+id")
# Each model's loss in its own paper (``classical.loss: paper``), from the registry; see the
# module docstring.
PAPER_LOSSES = {name: systems.find(name).options["loss"]
                for name in systems.names("classical")}
LOSSES = ("bce", "cross-entropy", "top1-max")


def build_model(name: str, input_dim: int, dim: int = 64, dropout: float = 0.1, *,
                representation: str = "text", n_items: int = 0) -> SequenceModel:
    if name not in MODELS:
        raise ValueError(f"unknown classical model {name!r}; known: {', '.join(MODELS)}")
    model = MODELS[name](input_dim, dim, dropout)
    model.set_item_representation(representation, n_items)
    return model


def model_loss(name: str, setting: str) -> str:
    """The loss a model trains with: its paper's (``paper``) or the one named for all."""
    loss = PAPER_LOSSES[name] if setting == "paper" else setting
    if loss not in LOSSES:
        raise ValueError(f"classical.loss must be 'paper' or one of {', '.join(LOSSES)}, "
                         f"got {setting!r}")
    return loss


def ranking_loss(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Loss of (B, 1 + k) scores whose column 0 is the positive and the rest sampled negatives.

    ``bce``: binary cross-entropy, positive 1, negatives 0. ``cross-entropy``: softmax over the
    1 + k candidates, the positive the class (a sampled softmax). ``top1-max``: GRU4Rec's
    TOP1-max, sum_j s_j (sigmoid(r_j - r_pos) + sigmoid(r_j^2)) with s the softmax of the
    negatives' scores (Hidasi and Karatzoglou, CIKM 2018, eq. 6); with one negative s = 1 and
    it is the 2016 paper's TOP1.
    """
    if loss == "bce":
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return nn.functional.binary_cross_entropy_with_logits(logits, labels)
    if loss == "cross-entropy":
        target = torch.zeros(logits.size(0), dtype=torch.long, device=logits.device)
        return nn.functional.cross_entropy(logits, target)
    if loss == "top1-max":
        positive, negatives = logits[:, :1], logits[:, 1:]
        weights = torch.softmax(negatives, dim=1)
        terms = torch.sigmoid(negatives - positive) + torch.sigmoid(negatives ** 2)
        return (weights * terms).sum(dim=1).mean()
    raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")


# -- data -----------------------------------------------------------------------------------

@dataclass
class Batch:
    history: torch.Tensor  # (B, L, E)
    mask: torch.Tensor  # (B, L)
    candidates: torch.Tensor  # (B, C, E), column 0 the positive
    history_rows: torch.Tensor  # (B, L) item-table rows (0 where padded)
    candidate_rows: torch.Tensor  # (B, C)


class ItemTable:
    """Frozen vectors by item id."""

    def __init__(self, item_ids: Sequence[str], vectors: np.ndarray):
        self.index = {str(item): row for row, item in enumerate(item_ids)}
        self.vectors = torch.as_tensor(np.asarray(vectors, dtype=np.float32))

    def rows(self, ids: Sequence[str], owner: str, role: str) -> list[int]:
        try:
            return [self.index[str(i)] for i in ids]
        except KeyError as err:
            raise KeyError(f"{role} item {err.args[0]!r} of user {owner!r} has no embedding") \
                from None

    def batch(self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]],
              owners: Sequence[str], max_length: int | None = None) -> Batch:
        """Right-padded history vectors (the most recent ``max_length`` items when given)."""
        if max_length:
            histories = [list(h)[-max_length:] for h in histories]
        length = max(len(h) for h in histories)
        if length == 0:
            raise ValueError(f"user {owners[0]!r}: empty history")
        rows = torch.zeros(len(histories), length, dtype=torch.long)
        mask = torch.zeros(len(histories), length, dtype=torch.bool)
        for i, (history, owner) in enumerate(zip(histories, owners, strict=True)):
            rows[i, :len(history)] = torch.tensor(self.rows(history, owner, "history"))
            mask[i, :len(history)] = True
        cand = torch.tensor([self.rows(c, o, "candidate")
                             for c, o in zip(candidates, owners, strict=True)])
        return Batch(self.vectors[rows], mask, self.vectors[cand], rows, cand)


def training_examples(train: pd.DataFrame, item_ids: Sequence[str], seed: int,
                      negatives_per_prefix: int = 1, max_history: int | None = None
                      ) -> list[tuple[list[str], list[str], str]]:
    """(history prefix, [positive, *negatives], user) for every next-item step of every training
    user, each with ``negatives_per_prefix`` negatives not in the user's sequence: the final step
    takes the user's frozen negatives first (the LLM's training example), topped up from the
    catalogue; earlier steps draw theirs from the catalogue with ``seed``."""
    if negatives_per_prefix < 1:
        raise ValueError(f"classical.train_negatives must be >= 1, got {negatives_per_prefix}")
    rng = np.random.default_rng(seed)
    examples = []
    for row in train.to_dict("records"):
        sequence = [*row[HISTORY], row[TARGET]]
        seen = set(sequence)
        if len(set(item_ids) - seen) < negatives_per_prefix:
            raise ValueError(f"user {row[USER_ID]!r}: the catalogue has fewer than "
                             f"{negatives_per_prefix} items outside the user's sequence "
                             f"(classical.train_negatives)")
        for end in range(1, len(sequence)):
            prefix = sequence[:end][-max_history:] if max_history else sequence[:end]
            last = end == len(sequence) - 1
            negatives = list(row[NEGATIVES])[:negatives_per_prefix] if last else []
            while len(negatives) < negatives_per_prefix:
                pick = item_ids[int(rng.integers(len(item_ids)))]
                if pick not in seen and pick not in negatives:
                    negatives.append(pick)
            examples.append((prefix, [sequence[end], *negatives], row[USER_ID]))
    return examples


# -- training and scoring -------------------------------------------------------------------

def score_frame(model: SequenceModel, table: ItemTable, frame: pd.DataFrame,
                batch_size: int = 256) -> np.ndarray:
    """Scores of [target, *negatives] per user, in frame order."""
    model.eval()
    out = []
    rows = frame.to_dict("records")
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            batch = table.batch([list(r[HISTORY]) for r in part],
                                [[r[TARGET], *r[NEGATIVES]] for r in part],
                                [r[USER_ID] for r in part], model.max_length)
            out.append(model(batch.history, batch.mask, batch.candidates, batch.history_rows,
                             batch.candidate_rows).double().numpy())
    return np.vstack(out) if out else np.empty((0, 0))


def train_model(name: str, table: ItemTable, train: pd.DataFrame, valid: pd.DataFrame,
                settings: ClassicalConfig, *, seed: int, progress: bool = True
                ) -> tuple[SequenceModel, dict[str, Any]]:
    """Train one model with early stopping on validation Recall@3+5+10; returns the best
    model and a record (epochs run, best epoch, validation scores, seconds)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(name, table.vectors.shape[1], settings.dim, settings.dropout,
                        representation=settings.item_representation,
                        n_items=len(table.index))
    loss = model_loss(name, settings.loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    examples = training_examples(train, list(table.index), seed, settings.train_negatives,
                                 max_history=model.max_length)
    best = (-math.inf, 0, copy.deepcopy(model.state_dict()))
    history = []
    began = time.perf_counter()
    bar = tqdm(range(1, settings.max_epochs + 1), desc=name, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(examples), generator=generator).tolist()
        losses = []
        for start in range(0, len(order), settings.batch_size):
            part = [examples[i] for i in order[start:start + settings.batch_size]]
            batch = table.batch([p[0] for p in part], [p[1] for p in part], [p[2] for p in part])
            logits = model(batch.history, batch.mask, batch.candidates, batch.history_rows,
                           batch.candidate_rows)
            value = ranking_loss(logits, loss)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            losses.append(value.item())
        valid_scores = score_frame(model, table, valid)
        selection = metrics.selection_score(metrics.per_user_metrics(
            valid_scores, user_ids=valid[USER_ID].tolist()))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "valid": selection})
        # The selection score is Recall@3+5+10 (up to 3): shown as its mean, a recall.
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", valid_recall_3_5_10=f"{selection / 3:.3f}")
        if selection > best[0]:  # ties keep the earlier epoch
            best = (selection, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= settings.patience:
            break
    model.load_state_dict(best[2])
    record = {"model": name, "loss": loss, "item_representation": settings.item_representation,
              "train_negatives": settings.train_negatives,
              "epochs_run": len(history), "best_epoch": best[1],
              "best_valid_selection": best[0], "train_examples": len(examples),
              "train_seconds": round(time.perf_counter() - began, 3), "history": history,
              "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    return model, record


def train_and_score(cfg: Config, name: str, data_dir: Path, *, progress: bool = True
                    ) -> tuple[dict[str, Any], dict[str, metrics.UserScores]]:
    """Train one model on the training users (early stopping on validation) and score the
    validation and test users' frozen candidates; the record is also written to
    ``<work_dir>/results/classical/<name>.json`` with the params that made it.

    Args:
        cfg: the run's config (``classical`` section, training seed, cache dir).
        name: a classical system of the registry.
        data_dir: the prepared data (``pipeline.ensure_splits``).

    Returns:
        (training record, scores by split).
    """
    settings = cfg.classical
    item_ids, vectors = item_embeddings(load_items(data_dir), settings.encoder,
                                        cfg.cache_path / "embeddings")
    table = ItemTable(item_ids, vectors)
    frames = {split: load_split(data_dir, split) for split in ("train", "valid", "test")}
    model, record = train_model(name, table, frames["train"], frames["valid"], settings,
                                seed=cfg.training_seed, progress=progress)
    suffix = "" if cfg.training_seed == cfg.seed else f"_seed{cfg.training_seed}"
    write_json({**record, **provenance(cfg)}, cfg.work_path / "results" / "classical" /
               f"{name}{suffix}.json")
    scores = {}
    for split in ("valid", "test"):
        frame = frames[split]
        began = time.perf_counter()
        matrix = score_frame(model, table, frame)
        scores[split] = metrics.UserScores(frame[USER_ID].tolist(), candidate_ids(frame), matrix,
                                           time.perf_counter() - began)
    return record, scores
