"""Can the model be trusted yet, in pictures and tables: retention curves, reliability diagrams, stopping rules.

Read from what a classification run writes each round: the trust columns of curve.csv
(`alab.tasks.Classification.trust`) and trust.json (retention curves and reliability bins). Runs
written before these existed have neither; every function here then returns nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from alab.metrics.stopping import STOP_RULES, stop_round  # noqa: E402
from alab.metrics.trust import UNCERTAINTIES  # noqa: E402
from alab.report import markdown_table, new_figure, save_figure  # noqa: E402

COLORS = {"total": "tab:blue", "aleatoric": "tab:orange", "epistemic": "tab:green"}
GROUP = ["dataset", "backend", "strategy"]  # alab.report's grouping of a comparison's cells


def _label(key: dict[str, Any], several: set[str]) -> str:
    """A plot's name for a (data set, backend, strategy) group: the strategy, after the data set and backend where they vary."""
    return " / ".join(str(key[c]) for c in GROUP if c == "strategy" or c in several)


def read_trust(run_dir: Path) -> list[dict[str, Any]]:
    """trust.json's rounds ([] if the run wrote none)."""
    try:
        return json.loads((Path(run_dir) / "trust.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def has_trust(curve: pd.DataFrame) -> bool:
    return "stop_kappa" in curve.columns and "accuracy" in curve.columns


def stopping_rows(curve: pd.DataFrame) -> list[dict[str, Any]]:
    """Per stopping rule at its default threshold: where it would have stopped this curve, and what that costs.

    {"rule", "threshold", "stop_labels" (None: never), "accuracy_at_stop", "final_accuracy",
    "given_up" (final minus at-stop accuracy: what stopping there leaves on the table), "labels_saved"}.
    """
    if not has_trust(curve):
        return []
    curve = curve.sort_values("round")
    final_accuracy, final_labels = float(curve["accuracy"].iloc[-1]), int(curve["n_labeled"].iloc[-1])
    rows = []
    for rule in STOP_RULES.values():
        r = stop_round(rule, curve[rule.column].astype(float).tolist())
        row: dict[str, Any] = {"rule": rule.name, "threshold": rule.threshold, "final_accuracy": final_accuracy}
        if r is None:
            row.update(stop_labels=None, accuracy_at_stop=math.nan, given_up=math.nan, labels_saved=0)
        else:
            at_stop = float(curve["accuracy"].iloc[r])
            labels = int(curve["n_labeled"].iloc[r])
            row.update(stop_labels=labels, accuracy_at_stop=at_stop, given_up=final_accuracy - at_stop, labels_saved=final_labels - labels)
        rows.append(row)
    return rows


def _stopping_markdown(rows: list[dict[str, Any]]) -> list[str]:
    table = [
        [r["rule"], f"{r['threshold']:g}", "never" if r["stop_labels"] is None else r["stop_labels"],
         r["accuracy_at_stop"], r["final_accuracy"], r["given_up"], r["labels_saved"]]
        for r in rows
    ]  # fmt: skip
    header = ["rule", "threshold", "stops at (labels)", "accuracy there", "final accuracy", "accuracy given up", "labels saved"]
    return [markdown_table(header, table)]


def plot_trust(curve: pd.DataFrame, rounds: list[dict[str, Any]], out_png: Path, title: str) -> None:
    """Three panels: the last round's retention curves (by total, aleatoric, epistemic uncertainty), its
    reliability diagram, and AURC by round."""
    last = rounds[-1]
    fig, (ax_ret, ax_rel, ax_aurc) = new_figure(3, (14, 4))
    retention = last.get("retention")
    if retention:
        for u in UNCERTAINTIES:
            ax_ret.plot(retention["fractions"], retention[u], marker=".", color=COLORS[u], label=f"by {u}")
        ax_ret.axhline(retention["total"][-1], color="0.6", ls=":", label="keep all")
    ax_ret.set(xlabel="fraction of test items kept (most certain first)", ylabel="accuracy on the kept items",
               title=f"retention, round {last['round']} ({retention['items'] if retention else 0} test items)")  # fmt: skip
    bins = last.get("reliability")
    if bins:
        lower, upper = np.array(bins["lower"]), np.array(bins["upper"])
        accuracy = np.nan_to_num(np.array(bins["accuracy"], dtype=float))
        ax_rel.bar(lower, accuracy, width=upper - lower, align="edge", edgecolor="white", color="tab:blue", label="accuracy in bin")
        ax_rel.plot([0, 1], [0, 1], color="0.4", ls="--", label="calibrated")
        counts = np.array(bins["count"], dtype=float)
        ax_rel.set(title=f"reliability, round {last['round']}: {len(lower)} equal-width bins, {int(counts.sum())} test items")
    ax_rel.set(xlabel="confidence (max class probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    for u in UNCERTAINTIES:
        if f"aurc_{u}" in curve:
            ax_aurc.plot(curve["n_labeled"], curve[f"aurc_{u}"], marker=".", color=COLORS[u], label=f"by {u}")
    ax_aurc.set(xlabel="labels", ylabel="AURC (lower is better)", title=f"AURC by round: {title}")
    for ax in (ax_ret, ax_rel, ax_aurc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a run without a test set plots no curve
            ax.legend(fontsize="small")
    save_figure(fig, {out_png: "png"})


def _decomposition_markdown(last: pd.Series) -> list[str]:
    rows = [[where, *(float(last[f"{prefix}_{u}"]) for u in UNCERTAINTIES)] for where, prefix in (("test subset", "test"), ("pool (stop set)", "pool"))]
    return [markdown_table(["mean over", "total (nats)", "aleatoric", "epistemic"], rows)]


def run_trust_markdown(run_dir: Path, curve: pd.DataFrame) -> list[str]:
    """A run's trust section for its report.md (and trust.png beside it); [] for a run without trust columns."""
    rounds = read_trust(run_dir)
    if not has_trust(curve) or not rounds:
        return []
    plot_trust(curve, rounds, run_dir / "trust.png", run_dir.name)
    last = curve.sort_values("round").iloc[-1]
    lines = ["## Can it be trusted yet", "",
             f"Last round ({int(last['round'])}, {int(last['n_labeled'])} labels): ECE {last['ece']:.4f} (15 bins), AURC by total "
             f"uncertainty {last['aurc_total']:.4f}, by aleatoric {last['aurc_aleatoric']:.4f}, by epistemic {last['aurc_epistemic']:.4f} "
             "(area under the risk-coverage curve on the test subset: lower is better).", "",
             "![retention, reliability, AURC](trust.png)", "",
             "Uncertainty decomposition, total = aleatoric + epistemic (predictive entropy = expected entropy + BALD), last round:", "",
             *_decomposition_markdown(last), ""]  # fmt: skip
    if not math.isnan(float(last.get("ood_auroc_bald", math.nan))):
        lines += [f"Out-of-distribution set against the test subset, last round: AUROC max-probability {last['ood_auroc_max_prob']:.3f}, "
                  f"entropy {last['ood_auroc_entropy']:.3f}, BALD {last['ood_auroc_bald']:.3f}; FPR at 95% TPR "
                  f"{last['ood_fpr95_max_prob']:.3f}, {last['ood_fpr95_entropy']:.3f}, {last['ood_fpr95_bald']:.3f}.", ""]  # fmt: skip
    lines += ["## When it could have stopped", "",
              "Each stopping rule at its default threshold (alab.metrics.stopping), read along this run's curve: the first "
              "round it is met, the test accuracy there, and what it leaves on the table against the last round.", "",
              *_stopping_markdown(stopping_rows(curve)), ""]  # fmt: skip
    return lines


def comparison_trust_markdown(out: Path, curves: pd.DataFrame) -> list[str]:
    """A comparison's trust section: per strategy, the last round's AURC and ECE, OOD AUROCs, and each stopping rule's
    stop point and accuracy given up, averaged over seeds; [] when the cells wrote no trust columns."""
    if not len(curves) or not has_trust(curves) or curves["aurc_total"].isna().all():
        return []
    curves = curves.assign(**{c: curves[c] if c in curves else "" for c in ("dataset", "backend")})
    several = {c for c in ("dataset", "backend") if curves[c].nunique() > 1}
    finals, stops, last_rounds = [], [], []
    for (dataset, backend, strategy, seed), curve in curves.groupby(["dataset", "backend", "strategy", "seed"], sort=False):
        curve = curve.sort_values("round")
        if curve["aurc_total"].isna().all():
            continue
        key = {"dataset": dataset, "backend": backend, "strategy": strategy}
        finals.append({**curve.iloc[-1].to_dict(), **key})
        stops += [{**key, "seed": seed, **row} for row in stopping_rows(curve)]
        rounds = read_trust(out / "cells" / str(curve["cell"].iloc[0])) if "cell" in curve else []
        if rounds:
            last_rounds.append({**rounds[-1], **key, "name": strategy, "strategy": _label(key, several)})
    if not finals:
        return []
    picture = []
    if last_rounds:
        plot_comparison_trust(curves, last_rounds, out / "trust.png")
        picture = ["![retention, reliability and AURC per strategy](trust.png)", ""]
    final = pd.DataFrame(finals)
    columns = ["ece", "aurc_total", "aurc_aleatoric", "aurc_epistemic"]
    with_ood = "ood_auroc_bald" in final and final["ood_auroc_bald"].notna().any()
    if with_ood:
        columns += [f"ood_{m}_{score}" for m in ("auroc", "fpr95") for score in ("max_prob", "entropy", "bald")]
    rows = []
    for key, group in final.groupby(GROUP, sort=False):
        rows.append([*key, len(group), *(f"{group[c].mean():.4f} ± {group[c].std(ddof=1):.4f}" if len(group) > 1 else f"{group[c].mean():.4f}" for c in columns)])
    lines = ["## Can it be trusted yet", "",
             "The last round of each cell, mean ± std over seeds: ECE (15 bins) and the area under the risk-coverage curve "
             "(AURC, lower is better) when the most uncertain test items are set aside by total, aleatoric or epistemic "
             "uncertainty" + (", and the AUROC and FPR at 95% TPR (lower is better) of telling the out-of-distribution set from "
             "the test set by 1 - max-probability, entropy and BALD" if with_ood else "") + ".", "",
             markdown_table(["data set", "backend", "strategy", "seeds", *columns], rows), "", *picture]  # fmt: skip
    stop = pd.DataFrame(stops)
    rows = []
    for (*key, rule), group in stop.groupby([*GROUP, "rule"], sort=False):
        stopped = group[group["stop_labels"].notna()]
        rows.append([
            *key, rule, f"{group['threshold'].iloc[0]:g}", f"{len(stopped)}/{len(group)}",
            round(float(stopped["stop_labels"].astype(float).mean())) if len(stopped) else math.nan,  # labels: a whole number
            float(stopped["given_up"].mean()) if len(stopped) else math.nan,
            round(float(stopped["labels_saved"].mean())) if len(stopped) else math.nan,
        ])  # fmt: skip
    lines += ["## When it could have stopped", "",
              "Each stopping rule at its default threshold (alab.metrics.stopping), read along each cell's curve; means over "
              "the seeds where it was met (by the last round at the latest): the label count, the test accuracy given up "
              "against the last round, and the labels it would have saved.", "",
              markdown_table(["data set", "backend", "strategy", "rule", "threshold", "seeds stopped", "stops at (labels)", "accuracy given up", "labels saved"], rows), ""]  # fmt: skip
    return lines


def plot_comparison_trust(curves: pd.DataFrame, last_rounds: list[dict[str, Any]], out_png: Path) -> None:
    """Per strategy, the last round: the retention curve by total uncertainty (mean over seeds; epistemic dashed),
    the reliability diagram of the seeds' test items pooled, and AURC by total uncertainty against labels."""
    fig, (ax_ret, ax_rel, ax_aurc) = new_figure(3, (15, 4.2))
    by_strategy: dict[str, list[dict[str, Any]]] = {}
    for entry in last_rounds:
        by_strategy.setdefault(entry["strategy"], []).append(entry)
    for n, (label, entries) in enumerate(by_strategy.items()):
        color = f"C{n}"
        with_retention = [e["retention"] for e in entries if e.get("retention")]
        if with_retention:
            fractions = with_retention[0]["fractions"]
            ax_ret.plot(fractions, np.mean([r["total"] for r in with_retention], axis=0), color=color, label=f"{label} (total)")
            ax_ret.plot(fractions, np.mean([r["epistemic"] for r in with_retention], axis=0), color=color, ls="--", label=f"{label} (epistemic)")
        bins = [e["reliability"] for e in entries if e.get("reliability")]
        if bins:
            count_B = np.sum([b["count"] for b in bins], axis=0)
            correct_B = np.sum([np.nan_to_num(np.array(b["accuracy"], dtype=float)) * np.array(b["count"]) for b in bins], axis=0)
            confidence_B = np.sum([np.nan_to_num(np.array(b["confidence"], dtype=float)) * np.array(b["count"]) for b in bins], axis=0)
            seen = count_B > 0
            ax_rel.plot(confidence_B[seen] / count_B[seen], correct_B[seen] / count_B[seen], marker="o", color=color, label=label)
        key = entries[0]
        mine = (curves["dataset"] == key["dataset"]) & (curves["backend"] == key["backend"]) & (curves["strategy"] == key["name"])
        runs = curves[mine].groupby("n_labeled")["aurc_total"].mean()
        ax_aurc.plot(runs.index, runs.to_numpy(), marker=".", color=color, label=label)
    ax_rel.plot([0, 1], [0, 1], color="0.4", ls=":", label="calibrated")
    n_bins = len(last_rounds[0]["reliability"]["count"]) if last_rounds[0].get("reliability") else 0
    ax_ret.set(xlabel="fraction of test items kept (most certain first)", ylabel="accuracy on the kept items (mean over seeds)",
               title="retention, last round")  # fmt: skip
    ax_rel.set(xlabel="mean confidence in bin", ylabel="accuracy in bin", xlim=(0, 1), ylim=(0, 1),
               title=f"reliability, last round: {n_bins} equal-width bins, seeds pooled")  # fmt: skip
    ax_aurc.set(xlabel="labels", ylabel="AURC by total uncertainty (mean over seeds)", title="AURC (lower is better)")
    for ax in (ax_ret, ax_rel, ax_aurc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    save_figure(fig, {out_png: "png"})
