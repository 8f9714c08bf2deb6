"""Scores on log-probabilities (alab.acquisition.scores): closed forms, invariants, a numpy cross-check, errors,
the registry; EPIG against a brute-force numpy I(y; y*) and its closed forms."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import Tensor

from alab.acquisition.scores import ACQUISITIONS, EPIG, entropy, epig, predictive_log_probs
from alab.errors import AlabError

NAMES = ACQUISITIONS.names()
DTYPES = [torch.float32, torch.float64]
# Tight for the precision: a few ulps of the values involved (scores are at most ln C ~ 2).
TOL = {torch.float32: dict(rtol=1e-6, atol=2e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def log_of(probs: list, dtype: torch.dtype = torch.float64) -> Tensor:
    """Log-probabilities from nested lists of probabilities; log 0 = -inf is allowed input."""
    return torch.tensor(probs, dtype=torch.float64).log().to(dtype)


def h(*p: float) -> float:
    """Entropy in nats, by hand."""
    return -sum(x * math.log(x) for x in p if x > 0)


def expect(scores_N: Tensor, expected: list[float], dtype: torch.dtype) -> None:
    torch.testing.assert_close(scores_N, torch.tensor(expected, dtype=dtype), **TOL[dtype])


# --- closed forms ------------------------------------------------------------------------------

C_UNIFORM = 4
UNIFORM = {
    "bald": 0.0,
    "max_entropy": math.log(C_UNIFORM),
    "variance": 0.0,
    # Every sample's argmax is a C-way tie, which torch.argmax gives to class 0: all K samples
    # agree, so the variation ratio is 0 (the mode count would be K whichever class won the tie).
    "var_ratios": 0.0,
    "margin": 0.0,
    "least_confidence": 1 - 1 / C_UNIFORM,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_uniform_predictions(name: str, dtype: torch.dtype) -> None:
    log_probs_K_N_C = torch.log_softmax(torch.zeros(3, 2, C_UNIFORM, dtype=dtype), dim=-1)
    expect(ACQUISITIONS.get(name)(log_probs_K_N_C), [UNIFORM[name]] * 2, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_samples_carry_no_disagreement(dtype: torch.dtype) -> None:
    p = [[0.7, 0.2, 0.1], [0.05, 0.15, 0.8]]
    log_probs_K_N_C = log_of([p] * 5, dtype)
    for name in ["bald", "variance", "var_ratios"]:
        expect(ACQUISITIONS.get(name)(log_probs_K_N_C), [0.0, 0.0], dtype)
    expect(ACQUISITIONS.get("max_entropy")(log_probs_K_N_C), [h(*p[0]), h(*p[1])], dtype)


# Two certain samples that disagree (log 0 = -inf in the input): pbar = [1/2, 1/2].
OPPOSED = [[[1.0, 0.0]], [[0.0, 1.0]]]
OPPOSED_EXPECTED = {
    "bald": math.log(2),  # H[pbar] = ln 2, each sample's entropy 0
    "max_entropy": math.log(2),
    "variance": 0.5,  # per class: values {1, 0}, population std 1/2
    "var_ratios": 0.5,  # modal class holds 1 of 2 votes
    "margin": 0.0,
    "least_confidence": 0.5,
}

# K=3, C=3, one item: per-class sample values {.5,.1,.2}, {.3,.6,.7}, {.2,.3,.1};
# pbar = [.8, 1.6, .6]/3; per-class population variances .26/9, .26/9, .06/9; argmaxes 0, 1, 1.
SKEWED = [[[0.5, 0.3, 0.2]], [[0.1, 0.6, 0.3]], [[0.2, 0.7, 0.1]]]
SKEWED_EXPECTED = {
    "bald": h(0.8 / 3, 1.6 / 3, 0.2) - (h(0.5, 0.3, 0.2) + h(0.1, 0.6, 0.3) + h(0.2, 0.7, 0.1)) / 3,
    "max_entropy": h(0.8 / 3, 1.6 / 3, 0.2),
    "variance": (2 * math.sqrt(0.26) + math.sqrt(0.06)) / 3 / 3,
    "var_ratios": 1 - 2 / 3,
    "margin": -(1.6 / 3 - 0.8 / 3),
    "least_confidence": 1 - 1.6 / 3,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("probs", "expected"),
    [(OPPOSED, OPPOSED_EXPECTED), (SKEWED, SKEWED_EXPECTED)],
    ids=["opposed", "skewed"],
)
def test_hand_computed(name: str, dtype: torch.dtype, probs: list, expected: dict) -> None:
    expect(ACQUISITIONS.get(name)(log_of(probs, dtype)), [expected[name]], dtype)


def test_helpers() -> None:
    log_probs_K_N_C = log_of(SKEWED)
    tol = TOL[torch.float64]
    expected_N_C = log_of([[0.8 / 3, 1.6 / 3, 0.2]])
    torch.testing.assert_close(predictive_log_probs(log_probs_K_N_C), expected_N_C, **tol)
    # Any leading shape; p = 0 contributes 0, not NaN.
    entropies_1_2 = entropy(log_of([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]]))
    expected_1_2 = torch.tensor([[0.0, math.log(2)]], dtype=torch.float64)
    torch.testing.assert_close(entropies_1_2, expected_1_2, **tol)


# --- properties --------------------------------------------------------------------------------


@st.composite
def log_probs_strategy(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> Tensor:
    """Random [K, N, C] log-softmax outputs (N = 0 included), some probabilities 0 (logit -inf)."""
    K, N, C = draw(st.integers(1, 4)), draw(st.integers(0, 5)), draw(st.integers(2, 5))
    logit = st.one_of(st.floats(-30, 30), st.just(-math.inf))
    logits_K_N_C = draw(arrays(np.float64, (K, N, C), elements=logit))
    logits_K_N_C[..., 0] = np.maximum(logits_K_N_C[..., 0], -30)  # no all -inf row
    return torch.log_softmax(torch.from_numpy(logits_K_N_C).to(dtype), dim=-1)


def with_dtypes(test: Callable) -> Callable:
    return settings(max_examples=40, deadline=None)(
        given(data=st.data(), dtype=st.sampled_from(DTYPES))(test)
    )


@with_dtypes
def test_information_ordering(data: st.DataObject, dtype: torch.dtype) -> None:
    log_probs_K_N_C = data.draw(log_probs_strategy(dtype))
    eps = TOL[dtype]["atol"]
    bald_N = ACQUISITIONS.get("bald")(log_probs_K_N_C)
    entropy_N = ACQUISITIONS.get("max_entropy")(log_probs_K_N_C)
    assert (bald_N >= 0).all()
    assert (bald_N <= entropy_N + eps).all()
    assert (entropy_N <= math.log(log_probs_K_N_C.shape[2]) + eps).all()


@with_dtypes
def test_shapes_ranges_and_permutations(data: st.DataObject, dtype: torch.dtype) -> None:
    log_probs_K_N_C = data.draw(log_probs_strategy(dtype))
    K, N, C = log_probs_K_N_C.shape
    pool_perm = torch.tensor(data.draw(st.permutations(range(N))), dtype=torch.long)
    sample_perm = torch.tensor(data.draw(st.permutations(range(K))), dtype=torch.long)
    eps = TOL[dtype]["atol"]
    upper = {"variance": 0.5, "var_ratios": 1 - 1 / K, "margin": 0.0, "least_confidence": 1 - 1 / C}
    for name in NAMES:
        fn = ACQUISITIONS.get(name)
        scores_N = fn(log_probs_K_N_C)
        assert scores_N.shape == (N,) and scores_N.dtype == dtype
        assert torch.isfinite(scores_N).all()
        assert (scores_N >= (-1 if name == "margin" else 0) - eps).all()
        assert (scores_N <= upper.get(name, math.log(C)) + eps).all()
        tol = TOL[dtype]
        torch.testing.assert_close(fn(log_probs_K_N_C[:, pool_perm]), scores_N[pool_perm], **tol)
        torch.testing.assert_close(fn(log_probs_K_N_C[sample_perm]), scores_N, **tol)


# --- an independent numpy implementation, in probability space ---------------------------------


def np_entropy(p: np.ndarray) -> np.ndarray:
    safe = np.where(p > 0, p, 1.0)
    return -np.sum(p * np.log(safe), axis=-1)


def np_scores(name: str, log_probs_K_N_C: np.ndarray) -> np.ndarray:
    K, N, C = log_probs_K_N_C.shape
    p = np.exp(log_probs_K_N_C)
    pbar = p.mean(axis=0)
    if name == "bald":
        return np_entropy(pbar) - np_entropy(p).mean(axis=0)
    if name == "max_entropy":
        return np_entropy(pbar)
    if name == "variance":
        return np.std(p, axis=0).mean(axis=-1)
    if name == "var_ratios":
        votes = log_probs_K_N_C.argmax(axis=-1)  # argmax of log p = argmax of p, same tie-break
        return np.array([1 - np.bincount(votes[:, n], minlength=C).max() / K for n in range(N)])
    if name == "margin":
        top = np.sort(pbar, axis=-1)
        return top[:, -2] - top[:, -1]
    if name == "least_confidence":
        return 1 - pbar.max(axis=-1)
    raise KeyError(f"no numpy reference for {name!r}: add one here")


@pytest.mark.parametrize("name", NAMES)
def test_every_function_has_a_reference(name: str) -> None:
    np_scores(name, np.log(np.full((1, 1, 2), 0.5)))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_matches_numpy_on_random_inputs(data: st.DataObject) -> None:
    log_probs_K_N_C = data.draw(log_probs_strategy())
    for name in NAMES:
        expected_N = torch.from_numpy(np_scores(name, log_probs_K_N_C.numpy()))
        scores_N = ACQUISITIONS.get(name)(log_probs_K_N_C)
        torch.testing.assert_close(scores_N, expected_N, **TOL[torch.float64])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy_on_a_larger_pool(name: str, dtype: torch.dtype, device: str) -> None:
    generator = torch.Generator().manual_seed(0)
    logits_K_N_C = 3 * torch.randn(8, 200, 10, generator=generator, dtype=torch.float64)
    log_probs_K_N_C = torch.log_softmax(logits_K_N_C, dim=-1).to(dtype)
    scores_N = ACQUISITIONS.get(name)(log_probs_K_N_C.to(device))
    assert scores_N.device.type == device and scores_N.dtype == dtype
    expected_N = torch.from_numpy(np_scores(name, log_probs_K_N_C.double().numpy())).to(dtype)
    # float32 scores carry the rounding of sums over C = 10 terms, not only one ulp.
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores_N.cpu(), expected_N, **tol)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("log_probs", "message"),
    [
        (torch.log_softmax(torch.zeros(5, 3), dim=-1), r"shape \[K samples, N items, C classes\]"),
        (torch.zeros(2, 3, 4, dtype=torch.long), r"floating"),
        (torch.full((2, 3, 1), 0.0), r"C >= 2 classes"),
        (torch.zeros(0, 3, 2), r"K >= 1 samples"),
        (torch.tensor([[[math.nan, 0.0]]]), r"non-finite log-probabilities"),
        (torch.tensor([[[math.inf, 0.0]]]), r"non-finite log-probabilities"),
    ],
    ids=["2-d", "integer", "one-class", "no-samples", "nan", "plus-inf"],
)
def test_bad_inputs_raise_one_line(name: str, log_probs: Tensor, message: str) -> None:
    with pytest.raises(AlabError, match=message) as info:
        ACQUISITIONS.get(name)(log_probs)
    assert "\n" not in str(info.value)


# --- registry ----------------------------------------------------------------------------------


def test_registry_names_and_summaries() -> None:
    expected = {"bald", "max_entropy", "variance", "var_ratios", "margin", "least_confidence"}
    assert expected <= set(NAMES)
    for name in NAMES:
        assert ACQUISITIONS.summary(name)


def test_registry_refuses_a_duplicate() -> None:
    with pytest.raises(ValueError, match="'bald' is already registered"):
        ACQUISITIONS.register("bald")(lambda log_probs_K_N_C: log_probs_K_N_C)
    assert ACQUISITIONS.get("bald").__name__ == "bald"


def test_registry_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(AlabError, match="unknown acquisition function 'batman'") as info:
        ACQUISITIONS.get("batman")
    assert all(name in str(info.value) for name in NAMES)


# --- EPIG ----------------------------------------------------------------------------------------


def np_epig(log_probs_K_N_C: np.ndarray, log_probs_K_M_C: np.ndarray) -> np.ndarray:
    """Brute force: for every pool item and target, I(y; y*) = sum_{c, c*} p(c, c*) log(p(c, c*) / (p(c) p(c*))), then the mean over targets."""
    p_K_N_C, q_K_M_C = np.exp(log_probs_K_N_C), np.exp(log_probs_K_M_C)
    K, N, C = p_K_N_C.shape
    M = q_K_M_C.shape[1]
    scores = np.zeros(N)
    for n in range(N):
        for m in range(M):
            information = 0.0
            for c in range(C):
                for c_star in range(C):
                    joint = np.mean(p_K_N_C[:, n, c] * q_K_M_C[:, m, c_star])
                    marginals = p_K_N_C[:, n, c].mean() * q_K_M_C[:, m, c_star].mean()
                    information += joint * math.log(joint / marginals) if joint > 0 else 0.0
            scores[n] += information / M
    return scores


def random_log_probs(K: int, N: int, C: int, seed: int, spread: float = 2.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    mean_N_C = 2 * torch.randn(N, C, generator=g, dtype=torch.float64)
    return torch.log_softmax(mean_N_C + spread * torch.randn(K, N, C, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize(("K", "N", "M", "C"), [(1, 3, 2, 2), (4, 7, 5, 3), (8, 11, 9, 4)])
def test_epig_matches_a_brute_force_mutual_information_averaged_over_targets(K: int, N: int, M: int, C: int) -> None:
    pool_K_N_C, targets_K_M_C = random_log_probs(K, N, C, seed=N), random_log_probs(K, M, C, seed=100 + M)
    expected_N = torch.from_numpy(np_epig(pool_K_N_C.numpy(), targets_K_M_C.numpy()))
    torch.testing.assert_close(epig(pool_K_N_C, targets_K_M_C), expected_N.clamp(min=0), **TOL[torch.float64])
    # float32, the loop's precision: the difference of entropies of size ~ln C^2 loses a few ulps of it
    scores32_N = epig(pool_K_N_C.float(), targets_K_M_C.float())
    assert scores32_N.dtype == torch.float32
    torch.testing.assert_close(scores32_N.double(), expected_N, rtol=0, atol=1e-5)


def test_epig_is_the_same_whatever_the_block_size() -> None:
    pool_K_N_C, targets_K_M_C = random_log_probs(6, 50, 5, seed=1), random_log_probs(6, 13, 5, seed=2)
    whole_N = epig(pool_K_N_C, targets_K_M_C)
    for elements in (1, 5 * 13 * 5, 7 * 5 * 13 * 5 + 3):  # one item per block, exactly one, a ragged last block
        torch.testing.assert_close(epig(pool_K_N_C, targets_K_M_C, block_elements=elements), whole_N, **TOL[torch.float64])


def test_epig_is_zero_when_the_networks_agree() -> None:
    one_K_N_C = random_log_probs(1, 9, 4, seed=3)
    expect(epig(one_K_N_C.expand(5, -1, -1), random_log_probs(1, 6, 4, seed=4).expand(5, -1, -1)), [0.0] * 9, torch.float64)
    # Networks that disagree on the pool but agree on every target: nothing to learn about the targets.
    expect(epig(random_log_probs(5, 9, 4, seed=5), random_log_probs(1, 6, 4, seed=6).expand(5, -1, -1)), [0.0] * 9, torch.float64)


def test_epig_with_the_item_itself_as_target_is_bald_for_one_hot_networks_and_below_it_otherwise() -> None:
    """x* = x: EPIG = I(y; y'), y' a second label of x; the chain y - w - y' caps it at BALD = I(y; w),
    reached when every network is certain (then p(y, y') = pbar on the diagonal, I = H[pbar] = BALD)."""
    bald = ACQUISITIONS.get("bald")
    votes_K_N = torch.randint(0, 3, (6, 8), generator=torch.Generator().manual_seed(7))
    one_hot_K_N_C = torch.nn.functional.one_hot(votes_K_N, 3).double().log()  # log 0 = -inf off the vote
    for n in range(8):
        item_K_1_C = one_hot_K_N_C[:, n : n + 1]
        expect(epig(item_K_1_C, item_K_1_C), [float(bald(item_K_1_C)[0])], torch.float64)
    soft_K_N_C = random_log_probs(6, 8, 3, seed=8)
    for n in range(8):
        item_K_1_C = soft_K_N_C[:, n : n + 1]
        assert float(epig(item_K_1_C, item_K_1_C)[0]) < float(bald(item_K_1_C)[0]) - 1e-6


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_epig_ranges_and_permutations(data: st.DataObject) -> None:
    pool_K_N_C = data.draw(log_probs_strategy())
    K, N, C = pool_K_N_C.shape
    M = data.draw(st.integers(1, 4))
    logits_K_M_C = data.draw(arrays(np.float64, (K, M, C), elements=st.floats(-30, 30)))
    targets_K_M_C = torch.log_softmax(torch.from_numpy(logits_K_M_C), dim=-1)
    scores_N = epig(pool_K_N_C, targets_K_M_C)
    eps = TOL[torch.float64]["atol"]
    assert scores_N.shape == (N,) and (scores_N >= 0).all()
    assert (scores_N <= ACQUISITIONS.get("max_entropy")(pool_K_N_C) + eps).all()  # I(y; y*) <= H[y]
    torch.testing.assert_close(scores_N, torch.from_numpy(np_epig(pool_K_N_C.numpy(), targets_K_M_C.numpy())).clamp(min=0), **TOL[torch.float64])
    sample_perm = torch.tensor(data.draw(st.permutations(range(K))), dtype=torch.long)
    target_perm = torch.tensor(data.draw(st.permutations(range(M))), dtype=torch.long)
    torch.testing.assert_close(epig(pool_K_N_C[sample_perm], targets_K_M_C[sample_perm]), scores_N, **TOL[torch.float64])
    torch.testing.assert_close(epig(pool_K_N_C, targets_K_M_C[:, target_perm]), scores_N, **TOL[torch.float64])


def test_epig_refuses_targets_of_other_networks_or_classes() -> None:
    pool_K_N_C = random_log_probs(4, 5, 3, seed=9)
    for targets, what in [(random_log_probs(3, 2, 3, seed=10), "K=3"), (random_log_probs(4, 2, 4, seed=11), "C=4")]:
        with pytest.raises(AlabError, match=f"same K networks and C classes.*{what}") as info:
            epig(pool_K_N_C, targets)
        assert "\n" not in str(info.value)


def test_the_epig_strategy_takes_the_top_b_of_its_round_scores() -> None:
    pool_K_N_C, targets_K_M_C = random_log_probs(4, 30, 3, seed=12), random_log_probs(4, 6, 3, seed=13)
    scores_N = EPIG().scorer(targets_K_M_C)(pool_K_N_C)
    torch.testing.assert_close(scores_N, epig(pool_K_N_C, targets_K_M_C), rtol=0, atol=0)
    selection = EPIG().select(scores_N, 30, 4, generator=torch.Generator())
    assert selection.indices.tolist() == torch.sort(scores_N, descending=True, stable=True).indices[:4].tolist()

