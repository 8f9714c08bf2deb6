"""Repeated data sets: three noisy copies of every pool item at j * N + i, the test set untouched;
and BatchBALD through the real loop and command line on repeated-digits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alab.data import load_dataset
from alab.data.repeated import NOISE_STD, REPETITIONS, original_index

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


def test_repeated_digits_copies_each_item_with_noise() -> None:
    original = load_dataset("digits")
    repeated = load_dataset("repeated-digits")
    N = len(original.y_pool)
    assert len(repeated.y_pool) == REPETITIONS * N
    pool_P = torch.arange(REPETITIONS * N)
    assert torch.equal(repeated.y_pool, original.y_pool[original_index(pool_P, N)])
    noise = repeated.x_pool - original.x_pool[original_index(pool_P, N)]
    torch.testing.assert_close(noise.std().item(), NOISE_STD, rtol=0.02, atol=0)
    torch.testing.assert_close(noise.mean().item(), 0.0, rtol=0, atol=2e-3)
    assert torch.equal(repeated.x_test, original.x_test) and torch.equal(repeated.y_test, original.y_test)
    assert repeated.checksum != original.checksum
    assert torch.equal(load_dataset("repeated-digits", seed=5).x_pool, repeated.x_pool)  # fixed noise


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"MNIST files not found at {SHARED_MNIST}")
def test_repeated_mnist_shapes() -> None:
    repeated = load_dataset("repeated-mnist", data_dir=SHARED_MNIST)
    assert repeated.x_pool.shape == (180_000, 1, 28, 28) and repeated.x_test.shape == (10_000, 1, 28, 28)
    assert torch.equal(repeated.y_pool[:60_000], repeated.y_pool[120_000:])


@pytest.mark.parametrize("strategy", ["batchbald"])
def test_batch_strategies_run_from_a_recipe(tmp_path: Path, strategy: str) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'strategy = "{strategy}"\ndataset = "repeated-digits"\ninitial = 10\nquery_size = 5\n'
        'rounds = 1\nsamples = 4\npool_subsample = 300\n[backend]\nmin_steps = 10\nepochs = 1\n'
    )
    run_dir = tmp_path / "run"
    subprocess.run(
        [sys.executable, "-m", "alab", "run", "--config", str(recipe), "--out", str(run_dir)],
        check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    rows = (run_dir / "labels.csv").read_text().splitlines()[1:]
    acquired = [int(row.split(",")[0]) for row in rows if row.split(",")[2] == "1"]
    assert len(acquired) == 5 and len(set(acquired)) == 5
