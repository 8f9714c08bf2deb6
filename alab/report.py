"""Learning curves as pictures and tables: one run's plot, and a comparison's curves, summary and report.

A comparison directory (written by `alab compare`) holds `cells/<cell>/` run directories. From them:
`curves.csv` (every curve row with `cell, strategy, seed, backend, dataset, status` added),
`cells.csv` (one row per cell: area under the curve, final accuracy, labels to each target, cost),
`summary.csv` (per strategy: mean and std over seeds), `learning_curves.png`/`.svg` and `report.md`.
"""

from __future__ import annotations

import io
import json
import math
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from alab.errors import AlabError  # noqa: E402
from alab.metrics import area_under_curve, labels_to_reach  # noqa: E402
from alab.storage import atomic_write_bytes, atomic_write_text  # noqa: E402

GROUP = ["dataset", "backend", "strategy"]


def plot_run_curve(curve_csv: Path, out_png: Path) -> None:
    """Test accuracy (regression: RMSE) and NLL against the number of labels, for one run.

    A run without a test set has NaN metrics: the panels say so, and the pool's mean BALD (what the
    model still does not know) is drawn instead of the accuracy.
    """
    curve = pd.read_csv(curve_csv)
    fig, (ax_acc, ax_nll) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    if "rmse" in curve:  # a regression run (alab.tasks.Regression)
        ax_acc.plot(curve["n_labeled"], curve["rmse"], marker=".")
        ax_acc.set(xlabel="labels", ylabel="test RMSE", title=curve_csv.parent.name)
        ax_nll.plot(curve["n_labeled"], curve["nll"], marker=".", color="tab:red")
        ax_nll.set(xlabel="labels", ylabel="test NLL (predictive mixture)")
    elif curve["accuracy"].notna().any():
        ax_acc.plot(curve["n_labeled"], curve["accuracy"], marker=".")
        ax_acc.set(xlabel="labels", ylabel="test accuracy", title=curve_csv.parent.name)
        ax_nll.plot(curve["n_labeled"], curve["nll"], marker=".", color="tab:red")
        ax_nll.set(xlabel="labels", ylabel="test NLL")
    else:
        ax_acc.plot(curve["n_labeled"], curve["mean_bald"], marker=".", color="tab:purple")
        ax_acc.set(xlabel="labels", ylabel="mean BALD over the pool (nats)", title=curve_csv.parent.name)
        ax_nll.axis("off")
        ax_nll.text(0.5, 0.5, "no test set: accuracy and NLL\nare not measured (NaN in curve.csv)",
                    ha="center", va="center", transform=ax_nll.transAxes, color="0.35")  # fmt: skip
    for ax in (ax_acc, ax_nll):
        ax.grid(alpha=0.3)
    _save(fig, {out_png: "png"})


def _save(fig: Any, paths: dict[Path, str]) -> None:
    for path, fmt in paths.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=120)
        atomic_write_bytes(path, buffer.getvalue())
    plt.close(fig)


def target_key(target: float) -> str:
    """A target's column suffix: 0.9 -> "0.90"."""
    return f"{target:.2f}"


# --- one number per cell, then per strategy -------------------------------------------------------


