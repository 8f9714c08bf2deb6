"""Pool scoring speed: BALD over MNIST-shaped inputs with the Gal CNN, K = 20, against the baselines.

    python benchmarks/pool_scoring.py                      # speed, every method in one run (~3-5 min)
    /tmp/baalenv/bin/python benchmarks/pool_scoring.py     # the same, with BaaL's rows (a venv with baal)
    python benchmarks/pool_scoring.py --memory             # peak memory scoring 1,000,000 lazy items

Methods, all scoring the same pool with the same (randomly initialized) network, batches of 256:
  alab            `score_pool` over `MCDropoutBackend.sample_networks`: trunk once, K shared masks
                  folded into the head's weights once, one wide product, streamed top-k
  floor           one trunk pass plus one folded head product per batch, timed alone
  per-item heads  trunk once, then K head passes with independent per-item masks (backend.masks = 'per_item')
  naive           K full forward passes with per-item dropout
  baal            BaaL's MC dropout (`ModelWrapper.predict_on_dataset`, replicate_in_memory) + its BALD
  baal cached     the same wrapped in BaaL's MCCachingModule (Linear/Conv2d outputs cached across the K
                  iterations: the trunk runs once per batch), replicate_in_memory = False
The slow methods run on a smaller pool (`--slow-items`) and are compared by items per second.
Repetitions are interleaved (each round times every method once), medians are printed: the CPU is
shared, so compare the ratios within one run. CPU ms/item (this process's CPU time, all threads)
shows the work where other processes' load distorts wall time (idle spinning threads count in it). GFLOP/s counts the multiply-adds of one trunk pass and
K head passes per item (the work that any exact method must do once its masks are shared), beside
the peak of a 4096 x 4096 float32 matmul timed in the same run.

--memory creates a numpy memmap of 1,000,000 uint8 28x28 images (784 MB, in --tmp), scores it in a
subprocess through a lazy reader (uint8 -> float per chunk) with a streamed top-k, and prints that
process's peak resident set size (ru_maxrss; the memmap's pages it touched count in it) next to the
pool's own storage.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's alab, not an installed one

from alab.acquisition.scores import bald  # noqa: E402
from alab.backends import BACKENDS  # noqa: E402
from alab.models import Network, build_model, inference_trunk  # noqa: E402
from alab.scoring import score_pool  # noqa: E402

K, C, BATCH = 20, 10, 256


def make_backend(network: Network, masks: str = "shared"):
    backend = BACKENDS.get("mc_dropout")({"masks": masks}, input_shape=(1, 28, 28), num_classes=C, device=torch.device("cpu"))
    backend.network_ = network
    return backend


def flops_per_item(network: Network) -> float:
    """Multiply-adds x 2 of one trunk pass and K head passes (convolutions and dense layers)."""
    flops, x = 0.0, torch.zeros(1, 1, 28, 28)
    with torch.inference_mode():
        for layer in network.trunk:
            y = layer(x)
            if isinstance(layer, nn.Conv2d):
                flops += 2 * y.numel() * layer.in_channels * math.prod(layer.kernel_size)
            x = y
    flops += K * sum(2 * layer.in_features * layer.out_features for layer in network.head.layers)
    return flops


def alab_method(network: Network, x: Tensor) -> Callable[[], Tensor]:
    def run() -> Tensor:
        networks = make_backend(network).sample_networks(K, generator=torch.Generator().manual_seed(1))
        pool = score_pool(networks, x, torch.arange(len(x)), bald, chunk_size=BATCH, top_k=10)
        assert pool.top is not None
        return pool.top.indices

    return run


def floor_method(network: Network, x: Tensor) -> Callable[[], None]:
    layers = network.head.fold_masks(network.head.sample_masks(K, torch.Generator().manual_seed(1)))
    weight_KH_D = layers[0][0].reshape(-1, layers[0][0].shape[-1])
    trunk = inference_trunk(network.trunk)  # the trunk as alab runs it

    def run() -> None:
        with torch.inference_mode():
            for start in range(0, len(x), BATCH):
                trunk(x[start : start + BATCH]) @ weight_KH_D.T

    return run


def per_item_method(network: Network, x: Tensor) -> Callable[[], Tensor]:
    def run() -> Tensor:
        networks = make_backend(network, "per_item").sample_networks(K, generator=torch.Generator().manual_seed(1))
        pool = score_pool(networks, x, torch.arange(len(x)), bald, chunk_size=BATCH)
        assert pool.scores_N is not None
        return pool.scores_N

    return run


def naive_method(network: Network, x: Tensor) -> Callable[[], Tensor]:
    def run() -> Tensor:
        generator = torch.Generator().manual_seed(1)
        scores = []
        with torch.inference_mode():
            for start in range(0, len(x), BATCH):
                x_B = x[start : start + BATCH]
                logits_K_B_C = torch.stack([network(x_B, generator) for _ in range(K)])
                scores.append(bald(torch.log_softmax(logits_K_B_C, -1)))
        return torch.cat(scores)

    return run


def baal_methods(network: Network, x: Tensor) -> dict[str, Callable[[], np.ndarray]]:
    """BaaL's MC dropout, default and with MCCachingModule; empty if baal is not importable."""
    try:
        from baal.active.heuristics import BALD
        from baal.bayesian.caching_utils import MCCachingModule
        from baal.bayesian.dropout import MCDropoutModule
        from baal.modelwrapper import ModelWrapper, TrainingArgs
    except ImportError:
        return {}
    import structlog  # BaaL logs every prediction pass: keep warnings only

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    first, last = network.head.layers
    p1, p2 = network.head.dropout
    # The same network as a plain module with nn.Dropout layers, which is what BaaL patches.
    model = nn.Sequential(network.trunk, nn.Dropout(p1), first, nn.ReLU(), nn.Dropout(p2), last, nn.Softmax(dim=1)).eval()
    dataset = torch.utils.data.TensorDataset(x, torch.zeros(len(x), dtype=torch.long))

    def make(cached: bool) -> Callable[[], np.ndarray]:
        copy = deepcopy(model)  # BaaL patches modules in place: keep ours (and each other's) untouched
        wrapped = MCCachingModule(MCDropoutModule(copy)) if cached else MCDropoutModule(copy)
        args = TrainingArgs(batch_size=BATCH, use_cuda=False, workers=0, replicate_in_memory=not cached)
        wrapper = ModelWrapper(wrapped, args)

        def run() -> np.ndarray:
            probs_N_C_K = wrapper.predict_on_dataset(dataset, iterations=K, verbose=False)
            return BALD().get_uncertainties(probs_N_C_K)

        return run

    return {"baal": make(False), "baal cached": make(True)}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_both(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all threads): the second is what contention hides."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def matmul_peak(n: int = 4096, reps: int = 3) -> float:
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    return 2 * n**3 / min(timed(lambda: a @ b) for _ in range(reps)) / 1e9


