"""Label efficiency on a data set: each strategy's area under the accuracy curve and labels to a target.

    python benchmarks/label_efficiency.py                       # digits, bald vs random, 3 seeds
    python benchmarks/label_efficiency.py --strategies bald,max_entropy,random --seeds 5

Runs the real loop (simulated oracle) for every (strategy, seed), in this process, then prints the
mean and std over seeds of the area under the accuracy curve (a mean accuracy over the label range),
the final accuracy, and the labels needed to reach the target accuracy (mean over the seeds that
reached it). Run directories go to results/benchmarks/label_efficiency/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from alab.config import load_config
from alab.metrics import area_under_curve, labels_to_reach
from fresh_run import fresh_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--strategies", default="bald,random")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--config", default=None, help="TOML with run settings (rounds, backend, ...)")
    parser.add_argument("--out", default="results/benchmarks/label_efficiency")
    args = parser.parse_args()

    out = Path(args.out)
    rows = []
    for strategy in args.strategies.split(","):
        for seed in range(args.seeds):
            config = load_config(args.config, {"strategy": strategy, "dataset": args.dataset, "seed": seed})
            run_dir = out / f"{strategy}-s{seed}"
            seconds = fresh_run(config, run_dir)
            curve = pd.read_csv(run_dir / "curve.csv")
            rows.append(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "auc": area_under_curve(curve["n_labeled"], curve["accuracy"]),
                    "final_accuracy": curve["accuracy"].iloc[-1],
                    "labels_to_target": labels_to_reach(curve["n_labeled"], curve["accuracy"], args.target),
                    "seconds": seconds,
                }
            )
            print(f"{strategy:>16} seed {seed}: auc {rows[-1]['auc']:.4f}  final {rows[-1]['final_accuracy']:.4f}  "
                  f"labels to {args.target:.0%}: {rows[-1]['labels_to_target']}  ({seconds:.0f} s)", flush=True)
    frame = pd.DataFrame(rows)
    summary = frame.groupby("strategy").agg(
        auc_mean=("auc", "mean"),
        auc_std=("auc", "std"),
        final_accuracy=("final_accuracy", "mean"),
        labels_to_target=("labels_to_target", "mean"),
        seeds_reaching=("labels_to_target", "count"),
        seconds_per_run=("seconds", "mean"),
    )
    print(f"\n{args.dataset}, {args.seeds} seeds, target accuracy {args.target:.0%}")
    print(summary.sort_values("auc_mean", ascending=False).to_string(float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
