"""Draw docs/regression-toy1d.png: where epistemic-variance and total-variance acquisition ask for labels.

    python docs/regression_toy1d.py [--seed 0] [--rounds 3] [--out docs/regression-toy1d.png]

Runs both strategies on `toy1d` with the settings of the test that checks the claim
(tests/test_regression_runs.py), then draws, per strategy, the pool, the true mean, the final
model's predictive mean with its epistemic band and its total band (2 sd each), and the labels
acquired (initial set apart). Run directories go to results/docs/regression_toy1d/.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from alab.config import BackendConfig, RunConfig  # noqa: E402
from alab.data.regression import TOY_GAP, TOY_NOISY, toy1d_function, toy1d_raw  # noqa: E402
from alab.loop import build_parts, round_generator, start_run  # noqa: E402

STRATEGIES = {"epistemic_variance": "tab:green", "total_variance": "tab:red"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="docs/regression-toy1d.png")
    args = parser.parse_args()
    base = RunConfig(
        dataset="toy1d", initial=20, query_size=10, rounds=args.rounds, samples=20, seed=args.seed,
        backend=BackendConfig("mc_dropout", {"epochs": 1, "min_steps": 500}),
    )  # fmt: skip
    x_pool, y_pool, _, _ = toy1d_raw()
    grid = np.linspace(-4.3, 4.3, 400)
    fig, axes = plt.subplots(2, 1, figsize=(9, 8), sharex=True, constrained_layout=True)
    for ax, (strategy, color) in zip(axes, STRATEGIES.items()):
        run_dir = Path("results/docs/regression_toy1d") / strategy
        shutil.rmtree(run_dir, ignore_errors=True)
        config = dataclasses.replace(base, strategy=strategy)
        start_run(config, run_dir, echo=lambda line: None)
        parts = build_parts(config)
        parts.backend.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=True)["backend"])
        task, data = parts.task, parts.dataset
        x_grid = torch.tensor((grid - x_pool.mean()) / x_pool.std(), dtype=torch.float32)[:, None]
        networks = parts.backend.sample_networks(200, generator=round_generator(args.seed, 99, "plot"))
        with torch.inference_mode():
            mu_K_G, s2_K_G = task.original_units(networks(x_grid))
        mean = mu_K_G.mean(0).numpy()
        epistemic_sd = mu_K_G.var(0, correction=0).sqrt().numpy()
        total_sd = np.sqrt(epistemic_sd**2 + s2_K_G.mean(0).numpy())
        assert np.allclose(data.y_pool.numpy(), y_pool, atol=1e-5)  # the plot's pool is the run's pool

        ax.axvspan(*TOY_NOISY, color="tab:orange", alpha=0.08, lw=0)
        ax.axvspan(*TOY_GAP, color="tab:blue", alpha=0.06, lw=0)
        ax.text(np.mean(TOY_NOISY), 3.6, "noisy region\n(aleatoric)", ha="center", va="top", color="tab:orange")
        ax.text(np.mean(TOY_GAP), 3.6, "gap: few pool items\n(epistemic)", ha="center", va="top", color="tab:blue")
        ax.scatter(x_pool, y_pool, s=6, color="0.7", label="pool (unlabeled)", zorder=1)
        ax.plot(grid, toy1d_function(grid), color="k", lw=1, ls="--", label="true mean")
        ax.fill_between(grid, mean - 2 * total_sd, mean + 2 * total_sd, color=color, alpha=0.15, lw=0,
                        label="2 sd total (aleatoric + epistemic)")  # fmt: skip
        ax.fill_between(grid, mean - 2 * epistemic_sd, mean + 2 * epistemic_sd, color=color, alpha=0.45, lw=0,
                        label="2 sd epistemic")  # fmt: skip
        ax.plot(grid, mean, color=color, lw=2, label="predictive mean")
        labels = pd.read_csv(run_dir / "labels.csv")
        initial, acquired = labels[labels["round"] == 0]["index"], labels[labels["round"] > 0]["index"]
        ax.scatter(x_pool[initial], y_pool[initial], s=30, marker="o", facecolor="none", edgecolor="k", label="initial labels (random)", zorder=3)
        ax.scatter(x_pool[acquired], y_pool[acquired], s=45, marker="X", color=color, edgecolor="k", lw=0.5, label="acquired labels", zorder=4)
        for x in x_pool[acquired]:
            ax.axvline(x, ymin=0, ymax=0.04, color=color, lw=1.5)
        in_noise = int(((x_pool[acquired] > TOY_NOISY[0]) & (x_pool[acquired] < TOY_NOISY[1])).sum())
        in_gap = int(((x_pool[acquired] > TOY_GAP[0]) & (x_pool[acquired] < TOY_GAP[1])).sum())
        ax.set(ylim=(-4.2, 4.2), ylabel="y",
               title=f"{strategy}: {len(acquired)} labels acquired, {in_noise} in the noisy region, {in_gap} in the gap "
                     f"(seed {args.seed}, after {args.rounds} rounds)")  # fmt: skip
        ax.legend(loc="lower right", fontsize=8, ncol=2)
        ax.grid(alpha=0.25)
    axes[-1].set_xlabel("x")
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
