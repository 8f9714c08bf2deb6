"""What a Laplace round costs beside an MC dropout round, on the MNIST CNN at 200 labels; and their NLL and ECE.

    python benchmarks/laplace_round.py --data-dir ../shared/datasets/mnist            # quiet machine: 2 threads
    python benchmarks/laplace_round.py --data-dir ../shared/datasets/mnist --repeats 1 --no-ensemble   # quick check

One round is what the loop does: fit on the labeled set (200 images, balanced by the seed), draw K = 20
networks, score `--pool` pool items with BALD (streamed top-10), and evaluate the 10,000 test images
with the K-sample predictive. Laplace and MC dropout train the same Gal et al. 2017 CNN with the
same schedule (epochs 50, min_steps 1000, batch 64, Adam 1e-3; dropout off for Laplace), then
Laplace adds its last layer's GGN and evidence and scores K last layers on one trunk. Repetitions
alternate between the backends (so a change of machine load hits both); the table gives the median
seconds of each part, the ratio laplace / mc_dropout of the whole round, and the test NLL and ECE
of each (laplace also with its probit predictive; the ensemble, 5 members, beside them unless
--no-ensemble). Timings need a quiet machine: under load the ratio moves.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from alab.acquisition.scores import bald
from alab.backends import BACKENDS
from alab.data import balanced_initial, load_dataset
from alab.loop import round_generator
from alab.metrics import evaluate
from alab.scoring import predict, score_pool


def one_round(name: str, dataset, labeled_L: torch.Tensor, pool_N: torch.Tensor, seed: int, samples: int) -> dict[str, float]:
    """Fit, sample, score the pool, evaluate the test set: seconds of each, and the test metrics."""
    backend = BACKENDS.get(name)({}, input_shape=dataset.input_shape, num_classes=10, device=torch.device("cpu"))
    t0 = time.perf_counter()
    backend.fit(dataset.x_pool[labeled_L], dataset.y_pool[labeled_L], generator=round_generator(seed, 0, "fit"))
    t1 = time.perf_counter()
    networks = backend.sample_networks(samples, generator=round_generator(seed, 0, "score"))
    score_pool(networks, dataset.x_pool, pool_N, bald, chunk_size=256, top_k=10)
    t2 = time.perf_counter()
    metrics = evaluate(predict(networks, dataset.x_test, chunk_size=256), dataset.y_test)
    t3 = time.perf_counter()
    row = {"fit": t1 - t0, "score": t2 - t1, "eval": t3 - t2, "round": t3 - t0, "nll": metrics["nll"], "ece": metrics["ece"]}
    if name == "laplace":
        deterministic = evaluate(predict(backend.mean_network(), dataset.x_test, chunk_size=256), dataset.y_test)
        row.update(probit_nll=deterministic["nll"], probit_ece=deterministic["ece"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--pool", type=int, default=10000, help="pool items scored (a random subset, as pool_subsample)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-ensemble", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = load_dataset("mnist", data_dir=args.data_dir, seed=args.seed)
    labeled_L = balanced_initial(dataset.y_pool, args.labels, torch.Generator().manual_seed(args.seed))
    pool_N = torch.randperm(len(dataset.y_pool), generator=torch.Generator().manual_seed(args.seed))[: args.pool].sort().values
    names = ["mc_dropout", "laplace"] + ([] if args.no_ensemble else ["ensemble"])
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            rows[name].append(one_round(name, dataset, labeled_L, pool_N, args.seed, args.samples))
            print(f"repeat {repeat} {name:>10}: " + "  ".join(f"{k} {v:.3f}" for k, v in rows[name][-1].items()), flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    print(f"\nMNIST, gal_cnn, {args.labels} labels, K = {args.samples}, {args.pool} pool items, {args.threads} threads, "
          f"medians of {args.repeats}\n")  # fmt: skip
    print("| backend | fit s | score s | eval s | round s | round / mc_dropout | test NLL | test ECE |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        ratio = median(name, "round") / median("mc_dropout", "round")
        print(f"| {name} | {median(name, 'fit'):.1f} | {median(name, 'score'):.1f} | {median(name, 'eval'):.1f} | "
              f"{median(name, 'round'):.1f} | {ratio:.2f} | {median(name, 'nll'):.3f} | {median(name, 'ece'):.3f} |")  # fmt: skip
    print(f"| laplace, probit predictive | | | | | | {median('laplace', 'probit_nll'):.3f} | {median('laplace', 'probit_ece'):.3f} |")


if __name__ == "__main__":
    main()
