"""Learning curves as pictures and tables."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from alab.storage import atomic_write_bytes  # noqa: E402


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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(out_png, buffer.getvalue())
