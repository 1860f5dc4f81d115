"""The learning curve: validation Recall@k of each trained system against training examples
seen, with the levels of Random, Popularity and the zero-shot LLM drawn beside it.

Each checkpoint's validation scores come from :func:`llmtrsr_utils.evaluate.validation_rows`
(cached beside the checkpoint, so checkpoint selection does not score them again). Writes
``<work_dir>/results/learning_curve.csv`` for the report and notebook 03's figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from llmtrsr_utils import metrics, results, systems
from llmtrsr_utils.artifacts import check_writable
from llmtrsr_utils.config import Config
from llmtrsr_utils.evaluate import UNTRAINED, evaluate_system, validation_rows
from llmtrsr_utils.models import load_model
from llmtrsr_utils.recommend import require_trained, resolve

# The levels drawn beside the curve (the zero-shot LLM's is the curves' untrained point).
LEVELS = (systems.RANDOM, systems.POPULARITY)


def learning_curve(cfg: Config, system_names: Sequence[str], *, progress: bool = True
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validation Recall@k against training examples seen, for each trained LLM system, and
    the levels to draw beside it (Random, Popularity and the zero-shot LLM on validation).

    Needs more than one checkpoint (``recommender.checkpoints_per_epoch`` or ``epochs``).
    Every system must be trained (``pipeline.learning_curve`` trains first).

    Returns:
        (curve: one row per system and checkpoint with ``examples_seen``; levels: one row per
        baseline), both with every metric's mean and 95% CI.
    """
    out = check_writable(results.results_dir(cfg))
    rows = []
    for name in system_names:
        run = resolve(cfg, name)
        require_trained(run)
        base, tokenizer = load_model(run.cfg.recommender, cache_dir=cfg.cache_dir)
        rows += validation_rows(run, base, tokenizer, progress=progress)[0]
    curve = pd.DataFrame(rows)
    if curve["epoch"].nunique() < 3:
        raise ValueError("a learning curve needs at least two checkpoints: set "
                         "recommender.checkpoints_per_epoch or recommender.epochs above 1")
    curve["examples_seen"] = (curve["epoch"] * curve["train_examples"]).round().astype(int)
    levels = [evaluate_system(cfg, name, progress=progress)[0][0] for name in LEVELS]
    zero_shot = systems.find(systems.ZERO_SHOT)
    untrained = curve[(curve["system"] == zero_shot.prompts_of)
                      & (curve["checkpoint"] == UNTRAINED)]
    levels += [{**row, "system": zero_shot.name, "display_name": zero_shot.label}
               for row in untrained.to_dict("records")]
    levels = pd.DataFrame(levels)
    columns = ["system", "epoch", "examples_seen", "checkpoint", "n_users",
               *[c for c in curve.columns if c.split("_ci_")[0] in metrics.METRICS]]
    curve = curve[columns]
    results.write_csv(curve, out / "learning_curve.csv", index=False)
    return curve, levels[[c for c in [*columns, "display_name"]
                          if c in levels.columns and c != "examples_seen"]]
