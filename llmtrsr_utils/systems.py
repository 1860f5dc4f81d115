"""The registry of everything that is scored, and of the summarization paradigms.

Every system the kit evaluates is registered here once, with its name, its Table 2 label, its
kind (which says how it is trained and scored) and its place in Table 2. Every list the kit
shows is read from this registry: the CLI's choices and ``all``, the config's
``recommender.summary`` choices, Table 2's rows and order, the figures' series, the efficiency
study's systems, and every display label. A test fails when a system's name or label is spelled
anywhere else in the package.

Kinds, and how each is trained and scored (``llmtrsr_utils.evaluate`` dispatches on the kind):

- ``untrained``: the untrained recommender (the zero-shot LLM) on another system's prompts
  (``prompts_of``);
- ``reference``: a scorer that needs no training, ``score(frame, split, context)`` (random,
  popularity, text embedding, and any baseline registered with :func:`baseline`);
- ``classical``: a model of :mod:`llmtrsr_utils.classical`, trained on the training users;
- ``llm``: a LoRA-tuned recommender, its ``recommender`` settings laid over the params'
  (LLM-TRSR with each paradigm's summaries, TALLRec with the whole history);
- ``variant``: trained and scored like ``llm``: an LLM-TRSR system under one of the kit's
  settings that the paper does not have (its own ``summarizer`` settings laid over the params',
  e.g. issue 22's fields-style summary). ``--systems all`` leaves it out (``--systems
  all,variants`` adds every variant); its label says it is the kit's.
- ``control``: trained and scored like ``llm`` but not one of the paper's systems: a check on
  the method (issue 22's positive and negative controls). Table 2 labels it as a control, and
  ``--systems all`` leaves it out (``--systems all,controls`` adds every control).

Table 2 lists the kinds in that order, systems of one kind in the order they were registered.

The built-in systems are declared here as data, so the config, results and figures know them
without importing torch; the stage modules attach their code (a paradigm's function, a
baseline's scorer) when imported. An extension adds a system in one file: a module in
``llmtrsr_utils/extensions/`` registers it by plain name (imported by :func:`load_extensions`
before any list is read), and a module outside the kit is named by its module path
(``--baselines my_package.my_baseline``, ``llmtrsr-my_package.my_paradigm``). Such a file should
import only this module at its top, so listing systems stays cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from llmtrsr_utils.registry import Registry

# The kit's own names: every other module refers to these constants, never to the strings.
HIERARCHICAL = "hierarchical"  # paradigm: block summaries merged layer by layer (paper 4.1)
RECURRENT = "recurrent"  # paradigm: one summary updated block by block (paper 4.2)
NO_SUMMARY = "none"  # recommender.summary of a prompt without summary (TALLRec)
LLM_PREFIX = "llmtrsr-"  # an LLM-TRSR system is llmtrsr-<paradigm>
TALLREC = "tallrec"
ZERO_SHOT = "zero-shot"
RANDOM = "random"
POPULARITY = "popularity"
EMBEDDING = "embedding"
NULL_CONTROL = "null-summary"  # control: NULL in the summary slot (issue 22's `null`; a bare
# null would read as YAML's null in a params or grid file)
ORACLE_OLDER = "oracle-older"  # control: the older items' own texts in the summary slot
OLDER_ITEMS = "older-items"  # a control's summary_source option: no summarizer call

# Table 2's bands, top to bottom; a system's kind puts it in one.
KINDS = ("untrained", "reference", "classical", "llm", "variant", "control")
TRAINED_KINDS = ("llm", "variant", "control")  # LoRA adapters: `llmtrsr train`, --systems
BASELINE_KINDS = ("untrained", "reference", "classical")  # --baselines
# trained once per training seed (`seeds`)
SEEDED_KINDS = ("llm", "variant", "control", "classical")

# Scorer: (frame of one split's users, split name, context) -> (n_users, 1 + n_negatives)
# floats, the positive in column 0 (see llmtrsr_utils.baselines.BaselineContext).
Scorer = Callable[[Any, str, Any], Any]
# Paradigm: (summarizer, users) -> one UserSummary per user (see llmtrsr_utils.summarize).
Paradigm = Callable[[Any, list], list]


@dataclass(frozen=True)
class System:
    """One scored system: what Table 2 calls it and how the kit trains and scores it.

    Attributes:
        name: the name on the command line, in params and in every results row.
        label: its Table 2 label.
        kind: one of :data:`KINDS`.
        rank: registration number; Table 2 orders by (kind band, rank).
        recommender: ``llm``/``variant``/``control``: recommender settings laid over the
            params'.
        summarizer: ``variant``: summarizer settings laid over the params' (its summaries are
            stored apart from those of the params' own settings).
        prompts_of: ``untrained``: the system whose prompts the untrained model reads.
        score: ``reference``: the scorer (attached by the module that defines it).
        paradigm: ``llm``: the paradigm whose summaries the prompt carries, if any.
        options: settings of one kind (``classical``: ``loss``, its own paper's loss;
            ``control``: ``summary_source``, what fills the summary slot instead of a
            summarizer).
    """

    name: str
    label: str
    kind: str
    rank: int
    recommender: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    summarizer: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    prompts_of: str | None = None
    score: Scorer | None = None
    paradigm: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def trained(self) -> bool:
        """A LoRA-tuned recommender (``llmtrsr train`` makes its adapter)."""
        return self.kind in TRAINED_KINDS


SYSTEMS: Registry[System] = Registry("system", "--systems/--baselines")
PARADIGMS: Registry[Paradigm | None] = Registry("paradigm", "paradigm")
_ranks = iter(range(10**6))


def register(name: str, label: str, kind: str, *, module: str = __name__,
             **settings: Any) -> System:
    """Add a system (see :class:`System` for ``settings``); registering the same name again
    with the same label and kind attaches new settings (a scorer to a declared baseline)."""
    if kind not in KINDS:
        raise ValueError(f"system {name!r}: kind must be one of {', '.join(KINDS)}; got {kind!r}")
    for frozen in ("recommender", "summarizer", "options"):
        if frozen in settings:
            settings[frozen] = MappingProxyType(dict(settings[frozen]))
    known = SYSTEMS.get(name)
    if known is None:
        return SYSTEMS.add(name, System(name, label, kind, next(_ranks), **settings), module)
    if (known.label, known.kind) != (label, kind):
        raise ValueError(f"system {name!r} is registered twice (as {known.label!r}, "
                         f"{known.kind} and as {label!r}, {kind})")
    SYSTEMS[name] = dataclasses.replace(known, **settings)
    return SYSTEMS[name]


def paradigm_system(name: str) -> str:
    """The LLM-TRSR system of a paradigm: ``llmtrsr-<paradigm>``."""
    return f"{LLM_PREFIX}{name}"


def declare_paradigm(name: str, label: str | None = None, *, module: str = __name__) -> None:
    """A paradigm by name, and its LLM-TRSR system (LLM-TRSR's prompt with its summaries)."""
    if name not in PARADIGMS:
        PARADIGMS.add(name, None, module)
    register(paradigm_system(name), label or f"LLM-TRSR-{name.replace('_', ' ').title()}",
             "llm", module=module, recommender={"summary": name}, paradigm=name)


def paradigm(name: str, label: str | None = None) -> Callable[[Paradigm], Paradigm]:
    """Decorator that registers a summarization paradigm, and with it the system
    ``llmtrsr-<name>``; a paradigm is a function (summarizer, users) -> summaries::

        from llmtrsr_utils.systems import paradigm

        @paradigm("last_block")
        def last_block(summarizer, users): ...
    """
    def add(function: Paradigm) -> Paradigm:
        if PARADIGMS.get(name) not in (None, function):
            raise ValueError(f"paradigm {name!r} is registered twice")
        declare_paradigm(name, label, module=function.__module__)
        PARADIGMS[name] = function
        PARADIGMS.origin[name] = function.__module__
        return function
    return add


def baseline(name: str, label: str | None = None) -> Callable[[Scorer], Scorer]:
    """Decorator that registers a reference scorer (no training) as a system; without
    ``label`` it gives its scorer to a system declared here (random, popularity, ...)::

        from llmtrsr_utils.systems import baseline

        @baseline("most-recent-overlap", "Most recent item overlap")
        def score(frame, split, context):
            ...  # (n_users, 1 + n_negatives) floats, the positive in column 0
    """
    def add(scorer: Scorer) -> Scorer:
        known = SYSTEMS.get(name)
        if known is not None and known.score not in (None, scorer):
            raise ValueError(f"baseline {name!r} is registered twice")
        if label is None and known is None:
            raise ValueError(f"baseline {name!r}: give a label to register a new baseline")
        register(name, label or known.label, "reference", module=scorer.__module__,
                 score=scorer)
        return scorer
    return add


# -- the built-in systems, in Table 2's order ---------------------------------------------------

register(ZERO_SHOT, "Zero-shot LLM", "untrained", prompts_of=paradigm_system(HIERARCHICAL))
for _name, _label in ((EMBEDDING, "Text embedding (MiniLM)"), (POPULARITY, "Popularity"),
                      (RANDOM, "Random")):
    register(_name, _label, "reference")  # scorers: llmtrsr_utils.baselines
# Table 2's classical recommenders over frozen text embeddings (llmtrsr_utils.classical: the
# model class of each is the name's class, NCF for ncf), each with its own paper's loss
# (classical.loss: paper; see that module's docstring).
for _name, _label, _loss in (("ncf", "NCF", "bce"), ("din", "DIN", "bce"),
                             ("dien", "DIEN", "bce"), ("gru4rec", "GRU4Rec", "top1-max"),
                             ("narm", "NARM", "cross-entropy"), ("sasrec", "SASRec", "bce"),
                             ("core", "CORE", "cross-entropy")):
    register(_name, _label, "classical", options={"loss": _loss})
register(TALLREC, "TALLRec", "llm", recommender={"summary": NO_SUMMARY, "item_num": None})
declare_paradigm(HIERARCHICAL)  # functions: llmtrsr_utils.summarize
declare_paradigm(RECURRENT)
# Controls (issue 22): LLM-TRSR's five-part prompt with the summary slot filled by a rule, no
# summarizer. null-summary: NULL there, so the recent items are the only history (the negative
# control: what a recommender learns with no summary). oracle-older: the texts of the history
# items older than the recent ones, verbatim (the positive control: the information TALLRec
# has, through LLM-TRSR's code path).
register(NULL_CONTROL, "Control: no summary (NULL)", "control",
         recommender={"summary": NO_SUMMARY})
register(ORACLE_OLDER, "Control: older items verbatim", "control",
         recommender={"summary": NO_SUMMARY}, options={"summary_source": OLDER_ITEMS})
# Variants (issue 22, item 5): LLM-TRSR under a summarizer setting of the kit's. fields: the
# paper's prompts asking for the answer in a fixed short form (summarizer.summary_style), the
# setting whose summaries carried the most user-specific labels in the summary probe.
FIELDS_VARIANT = "llmtrsr-hierarchical-fields"
register(FIELDS_VARIANT, "LLM-TRSR-Hierarchical, fields summary (kit)", "variant",
         recommender={"summary": HIERARCHICAL}, summarizer={"summary_style": "fields"},
         paradigm=HIERARCHICAL)
# What every other system is compared with in the paired tests: the paper's LLM baseline, the
# untrained recommender, chance, and the no-information control (does a summary carry anything?).
PAIRED_REFERENCES = (TALLREC, ZERO_SHOT, RANDOM, NULL_CONTROL)


# -- reading the registry ----------------------------------------------------------------------

EXTENSIONS_PACKAGE = "llmtrsr_utils.extensions"
_loaded: set[str] = set()


def load_extensions() -> list[str]:
    """Import every module of ``llmtrsr_utils/extensions/`` once (a file there registers a
    paradigm or a baseline by plain name); returns the modules imported so far."""
    package = importlib.import_module(EXTENSIONS_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        module = f"{EXTENSIONS_PACKAGE}.{info.name}"
        if module not in _loaded and not info.name.startswith("_"):
            _loaded.add(module)
            importlib.import_module(module)
    return sorted(_loaded)


def ordered(systems: Iterable[System]) -> list[System]:
    return sorted(systems, key=lambda s: (KINDS.index(s.kind), s.rank))


def all_systems() -> list[System]:
    """Every registered system (extensions included), in Table 2's order."""
    load_extensions()
    return ordered(SYSTEMS.values())


def names(kinds: str | Iterable[str] = KINDS) -> list[str]:
    """Names of the registered systems of these kinds, in Table 2's order (deduplicated: an
    alias under a module path is not listed twice)."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    return list(dict.fromkeys(s.name for s in all_systems() if s.kind in kinds))


def paradigm_names() -> list[str]:
    """Every registered paradigm (the built-in two first)."""
    load_extensions()
    return [name for name in PARADIGMS if "." not in name]


def find(name: str) -> System:
    """A registered system by name; a dotted name imports the module that registers it: a
    baseline (``package.module``) or a paradigm (``llmtrsr-package.module``).

    Raises:
        ValueError: naming the system and listing the known ones.
    """
    load_extensions()
    if name not in SYSTEMS and name.startswith(LLM_PREFIX) and "." in name:
        paradigm_name = name.removeprefix(LLM_PREFIX)
        PARADIGMS.find(paradigm_name)  # imports it; registers llmtrsr-<registered name>
        if name not in SYSTEMS:  # the module registered its paradigm under another name
            declare_paradigm(paradigm_name, module=paradigm_name)
    return SYSTEMS.find(name)


def label(name: str) -> str:
    """The Table 2 label of a system; an unknown name is its own label."""
    load_extensions()
    return SYSTEMS[name].label if name in SYSTEMS else name


def order_names(present: Iterable[str]) -> list[str]:
    """``present`` in Table 2's order; names not registered (rows of a module no longer
    imported) last, in the order given."""
    present = list(dict.fromkeys(present))
    known = [s.name for s in all_systems() if s.name in present]
    return known + [name for name in present if name not in known]
