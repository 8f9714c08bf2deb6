"""BatchBALD speed and peak memory: alab.acquisition.joint against batchbald_redux on the same log-probabilities.

    python benchmarks/batchbald_speed.py                         # choose 10 of 1,000; K=20, C=10, 100,000 samples
    python benchmarks/batchbald_speed.py --n 10000 --impls alab  # 10 of 10,000
    python benchmarks/batchbald_speed.py --input iid             # i.i.d. random logits (every item alike)

Each implementation runs in its own child process (same input file, same thread count), which
reports its wall time and its peak resident memory (getrusage ru_maxrss of the child), so the two
do not pollute each other. Prints both, their ratios, and whether the batches agree on the picks
made with exact joint entropies (the first k with C^(k-1) <= num_samples; later picks use sampled
estimates, which differ between implementations by their random draws). Needs
`pip install batchbald-redux` (with --no-deps: toma, psutil) for the reference.

Inputs: `structured` (default) gives items of varied confidence and disagreement, as a trained
model does (logits = 3 * mean_item + spread_item * noise_k, spread ~ U(0, 3)); `iid` is
randn(K, N, C) logits, where every item is equally informative (the worst case for lazy greedy).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def make_log_probs(kind: str, K: int, N: int, C: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "iid":
        return torch.randn(K, N, C, generator=g, dtype=torch.float64).log_softmax(-1)
    mean_N_C = torch.randn(N, C, generator=g, dtype=torch.float64) * 3
    spread_N_1 = torch.rand(N, 1, generator=g, dtype=torch.float64) * 3
    return (mean_N_C + spread_N_1 * torch.randn(K, N, C, generator=g, dtype=torch.float64)).log_softmax(-1)


def child(impl: str, path: str, b: int, num_samples: int, threads: int) -> None:
    torch.set_num_threads(threads)
    log_probs_K_N_C = torch.load(path)
    start = time.perf_counter()
    if impl == "redux":
        from batchbald_redux.batchbald import get_batchbald_batch

        log_probs_N_K_C = log_probs_K_N_C.permute(1, 0, 2).contiguous()  # redux: [N, K, C]
        start = time.perf_counter()
        indices = get_batchbald_batch(log_probs_N_K_C, b, num_samples, dtype=torch.float64).indices
    else:
        from alab.acquisition.joint import batchbald

        indices_B, _ = batchbald(
            log_probs_K_N_C, b, num_samples=num_samples, generator=torch.Generator().manual_seed(0),
            lazy=impl != "alab-full",
        )  # fmt: skip
        indices = indices_B.tolist()
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(json.dumps({"impl": impl, "seconds": seconds, "peak_gib": peak_gib, "indices": indices}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--b", type=int, default=10)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--c", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input", choices=("structured", "iid"), default="structured")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--impls", default="alab,redux", help="comma-separated: alab, alab-full (no lazy greedy), redux")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.b, args.num_samples, args.threads)
        return

    log_probs_K_N_C = make_log_probs(args.input, args.k, args.n, args.c, args.seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "log_probs.pt")
        torch.save(log_probs_K_N_C, path)
        for impl in args.impls.split(","):
            command = [sys.executable, __file__, "--child", impl, path, "--b", str(args.b),
                       "--num-samples", str(args.num_samples), "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[impl] = json.loads(out.strip().splitlines()[-1])
            r = results[impl]
            print(f"{impl:>9}: {r['seconds']:8.1f} s  peak {r['peak_gib']:6.2f} GiB  picks {r['indices']}", flush=True)

    exact_picks = 1 + int(math.floor(math.log(args.num_samples) / math.log(args.c)))
    print(f"\n{args.b} of {args.n} ({args.input}), K={args.k}, C={args.c}, {args.num_samples:,} samples, "
          f"{args.threads} threads; picks 1..{min(exact_picks, args.b)} use exact joint entropies")  # fmt: skip
    if "alab" in results and "redux" in results:
        a, r = results["alab"], results["redux"]
        same = a["indices"][:exact_picks] == r["indices"][:exact_picks]
        print(f"redux / alab: {r['seconds'] / a['seconds']:.1f}x time, {r['peak_gib'] / a['peak_gib']:.1f}x peak memory; "
              f"exact picks agree: {same}; all picks agree: {a['indices'] == r['indices']}")  # fmt: skip


if __name__ == "__main__":
    main()
