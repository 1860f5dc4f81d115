"""The decision table (issue 22): the questions a run of the laptop profile must answer, each
with its effect, 95% CI and p-value, pooled over training seeds, read from the results store.

    (gate) Does the recommender read the user?  oracle-older beats null-summary (the positive
           control: at item_num 0 the summary slot is the only history; at any other item_num
           the row is labelled ``control``, not gate), and every fine-tuned system loses
           accuracy when each user is given another user's history.
    (i)    Does fine-tuning beat zero-shot?  TALLRec and LLM-TRSR vs the untrained recommender.
    (ii)   Is the LLM-TRSR code path sound?  oracle-older within 0.10 of TALLRec (its CI above
           -0.10) and above zero-shot.
    (iii)  Does a generated summary carry information?  LLM-TRSR (each paradigm, and each
           variant: the kit's summarizer settings) vs null-summary.
    (iv)   Does it carry as much as the titles it replaces?  LLM-TRSR vs oracle-older (its CI
           above -0.10).

Each comparison is the paired bootstrap of :func:`llmtrsr_utils.metrics.paired_bootstrap` over
the same test users, each side's seeds resampled (two-level), on the selected test scores of
every seed; the history-shuffle rows come from ``history_shuffle.csv``
(:mod:`llmtrsr_utils.history_shuffle`). A comparison whose systems were not evaluated under
these params says so (``not measured``) rather than being left out. Writes
``<work_dir>/results/decision.csv``; the report copies it beside Table 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from llmtrsr_utils import metrics, results, systems
from llmtrsr_utils.config import Config

TABLE = "decision.csv"
ALPHA = 0.05  # a claim that something beats something holds at p < ALPHA
MARGIN = 0.10  # "within": the 95% CI of the difference lies above -MARGIN


@dataclass(frozen=True)
class Claim:
    """One row of the decision table: ``system`` beats ``versus`` (``test="beats"``), is within
    :data:`MARGIN` of it (``"within"``), or loses accuracy under the history shuffle
    (``"shuffle"``, ``versus`` unused)."""

    question: str
    claim: str
    system: str
    versus: str | None
    test: str


def _paradigm_systems() -> list[str]:
    return [systems.paradigm_system(p) for p in systems.paradigm_names()]


def _summary_systems() -> list[str]:
    """LLM-TRSR with each paradigm, then every variant (LLM-TRSR under the kit's settings)."""
    return [*_paradigm_systems(), *systems.names("variant")]


def claims(item_num: int = 0) -> list[Claim]:
    """Every claim the table checks, in the order the README gives them.

    Args:
        item_num: the run's ``recommender.item_num``. The older titles beating NULL is the
            gate's positive control only at 0, where the summary slot is the only history;
            beside recent titles it is an ordinary comparison (``control``), which need not
            separate.
    """
    if item_num == 0:
        control = Claim("gate", "the older titles in the summary slot beat NULL there",
                        systems.ORACLE_OLDER, systems.NULL_CONTROL, "beats")
    else:
        control = Claim("control", f"the older titles in the summary slot beat NULL beside "
                        f"{item_num} recent titles (the gate's control is at item_num 0)",
                        systems.ORACLE_OLDER, systems.NULL_CONTROL, "beats")
    rows = [control]
    rows += [Claim("gate", "loses accuracy under the history shuffle", name, None, "shuffle")
             for name in (systems.TALLREC, *_summary_systems(), systems.ORACLE_OLDER)]
    rows += [Claim("i", "fine-tuning beats zero-shot", name, systems.ZERO_SHOT, "beats")
             for name in (systems.TALLREC, *_paradigm_systems())]
    rows += [Claim("ii", f"within {MARGIN:.2f} of TALLRec", systems.ORACLE_OLDER,
                   systems.TALLREC, "within"),
             Claim("ii", "above zero-shot", systems.ORACLE_OLDER, systems.ZERO_SHOT, "beats")]
    rows += [Claim("iii", "a generated summary beats NULL", name, systems.NULL_CONTROL,
                   "beats") for name in _summary_systems()]
    rows += [Claim("iv", f"a generated summary within {MARGIN:.2f} of the older titles", name,
                   systems.ORACLE_OLDER, "within") for name in _summary_systems()]
    return rows


def verdict(test: str, diff: float, ci_low: float, p_value: float) -> str:
    """``yes`` or ``no`` for one claim's figures (see :class:`Claim`)."""
    if test == "within":
        return "yes" if ci_low > -MARGIN else "no"
    if test == "shuffle":
        return "yes" if diff < 0 and p_value < ALPHA else "no"
    return "yes" if diff > 0 and p_value < ALPHA else "no"


def decide(cfg: Config, metric: str = "recall@5") -> pd.DataFrame:
    """The decision table of ``cfg``'s results (every seed stored under these params).

    Args:
        cfg: the run's params (its ``seeds`` do not matter: every stored seed is pooled).
        metric: the metric the claims are judged on.

    Returns:
        One row per claim: question, claim, system, versus, metric, seeds, versus_seeds, diff,
        ci_low, ci_high, p_value, verdict (``not measured`` when a system is missing).
    """
    stored = results.load_results(cfg, current=True)
    folder = results.results_dir(cfg)
    tables = {name: results.seed_tables(stored, folder, name)
              for name in stored["system"].unique()}
    shuffle_path = folder / "history_shuffle.csv"
    shuffle = pd.read_csv(shuffle_path) if shuffle_path.is_file() else pd.DataFrame(
        columns=["system", "metric"])
    rows = []
    for claim in claims(cfg.recommender.item_num):
        row = {"question": claim.question, "claim": claim.claim, "system": claim.system,
               "versus": claim.versus or "itself, shuffled", "metric": metric}
        if claim.test == "shuffle":
            found = shuffle[(shuffle["system"] == claim.system) & (shuffle["metric"] == metric)]
            figures = None if found.empty else {
                k: float(found.iloc[0][k]) for k in ("diff", "ci_low", "ci_high", "p_value")}
            seeds = (int(found.iloc[0]["seeds"]) if not found.empty and "seeds" in found
                     else None)
            row.update(seeds=seeds, versus_seeds=seeds)
        elif claim.system in tables and claim.versus in tables:
            side, other = tables[claim.system], tables[claim.versus]
            figures = metrics.paired_bootstrap(side, other, metric, seed=cfg.seed)
            row.update(seeds=len(side), versus_seeds=len(other))
        else:
            figures = None
            row.update(seeds=len(tables.get(claim.system, [])),
                       versus_seeds=len(tables.get(claim.versus, [])))
        if figures is None:
            row.update(diff=None, ci_low=None, ci_high=None, p_value=None,
                       verdict="not measured")
        else:
            row.update(figures, verdict=verdict(claim.test, figures["diff"], figures["ci_low"],
                                                figures["p_value"]))
        rows.append(row)
    table = pd.DataFrame(rows).astype({"seeds": "Int64", "versus_seeds": "Int64"})
    results.write_csv(table, folder / TABLE, index=False)
    return table


def markdown(table: pd.DataFrame) -> str:
    """The decision table as the README shows it (measured rows only)."""
    shown = table[table["verdict"] != "not measured"]
    lines = ["| question | claim | system | versus | seeds | difference [95% CI] | p | holds |",
             "|---|---|---|---|---|---|---|---|"]
    for _, row in shown.iterrows():
        label = systems.label(row["system"])
        versus = systems.label(row["versus"]) if row["versus"] in systems.SYSTEMS else \
            row["versus"]
        lines.append(f"| {row['question']} | {row['claim']} | {label} | {versus} | "
                     f"{int(row['seeds'])} vs {int(row['versus_seeds'])} | "
                     f"{row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] | "
                     f"{'< 0.001' if row['p_value'] == 0 else format(row['p_value'], '.3f')} | "
                     f"{row['verdict']} |")
    return "\n".join(lines) + "\n"
