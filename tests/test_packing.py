"""Prefix-tree packing: the packed row's loss and LoRA gradients equal trl's ordinary path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmtrsr_utils.packing import (
    PAD,
    PREFIX,
    build_tree,
    loss_items,
    pad_rows,
    shared_prefix_length,
    tree_attention_mask,
)
from llmtrsr_utils.pipeline import ensure_system_inputs
from llmtrsr_utils.recommend import build_trainer, resolve
from tests.conftest import smoke_config


def test_tree_layout_positions_and_segments():
    rows = [[1, 2, 3, 10, 11], [1, 2, 3, 20], [1, 2, 3, 30, 31, 32]]
    tree = build_tree(rows)
    assert tree.prefix_length == 3
    assert tree.input_ids == [1, 2, 3, 10, 11, 20, 30, 31, 32]
    assert tree.position_ids == [0, 1, 2, 3, 4, 3, 3, 4, 5]  # restart after the prefix
    assert tree.segments == [PREFIX] * 3 + [0, 0, 1, 2, 2, 2]
    assert tree.ends == [4, 5, 8]
    assert [tree.packed_position(2, t) for t in range(6)] == [0, 1, 2, 6, 7, 8]
    # Identical rows still keep one token each (the scorer reads it).
    assert shared_prefix_length([[5, 6], [5, 6]]) == 1


def test_loss_items_weight_the_shared_prefix_by_the_sequences_holding_it():
    rows = [[1, 2, 3, 10, 11], [1, 2, 3, 20]]
    tree = build_tree(rows)
    every = loss_items(tree, rows, [1, 1])
    # prefix pairs 0->2, 1->3 shared by both (weight 2); position 2 predicts 10 and 20 (1 each);
    # suffix 0: 10->11.
    assert list(zip(every.positions, every.targets, every.weights, strict=True)) == [
        (0, 2, 2), (1, 3, 2), (2, 10, 1), (2, 20, 1), (3, 11, 1)]
    assert every.n_items == (5 - 1) + (4 - 1)  # the unpacked label count
    answer = loss_items(tree, rows, [3, 3])  # completion-only: tokens 3.. are targets
    assert answer.positions == [2, 2, 3] and answer.n_items == 3
    assert answer.positions_needed == [2, 3]


def test_mask_keeps_suffixes_apart_and_padding_alone():
    rows = [build_tree([[1, 2, 10, 11], [1, 2, 20]]).as_row(),
            build_tree([[7, 8], [7, 9]]).as_row()]
    batch = pad_rows(rows, pad_id=0)
    assert batch["segments"][1].tolist() == [PREFIX, 0, 1, PAD, PAD]
    allowed = tree_attention_mask(batch["segments"])[:, 0]
    first = allowed[0]
    assert first[3].tolist() == [True, True, True, True, False]  # 11 sees prefix, 10, itself
    assert first[4].tolist() == [True, True, False, False, True]  # 20 never sees suffix 0
    assert not first[2, 3]  # causal: 10 does not see 11
    second = allowed[1]
    assert second[3].tolist() == [False, False, False, True, False]  # padding sees itself only


def lora_parameters(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if "lora_" in name}


def packed_against_trl(tmp_path: Path, data_dir: Path, model: str, loss_on: str, negatives: int
                       ) -> tuple[float, float, float]:
    """(trl loss, packed loss, max |grad difference| / max |grad|) on the same training users,
    one batch holding all of them, the same LoRA weights (random, so every gradient is non-zero)
    and no dropout, in float32."""
    settings = [f"recommender.model={model}", f"recommender.loss_on={loss_on}",
                f"data.train_negatives={negatives}", "recommender.lora_dropout=0.0",
                "data.n_train_users=3", f"recommender.global_batch_size={3 * (1 + negatives)}",
                "recommender.batch_size=1", "recommender.dtype=float32"]
    trainers = {}
    for packing in ("none", "tree"):
        cfg = smoke_config(tmp_path / packing, data_dir, *settings,
                           f"recommender.packing={packing}",
                           f"summarizer.cache_file={tmp_path / 'gen.sqlite'}")
        ensure_system_inputs(cfg, "llmtrsr-hierarchical", ("train",), progress=False)
        trainers[packing], _ = build_trainer(resolve(cfg, "llmtrsr-hierarchical"),
                                             tmp_path / packing / "out", progress=False)
    plain, tree = trainers["none"], trainers["tree"]
    plain_params, tree_params = lora_parameters(plain.model), lora_parameters(tree.model)
    assert plain_params.keys() == tree_params.keys() and plain_params
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in plain_params.items():
            value = torch.randn(parameter.shape, generator=generator) * 0.05
            parameter.copy_(value)
            tree_params[name].copy_(value)
    losses = []
    for trainer in (plain, tree):
        trainer.model.train()
        dataset = trainer.train_dataset
        batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
        items = trainer._get_num_items_in_batch([batch], "cpu")
        assert items is not None  # both paths normalise by the unpacked label count
        losses.append((trainer.compute_loss(trainer.model, dict(batch),
                                            num_items_in_batch=items), int(items)))
        losses[-1][0].backward()
    (plain_loss, plain_items), (tree_loss, tree_items) = losses
    assert plain_items == tree_items
    assert len(tree.train_dataset) == 3 and len(plain.train_dataset) == 3 * (1 + negatives)
    largest = max(p.grad.abs().max().item() for p in plain_params.values())
    difference = max((plain_params[n].grad - tree_params[n].grad).abs().max().item()
                     for n in plain_params)
    return plain_loss.item(), tree_loss.item(), difference / largest


@pytest.mark.parametrize("loss_on", ["all", "answer"])
@pytest.mark.parametrize("negatives", [1, 4])
def test_packed_loss_and_gradients_equal_trl_on_tiny_llama(tmp_path, movielens_dir, loss_on,
                                                           negatives):
    plain, packed, gradient = packed_against_trl(tmp_path, movielens_dir, "tiny-random-llama",
                                                 loss_on, negatives)
    assert abs(plain - packed) < 1e-5, (plain, packed)
    assert gradient < 1e-4, gradient


@pytest.mark.slow
@pytest.mark.parametrize("loss_on", ["all", "answer"])
def test_packed_loss_and_gradients_equal_trl_on_smollm2(tmp_path, movielens_dir, loss_on):
    plain, packed, gradient = packed_against_trl(tmp_path, movielens_dir, "smollm2-135m",
                                                 loss_on, 2)
    assert abs(plain - packed) < 1e-5, (plain, packed)
    assert gradient < 1e-4, gradient
