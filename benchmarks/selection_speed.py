"""Selection speed on the MNIST pool: choosing 10 of the 60,000 items with Coreset, BADGE and EPIG.

    python benchmarks/selection_speed.py --data-dir ../shared/datasets/mnist        # K = 20, M = 100, 2 threads
    python benchmarks/selection_speed.py --data-dir ../shared/datasets/mnist --pool 3000 --repeats 1   # a quick check

A Gal CNN (MC dropout) is fitted on 20 balanced labels (--fit-steps Adam steps: the weights' values do
not change the cost), then each rule chooses --b items among the unlabeled rest of the pool, as the
loop runs it (`alab.selecting`), timed in two parts:

    pass  the network over the pool: for EPIG the K sampled networks' log-probabilities with the EPIG
          scores folded into the same chunks (`score_pool` with EPIG's scorer; the streamed top-b);
          for Coreset the deterministic network's penultimate features (and the labeled set's); for
          BADGE its last-layer gradient embeddings
    rule  the rest: EPIG's pass over its M targets; greedy k-center; k-means++ seeding

and, for scale, the pass every round pays whatever the strategy (`score_pool` with BALD: the curve's
mean BALD and entropy). Medians of --repeats. The figures need a quiet machine: 2 idle cores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from alab.acquisition.embedding import kcenter_greedy, kmeanspp_seeding
from alab.acquisition.scores import EPIG, bald
from alab.backends import BACKENDS
from alab.data import balanced_initial, load_dataset
from alab.scoring import candidate_log_probs, embed_items, score_pool


def timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="the MNIST IDX files (default: $ALAB_DATA/mnist, else datasets/mnist)")
    parser.add_argument("--pool", type=int, default=0, help="the first N pool items only (0: all 60,000)")
    parser.add_argument("--b", type=int, default=10, help="items to choose")
    parser.add_argument("--k", type=int, default=20, help="K sampled networks (EPIG)")
    parser.add_argument("--targets", type=int, default=100, help="M target inputs (EPIG)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=1024, help="the run's chunk_size")
    parser.add_argument("--fit-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = load_dataset("mnist", data_dir=args.data_dir)
    x_pool = dataset.x_pool[: args.pool] if args.pool else dataset.x_pool
    labeled_L = balanced_initial(dataset.y_pool[: len(x_pool)], 20, torch.Generator().manual_seed(0))
    unlabeled = torch.ones(len(x_pool), dtype=torch.bool)
    unlabeled[labeled_L] = False
    candidates_N = unlabeled.nonzero().squeeze(1)
    backend = BACKENDS.get("mc_dropout")(
        {"model": "gal_cnn", "epochs": 0, "min_steps": args.fit_steps}, input_shape=dataset.input_shape, num_classes=10,
        device=torch.device("cpu"),
    )  # fmt: skip
    backend.fit(x_pool[labeled_L], dataset.y_pool[labeled_L], generator=torch.Generator().manual_seed(1))
    networks = backend.sample_networks(args.k, generator=torch.Generator().manual_seed(2))
    targets_M = torch.randperm(len(x_pool), generator=torch.Generator().manual_seed(3))[: args.targets]
    chunk = args.chunk_size

    def epig_rule() -> Callable[[torch.Tensor], torch.Tensor]:
        return EPIG().scorer(candidate_log_probs(networks, x_pool, targets_M, chunk_size=chunk))

    scorer = epig_rule()
    coreset_features: dict[str, torch.Tensor] = {}
    badge_gradients: dict[str, torch.Tensor] = {}

    def coreset_pass() -> None:
        coreset_features["candidates"] = embed_items(backend.embed, x_pool, candidates_N, chunk_size=chunk)
        coreset_features["labeled"] = embed_items(backend.embed, x_pool, labeled_L, chunk_size=chunk)

    def badge_pass() -> None:
        badge_gradients["candidates"] = embed_items(backend.gradient_embed, x_pool, candidates_N, chunk_size=chunk)

    steps = {
        "every round: BALD pass": {"pass": lambda: score_pool(networks, x_pool, candidates_N, bald, chunk_size=chunk, top_k=args.b)},
        "epig": {
            "pass": lambda: score_pool(networks, x_pool, candidates_N, scorer, chunk_size=chunk, top_k=args.b),
            "rule": epig_rule,
        },
        "coreset": {"pass": coreset_pass, "rule": lambda: kcenter_greedy(coreset_features["candidates"], coreset_features["labeled"], args.b)},
        "badge": {"pass": badge_pass, "rule": lambda: kmeanspp_seeding(badge_gradients["candidates"], args.b, torch.Generator().manual_seed(4))},
    }
    seconds: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):  # interleaved: load on a shared machine moves every method alike
        for name, parts in steps.items():
            for part, step in parts.items():
                seconds.setdefault((name, part), []).append(timed(step))

    print(f"choosing {args.b} of {len(candidates_N):,} MNIST pool items; K = {args.k}, M = {args.targets}, "
          f"{args.threads} threads, chunk {chunk}, medians of {args.repeats}")  # fmt: skip
    print(f"{'':<24}{'pass s':>9}{'rule s':>9}{'total s':>9}")
    for name, parts in steps.items():
        medians = {part: statistics.median(seconds[(name, part)]) for part in parts}
        rule = f"{medians['rule']:>9.2f}" if "rule" in medians else f"{'':>9}"
        print(f"{name:<24}{medians['pass']:>9.2f}{rule}{sum(medians.values()):>9.2f}")


if __name__ == "__main__":
    main()