def cell_table(curves: pd.DataFrame, targets: Sequence[float]) -> pd.DataFrame:
    """One row per cell: `auc` (alab.metrics.area_under_curve), `final_accuracy`, `labels_to_<t>` (NaN: not reached).

    `curves` is the long frame: the curve columns plus `strategy`, `seed` (and `dataset`, `backend`).
    """
    curves = _with_group_columns(curves)
    rows = []
    for key, curve in curves.groupby([*GROUP, "seed"], sort=False):
        curve = curve.sort_values("n_labeled")
        row = dict(zip([*GROUP, "seed"], key))
        row["n_rounds"] = len(curve) - 1
        row["final_labels"] = int(curve["n_labeled"].iloc[-1])
        row["auc"] = area_under_curve(curve["n_labeled"], curve["accuracy"])
        row["final_accuracy"] = float(curve["accuracy"].iloc[-1])
        for t in targets:
            reached = labels_to_reach(curve["n_labeled"], curve["accuracy"], t)
            row[f"labels_to_{target_key(t)}"] = math.nan if reached is None else reached
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(curves: pd.DataFrame, targets: Sequence[float]) -> pd.DataFrame:
    """Per strategy (and data set, backend): mean and std over seeds of AUC and final accuracy; labels to targets.

    `labels_to_<t>_mean`/`_std` are over the seeds that reached the target; `reached_<t>` counts them.
    Std is the sample std (ddof 1): NaN for a single seed.
    """
    cells = cell_table(curves, targets)
    rows = []
    for key, group in cells.groupby(GROUP, sort=False):
        row: dict[str, Any] = dict(zip(GROUP, key))
        row["seeds"] = len(group)
        row["final_labels"] = int(group["final_labels"].max())
        for column in ("auc", "final_accuracy"):
            row[f"{column}_mean"] = group[column].mean()
            row[f"{column}_std"] = group[column].std(ddof=1)
        for t in targets:
            labels = group[f"labels_to_{target_key(t)}"].dropna()
            row[f"labels_to_{target_key(t)}_mean"] = labels.mean() if len(labels) else math.nan
            row[f"labels_to_{target_key(t)}_std"] = labels.std(ddof=1) if len(labels) > 1 else math.nan
            row[f"reached_{target_key(t)}"] = len(labels)
        rows.append(row)
    return pd.DataFrame(rows)


def _with_group_columns(curves: pd.DataFrame) -> pd.DataFrame:
    missing = {"strategy", "seed", "n_labeled", "accuracy"} - set(curves.columns)
    if missing:
        raise AlabError(f"a comparison's curves need the columns {sorted(missing)}")
    return curves.assign(**{c: curves[c] if c in curves else "" for c in ("dataset", "backend")})


# --- a comparison directory -----------------------------------------------------------------------