def speed(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    network = build_model("gal_cnn", (1, 28, 28), C, torch.Generator().manual_seed(0)).eval()
    x = torch.rand(args.items, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    x_slow = x[: args.slow_items]
    methods: dict[str, tuple[Callable[[], object], int]] = {
        "alab": (alab_method(network, x), args.items),
        "floor": (floor_method(network, x), args.items),
        "per-item heads": (per_item_method(network, x_slow), args.slow_items),
        "naive": (naive_method(network, x_slow), args.slow_items),
    }
    methods.update({name: (fn, args.slow_items) for name, fn in baal_methods(network, x_slow).items()})
    if not any(name.startswith("baal") for name in methods):
        print("baal not importable here: run with a venv that has it (see the docstring) for BaaL's rows")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, K={K}, batch {BATCH}, "
          f"{args.items} items (slow methods: {args.slow_items}), {args.reps} interleaved repetitions")  # fmt: skip
    for fn, _ in methods.values():  # warm up (and check that everything runs)
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in methods}
    peaks = []
    for _ in range(args.reps):
        peaks.append(matmul_peak())
        for name, (fn, _) in methods.items():
            wall, cpu = timed_both(fn)
            seconds[name].append(wall)
            cpu_seconds[name].append(cpu)
    rate = {name: n / statistics.median(seconds[name]) for name, (_, n) in methods.items()}
    peak = statistics.median(peaks)
    work = flops_per_item(network)
    cpu_per_item = {name: statistics.median(cpu_seconds[name]) / n for name, (_, n) in methods.items()}
    print(f"\n{'method':<16}{'items':>8}{'median s':>10}{'items/s':>10}{'alab x':>8}{'GFLOP/s':>9}{'CPU ms/item':>13}{'alab x':>8}")
    for name, (_, n) in methods.items():
        print(f"{name:<16}{n:>8}{statistics.median(seconds[name]):>10.2f}{rate[name]:>10.0f}"
              f"{rate['alab'] / rate[name]:>8.2f}{rate[name] * work / 1e9:>9.1f}"
              f"{cpu_per_item[name] * 1e3:>13.3f}{cpu_per_item[name] / cpu_per_item['alab']:>8.2f}")  # fmt: skip
    print(f"\nwork {work / 1e6:.1f} MFLOP per item (trunk + {K} heads); float32 matmul peak {peak:.1f} GFLOP/s "
          f"-> alab at {rate['alab'] * work / 1e9 / peak:.0%} of peak")  # fmt: skip
    print(f"alab / floor time: {rate['floor'] / rate['alab']:.3f}")
    for name in ("baal", "baal cached"):
        if name in rate:
            print(f"alab / {name} throughput: {rate['alab'] / rate[name]:.1f}x")


