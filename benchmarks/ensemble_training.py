"""What does a deep ensemble of M members cost to train, relative to one network?

    python benchmarks/ensemble_training.py                                   # digits, MLP, M = 5
    python benchmarks/ensemble_training.py --dataset mnist --data-dir /work/shared/datasets/mnist --labels 200

Same labeled data, same minibatches, same number of steps, all in this one process (so machine load
slows every variant alike; the figures to read are the ratios). Four variants:

- ensemble M:      the backend's path: M members stacked, one vmapped forward/backward, one Adam;
- vmapped M=1:     the same code path with one member;
- plain 1:         one `Network`, an ordinary training loop;
- sequential M:    M plain networks trained one after another.

Each is timed `--repeats` times, interleaved, and the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from alab.backends.ensemble import EnsembleBackend, EnsembleParams, train_stacked
from alab.data import balanced_initial, load_dataset
from alab.models import build_model


def plain_training(x_N, y_N, params: EnsembleParams, generator: torch.Generator, input_shape, num_classes) -> None:
    """One Network, one (fused) Adam, the same step schedule and L2 penalty as `train_stacked`."""
    network = build_model(params.model, input_shape, num_classes, generator)
    n = len(y_N)
    optimizer = torch.optim.Adam(network.parameters(), lr=params.lr, weight_decay=2 * params.weight_decay / n, fused=True)
    batch_size = min(params.batch_size, n)
    batches_per_epoch = -(-n // batch_size)
    for step in range(max(params.min_steps, params.epochs * batches_per_epoch)):
        start = (step % batches_per_epoch) * batch_size
        if start == 0:
            order_N = torch.randperm(n, generator=generator)
        batch_B = order_N[start : start + batch_size]
        loss = F.cross_entropy(network(x_N[batch_B]), y_N[batch_B])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--labels", type=int, default=500, help="labeled set size")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = load_dataset(args.dataset, data_dir=args.data_dir, seed=0)
    labeled = balanced_initial(dataset.y_pool, args.labels, torch.Generator().manual_seed(0))
    x_N, y_N = dataset.x_pool[labeled], dataset.y_pool[labeled]
    shape, classes = dataset.input_shape, len(dataset.classes)
    cpu = torch.device("cpu")

    def ensemble(m: int) -> None:
        params = EnsembleParams(members=m, epochs=args.epochs, min_steps=0)
        backend = EnsembleBackend(params, input_shape=shape, num_classes=classes, device=cpu)
        base, stacked = backend.init_members(torch.Generator().manual_seed(1))
        train_stacked(base, stacked, x_N, y_N, params, torch.Generator().manual_seed(2))

    def plain(m: int) -> None:
        params = EnsembleParams(epochs=args.epochs, min_steps=0)
        generator = torch.Generator().manual_seed(1)
        for _ in range(m):
            plain_training(x_N, y_N, params, generator, shape, classes)

    variants = {
        f"ensemble M={args.members} (vmapped)": lambda: ensemble(args.members),
        "vmapped M=1": lambda: ensemble(1),
        "plain 1 network": lambda: plain(1),
        f"sequential M={args.members} (plain)": lambda: plain(args.members),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    ens, one_vmapped, one_plain, sequential = median.values()
    model = EnsembleParams().model if EnsembleParams().model != "auto" else ("gal_cnn" if tuple(shape) == (1, 28, 28) else "mlp")
    print(f"{args.dataset} ({model}), {args.labels} labels, {args.epochs} epochs of batch 64, {args.threads} threads, "
          f"median of {args.repeats}")  # fmt: skip
    for name, value in median.items():
        print(f"  {name:<28} {value:8.2f} s")
    print(f"  ensemble / vmapped M=1       {ens / one_vmapped:8.2f} x")
    print(f"  ensemble / plain 1 network   {ens / one_plain:8.2f} x")
    print(f"  sequential / plain 1 network {sequential / one_plain:8.2f} x")
    print(f"  ensemble / sequential        {ens / sequential:8.2f} x")


if __name__ == "__main__":
    main()
