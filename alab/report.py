"""Learning curves as pictures and tables: one run's plot, and a comparison's curves, summary and report.

A comparison directory (written by `alab compare`) holds `cells/<cell>/` run directories. From them:
`curves.csv` (every curve row with `cell, strategy, seed, backend, dataset, status` added),
`cells.csv` (one row per cell: area under the curve, final metrics, labels to each target, cost),
`summary.csv` (per strategy: mean and std over seeds), `learning_curves.png`/`.svg` and `report.md`.

What a report measures is the run's task's (`Headline`): test accuracy for classification, test RMSE
(lower is better) with NLL and interval coverage for regression. `headline` tells them apart by the
curve's columns, which the task wrote (`alab.tasks`), in this one place.
"""

from __future__ import annotations

import io
import json
import math
import tomllib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
from matplotlib.figure import Figure  # noqa: E402
import pandas as pd  # noqa: E402

from alab.errors import AlabError  # noqa: E402
from alab.metrics import area_under_curve, labels_to_reach  # noqa: E402
from alab.reproduction import median_and_quartiles, on_mean_curve, paper_section, parse_paper, per_seed  # noqa: E402
from alab.storage import atomic_write_bytes, atomic_write_text  # noqa: E402

GROUP = ["dataset", "backend", "strategy"]


@dataclass(frozen=True)
class Headline:
    """What a task's reports lead with: the metric its learning curves plot and rank by, and the finals beside it.

    The area under the curve of `metric` (alab.metrics.area_under_curve: its mean over the label
    range, by trapezoids) ranks the strategies, highest first if `higher_is_better`, else lowest.
    """

    metric: str  # the curve column
    label: str  # its axis label
    higher_is_better: bool
    area: str  # the column of its area under the curve in cells.csv and summary.csv
    area_header: str  # ... and in report.md
    finals: tuple[tuple[str, str], ...]  # (curve column, report.md header): its value at the last round, `final_<column>`
    targets: bool  # whether compare.targets and a paper's labels_to_reach (accuracies) apply
    nll_label: str
    pool: tuple[str, str]  # (curve column, axis label) drawn instead of `metric` when there is no test set
    intro: str  # report.md's words on the summary table


HEADLINES: dict[str, Headline] = {  # by alab.tasks Task.name
    "classification": Headline(
        metric="accuracy", label="test accuracy", higher_is_better=True, area="auc", area_header="AUC",
        finals=(("accuracy", "final accuracy"),), targets=True, nll_label="test NLL",
        pool=("mean_bald", "mean BALD over the pool (nats)"),
        intro="Area under the learning curve (AUC) is the curve's mean test accuracy over its label range "
        "(alab.metrics.area_under_curve); mean ± std over seeds. Labels to reach a target: every label, the "
        "initial set's included, at the first point where the seed-mean curve reaches it (and how many seeds "
        "reached it on their own by the last round).",
    ),
    "regression": Headline(
        metric="rmse", label="test RMSE", higher_is_better=False, area="rmse_auc", area_header="AUC of RMSE (lower is better)",
        finals=(("rmse", "final RMSE"), ("nll", "final NLL"), ("coverage_90", "final coverage 90% (nominal 0.90)"),
                ("coverage_95", "final coverage 95% (nominal 0.95)")),
        targets=False, nll_label="test NLL (predictive mixture)", pool=("mean_epistemic", "mean epistemic variance over the pool"),
        intro="The area under the RMSE curve (AUC of RMSE) is the curve's mean test RMSE over its label range, in the "
        "targets' units (alab.metrics.area_under_curve, the same trapezoids): lower is better, and the table is "
        "sorted by it. Coverage is the fraction of test targets inside the predictive mixture's central 90% or 95% "
        "interval: a calibrated model is at the nominal level, below is overconfident, above underconfident. "
        "Mean ± std over seeds. compare.targets (and a paper's labels_to_reach) are accuracies: not used for regression.",
    ),
}  # fmt: skip


