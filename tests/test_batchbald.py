"""BatchBALD: batch size 1 is BALD, greedy picks equal an exact-enumeration reference, lazy equals
full evaluation, the sampled estimate approaches the exact entropy, and batchbald_redux agrees.

The reference is optional: `pip install --no-deps batchbald-redux==2.0.5 'toma<2' psutil` (its
declared dependencies would pull an unpinned torch and torchvision, which alab must not use).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from alab.acquisition.joint import _JointState, batchbald
from alab.acquisition.scores import bald
from alab.errors import AlabError


def random_log_probs(K: int, N: int, C: int, seed: int) -> Tensor:
    """Items of varied confidence and disagreement, as a trained model gives."""
    g = torch.Generator().manual_seed(seed)
    mean_N_C = torch.randn(N, C, generator=g, dtype=torch.float64) * 3
    spread_N_1 = torch.rand(N, 1, generator=g, dtype=torch.float64) * 3
    return (mean_N_C + spread_N_1 * torch.randn(K, N, C, generator=g, dtype=torch.float64)).log_softmax(-1)


def joint_mutual_information(probs_K_N_C: np.ndarray, batch: list[int]) -> float:
    """I[y_batch; w] by enumerating every joint label configuration (numpy, independent of alab)."""
    K, _, C = probs_K_N_C.shape
    joint = 0.0
    for config in itertools.product(range(C), repeat=len(batch)):
        per_sample_K = np.prod([probs_K_N_C[:, i, c] for i, c in zip(batch, config)], axis=0)
        p = per_sample_K.mean()
        joint -= p * math.log(p) if p > 0 else 0.0
    conditional = sum(-(probs_K_N_C[:, i] * np.log(probs_K_N_C[:, i])).sum(axis=1).mean() for i in batch)
    return joint - conditional


def greedy_reference(probs_K_N_C: np.ndarray, b: int) -> tuple[list[int], list[float]]:
    picked: list[int] = []
    gains: list[float] = []
    for _ in range(b):
        base = joint_mutual_information(probs_K_N_C, picked) if picked else 0.0
        scores = {i: joint_mutual_information(probs_K_N_C, picked + [i]) - base
                  for i in range(probs_K_N_C.shape[1]) if i not in picked}  # fmt: skip
        best = max(scores, key=lambda i: (scores[i], -i))
        picked.append(best)
        gains.append(scores[best])
    return picked, gains


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(1, 6), N=st.integers(1, 12), C=st.integers(2, 5))
def test_batch_size_one_is_balds_argmax(seed: int, K: int, N: int, C: int) -> None:
    log_probs_K_N_C = random_log_probs(K, N, C, seed)
    indices_B, gains_B = batchbald(log_probs_K_N_C, 1)
    scores_N = bald(log_probs_K_N_C)
    assert int(indices_B[0]) == int(scores_N.argmax())
    torch.testing.assert_close(gains_B[0], scores_N.max(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_picks_equal_exact_enumeration(seed: int, dtype: torch.dtype) -> None:
    log_probs_K_N_C = random_log_probs(5, 9, 3, seed)
    expected, expected_gains = greedy_reference(log_probs_K_N_C.exp().numpy(), 4)
    indices_B, gains_B = batchbald(log_probs_K_N_C, 4, num_samples=10_000, dtype=dtype, chunk_elements=8)
    assert indices_B.tolist() == expected
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gains_B, torch.tensor(expected_gains, dtype=torch.float64), **tol)


def test_batch_never_repeats_and_gains_decrease() -> None:
    log_probs_K_N_C = random_log_probs(8, 40, 4, 3)
    indices_B, gains_B = batchbald(log_probs_K_N_C, 6, num_samples=10_000)
    assert len(set(indices_B.tolist())) == 6
    assert bool((gains_B.diff() <= 1e-9).all())  # submodularity: I[y; w | more] <= I[y; w | less]


def test_a_duplicate_item_is_not_picked_twice() -> None:
    log_probs_K_N_C = random_log_probs(10, 20, 4, 4)
    top = int(bald(log_probs_K_N_C).argmax())
    with_twin_K_N_C = torch.cat([log_probs_K_N_C, log_probs_K_N_C[:, top : top + 1]], dim=1)
    indices_B, gains_B = batchbald(with_twin_K_N_C, 3)
    # Whichever twin goes first (their scores tie up to rounding), the other then gains nothing.
    assert len({top, 20} & set(indices_B.tolist())) == 1


def test_lazy_greedy_equals_full_evaluation() -> None:
    log_probs_K_N_C = random_log_probs(10, 200, 5, 5)
    lazy_B, lazy_gains_B = batchbald(log_probs_K_N_C, 5, num_samples=10_000, dtype=torch.float64, chunk_elements=4000)
    full_B, full_gains_B = batchbald(log_probs_K_N_C, 5, num_samples=10_000, dtype=torch.float64, lazy=False)
    assert lazy_B.tolist() == full_B.tolist()
    torch.testing.assert_close(lazy_gains_B, full_gains_B, rtol=1e-12, atol=1e-12)


def test_sampled_joint_entropy_approaches_the_exact_one() -> None:
    log_probs_K_N_C = random_log_probs(6, 8, 3, 6)
    batch = [0, 1, 2, 3]
    exact = _JointState(6, torch.float64, torch.device("cpu"))
    for i in batch:
        exact.add_exact(log_probs_K_N_C[:, i].exp())
    sampled = _JointState(6, torch.float64, torch.device("cpu"))
    sampled.resample(log_probs_K_N_C[:, batch], 600_000, torch.Generator().manual_seed(0))
    assert not sampled.exact
    candidates_K_B_C = log_probs_K_N_C[:, 4:].exp()
    # Monte Carlo error of 600,000 draws: about 3e-3 nats here.
    torch.testing.assert_close(sampled.entropy, exact.entropy, rtol=0, atol=1e-2)
    torch.testing.assert_close(sampled.joint_entropies(candidates_K_B_C), exact.joint_entropies(candidates_K_B_C), rtol=0, atol=1e-2)


def test_sampled_regime_is_reproducible_from_the_generator() -> None:
    log_probs_K_N_C = random_log_probs(5, 30, 4, 7)
    first = batchbald(log_probs_K_N_C, 5, num_samples=20, generator=torch.Generator().manual_seed(3))
    again = batchbald(log_probs_K_N_C, 5, num_samples=20, generator=torch.Generator().manual_seed(3))
    assert first[0].tolist() == again[0].tolist()
    with pytest.raises(AlabError, match="generator"):
        batchbald(log_probs_K_N_C, 5, num_samples=20)


def test_bad_inputs_are_one_line_errors() -> None:
    with pytest.raises(AlabError, match=r"\[K, N, C\]"):
        batchbald(torch.zeros(3, 4), 2)
    with pytest.raises(AlabError, match="non-finite"):
        batchbald(torch.full((2, 3, 2), math.nan), 2)


def test_batch_larger_than_the_pool_takes_it_all() -> None:
    indices_B, _ = batchbald(random_log_probs(4, 3, 3, 8), 10)
    assert sorted(indices_B.tolist()) == [0, 1, 2]


def test_same_batch_as_batchbald_redux() -> None:
    redux = pytest.importorskip("batchbald_redux.batchbald")
    log_probs_K_N_C = random_log_probs(10, 60, 4, 9)
    # C^(b-1) = 4^5 <= num_samples: both use exact joint entropies throughout.
    expected = redux.get_batchbald_batch(log_probs_K_N_C.permute(1, 0, 2).contiguous(), 6, 2_000, dtype=torch.float64)
    indices_B, gains_B = batchbald(log_probs_K_N_C, 6, num_samples=2_000, dtype=torch.float64)
    assert indices_B.tolist() == expected.indices
    # redux's scores are the running joint mutual information: the cumulative sum of our gains.
    torch.testing.assert_close(gains_B.cumsum(0), torch.tensor(expected.scores, dtype=torch.float64), rtol=1e-9, atol=1e-9)
