"""trl's SFTTrainer on prefix-tree packed rows (:mod:`llmtrsr_utils.packing`).

Kept as a subclass of trl's trainer, so checkpoints, resume, accelerate and DeepSpeed work as
for the ordinary path; only the batch layout (:class:`~llmtrsr_utils.packing.TreeCollator`)
and the loss computation differ. In its own module so that importing the recommender does not
import trl (two seconds) until training starts.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

from llmtrsr_utils.packing import mask_for, tree_attention_mask


def target_log_probs(logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor,
                     chunk: int = 256) -> torch.Tensor:
    """log p(target) for each (row of ``logits``, target), the log-softmax in float64 and in
    chunks of rows: a float32 log-softmax over a 49k vocabulary is off by ~2e-5 nats against
    trl's fused head (which matches float64 to 5e-7), more than the exactness the kit tests."""
    out = []
    for start in range(0, len(rows), chunk):
        part = slice(start, start + chunk)
        picked = logits[rows[part]].double()
        out.append(torch.log_softmax(picked, dim=-1).gather(
            -1, targets[part, None]).squeeze(-1))
    return torch.cat(out) if out else logits.new_zeros(0, dtype=torch.float64)


class TreeSFTTrainer(SFTTrainer):
    """``compute_loss`` builds the tree attention mask, asks the model for logits at the loss
    positions only (``logits_to_keep``), and returns the weighted next-token loss divided by
    ``num_items_in_batch`` (the unpacked label count, from the collator's ``shift_labels``)
    exactly as trl divides its own, so gradient accumulation and multi-process averaging
    normalise the same way. The dataset must be built with ``skip_prepare_dataset`` and
    ``remove_unused_columns=False`` (its columns are the packed rows, not trl's)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        segments = inputs.pop("segments")
        flat_positions = inputs.pop("loss_positions")
        targets = inputs.pop("loss_targets")
        weights = inputs.pop("loss_weights")
        inputs.pop("shift_labels", None)
        inputs.pop("labels", None)
        batch, width = inputs["input_ids"].shape
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        mask = mask_for(self.accelerator.unwrap_model(model), tree_attention_mask(segments),
                        dtype)
        keep = torch.zeros(batch * width, dtype=torch.bool, device=segments.device)
        keep[flat_positions] = True
        outputs = model(input_ids=inputs["input_ids"], position_ids=inputs["position_ids"],
                        attention_mask=mask, logits_to_keep=keep.view(batch, width),
                        use_cache=False)
        logits = outputs.logits
        kept = keep.nonzero().squeeze(1)
        if logits.dim() == 3:  # a model that ignores a tensor logits_to_keep
            logits = logits.reshape(batch * width, -1)[kept]
        rows = torch.searchsorted(kept, flat_positions)
        log_probs = target_log_probs(logits, rows, targets)
        total = (weights.to(log_probs.device) * -log_probs).sum().float()
        count = num_items_in_batch if num_items_in_batch is not None else weights.sum()
        loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