def headline(columns: Collection[str]) -> Headline:
    """The headline of the task whose curve has these columns: each task's curve holds its own metric."""
    found = [h for h in HEADLINES.values() if h.metric in columns]
    if len(found) != 1:
        kinds = " or ".join(f"{h.metric} ({task})" for task, h in HEADLINES.items())
        raise AlabError(
            f"a report needs the curve column {kinds}, not {'both' if found else 'neither'}; "
            "report classification and regression runs apart"
        )
    return found[0]


def plot_run_curve(curve_csv: Path, out_png: Path) -> None:
    """The headline metric (test accuracy, or RMSE for regression) and NLL against the number of labels, for one run.

    A run without a test set has NaN metrics: the panels say so, and what the model still does not
    know about the pool (mean BALD, or epistemic variance) is drawn instead.
    """
    curve = pd.read_csv(curve_csv)
    h = headline(curve.columns)
    fig, (ax_acc, ax_nll) = new_figure(2, (9, 3.5))
    if curve[h.metric].notna().any():
        ax_acc.plot(curve["n_labeled"], curve[h.metric], marker=".")
        ax_acc.set(xlabel="labels", ylabel=h.label, title=curve_csv.parent.name)
        ax_nll.plot(curve["n_labeled"], curve["nll"], marker=".", color="tab:red")
        ax_nll.set(xlabel="labels", ylabel=h.nll_label)
    else:
        column, label = h.pool
        ax_acc.plot(curve["n_labeled"], curve[column], marker=".", color="tab:purple")
        ax_acc.set(xlabel="labels", ylabel=label, title=curve_csv.parent.name)
        ax_nll.axis("off")
        ax_nll.text(0.5, 0.5, f"no test set: {h.metric} and NLL\nare not measured (NaN in curve.csv)",
                    ha="center", va="center", transform=ax_nll.transAxes, color="0.35")  # fmt: skip
    for ax in (ax_acc, ax_nll):
        ax.grid(alpha=0.3)
    save_figure(fig, {out_png: "png"})


def new_figure(ncols: int, figsize: tuple[float, float], *, squeeze: bool = True) -> tuple[Figure, Any]:
    """A figure of one row of `ncols` axes, made without pyplot: no global figure registry, so the
    cells of a lockstep process (threads, `alab.lockstep`) draw their reports at the same time safely."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=squeeze)


def save_figure(fig: Figure, paths: dict[Path, str]) -> None:
    for path, fmt in paths.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=120)
        atomic_write_bytes(path, buffer.getvalue())


def target_key(target: float) -> str:
    """A target's column suffix: 0.9 -> "0.90"."""
    return f"{target:.2f}"


# --- one number per cell, then per strategy -------------------------------------------------------


def _metrics_of(curve: pd.DataFrame, h: Headline, targets: Sequence[float], not_reached: Any) -> dict[str, Any]:
    """One curve's numbers: the area under its headline metric, its finals, and (accuracies) labels to each target."""
    row: dict[str, Any] = {h.area: area_under_curve(curve["n_labeled"], curve[h.metric])}
    for column, _ in h.finals:
        row[f"final_{column}"] = float(curve[column].iloc[-1])
    for t in targets if h.targets else ():
        reached = labels_to_reach(curve["n_labeled"], curve[h.metric], t)
        row[f"labels_to_{target_key(t)}"] = not_reached if reached is None else reached
    return row


def cell_table(curves: pd.DataFrame, targets: Sequence[float]) -> pd.DataFrame:
    """One row per cell: the area under the headline metric's curve (`auc`, regression `rmse_auc`), its finals
    (`final_accuracy`; regression `final_rmse`, `final_nll`, `final_coverage_90`, `_95`), and for
    classification `labels_to_<t>` (NaN: not reached). See `Headline`.

    `curves` is the long frame: the curve columns plus `strategy`, `seed` (and `dataset`, `backend`).
    """
    curves, h = _with_group_columns(curves)
    rows = []
    for key, curve in curves.groupby([*GROUP, "seed"], sort=False):
        curve = curve.sort_values("n_labeled")
        row = dict(zip([*GROUP, "seed"], key))
        row["n_rounds"] = len(curve) - 1
        row["final_labels"] = int(curve["n_labeled"].iloc[-1])
        rows.append({**row, **_metrics_of(curve, h, targets, math.nan)})
    return pd.DataFrame(rows)


