"""Labels needed to reach an accuracy, counted as the papers count them, beside the authors' numbers.

Papers count differently, and a comparison is only honest in the paper's own unit and statistic:

- unit: `total` (every label, the initial set's included), `acquired` (labels acquired after the
  initial set: Gal et al. 2017's Table 1), or `total_minus_batch` (total minus one acquisition
  batch: what Kirsch et al. 2019's notebook computes, `get_marks` taking `index - 1` of a curve
  expanded label by label).
- statistic: `mean_curve` (the first point at which the mean curve over runs reaches the accuracy:
  Gal et al.) or `median` (the median over runs of each run's first crossing, a run that never
  reaches it counting as infinite, with the interquartile range by nearest rank: Kirsch et al.).

A recipe's `[compare.paper]` names both and gives, per target and strategy, the authors' `value`
and the range `low`-`high` of their single runs (or their interquartile range for a median). Our
runs are counted the same way; a mean over only the seeds that reached a target is never reported.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from alab.errors import AlabError
from alab.metrics import labels_to_reach

UNITS = {
    "total": "labels in all, the initial set's included",
    "acquired": "labels acquired after the initial set",
    "total_minus_batch": "labels in all less one acquisition batch (Kirsch et al. 2019's notebook)",
}
STATISTICS = {
    "mean_curve": "on the mean curve over runs",
    "median": "median over runs (interquartile range by nearest rank; a run that never reaches it counts as infinite)",
}


@dataclass(frozen=True)
class PaperNumber:
    """The authors' number for one strategy and target, and the spread of their runs (None: not given)."""

    value: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Paper:
    """A recipe's `[compare.paper]`: the authors' labels to reach each target, in their unit and statistic."""

    source: str
    unit: str
    statistic: str
    runs: int | None
    labels_to_reach: dict[float, dict[str, PaperNumber]]


def parse_paper(table: dict[str, Any]) -> Paper:
    """The `[compare.paper]` table, checked: AlabError (one line) for a missing unit, an unknown key, a bad number."""
    keys = {"source", "unit", "statistic", "runs", "labels_to_reach"}
    unknown = set(table) - keys
    if unknown:
        raise AlabError(f"unknown key compare.paper.{sorted(unknown)[0]}; valid keys: {', '.join(sorted(keys))}")
    for key, choices in (("unit", UNITS), ("statistic", STATISTICS)):
        if table.get(key) not in choices:
            raise AlabError(f"compare.paper.{key} must be one of {', '.join(choices)} (how the paper counts), got {table.get(key)!r}")
    runs = table.get("runs")
    if runs is not None and (not isinstance(runs, int) or isinstance(runs, bool) or runs < 1):
        raise AlabError(f"compare.paper.runs must be a positive integer, got {runs!r}")
    reach: dict[float, dict[str, PaperNumber]] = {}
    for target, row in table.get("labels_to_reach", {}).items():
        try:
            accuracy = float(target)
        except ValueError:
            raise AlabError(f'compare.paper.labels_to_reach keys are target accuracies like "0.90", got {target!r}') from None
        if not isinstance(row, dict):
            raise AlabError(f'compare.paper.labels_to_reach."{target}" must map strategy names to {{ value = N, low = N, high = N }}')
        reach[accuracy] = {strategy: _number(f'compare.paper.labels_to_reach."{target}".{strategy}', entry) for strategy, entry in row.items()}
    return Paper(str(table.get("source", "reference numbers")), table["unit"], table["statistic"], runs, reach)


