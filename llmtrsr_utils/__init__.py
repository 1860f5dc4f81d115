"""llmtrsr: a research kit for LLM-TRSR (text-rich sequential recommendation with LLM summaries).

The package's modules form one straight line: each imports only modules listed before it in
:data:`MODULE_ORDER` (``tests/test_architecture.py`` walks every import, inside functions too,
and fails on an upward import or a cycle). Read from the top, the line is the pipeline:
data -> segmentation -> summaries -> recommender -> evaluation -> figures, with
``pipeline`` the one module that makes a missing input by running the stage below.
"""

__version__ = "0.1.0"

# Bottom to top, names relative to the package ("" is the package itself). An entry ending in
# ".*" is a folder whose every module is an extension found by convention (a file there is a
# loader, a paradigm, a baseline): they share that place in the line, so each may import what is
# below it but not its neighbours, and a new file needs no edit here.
MODULE_ORDER = (
    "",  # __version__, this order
    # Foundations: no stage, no model.
    "artifacts", "environment", "kernels", "metrics", "packing", "prompts", "records", "registry",
    # The registry of every scored system and summarization paradigm (names, labels, order).
    "systems",
    # Data: the loader contract, the loaders' folder (its contents are the list of datasets),
    # the config (whose data.name choices come from that folder), the loaders, then splits
    # (the data stage) and their statistics.
    "datasets.base", "datasets.download", "datasets.render", "datasets.loaders", "datasets",
    "config", "datasets.loaders.*", "datasets.splits", "datasets.stats",
    # Stages, in the order a run goes through them.
    "segmentation", "models", "generation", "summarize",
    "scoring", "tree_trainer", "recommend",
    "baselines", "classical", "results", "evaluate", "learning", "history_shuffle",
    "decision", "plots",
    # Orchestration: make what is missing, grids, measurements, figures, entry points.
    "pipeline", "summary_probe", "grid", "efficiency", "report", "readme", "notebooks", "cli",
    # Extensions inside the kit: a file in llmtrsr_utils/extensions/ registers a paradigm or a
    # baseline by plain name (imported by systems.load_extensions, so it may use any module).
    "extensions", "extensions.*",
)


def module_rank(name: str, order: tuple[str, ...] = MODULE_ORDER) -> int | None:
    """A module's place in :data:`MODULE_ORDER`: its own entry, else its folder's ``.*`` entry
    (``datasets.loaders.movielens`` is ranked by ``datasets.loaders.*``); None when unlisted."""
    if name in order:
        return order.index(name)
    folder = name.rpartition(".")[0]
    wildcard = f"{folder}.*"
    return order.index(wildcard) if folder and wildcard in order else None
