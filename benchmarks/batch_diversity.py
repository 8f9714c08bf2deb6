"""Batch diversity on a repeated data set: how many acquired labels are copies, and what accuracy it buys.

    python benchmarks/batch_diversity.py                          # repeated-digits, query size 10, 3 seeds
    python benchmarks/batch_diversity.py --strategies bald,badge,coreset,cluster_margin,random --rounds 10
    python benchmarks/batch_diversity.py --dataset repeated-mnist --data-dir ../shared/datasets/mnist --samples 10 \
        --strategies bald,badge,coreset,cluster_margin,random --out results/benchmarks/batch_diversity-mnist

Runs the real loop (simulated oracle) for every (strategy, seed) and reads each run's labels.csv.
A repeated pick is an acquired label (round >= 1) whose original (pool index % N originals, see
`alab.data.repeated`) was already labeled: earlier, in the initial set, or earlier in the same
batch. Prints, per strategy, the mean and std over seeds of the repeated picks, the final accuracy
and the area under the accuracy curve. Run directories go to results/benchmarks/batch_diversity/.
The default strategies: top-k BALD, the batch-aware rules (BatchBALD, PowerBALD) and the embedding rules
that spread a batch in feature space (BADGE, Coreset, Cluster-Margin), beside random. The whole pool is
scored every round: a random subset of it would hold few copies of any one image.
The backend's weight decay is lowered to 0.05 (the default 2.5 underfits 20 digits labels) and its
minimum steps per fit to 150 (to fit the benchmark in minutes on a shared CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from alab.config import BackendConfig, load_config
from alab.data import load_dataset
from alab.data.repeated import REPETITIONS, original_index
from alab.metrics import area_under_curve
from alab.storage import LabelsJournal
from fresh_run import fresh_run


def repeated_picks(run_dir: Path, n_originals: int) -> int:
    """Acquired labels whose original had already been labeled (journal order)."""
    seen: set[int] = set()
    repeats = 0
    for entry in LabelsJournal(run_dir / "labels.csv").entries:
        original = int(original_index(entry.index, n_originals))
        repeats += entry.round >= 1 and original in seen
        seen.add(original)
    return repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="repeated-digits")
    parser.add_argument("--data-dir", default=None, help="the data set's files (repeated-mnist: the MNIST IDX files)")
    parser.add_argument("--samples", type=int, default=20, help="K posterior samples (Kirsch et al. 2019 use 10 on repeated MNIST)")
    parser.add_argument("--strategies", default="bald,batchbald,powerbald,badge,coreset,cluster_margin,random")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--query-size", type=int, default=10)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--min-steps", type=int, default=150)
    parser.add_argument("--out", default="results/benchmarks/batch_diversity")
    args = parser.parse_args()

    n_originals = len(load_dataset(args.dataset, data_dir=args.data_dir).y_pool) // REPETITIONS
    rows = []
    for seed in range(args.seeds):  # seed-major: a stopped benchmark still compares strategies
        for strategy in args.strategies.split(","):
            config = load_config(
                None,
                {"strategy": strategy, "dataset": args.dataset, "data_dir": args.data_dir, "seed": seed, "rounds": args.rounds,
                 "query_size": args.query_size, "samples": args.samples},
            )  # fmt: skip
            backend = BackendConfig(config.backend.name, {**config.backend.params, "weight_decay": args.weight_decay, "min_steps": args.min_steps})
            config = dataclasses.replace(config, backend=backend)
            run_dir = Path(args.out) / f"{strategy}-s{seed}"
            seconds = fresh_run(config, run_dir)
            curve = pd.read_csv(run_dir / "curve.csv")
            rows.append(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "repeated": repeated_picks(run_dir, n_originals),
                    "acquired": args.rounds * args.query_size,
                    "final_accuracy": curve["accuracy"].iloc[-1],
                    "auc": area_under_curve(curve["n_labeled"], curve["accuracy"]),
                    "seconds": seconds,
                }
            )
            r = rows[-1]
            print(f"{strategy:>12} seed {seed}: repeated {r['repeated']}/{r['acquired']}  "
                  f"final acc {r['final_accuracy']:.4f}  auc {r['auc']:.4f}  ({seconds:.0f} s)", flush=True)  # fmt: skip
    frame = pd.DataFrame(rows)
    summary = frame.groupby("strategy").agg(
        repeated_mean=("repeated", "mean"),
        repeated_std=("repeated", "std"),
        final_acc_mean=("final_accuracy", "mean"),
        final_acc_std=("final_accuracy", "std"),
        auc_mean=("auc", "mean"),
        seconds_per_run=("seconds", "mean"),
    )
    print(f"\n{args.dataset}: query size {args.query_size}, {args.rounds} rounds, {args.seeds} seeds")
    print(summary.sort_values("repeated_mean").to_string(float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