MEMORY_CHILD = """
import resource, sys, numpy as np, torch
sys.path.insert(0, {root!r})
from alab.acquisition.scores import bald
from alab.backends import BACKENDS
from alab.models import build_model
from alab.scoring import score_pool
torch.set_num_threads({threads})
class LazyImages:
    def __init__(self, images): self.images = images
    def __getitem__(self, indices_B): return torch.from_numpy(self.images[indices_B.numpy()]).float().div_(255).unsqueeze(1)
images = np.load({path!r}, mmap_mode="r")
backend = BACKENDS.get("mc_dropout")({{}}, input_shape=(1, 28, 28), num_classes=10, device=torch.device("cpu"))
backend.network_ = build_model("gal_cnn", (1, 28, 28), 10, torch.Generator().manual_seed(0)).eval()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
networks = backend.sample_networks({k}, generator=torch.Generator().manual_seed(1))
pool = score_pool(networks, LazyImages(images), torch.arange(len(images)), bald, chunk_size={chunk}, top_k=10)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, pool.seconds, pool.top.indices.tolist())
"""


def memory(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = str(Path(tmp) / "pool.npy")
        images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(args.memory_items, 28, 28))
        rng = np.random.default_rng(0)
        for start in range(0, args.memory_items, 100_000):
            block = images[start : start + 100_000]
            block[:] = rng.integers(0, 256, size=block.shape, dtype=np.uint8)
        images.flush()
        del images
        code = MEMORY_CHILD.format(
            root=str(Path(__file__).resolve().parents[1]), threads=args.threads, path=path, k=K, chunk=args.chunk
        )
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    before_mb, after_mb, seconds = int(out[0]) / 1024, int(out[1]) / 1024, float(out[2])
    storage_mb = args.memory_items * 28 * 28 / 2**20
    print(f"{args.memory_items} lazy items, chunk {args.chunk}, K={K}: scored in {seconds:.0f} s "
          f"({args.memory_items / seconds:.0f} items/s)")  # fmt: skip
    print(f"peak RSS {after_mb:.0f} MB (after imports and model: {before_mb:.0f} MB); pool storage {storage_mb:.0f} MB; "
          f"peak above storage {after_mb - storage_mb:.0f} MB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--slow-items", type=int, default=2_560, help="pool size for the slow baselines")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory", action="store_true", help="measure peak memory on a large lazy pool instead")
    parser.add_argument("--memory-items", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=256, help="chunk size of the memory run")
    parser.add_argument("--tmp", default=None, help="where the memmap goes (default: the system's temp dir)")
    args = parser.parse_args()
    memory(args) if args.memory else speed(args)


if __name__ == "__main__":
    main()
