"""Why a strategy trails random: what it picked each round, beside what random picks would have been.

Four measures, each a known way for acquisition to lose to random:

    measure                 per round                                                  lost when
    class entropy           H of the class histogram of the batch's labels (nats;      low: picks pile into few classes
                            from labels.csv, so a person's labels count as given)
    redundancy              mean pairwise cosine similarity of the batch's embeddings  high: near-duplicates
                            minus that of a random batch of the same candidates        (Kirsch et al. 2019, 2023)
    epistemic share         mean epistemic / (epistemic + aleatoric) of the batch       low: chasing noise no label
                            (classification: BALD and expected entropy, nats)          removes (Mukhoti et al. 2021)
    test NLL                the model's (curve.csv `nll`)                              high: uncertainty not worth acting on

The embeddings are the fitted model's penultimate features (the backend's `embed`), or the inputs
flattened for a backend without them. The random batch is drawn from the round's candidates by its
own generator (`round_generator(seed, r, "diagnosis")`), so it changes no other draw of the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from alab.report import markdown_table, save_figure
from alab.storage import atomic_write_text

# curve.csv columns of a selecting round (empty in the last round, which selects nothing)
PICK_COLUMNS = ("pick_epistemic", "pick_aleatoric", "pick_similarity", "random_similarity")
MEASURES = {  # column of the per-round diagnosis -> (label, which direction loses)
    "class_entropy": ("class entropy of the batch (nats)", "lower"),
    "redundancy": ("redundancy (similarity above random's)", "higher"),
    "epistemic_share": ("epistemic share of the batch's uncertainty", "lower"),
    "nll": ("test NLL", "higher"),
}


def mean_pairwise_cosine(features_B_D: Tensor) -> float:
    """(1 / (B (B - 1))) sum_{i != j} cos(f_i, f_j), in [-1, 1]; NaN for fewer than 2 items."""
    B = len(features_B_D)
    if B < 2:
        return math.nan
    unit_B_D = torch.nn.functional.normalize(features_B_D.double().flatten(1), dim=1)
    similarity_B_B = unit_B_D @ unit_B_D.T
    return float((similarity_B_B.sum() - similarity_B_B.diagonal().sum()) / (B * (B - 1)))


def class_entropy(labels: Sequence[Any]) -> float:
    """Entropy in nats of the histogram of `labels` (classes never picked add nothing); NaN for no labels."""
    if not len(labels):
        return math.nan
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def pick_columns(
    uncertainty: Callable[[Tensor], dict[str, Tensor]], embed: Callable[[Tensor], Tensor], x_picked_B: Tensor, x_random_B: Tensor
) -> dict[str, float]:
    """A selecting round's PICK_COLUMNS: the picks' mean epistemic and aleatoric uncertainty (`uncertainty`:
    the task's, x -> {"epistemic": [B], "aleatoric": [B]}), and the mean pairwise cosine similarity of
    the picks' and of a random batch's embeddings."""
    parts = uncertainty(x_picked_B)
    return {
        "pick_epistemic": float(parts["epistemic"].mean()),
        "pick_aleatoric": float(parts["aleatoric"].mean()),
        "pick_similarity": mean_pairwise_cosine(embed(x_picked_B)),
        "random_similarity": mean_pairwise_cosine(embed(x_random_B)),
    }


def run_diagnosis(run_dir: Path, curve: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per selecting round r: the batch it picked (labelled in round r + 1) and the model that picked it.

    `curve`: the run's curve.csv where the caller has read it already. Columns: round, n_labeled,
    class_entropy (NaN for regression), redundancy, epistemic_share, nll; no rows without the pick
    columns (a run from before them).
    """
    if curve is None:
        curve = pd.read_csv(run_dir / "curve.csv") if (run_dir / "curve.csv").exists() else pd.DataFrame()
    if "pick_similarity" not in curve or curve["pick_similarity"].isna().all():
        return pd.DataFrame(columns=["round", "n_labeled", *MEASURES])
    classes = "accuracy" in curve  # a classification run: its labels are classes
    labels = pd.read_csv(run_dir / "labels.csv", dtype={"label": str}) if (run_dir / "labels.csv").exists() else None
    rows = []
    for _, row in curve[curve["pick_similarity"].notna()].iterrows():
        r = int(row["round"])
        batch = [] if labels is None else labels.loc[(labels["round"] == r + 1) & (labels["label"] != "none"), "label"].tolist()
        total = row["pick_epistemic"] + row["pick_aleatoric"]
        rows.append({
            "round": r, "n_labeled": int(row["n_labeled"]),
            "class_entropy": class_entropy(batch) if classes else math.nan,
            "redundancy": row["pick_similarity"] - row["random_similarity"],
            "epistemic_share": row["pick_epistemic"] / total if total > 0 else math.nan,
            "nll": row["nll"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def comparison_diagnosis(out: Path, curves: pd.DataFrame) -> pd.DataFrame:
    """Every cell's `run_diagnosis`, long format, with its dataset, backend, strategy and seed."""
    frames = []
    for cell, curve in curves.groupby("cell", sort=False):
        first: dict[str, Any] = curve.iloc[0].to_dict()
        diagnosis = run_diagnosis(out / "cells" / str(cell), curve)
        if len(diagnosis):
            frames.append(diagnosis.assign(**{k: first.get(k, "") for k in ("dataset", "backend", "strategy", "seed")}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def trailing_lines(summary: pd.DataFrame, diagnosis: pd.DataFrame, area: str, higher_is_better: bool = True) -> list[str]:
    """For each strategy whose mean area under its curve is worse than random's in its (dataset, backend): which measures moved.

    A measure moved when the strategy's mean over rounds and seeds differs from random's, in the losing
    direction, by more than twice the larger of the two standard errors over seeds.
    """
    lines = []
    for (dataset, backend), group in summary.groupby(["dataset", "backend"], sort=False):
        random = group[group["strategy"] == "random"]
        cell = diagnosis[(diagnosis["dataset"] == dataset) & (diagnosis["backend"] == backend)] if len(diagnosis) else diagnosis
        if not len(random) or not len(cell) or "random" not in set(cell["strategy"]):
            continue
        random_area = float(random[f"{area}_mean"].iloc[0])
        per_seed = cell.groupby(["strategy", "seed"])[list(MEASURES)].mean()
        worse = group[f"{area}_mean"] < random_area if higher_is_better else group[f"{area}_mean"] > random_area
        for _, s in group[worse].iterrows():
            if s["strategy"] not in set(cell["strategy"]):
                continue
            mine, theirs = per_seed.loc[s["strategy"]], per_seed.loc["random"]
            moved = []
            for measure, (label, losing) in MEASURES.items():
                a, b = mine[measure].dropna(), theirs[measure].dropna()
                if not len(a) or not len(b):
                    continue
                se = max(_standard_error(a), _standard_error(b))
                gap = a.mean() - b.mean()
                if (gap < 0 if losing == "lower" else gap > 0) and abs(gap) > 2 * se:
                    moved.append(f"{label} {a.mean():.3f} against random's {b.mean():.3f}")
            where = " / ".join(str(v) for v in (dataset, backend) if v)
            because = "; ".join(moved) if moved else "none of the four measures moved beyond twice its standard error"
            lines.append(f"- **{s['strategy']}** trails random on {where} (area {s[f'{area}_mean']:.4f} against {random_area:.4f}): {because}.")
    return lines


def _standard_error(values: pd.Series) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if not len(values):
        return "–"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def plot_diagnosis(diagnosis: pd.DataFrame, out_png: Path) -> None:
    """The four measures against labels, mean over seeds, one line per strategy; a row per (data set, backend)."""
    import matplotlib.pyplot as plt

    panels = list(diagnosis.groupby(["dataset", "backend"], sort=False))
    fig, axes = plt.subplots(len(panels), len(MEASURES), figsize=(4.2 * len(MEASURES), 3.2 * len(panels)), squeeze=False, constrained_layout=True)
    for row, ((dataset, backend), panel) in zip(axes, panels):
        for ax, (measure, (label, _)) in zip(row, MEASURES.items()):
            for strategy, runs in panel.groupby("strategy", sort=False):
                mean = runs.groupby("n_labeled")[measure].mean()
                ax.plot(mean.index, mean.values, label=strategy, linestyle="--" if strategy == "random" else "-")
            ax.set(xlabel="labels when picked", title=f"{' / '.join(str(v) for v in (dataset, backend) if v)}: {label}")
            ax.title.set_fontsize("small")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize="small")
    save_figure(fig, {out_png: "png"})


def comparison_diagnosis_markdown(out: Path, curves: pd.DataFrame, summary: pd.DataFrame, area: str, higher_is_better: bool) -> list[str]:
    """The comparison report's diagnosis: the four measures per strategy beside random's, which moved where a
    strategy trails random, diagnosis.csv (per round, mean over seeds) and diagnosis.png; [] without pick columns."""
    diagnosis = comparison_diagnosis(out, curves) if len(curves) and "cell" in curves else pd.DataFrame()
    if not len(diagnosis):
        return []
    keys = ["dataset", "backend", "strategy"]
    per_round = diagnosis.groupby([*keys, "round", "n_labeled"], sort=False)[list(MEASURES)].mean().reset_index()
    atomic_write_text(out / "diagnosis.csv", per_round.to_csv(index=False))
    plot_diagnosis(diagnosis, out / "diagnosis.png")
    per_seed = diagnosis.groupby([*keys, "seed"], sort=False)[list(MEASURES)].mean().reset_index()
    rows = [[*key, *(_mean_std(group[m]) for m in MEASURES)] for key, group in per_seed.groupby(keys, sort=False)]
    trailing = trailing_lines(summary, diagnosis, area, higher_is_better)
    return [
        "## What each strategy picked", "",
        "Per selecting round, averaged over rounds, then mean ± std over seeds (`alab.diagnosis`): the class entropy of the "
        "batch's labels (nats; a batch of 10 spread over 10 classes has 2.303), its redundancy (mean pairwise cosine "
        "similarity of the picks' penultimate features minus a random batch's from the same candidates), the epistemic "
        "share of the picks' uncertainty (BALD / entropy), and the test NLL of the model that picked. Per round: "
        "diagnosis.csv.", "",
        markdown_table(["data set", "backend", "strategy", *(label for label, _ in MEASURES.values())], rows), "",
        "![the four measures per round](diagnosis.png)", "",
        *(["Where a strategy trails random (area under its curve), what moved against random's picks:", "", *trailing, ""] if trailing
          else ["No strategy trails random on the area under its curve.", ""]),
    ]  # fmt: skip


def run_diagnosis_markdown(run_dir: Path) -> list[str]:
    """A run report's diagnosis: the four measures at up to 10 of its selecting rounds; [] without pick columns."""
    diagnosis = run_diagnosis(run_dir)
    if not len(diagnosis):
        return []
    step = max(1, math.ceil(len(diagnosis) / 10))
    shown = diagnosis.iloc[::step]
    rows = [[int(r["round"]), int(r["n_labeled"]), *(r[m] for m in MEASURES)] for _, r in shown.iterrows()]
    return [
        "## What it picked", "",
        "Per selecting round (`alab.diagnosis`): the class entropy of the batch's labels (nats), its redundancy (mean pairwise "
        "cosine similarity of the picks' penultimate features minus a random batch's), the epistemic share of the picks' "
        "uncertainty, and the test NLL of the model that picked" + (f"; every {step}th round" if step > 1 else "") + ".", "",
        markdown_table(["round", "labels", *(label for label, _ in MEASURES.values())], rows), "",
    ]  # fmt: skip