def _number(where: str, entry: Any) -> PaperNumber:
    def real(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0

    if real(entry):
        return PaperNumber(float(entry))
    if not isinstance(entry, dict) or set(entry) - {"value", "low", "high"} or not real(entry.get("value")):
        raise AlabError(f"{where} must be a label count or {{ value = N, low = N, high = N }}, got {entry!r}")
    low, high = entry.get("low"), entry.get("high")
    if (low is None) != (high is None) or (low is not None and not (real(low) and real(high) and low <= high)):
        raise AlabError(f"{where}: low and high come together, 0 <= low <= high, got {entry!r}")
    return PaperNumber(float(entry["value"]), None if low is None else float(low), None if high is None else float(high))


def in_unit(total: float | None, unit: str, initial: int, batch: int) -> float | None:
    """A label count `total` (every label) in `unit`; None stays None (never reached)."""
    if total is None:
        return None
    return total - {"total": 0, "acquired": initial, "total_minus_batch": batch}[unit]


def per_seed(runs: pd.DataFrame, target: float) -> list[int | None]:
    """Each seed's first total label count with accuracy >= target (None: not by its last round)."""
    return [labels_to_reach(run["n_labeled"], run["accuracy"], target) for _, run in runs.sort_values("n_labeled").groupby("seed")]


def on_mean_curve(runs: pd.DataFrame, target: float) -> int | None:
    """The first total label count at which the mean accuracy over seeds reaches `target` (None: never)."""
    mean = runs.groupby("n_labeled")["accuracy"].mean().sort_index()
    return labels_to_reach(mean.index, mean.to_numpy(), target)


def on_mean_curves_of_subsets(runs: pd.DataFrame, target: float, size: int) -> list[int | None]:
    """`on_mean_curve` of every `size` of the seeds in `runs` (C(n, size) values, None: that mean curve never gets there).

    A paper that reports the mean curve of 3 runs reports one draw of a statistic whose spread over runs
    it does not show; with more seeds than that we show the statistic's own spread: the crossing of each
    of the C(n, 3) mean curves of 3 of our n seeds. Only the label counts every seed reached are averaged.
    """
    accuracy_seed_by_labels = runs.pivot_table(index="n_labeled", columns="seed", values="accuracy").sort_index().dropna()
    labels = accuracy_seed_by_labels.index.to_numpy()
    accuracy_labels_seed = accuracy_seed_by_labels.to_numpy()
    return [labels_to_reach(labels, accuracy_labels_seed[:, list(subset)].mean(axis=1), target)
            for subset in itertools.combinations(range(accuracy_labels_seed.shape[1]), size)]  # fmt: skip


def median_and_quartiles(values: Sequence[float | None]) -> tuple[float, float, float]:
    """(median, 25th, 75th percentile) of `values`, None counted as +inf; quartiles by nearest rank."""
    x = np.array([math.inf if v is None else v for v in values], dtype=np.float64)
    if not len(x):
        return math.nan, math.nan, math.nan
    median = float(np.median(x))  # a middle pair with an infinity has an infinite median
    low, high = np.percentile(x, [25, 75], method="nearest")
    return median, float(low), float(high)


def _count(value: float | None) -> str:
    return "not reached" if value is None or math.isinf(value) else f"{value:.0f}"


def _spread(counts: Sequence[float | None]) -> str:
    """'min–max' of the counts that reached the target ('–' if none did)."""
    finite = [c for c in counts if c is not None]
    return f"{min(finite):.0f}–{max(finite):.0f}" if finite else "–"


def _over_subsets(runs: pd.DataFrame, target: float, size: int, unit: str, initial: int, batch: int) -> str:
    """'median (min–max), k of C reach it' of the mean-curve crossings of every `size` seeds, in `unit`."""
    seeds = runs["seed"].nunique()
    if seeds <= size:
        return f"– ({seeds} seeds)"
    counts = [in_unit(total, unit, initial, batch) for total in on_mean_curves_of_subsets(runs, target, size)]
    reached = sum(c is not None for c in counts)
    return f"{_count(median_and_quartiles(counts)[0])} ({_spread(counts)}), {reached} of {len(counts)} reach it"


def paper_section(paper: Paper, curves: pd.DataFrame, initial: int, batch: int) -> list[str]:
    """report.md's comparison with the paper: per target and strategy, the authors' number and ours, alike counted.

    `curves`: the finished cells' curve rows (`strategy`, `seed`, `n_labeled`, `accuracy`).
    """
    from alab.report import markdown_table

    if not paper.labels_to_reach:
        return []
    budget = int(curves["n_labeled"].max())
    unit = UNITS[paper.unit]
    lines = [f"## Beside the paper: {paper.source}", "",
             f"Labels needed to reach each test accuracy, in the paper's unit ({unit}) and statistic "
             f"({STATISTICS[paper.statistic]}{'' if paper.runs is None else f', {paper.runs} runs'}), for the paper and for us alike. "
             f"The paper's range is over the single runs the recipe names as its source; "
             f"ours is over our seeds, with how many of them reached the accuracy by the last round ({budget} labels in all, "
             f"{budget - initial} acquired). \"not reached\": not by then.", ""]  # fmt: skip
    size = paper.runs if paper.statistic == "mean_curve" else None  # the paper's mean curve is of `size` runs
    subsets = size is not None and bool((curves.groupby("strategy")["seed"].nunique() > size).any())
    if subsets:
        lines += [f"With more than {size} seeds, the last column gives the paper's statistic for each of the ways to choose "
                  f"{size} of our seeds: how far the mean curve of {size} runs moves with the choice of runs alone.", ""]  # fmt: skip
    for target in sorted(paper.labels_to_reach):
        theirs_by_strategy = paper.labels_to_reach[target]
        strategies = list(dict.fromkeys([*theirs_by_strategy, *curves["strategy"].unique()]))
        header = ["strategy", f"paper, {paper.unit}", "paper's range", f"ours, {paper.unit}", "ours per seed", "seeds reached", "ours, total labels"]
        if subsets:
            header.append(f"ours, mean curve of every {size} of our seeds: median (min–max)")
        rows = []
        for strategy in strategies:
            theirs = theirs_by_strategy.get(strategy)
            row = [strategy, "–" if theirs is None else _count(theirs.value),
                   "–" if theirs is None or theirs.low is None else f"{theirs.low:.0f}–{theirs.high:.0f}"]  # fmt: skip
            runs = curves[curves["strategy"] == strategy]
            if not len(runs):
                rows.append([*row, "not run", "", "", "", *([""] if subsets else [])])
                continue
            seeds = per_seed(runs, target)
            reached = [s for s in seeds if s is not None]
            converted = [in_unit(s, paper.unit, initial, batch) for s in seeds]
            if paper.statistic == "mean_curve":
                total = on_mean_curve(runs, target)
                ours = _count(in_unit(total, paper.unit, initial, batch))
                total_text = _count(total)
            else:
                median, q25, q75 = median_and_quartiles(converted)
                ours = f"{_count(median)} ({_count(q25)}–{_count(q75)})"
                total_median = median_and_quartiles(seeds)[0]
                total_text = _count(total_median)
            rows.append([*row, ours, _spread(converted), f"{len(reached)}/{len(seeds)}", total_text])
            if subsets:
                rows[-1].append(_over_subsets(runs, target, size, paper.unit, initial, batch))
        lines += [f"### {target:.0%} test accuracy", "", markdown_table(header, rows), ""]
    return lines
