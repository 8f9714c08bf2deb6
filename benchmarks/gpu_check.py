"""GPU check of pool scoring: correctness against the CPU, autocast, host syncs, speed. Skips on CPU.

    python benchmarks/gpu_check.py            # about a minute on one GPU; prints "skipped" without one

1. float32 on the GPU equals the CPU (same K masks) on 2,048 items: log-probabilities and BALD.
2. 200,000 MNIST-shaped items, K = 20, chunk 4096, streamed top-10: float32 and bf16/fp16 autocast;
   items per second, achieved TFLOP/s beside a large matmul's in the same run, peak GPU memory, the
   overlap of the autocast top-100 with float32's, and how many host synchronizations the scoring
   loop made per chunk (torch.cuda.set_sync_debug_mode counts them; the goal is none per chunk).
3. Lockstep's stacked fits (alab.lockstep) on the GPU, for the digits MLP and the Gal CNN: is a
   network trained in a stack of 1 bit-identical to the same network in a stack of 3 (what a lockstep
   grid's exact resume rests on; on the CPU it holds for MLPs, not for CNNs), and how 16 stacked fits
   compare with one fit alone (what a stacked grid could gain on this GPU).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's alab

from alab.acquisition.scores import bald  # noqa: E402
from alab.backends import BACKENDS  # noqa: E402
from alab.models import build_model  # noqa: E402
from alab.scoring import score_pool  # noqa: E402

K, CHUNK, ITEMS = 20, 4096, 200_000


def backend_on(device: torch.device):
    backend = BACKENDS.get("mc_dropout")({}, input_shape=(1, 28, 28), num_classes=10, device=device)
    backend.network_ = build_model("gal_cnn", (1, 28, 28), 10, torch.Generator().manual_seed(0)).to(device).eval()
    return backend


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: skipped")
        return
    cuda = torch.device("cuda")
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    x = torch.rand(ITEMS, 1, 28, 28, generator=torch.Generator().manual_seed(1))

    # 1. the GPU computes what the CPU computes (TF32 off: float32 means float32 here)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        cpu_K_N_C = backend_on(torch.device("cpu")).sample_networks(K, generator=torch.Generator().manual_seed(2))(x[:2048])
        gpu_K_N_C = backend_on(cuda).sample_networks(K, generator=torch.Generator().manual_seed(2))(x[:2048]).cpu()
    torch.testing.assert_close(gpu_K_N_C, cpu_K_N_C, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bald(gpu_K_N_C), bald(cpu_K_N_C), rtol=1e-3, atol=1e-4)
    print("float32 GPU == CPU on 2048 items: ok")

    # 2. speed, autocast, syncs
    backend = backend_on(cuda)
    n = 8192
    a = torch.rand(n, n, device=cuda)
    for allow_tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        a @ a
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            a @ a
        torch.cuda.synchronize()
        print(f"matmul peak ({'tf32' if allow_tf32 else 'fp32'}): {5 * 2 * n**3 / (time.perf_counter() - start) / 1e12:.1f} TFLOP/s")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    del a
    flops_per_item = 16.5e6 + K * 2 * (3872 * 128 + 128 * 10)
    results = {}
    for name, dtype in (("float32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        networks = backend.sample_networks(K, generator=torch.Generator().manual_seed(3))
        score_pool(networks, x[: 2 * CHUNK], torch.arange(2 * CHUNK), bald, chunk_size=CHUNK, top_k=10, device=cuda, autocast=dtype)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pool = score_pool(networks, x, torch.arange(ITEMS), bald, chunk_size=CHUNK, top_k=100, device=cuda, autocast=dtype)
        torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        assert pool.top is not None
        results[name] = set(pool.top.indices.tolist())
        rate = ITEMS / pool.seconds
        print(f"{name:>8}: {pool.seconds:.2f} s, {rate:,.0f} items/s, {rate * flops_per_item / 1e12:.1f} TFLOP/s, "
              f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB, {syncs / (ITEMS / CHUNK):.1f} host syncs per chunk, "
              f"top-100 overlap with float32 {len(results[name] & results['float32'])}/100")  # fmt: skip

    stacked_fits(cuda)


def stacked_fits(device: torch.device) -> None:
    from alab.backends.mc_dropout import MCDropoutParams, train_classifier, train_stacked

    for model, shape in (("mlp", (64,)), ("gal_cnn", (1, 28, 28))):
        params = MCDropoutParams(model=model, epochs=1, min_steps=200)

        def data(m: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator().manual_seed(m)
            return torch.randn((128, *shape), generator=g).to(device), torch.randint(0, 10, (128,), generator=g).to(device)

        def networks(members: list[int]) -> list[torch.nn.Module]:
            return [build_model(model, shape, 10, torch.Generator().manual_seed(m)).to(device) for m in members]

        def stack(members: list[int]) -> tuple[list[torch.nn.Module], float]:
            nets, (xs, ys) = networks(members), zip(*(data(m) for m in members))
            torch.cuda.synchronize()
            start = time.perf_counter()
            train_stacked(nets, list(xs), list(ys), params, [torch.Generator().manual_seed(50 + m) for m in members])
            torch.cuda.synchronize()
            return nets, time.perf_counter() - start

        one, _ = stack([1])
        three, _ = stack([0, 1, 2])
        same = all(torch.equal(a, b) for a, b in zip(one[0].parameters(), three[1].parameters()))
        _, stacked_seconds = stack(list(range(16)))
        solo, (x, y) = networks([0])[0], data(0)
        torch.cuda.synchronize()
        start = time.perf_counter()
        train_classifier(solo, x, y, params, torch.Generator().manual_seed(50))
        torch.cuda.synchronize()
        alone = time.perf_counter() - start
        print(f"stacked fits, {model}: a stack of 1 equals a stack of 3 bit for bit: {same}; 16 stacked {stacked_seconds:.2f} s, "
              f"one alone {alone:.2f} s: {16 * alone / stacked_seconds:.1f}x of 16 one after another")


if __name__ == "__main__":
    main()
