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
    """Test accuracy and NLL against the number of labels, for one run."""
    curve = pd.read_csv(curve_csv)
    fig, (ax_acc, ax_nll) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    ax_acc.plot(curve["n_labeled"], curve["accuracy"], marker=".")
    ax_acc.set(xlabel="labels", ylabel="test accuracy", title=curve_csv.parent.name)
    ax_nll.plot(curve["n_labeled"], curve["nll"], marker=".", color="tab:red")
    ax_nll.set(xlabel="labels", ylabel="test NLL")
    for ax in (ax_acc, ax_nll):
        ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(out_png, buffer.getvalue())