def summarize(curves: pd.DataFrame, targets: Sequence[float]) -> pd.DataFrame:
    """Per strategy (and data set, backend): mean and std over seeds of the area and the finals; labels to targets.

    Labels to each target (classification only; `alab.reproduction`): `labels_to_<t>_mean_curve` on
    the seed-mean curve (NaN: it never reaches it), `labels_to_<t>_median` over seeds (inf: the middle
    seed never reaches it), `reached_<t>` how many seeds did. Never a mean over the seeds that reached
    it: that hides the ones that did not. Std is the sample std (ddof 1): NaN for a single seed.
    """
    curves, h = _with_group_columns(curves)
    cells = cell_table(curves, targets)
    rows = []
    for key, group in cells.groupby(GROUP, sort=False):
        row: dict[str, Any] = dict(zip(GROUP, key))
        row["seeds"] = len(group)
        row["final_labels"] = int(group["final_labels"].max())
        for column in (h.area, *(f"final_{c}" for c, _ in h.finals)):
            row[f"{column}_mean"] = group[column].mean()
            row[f"{column}_std"] = group[column].std(ddof=1)
        runs = curves[(curves[GROUP] == pd.Series(dict(zip(GROUP, key)))).all(axis=1)] if h.targets else curves.iloc[:0]
        for t in targets if h.targets else ():
            on_mean = on_mean_curve(runs, t)
            median = median_and_quartiles(per_seed(runs, t))[0]
            row[f"labels_to_{target_key(t)}_mean_curve"] = math.nan if on_mean is None else on_mean
            row[f"labels_to_{target_key(t)}_median"] = median
            row[f"reached_{target_key(t)}"] = int(group[f"labels_to_{target_key(t)}"].notna().sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _with_group_columns(curves: pd.DataFrame) -> tuple[pd.DataFrame, Headline]:
    h = headline(curves.columns)
    missing = {"strategy", "seed", "n_labeled", h.metric} - set(curves.columns)
    if missing:
        raise AlabError(f"a comparison's curves need the columns {sorted(missing)}")
    return curves.assign(**{c: curves[c] if c in curves else "" for c in ("dataset", "backend")}), h


# --- a comparison directory -----------------------------------------------------------------------


def read_comparison(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, cells): every cell's curve rows, long format, and each cell's status and cost."""
    frames, cells = [], []
    for run_dir in sorted((out / "cells").glob("*/")):
        if not (run_dir / "config.toml").exists():
            continue
        config = tomllib.loads((run_dir / "config.toml").read_text())
        backend = config["backend"]["name"] if isinstance(config.get("backend"), dict) else config.get("backend")
        status = _json(run_dir / "run.json").get("status", "unknown")
        timing = _json(run_dir / "timing.json")
        meta = {"cell": run_dir.name, "strategy": config["strategy"], "seed": int(config["seed"]),
                "backend": backend, "dataset": config["dataset"], "status": status}  # fmt: skip
        curve = pd.read_csv(run_dir / "curve.csv") if (run_dir / "curve.csv").exists() else pd.DataFrame()
        if len(curve):  # a cell that failed before its first curve row still counts, as not finished
            frames.append(curve.assign(**meta))
        cells.append({**meta, "wall_seconds": timing.get("wall_seconds", math.nan),
                      "cpu_seconds": timing.get("cpu_seconds", math.nan)})  # fmt: skip
    if not cells:
        raise AlabError(f"{out} holds no cells yet; run `alab compare` first")
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), pd.DataFrame(cells)


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def plot_learning_curves(curves: pd.DataFrame, out_stem: Path) -> None:
    """The headline metric's mean over seeds (test accuracy, or RMSE) against labels, a band of one std,
    one line per strategy; PNG and SVG.

    One panel per (data set, backend) of the grid.
    """
    curves, h = _with_group_columns(curves)
    panels = list(curves.groupby(["dataset", "backend"], sort=False))
    fig, axes = new_figure(len(panels), (6.5 * len(panels), 4.5), squeeze=False)
    for ax, ((dataset, backend), panel) in zip(axes[0], panels):
        for strategy, runs in panel.groupby("strategy", sort=False):
            stats = runs.groupby("n_labeled")[h.metric].agg(["mean", "std", "count"]).reset_index()
            std = stats["std"].fillna(0.0)
            (line,) = ax.plot(stats["n_labeled"], stats["mean"], label=f"{strategy} ({_count(runs['seed'].nunique(), 'seed')})")
            ax.fill_between(stats["n_labeled"], stats["mean"] - std, stats["mean"] + std, color=line.get_color(), alpha=0.15)
        title = " / ".join(str(v) for v in (dataset, backend) if v)
        ax.set(xlabel="labels", ylabel=f"{h.label} (mean ± 1 std over seeds)", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    save_figure(fig, {out_stem.with_suffix(".png"): "png", out_stem.with_suffix(".svg"): "svg"})


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
    h = headline(curves_done.columns) if len(curves_done) else None
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
    configs = sorted((out / "cells").glob("*/config.toml"))
    cell_config = tomllib.loads(configs[0].read_text()) if configs else {}
    report = _report_markdown(out, recipe, targets, summary, cells, per_cell, h, curves_done, cell_config)
    atomic_write_text(out / "report.md", report)
    return summary


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _protocol(recipe: dict[str, Any], cell_config: dict[str, Any]) -> list[str]:
    """The protocol in force: every run setting and backend setting of the cells, defaults included.

    Read from a cell's resolved config.toml (what the run used), else from the recipe's.
    """
    config = cell_config or {k: v for k, v in recipe.items() if k != "compare"}
    if not config:
        return []
    varied = {"strategy", "seed", "data_dir", "device"}
    settings = ", ".join(f"{k} = {v}" for k, v in config.items() if not isinstance(v, dict) and k not in varied)
    backend = dict(config.get("backend") or {})
    name = backend.pop("name", "")
    params = ", ".join(f"{k} = {v}" for k, v in backend.items())
    return [f"Protocol in force (each cell's config.toml, strategy and seed aside): {settings}. "
            f"Backend: {name}" + (f" ({params})." if params else "."), ""]  # fmt: skip


def _report_markdown(
    out: Path, recipe: dict[str, Any], targets: Sequence[float], summary: pd.DataFrame, cells: pd.DataFrame, per_cell: pd.DataFrame,
    h: Headline | None, curves: pd.DataFrame, cell_config: dict[str, Any],
) -> str:
    from alab.diagnosis import comparison_diagnosis_markdown
    from alab.trust_report import comparison_trust_markdown

    table = recipe.get("compare", {})
    lines = [f"# Comparison: {out.name}", "", *_protocol(recipe, cell_config)]
    finished = int((cells["status"] == "finished").sum())
    lines += [f"Cells: {finished} of {len(cells)} finished (strategies x seeds"
              f"{' x backends' if table.get('backends') else ''}{' x data sets' if table.get('datasets') else ''})."]  # fmt: skip
    unfinished = cells[cells["status"] != "finished"]
    if len(unfinished):
        lines += [f"Not finished (left out of every number below): {', '.join(unfinished['cell'])}; "
                  "run the same `alab compare` command again to resume them."]  # fmt: skip
    lines.append("")
    if h is not None and len(summary):
        targets = targets if h.targets else []
        lines += ["## Summary", "", h.intro, ""]
        header = ["data set", "backend", "strategy", "seeds", h.area_header, *(label for _, label in h.finals)]
        header += [f"labels to {t:.0%}" for t in targets]
        columns = [h.area, *(f"final_{c}" for c, _ in h.finals)]
        rows = []
        for _, s in summary.sort_values(f"{h.area}_mean", ascending=not h.higher_is_better).iterrows():
            row = [s["dataset"], s["backend"], s["strategy"], s["seeds"]]
            row += [f"{s[f'{c}_mean']:.4f} ± {_fmt(s[f'{c}_std'], 4)}" for c in columns]
            for t in targets:
                k = target_key(t)
                on_mean = s[f"labels_to_{k}_mean_curve"]
                row.append(f"{'not reached' if math.isnan(on_mean) else f'{on_mean:.0f}'} ({s[f'reached_{k}']}/{s['seeds']} seeds)")
            rows.append(row)
        lines += [markdown_table(header, rows), "", "![learning curves](learning_curves.png)", ""]
        if h.targets and table.get("paper"):
            lines += paper_section(parse_paper(table["paper"]), curves, int(recipe.get("initial", 0)), int(recipe.get("query_size", 0)))
        lines += comparison_diagnosis_markdown(out, curves, summary, h.area, h.higher_is_better)
        lines += comparison_trust_markdown(out, curves)
        lines += _cost_section(per_cell)
    return "\n".join(lines) + "\n"


def _cost_section(per_cell: pd.DataFrame) -> list[str]:
    if not len(per_cell) or per_cell["cpu_seconds"].isna().all():
        return []
    by = per_cell.groupby("strategy")[["wall_seconds", "cpu_seconds"]].sum()
    rows = [[s, f"{r['wall_seconds']:.0f}", f"{r['cpu_seconds']:.0f}"] for s, r in by.iterrows()]
    rows.append(["all cells", f"{per_cell['wall_seconds'].sum():.0f}", f"{per_cell['cpu_seconds'].sum():.0f}"])
    return ["## Cost", "", "Seconds summed over cells (and over the attempts of a resumed cell). Wall seconds of "
            "cells that ran side by side overlap; CPU seconds count every thread of a cell's process, or in a lockstep "
            "process (`alab.lockstep`) the cell's own thread and its share of the stacked fits.", "",
            markdown_table(["strategy", "wall s", "CPU s"], rows), ""]  # fmt: skip


# --- a single run ---------------------------------------------------------------------------------


def write_run_report(run_dir: Path, targets: Sequence[float] = (0.8, 0.9, 0.95), *, stopped_by: str | None = None) -> dict[str, Any]:
    """A run directory's curve.png, summary.csv (the area under its headline metric's curve, its finals, and for
    classification the labels to each target accuracy: `Headline`) and report.md, with its trust section and
    trust.png where the run wrote them (`alab.trust_report`). `stopped_by`: why a stopping rule ended the run
    (else run.json's, for `alab report` of a finished run).
    """
    from alab.diagnosis import run_diagnosis_markdown
    from alab.trust_report import run_trust_markdown

    curve = pd.read_csv(run_dir / "curve.csv")
    if not len(curve):
        raise AlabError(f"{run_dir} has no curve rows yet; continue it with `alab resume {run_dir}`")
    plot_run_curve(run_dir / "curve.csv", run_dir / "curve.png")
    h = headline(curve.columns)
    row: dict[str, Any] = {"rounds": len(curve) - 1, "final_labels": int(curve["n_labeled"].iloc[-1])}
    if curve[h.metric].notna().all():
        row.update(_metrics_of(curve, h, targets, ""))
    atomic_write_text(run_dir / "summary.csv", pd.DataFrame([row]).to_csv(index=False))
    stopped_by = stopped_by or _json(run_dir / "run.json").get("stopped_by")
    lines = [f"# Run: {run_dir.name}", "", f"{row['rounds']} rounds, {row['final_labels']} labels."
             + (f" The run ended early: {stopped_by}." if stopped_by else ""), "", "![learning curve](curve.png)", ""]  # fmt: skip
    if h.area in row:
        lines += [markdown_table(["metric", "value"], [[k, v] for k, v in row.items() if k not in ("rounds", "final_labels")]), ""]
    lines += run_diagnosis_markdown(run_dir)
    lines += run_trust_markdown(run_dir, curve)
    atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
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
