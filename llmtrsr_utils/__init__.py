"""llmtrsr: a research kit for LLM-TRSR (text-rich sequential recommendation with LLM summaries).

The package's modules form one straight line: each imports only modules listed before it in
:data:`MODULE_ORDER` (``tests/test_architecture.py`` walks every import, inside functions too,
and fails on an upward import or a cycle). Read from the top, the line is the pipeline:
data -> segmentation -> summaries -> recommender -> evaluation -> figures, with
``pipeline`` the one module that makes a missing input by running the stage below.
"""

__version__ = "0.1.0"

# Bottom to top, names relative to the package ("" is the package itself).
MODULE_ORDER = (
    "",  # __version__, this order
    # Foundations: no stage, no model.
    "artifacts", "environment", "metrics", "packing", "prompts", "records", "registry",
    # Data: the loader contract and registry, the config (whose data.name choices come from
    # the registry), the loaders, then splits (the data stage) and their statistics.
    "datasets.base", "datasets.download", "datasets.render", "datasets", "config",
    "datasets.amazon_m2", "datasets.generic", "datasets.mind", "datasets.movielens",
    "datasets.recbole", "datasets.splits", "datasets.stats",
    # Stages, in the order a run goes through them.
    "segmentation", "models", "generation", "summarize",
    "scoring", "tree_trainer", "recommend",
    "baselines", "classical", "results", "evaluate",
    "plots",
    # Orchestration: make what is missing, grids, measurements, figures, entry points.
    "pipeline", "grid", "efficiency", "report", "notebooks", "cli",
)
