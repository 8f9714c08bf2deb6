"""Stress sets: ambiguous blends labelled from their mixture, symmetric label noise, a long-tailed pool;
each test set the original's, each set the same for every run; and a run through the CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from alab.data import load_dataset
from alab.data.stress import BLEND_RANGE, IMBALANCE, LABEL_NOISE, _generator, blend_pairs, is_ambiguous, long_tail_counts

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


def same_test_set(stressed, original) -> bool:
    return torch.equal(stressed.x_test, original.x_test) and torch.equal(stressed.y_test, original.y_test)


def test_ambiguous_digits_blends_two_classes_and_labels_from_the_mixture() -> None:
    original, stressed = load_dataset("digits"), load_dataset("ambiguous-digits")
    N = len(original.y_pool)
    assert len(stressed.y_pool) == 2 * N and same_test_set(stressed, original)
    pool_P = torch.arange(2 * N)
    assert torch.equal(is_ambiguous(pool_P, N), pool_P >= N)
    assert torch.equal(stressed.x_pool[:N], original.x_pool) and torch.equal(stressed.y_pool[:N], original.y_pool)

    a_M, b_M, lam_M = blend_pairs(original.y_pool, N, _generator("ambiguous"))  # the pairs the loader drew
    assert bool((original.y_pool[a_M] != original.y_pool[b_M]).all())
    assert BLEND_RANGE[0] <= float(lam_M.min()) and float(lam_M.max()) <= BLEND_RANGE[1]
    blends_M = lam_M[:, None] * original.x_pool[a_M] + (1 - lam_M[:, None]) * original.x_pool[b_M]
    torch.testing.assert_close(stressed.x_pool[N:], blends_M)
    labels_M = stressed.y_pool[N:]
    from_a_M = labels_M == original.y_pool[a_M]
    assert bool((from_a_M | (labels_M == original.y_pool[b_M])).all())  # one of the two classes
    # P(label = y_a) = lam: the count of a-labels is a sum of Bernoulli(lam), within 4 standard deviations
    expected, sd = float(lam_M.sum()), math.sqrt(float((lam_M * (1 - lam_M)).sum()))
    assert abs(int(from_a_M.sum()) - expected) < 4 * sd
    assert stressed.checksum != original.checksum
    assert torch.equal(load_dataset("ambiguous-digits", seed=7).y_pool, stressed.y_pool)  # the same for every seed


def test_noisy_digits_flips_the_stated_share_of_labels_to_other_classes() -> None:
    original, stressed = load_dataset("digits"), load_dataset("noisy-digits")
    assert torch.equal(stressed.x_pool, original.x_pool) and same_test_set(stressed, original)
    flipped_N = stressed.y_pool != original.y_pool
    n = len(flipped_N)
    assert abs(int(flipped_N.sum()) - LABEL_NOISE * n) < 4 * math.sqrt(n * LABEL_NOISE * (1 - LABEL_NOISE))
    # symmetric: the shift to the wrong class is uniform over 1..C-1 (each of 9 shifts ~27 times in 240)
    shifts = ((stressed.y_pool - original.y_pool) % 10)[flipped_N]
    assert set(shifts.tolist()) == set(range(1, 10))
    assert torch.bincount(shifts, minlength=10)[1:].max() < 3 * flipped_N.sum() / 9
    assert torch.equal(load_dataset("noisy-digits", seed=3).y_pool, stressed.y_pool)


def test_long_tail_counts_follow_the_exponential_profile() -> None:
    assert long_tail_counts([100, 200, 300], 100.0) == [100, 10, 1]  # 100 * 100^(-c/2)
    assert long_tail_counts([6000] * 10, 100.0)[-1] == 60 and long_tail_counts([5, 9], 1.0) == [5, 5]


def test_imbalanced_digits_keeps_a_long_tailed_subset_and_the_balanced_test_set() -> None:
    original, stressed = load_dataset("digits"), load_dataset("imbalanced-digits")
    counts = [int((original.y_pool == c).sum()) for c in range(10)]
    assert torch.bincount(stressed.y_pool, minlength=10).tolist() == long_tail_counts(counts, IMBALANCE["digits"])
    assert same_test_set(stressed, original)
    # every kept item is an original item with its own label (the rows of the original, in order)
    rows = {tuple(x.tolist()): int(y) for x, y in zip(original.x_pool, original.y_pool)}
    assert all(rows[tuple(x.tolist())] == int(y) for x, y in zip(stressed.x_pool, stressed.y_pool))


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"MNIST files not found at {SHARED_MNIST}")
def test_mnist_stress_sets_have_the_card_sizes() -> None:
    ambiguous = load_dataset("ambiguous-mnist", data_dir=SHARED_MNIST)
    assert ambiguous.x_pool.shape == (120_000, 1, 28, 28) and ambiguous.x_test.shape == (10_000, 1, 28, 28)
    imbalanced = load_dataset("imbalanced-mnist", data_dir=SHARED_MNIST)
    assert torch.bincount(imbalanced.y_pool).tolist() == [5421, 3249, 1948, 1167, 700, 419, 251, 150, 90, 54]
    clean, noisy = load_dataset("mnist", data_dir=SHARED_MNIST), load_dataset("noisy-mnist", data_dir=SHARED_MNIST)
    assert int((clean.y_pool != noisy.y_pool).sum()) == 11_952 and torch.equal(noisy.y_test, clean.y_test)


def alab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "alab", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_a_run_on_a_stress_set_through_the_cli(tmp_path: Path) -> None:  # the loaders themselves: the tests above
    out = tmp_path / "run"
    done = alab("run", "--dataset", "noisy-digits", "--strategy", "bald", "--rounds", "1", "--initial", "20",
                "--query-size", "10", "--samples", "4", "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    curve = pd.read_csv(out / "curve.csv")
    assert curve["n_labeled"].tolist() == [20, 30] and curve["accuracy"].between(0, 1).all()


def test_alab_datasets_lists_the_stress_sets(tmp_path: Path) -> None:
    listed = alab("datasets", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for kind in ("ambiguous", "noisy", "imbalanced"):
        assert f"{kind}-mnist" in listed.stdout and f"{kind}-digits" in listed.stdout
