"""The same comparison on the process executor and on the lockstep executor: wall time, and how far the results move.

    python benchmarks/grid_speed.py                                   # digits-quick: 7 strategies x 3 seeds, 30 rounds
    python benchmarks/grid_speed.py --rounds 5                        # a quicker look
    python benchmarks/grid_speed.py --recipe strategies/gal2017-table1.toml --data-dir ../shared/datasets/mnist \
        --rounds 5 --set 'compare.strategies=["bald","var_ratios","max_entropy","variance","random"]' --set compare.seeds=2

Both grids run in this one process's children, one after the other, with the recipe's workers (2 on
this machine: a worker process each, one torch thread each), so machine load slows both alike; the
figure to read is the ratio. Run it with nothing else running. On a GPU (`--set device=cuda`), the
lockstep executor stacks the cells' fits there (`alab.lockstep`).

Prints each executor's wall time and their ratio; then how far the lockstep grid's results are from
the process executor's: per cell, the first round whose picks differ (the stack sums one gradient
product in another order, `alab.lockstep`), and per strategy the AUC and the labels to each target
on the seed-mean curve, beside the process executor's seed standard deviation of the AUC.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from alab.compare import load_comparison, make_executor, run_comparison


def first_differing_round(a: Path, b: Path) -> int | None:
    """The first round (of labels.csv) whose picks differ between two runs of one cell; None if none does."""

    def picks(path: Path) -> dict[int, set[str]]:
        rounds: dict[int, set[str]] = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rounds.setdefault(int(row["round"]), set()).add(row["index"])
        return rounds

    pa, pb = picks(a / "labels.csv"), picks(b / "labels.csv")
    return next((r for r in sorted(set(pa) | set(pb)) if pa.get(r) != pb.get(r)), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="strategies/digits-quick.toml")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--set", dest="settings", action="append", default=[], help="KEY=VALUE, as alab compare --set")
    parser.add_argument("--out", type=Path, default=None, help="keep both grids here (default: a temporary folder)")
    args = parser.parse_args()

    root = args.out or Path(tempfile.mkdtemp(prefix="alab-grid-speed-"))
    overrides = {"rounds": args.rounds, "data_dir": args.data_dir}
    seconds, summaries = {}, {}
    for executor in ("local", "lockstep"):
        out = root / executor
        shutil.rmtree(out, ignore_errors=True)
        comparison = load_comparison(args.recipe, overrides, out=out, settings=args.settings)
        start = time.perf_counter()
        results = run_comparison(comparison, make_executor(executor, comparison.table.workers), echo=lambda line: None)
        seconds[executor] = time.perf_counter() - start
        unfinished = [r.name for r in results if r.status != "finished"]
        if unfinished:
            raise SystemExit(f"{executor}: cells did not finish: {unfinished}")
        summaries[executor] = pd.read_csv(out / "summary.csv").set_index("strategy")
        print(f"{executor:>8}: {seconds[executor]:.0f} s wall for {len(results)} cells ({comparison.table.workers} workers)", flush=True)
    print(f"lockstep / process wall time: {seconds['lockstep'] / seconds['local']:.3f} (speed-up {seconds['local'] / seconds['lockstep']:.2f}x)")

    cells = sorted(p.name for p in (root / "local" / "cells").iterdir())
    firsts = {cell: first_differing_round(root / "local" / "cells" / cell, root / "lockstep" / "cells" / cell) for cell in cells}
    same = sum(r is None for r in firsts.values())
    print(f"\npicks: {same} of {len(cells)} cells pick the same items in every round; first differing round per cell:")
    print("  " + ", ".join(f"{cell} {'-' if r is None else r}" for cell, r in firsts.items()))

    process, lockstep = summaries["local"], summaries["lockstep"]
    targets = [c for c in process.columns if c.startswith("labels_to_") and c.endswith("_mean_curve")]
    rows = []
    for strategy in process.index:
        row = {
            "strategy": strategy,
            "AUC process (std)": f"{process.at[strategy, 'auc_mean']:.4f} ({process.at[strategy, 'auc_std']:.4f})",
            "AUC lockstep": f"{lockstep.at[strategy, 'auc_mean']:.4f}",
            "|diff| / std": f"{abs(lockstep.at[strategy, 'auc_mean'] - process.at[strategy, 'auc_mean']) / process.at[strategy, 'auc_std']:.2f}",
        }
        for column in targets:
            row[column.removesuffix("_mean_curve")] = f"{process.at[strategy, column]} / {lockstep.at[strategy, column]}"
        rows.append(row)
    print("\nsummary, process / lockstep (labels on the seed-mean curve; nan: not reached):")
    print(pd.DataFrame(rows).to_string(index=False))
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
