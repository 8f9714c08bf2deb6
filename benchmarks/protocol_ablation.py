"""What each protocol option does to one fit: MNIST, fixed balanced labeled sets, today's settings against each
option of Gal et al. 2017's protocol alone and all together, for both of its protocols (docs/reproducing.md).

    python benchmarks/protocol_ablation.py --data-dir ../shared/datasets/mnist               # 13 settings x 3 sizes x 5 seeds
    python benchmarks/protocol_ablation.py --data-dir ... --shard 0/2 & python benchmarks/protocol_ablation.py --data-dir ... --shard 1/2
    python benchmarks/protocol_ablation.py --summarize results/benchmarks/protocol_ablation/*.csv

For every labeled-set size and seed the labeled set is the same for every setting: a balanced random draw
from the pool by the seed (`alab.data.balanced_initial`), as a run's initial set is. Each setting fits one
mc_dropout network on it and reports test accuracy and NLL (on the 10,000 test images, by the setting's
evaluation), and the mean BALD over a fixed random 2,000 of the pool (K = 20 shared masks, nats). One
process, one torch thread; rows are appended to a CSV as they finish, so a stopped run keeps what it did.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd
import torch

from alab.acquisition.scores import bald
from alab.config import BackendConfig, RunConfig
from alab.data import balanced_initial
from alab.loop import build_parts, round_generator
from alab.scoring import score_pool

# Gal et al. 2017's 10-per-round protocol (strategies/gal2017-q10.toml): each option as a change to today's settings.
GAL = {"input_scaling": "unit", "evaluation": "deterministic"}
GAL_BACKEND = {"schedule": "keras", "epochs": 50, "min_steps": 0, "batch_size": 128, "init": "glorot", "weight_decay": 2.5,
               "weight_decay_on": "head_first_weight", "model_options": {"kernel_size": 4}}  # fmt: skip
# Table 1's protocol (strategies/gal2017-table1.toml): 3x3 kernels and c = 10.
TABLE1_BACKEND = {**GAL_BACKEND, "weight_decay": 10, "model_options": {"kernel_size": 3}}
SETTINGS: dict[str, tuple[dict, dict]] = {
    "today": ({}, {}),
    "keras schedule (50 epochs of ceil(N/128))": ({}, {"schedule": "keras", "epochs": 50, "min_steps": 0, "batch_size": 128}),
    "L2 on the dense-128 kernel only": ({}, {"weight_decay_on": "head_first_weight"}),
    "c = 2.5": ({}, {"weight_decay": 2.5}),
    "glorot init": ({}, {"init": "glorot"}),
    "pixels / 255": ({"input_scaling": "unit"}, {}),
    "deterministic evaluation": ({"evaluation": "deterministic"}, {}),
    "3x3 kernels": ({}, {"model_options": {"kernel_size": 3}}),
    "Keras 0.3 init (conv fan-out = filters)": ({}, {"init": "keras0.3"}),
    "all of Gal et al.'s (Q10)": (GAL, GAL_BACKEND),
    "all of Gal et al.'s (Q10), Keras 0.3 init": (GAL, {**GAL_BACKEND, "init": "keras0.3"}),
    "all of Gal et al.'s (Table 1)": (GAL, TABLE1_BACKEND),
    "all of Gal et al.'s (Table 1), Keras 0.3 init": (GAL, {**TABLE1_BACKEND, "init": "keras0.3"}),
}


def fit_once(base: RunConfig, run: dict, backend: dict, n: int, seed: int) -> dict[str, float]:
    config = dataclasses.replace(base, seed=seed, **run, backend=BackendConfig("mc_dropout", {"model": "gal_cnn", **backend}))
    parts = build_parts(config)
    dataset = parts.dataset
    labeled = balanced_initial(dataset.y_pool, n, round_generator(seed, 0, "initial"))
    t0 = time.perf_counter()
    parts.backend.fit(dataset.x_pool[labeled], dataset.y_pool[labeled], generator=round_generator(seed, 0, "fit"))
    seconds = time.perf_counter() - t0
    if config.evaluation == "deterministic":
        networks = parts.backend.mean_network()
    else:
        networks = parts.backend.sample_networks(config.samples, generator=round_generator(seed, 0, "eval"))
    metrics = parts.task.evaluate(networks, config.chunk_size)
    subset = torch.randperm(len(dataset.y_pool), generator=torch.Generator().manual_seed(12345))[:2000].sort().values
    scoring = parts.backend.sample_networks(20, generator=round_generator(seed, 0, "score"))
    pool = score_pool(scoring, dataset.x_pool, subset, bald, chunk_size=config.chunk_size)
    return {"accuracy": metrics["accuracy"], "nll": metrics["nll"], "mean_bald": pool.mean_bald, "fit_seconds": seconds}


def summarize(frame: pd.DataFrame) -> str:
    order = list(dict.fromkeys(frame["setting"]))
    stats = frame.groupby(["setting", "labels"])[["accuracy", "nll", "mean_bald"]].agg(["mean", "std"])
    lines = ["| setting | labels | accuracy | NLL | mean BALD (nats) | seeds |", "| --- | --- | --- | --- | --- | --- |"]
    for setting in order:
        for labels in sorted(frame["labels"].unique()):
            if (setting, labels) not in stats.index:
                continue
            s = stats.loc[(setting, labels)]
            count = int(((frame["setting"] == setting) & (frame["labels"] == labels)).sum())
            lines.append(
                f"| {setting} | {labels} | {s[('accuracy', 'mean')]:.4f} ± {s[('accuracy', 'std')]:.4f} | "
                f"{s[('nll', 'mean')]:.3f} ± {s[('nll', 'std')]:.3f} | {s[('mean_bald', 'mean')]:.3f} ± {s[('mean_bald', 'std')]:.3f} | {count} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--sizes", default="20,130,250")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--settings", default=None, help="a comma-separated subset of the settings, each by the start of its name")
    parser.add_argument("--shard", default="0/1", help="i/n: this process runs every n-th job, from the i-th")
    parser.add_argument("--out", default="results/benchmarks/protocol_ablation")
    parser.add_argument("--summarize", nargs="*", help="only print the table of these CSV files")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(pd.concat([pd.read_csv(path) for path in args.summarize], ignore_index=True)))
        return

    torch.set_num_threads(1)
    index, count = (int(part) for part in args.shard.split("/"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"shard-{index}-of-{count}.csv"
    done = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["setting", "labels", "seed"])
    finished = set(zip(done["setting"], done["labels"], done["seed"]))
    base = RunConfig(dataset="mnist", data_dir=args.data_dir, samples=20)
    chosen = [s for s in SETTINGS if args.settings is None or any(s.startswith(p) for p in args.settings.split(","))]
    jobs = [(s, n, seed) for n in map(int, args.sizes.split(",")) for seed in range(args.seeds) for s in chosen]
    for number, (setting, n, seed) in enumerate(jobs):
        if number % count != index or (setting, n, seed) in finished:
            continue
        run, backend = SETTINGS[setting]
        row = {"setting": setting, "labels": n, "seed": seed, **fit_once(base, run, backend, n, seed)}
        pd.DataFrame([row]).to_csv(path, mode="a", header=not path.exists(), index=False)
        print(f"{setting:45s} n={n:4d} seed={seed}  acc {row['accuracy']:.4f}  nll {row['nll']:.3f}  "
              f"bald {row['mean_bald']:.3f}  ({row['fit_seconds']:.0f} s)", flush=True)
    print(summarize(pd.read_csv(path)))


if __name__ == "__main__":
    main()
