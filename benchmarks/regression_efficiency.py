"""Label efficiency for regression: each strategy's area under the RMSE curve (lower is better).

    python benchmarks/regression_efficiency.py                     # diabetes, epistemic_variance vs random, 3 seeds
    python benchmarks/regression_efficiency.py --strategies epistemic_variance,total_variance,bald,random --seeds 5
    python benchmarks/regression_efficiency.py --config strategies/diabetes-regression.toml --jobs 6

Runs the real loop (simulated oracle) for every (strategy, seed), in this process, then prints per
run and, over seeds, the mean and std of the area under the test RMSE curve (a mean RMSE over the
label range, in the target's units), the final RMSE, NLL and 90% interval coverage, and the paired
difference to random on the same seed (same initial set). Writes `summary.csv` and
`rmse_curves.png` beside the run directories (results/benchmarks/regression_efficiency/).
`--jobs N` runs N (strategy, seed) runs at once in worker processes (each run is deterministic alone).
"""

from __future__ import annotations

import argparse
import concurrent.futures
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from alab.config import load_config  # noqa: E402
from alab.metrics import area_under_curve  # noqa: E402
from fresh_run import fresh_run  # noqa: E402

DEFAULTS = {"initial": 20, "query_size": 10, "rounds": 15}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="diabetes")
    parser.add_argument("--strategies", default="epistemic_variance,random")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--config", default=None, help="TOML with run settings (rounds, backend, ...)")
    parser.add_argument("--out", default="results/benchmarks/regression_efficiency")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, in worker processes")
    args = parser.parse_args()

    out = Path(args.out)
    grid = [(strategy, seed) for strategy in args.strategies.split(",") for seed in range(args.seeds)]
    jobs = [(args.config, args.dataset, strategy, seed, out / f"{strategy}-s{seed}") for strategy, seed in grid]
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        timings = list(pool.map(_run, *zip(*jobs)))
    rows, curves = [], []
    for (strategy, seed), seconds in zip(grid, timings):
        curve = pd.read_csv(out / f"{strategy}-s{seed}" / "curve.csv")
        curves.append(curve.assign(strategy=strategy, seed=seed))
        last = curve.iloc[-1]
        rows.append(
            {
                "strategy": strategy,
                "seed": seed,
                "rmse_auc": area_under_curve(curve["n_labeled"], curve["rmse"]),
                "final_rmse": last["rmse"],
                "final_nll": last["nll"],
                "final_coverage_90": last["coverage_90"],
                "seconds": seconds,
            }
        )
        print(f"{strategy:>20} seed {seed}: rmse auc {rows[-1]['rmse_auc']:.3f}  final rmse {last['rmse']:.3f}  "
              f"nll {last['nll']:.3f}  cov90 {last['coverage_90']:.2f}  ({seconds:.0f} s)", flush=True)  # fmt: skip
    frame = pd.DataFrame(rows)
    summary = frame.groupby("strategy").agg(
        rmse_auc_mean=("rmse_auc", "mean"),
        rmse_auc_std=("rmse_auc", "std"),
        final_rmse=("final_rmse", "mean"),
        final_nll=("final_nll", "mean"),
        final_coverage_90=("final_coverage_90", "mean"),
        seconds_per_run=("seconds", "mean"),
    )
    if "random" in set(frame["strategy"]):
        random_auc = frame[frame["strategy"] == "random"].set_index("seed")["rmse_auc"]
        paired = frame.assign(diff=frame["rmse_auc"] - frame["seed"].map(random_auc))
        summary["auc_minus_random"] = paired.groupby("strategy")["diff"].mean()
        summary["seeds_better_than_random"] = paired.groupby("strategy")["diff"].apply(lambda d: int((d < 0).sum()))
    summary = summary.sort_values("rmse_auc_mean")
    print(f"\n{args.dataset}, {args.seeds} seeds; RMSE in the target's units, lower is better")
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "summary.csv")
    _plot(pd.concat(curves), args.dataset, out / "rmse_curves.png")


def _run(config_path: str | None, dataset: str, strategy: str, seed: int, run_dir: Path) -> float:
    """One run from scratch; its wall-clock seconds."""
    overrides = {"strategy": strategy, "dataset": dataset, "seed": seed}
    config = load_config(config_path, {**(DEFAULTS if config_path is None else {}), **overrides})
    return fresh_run(config, run_dir)


def _plot(curves: pd.DataFrame, dataset: str, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for (strategy, group), color in zip(curves.groupby("strategy"), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for column, ax in zip(("rmse", "nll"), axes):
            by_n = group.groupby("n_labeled")[column]
            mean, std = by_n.mean(), by_n.std().fillna(0)
            ax.plot(mean.index, mean, color=color, label=f"{strategy} ({group['seed'].nunique()} seeds)")
            ax.fill_between(mean.index, mean - std, mean + std, color=color, alpha=0.2)
    axes[0].set(xlabel="labels", ylabel="test RMSE", title=f"{dataset}: RMSE (mean +- std over seeds)")
    axes[1].set(xlabel="labels", ylabel="test NLL (predictive mixture)", title="NLL")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