def read_comparison(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, cells): every cell's curve rows, long format, and each cell's status and cost."""
    frames, cells = [], []
    for run_dir in sorted((out / "cells").glob("*/")):
        if not (run_dir / "curve.csv").exists() or not (run_dir / "config.toml").exists():
            continue
        config = tomllib.loads((run_dir / "config.toml").read_text())
        backend = config["backend"]["name"] if isinstance(config.get("backend"), dict) else config.get("backend")
        status = _json(run_dir / "run.json").get("status", "unknown")
        timing = _json(run_dir / "timing.json")
        meta = {"cell": run_dir.name, "strategy": config["strategy"], "seed": int(config["seed"]),
                "backend": backend, "dataset": config["dataset"], "status": status}  # fmt: skip
        curve = pd.read_csv(run_dir / "curve.csv")
        if len(curve):
            frames.append(curve.assign(**meta))
        cells.append({**meta, "wall_seconds": timing.get("wall_seconds", math.nan),
                      "cpu_seconds": timing.get("cpu_seconds", math.nan)})  # fmt: skip
    if not cells:
        raise AlabError(f"{out} holds no cells with a curve yet; run `alab compare` first")
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), pd.DataFrame(cells)


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def plot_learning_curves(curves: pd.DataFrame, out_stem: Path) -> None:
    """Mean test accuracy over seeds against labels, a band of one std, one line per strategy; PNG and SVG.

    One panel per (data set, backend) of the grid.
    """
    curves = _with_group_columns(curves)
    panels = list(curves.groupby(["dataset", "backend"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False, constrained_layout=True)
    for ax, ((dataset, backend), panel) in zip(axes[0], panels):
        for strategy, runs in panel.groupby("strategy", sort=False):
            stats = runs.groupby("n_labeled")["accuracy"].agg(["mean", "std", "count"]).reset_index()
            std = stats["std"].fillna(0.0)
            (line,) = ax.plot(stats["n_labeled"], stats["mean"], label=f"{strategy} ({_count(runs['seed'].nunique(), 'seed')})")
            ax.fill_between(stats["n_labeled"], stats["mean"] - std, stats["mean"] + std, color=line.get_color(), alpha=0.15)
        title = " / ".join(str(v) for v in (dataset, backend) if v)
        ax.set(xlabel="labels", ylabel="test accuracy (mean ± 1 std over seeds)", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    _save(fig, {out_stem.with_suffix(".png"): "png", out_stem.with_suffix(".svg"): "svg"})


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def write_comparison_report(out: Path) -> pd.DataFrame:
    """Rebuild curves.csv, cells.csv, summary.csv, learning_curves.png/.svg and report.md from the cells."""
    recipe = tomllib.loads((out / "compare.toml").read_text()) if (out / "compare.toml").exists() else {}
    table = recipe.get("compare", {})
    paper = table.get("paper") or {}
    targets = sorted({*table.get("targets", [0.9]), *(float(t) for t in paper.get("labels_to_reach", {}))})
    curves, cells = read_comparison(out)
    finished = cells[cells["status"] == "finished"]
    curves_done = curves[curves["cell"].isin(finished["cell"])] if len(curves) else curves
    atomic_write_text(out / "curves.csv", curves.to_csv(index=False))
    if len(curves_done):
        per_cell = cell_table(curves_done, targets).merge(
            finished[["strategy", "seed", "backend", "dataset", "wall_seconds", "cpu_seconds"]], on=[*GROUP, "seed"]
        )
        summary = summarize(curves_done, targets)
        plot_learning_curves(curves_done, out / "learning_curves")
    else:
        per_cell, summary = pd.DataFrame(), pd.DataFrame()
    atomic_write_text(out / "cells.csv", per_cell.to_csv(index=False))
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "report.md", _report_markdown(out, recipe, targets, summary, cells, per_cell))
    return summary


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _report_markdown(
    out: Path, recipe: dict[str, Any], targets: Sequence[float], summary: pd.DataFrame, cells: pd.DataFrame, per_cell: pd.DataFrame
) -> str:
    table = recipe.get("compare", {})
    run_keys = {k: v for k, v in recipe.items() if k != "compare"}
    lines = [f"# Comparison: {out.name}", ""]
    if run_keys:
        settings = ", ".join(f"{k} = {v}" for k, v in run_keys.items() if not isinstance(v, dict))
        backend = dict(run_keys.get("backend") or {})
        name = backend.pop("name", "")
        params = ", ".join(f"{k} = {v}" for k, v in backend.items())
        lines += [f"Shared run settings: {settings}. Backend: {name}" + (f" ({params})." if params else "."), ""]
    finished = int((cells["status"] == "finished").sum())
    lines += [f"Cells: {finished} of {len(cells)} finished (strategies x seeds"
              f"{' x backends' if table.get('backends') else ''}{' x data sets' if table.get('datasets') else ''})."]  # fmt: skip
    unfinished = cells[cells["status"] != "finished"]
    if len(unfinished):
        lines += [f"Not finished (left out of every number below): {', '.join(unfinished['cell'])}; "
                  "run the same `alab compare` command again to resume them."]  # fmt: skip
    lines.append("")
    if len(summary):
        lines += ["## Summary", "", "Area under the learning curve (AUC) is the curve's mean test accuracy over its "
                  "label range (alab.metrics.area_under_curve); mean ± std over seeds. Labels to reach a target: "
                  "mean over the seeds that reached it (how many did, of all).", ""]  # fmt: skip
        header = ["data set", "backend", "strategy", "seeds", "AUC", "final accuracy"]
        header += [f"labels to {t:.0%}" for t in targets]
        rows = []
        for _, s in summary.sort_values("auc_mean", ascending=False).iterrows():
            row = [s["dataset"], s["backend"], s["strategy"], s["seeds"],
                   f"{s['auc_mean']:.4f} ± {_fmt(s['auc_std'], 4)}", f"{s['final_accuracy_mean']:.4f} ± {_fmt(s['final_accuracy_std'], 4)}"]  # fmt: skip
            for t in targets:
                k = target_key(t)
                mean = s[f"labels_to_{k}_mean"]
                row.append(f"{_fmt(mean, 0)} ({s[f'reached_{k}']}/{s['seeds']})")
            rows.append(row)
        lines += [markdown_table(header, rows), "", "![learning curves](learning_curves.png)", ""]
        lines += _paper_section(table.get("paper") or {}, summary)
        lines += _cost_section(per_cell)
    return "\n".join(lines) + "\n"


def _paper_section(paper: dict[str, Any], summary: pd.DataFrame) -> list[str]:
    reference = paper.get("labels_to_reach", {})
    if not reference:
        return []
    lines = [f"## Beside the paper: {paper.get('source', 'reference numbers')}", "",
             "Labels needed to reach each test accuracy: the paper's number, then ours (mean over the seeds that "
             "reached it, and how many did). Ours count every label, the initial set's included.", ""]  # fmt: skip
    paper_targets = sorted(reference, key=float)
    strategies = list(dict.fromkeys([s for t in paper_targets for s in reference[t]] + list(summary["strategy"])))
    header = ["strategy"] + [f"{float(t):.0%} {who}" for t in paper_targets for who in ("paper", "ours")]
    rows = []
    for strategy in strategies:
        ours = summary[summary["strategy"] == strategy]
        row = [strategy]
        for t in paper_targets:
            theirs = reference[t].get(strategy)
            if len(ours):
                s = ours.iloc[0]
                k = target_key(float(t))
                mine = f"{_fmt(s[f'labels_to_{k}_mean'], 0)} ({s[f'reached_{k}']}/{s['seeds']})"
            else:
                mine = "not run"
            row += ["–" if theirs is None else theirs, mine]
        rows.append(row)
    budget = int(summary["final_labels"].max()) if "final_labels" in summary else None
    lines += [markdown_table(header, rows), ""]
    if budget is not None:
        lines += [f"Our runs stop at {budget} labels: a target not reached by then reads – (0/n).", ""]
    return lines


def _cost_section(per_cell: pd.DataFrame) -> list[str]:
    if not len(per_cell) or per_cell["cpu_seconds"].isna().all():
        return []
    by = per_cell.groupby("strategy")[["wall_seconds", "cpu_seconds"]].sum()
    rows = [[s, f"{r['wall_seconds']:.0f}", f"{r['cpu_seconds']:.0f}"] for s, r in by.iterrows()]
    rows.append(["all cells", f"{per_cell['wall_seconds'].sum():.0f}", f"{per_cell['cpu_seconds'].sum():.0f}"])
    return ["## Cost", "", "Seconds summed over cells (and over the attempts of a resumed cell). Wall seconds of "
            "cells that ran side by side overlap; CPU seconds count every thread of a cell's process.", "",
            markdown_table(["strategy", "wall s", "CPU s"], rows), ""]  # fmt: skip


# --- a single run ---------------------------------------------------------------------------------


def write_run_report(run_dir: Path, targets: Sequence[float] = (0.8, 0.9, 0.95)) -> dict[str, Any]:
    """A run directory's curve.png and summary.csv (AUC, final accuracy, labels to each target)."""
    curve = pd.read_csv(run_dir / "curve.csv")
    if not len(curve):
        raise AlabError(f"{run_dir} has no curve rows yet; continue it with `alab resume {run_dir}`")
    plot_run_curve(run_dir / "curve.csv", run_dir / "curve.png")
    row: dict[str, Any] = {"rounds": len(curve) - 1, "final_labels": int(curve["n_labeled"].iloc[-1])}
    if curve["accuracy"].notna().all():
        row["auc"] = area_under_curve(curve["n_labeled"], curve["accuracy"])
        row["final_accuracy"] = float(curve["accuracy"].iloc[-1])
        for t in targets:
            reached = labels_to_reach(curve["n_labeled"], curve["accuracy"], t)
            row[f"labels_to_{target_key(t)}"] = "" if reached is None else reached
    atomic_write_text(run_dir / "summary.csv", pd.DataFrame([row]).to_csv(index=False))
    return row


def write_report(path: Path) -> str:
    """`alab report DIR`: a comparison directory's report, or a run directory's plot and summary; says which."""
    if (path / "cells").is_dir():
        write_comparison_report(path)
        return "comparison"
    if (path / "curve.csv").exists():
        write_run_report(path)
        return "run"
    raise AlabError(f"{path} is neither a run directory (curve.csv) nor a comparison directory (cells/)")
