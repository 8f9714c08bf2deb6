"""Regression acquisition (alab.acquisition.regression) and metrics (alab.regression_metrics): closed forms, brute force, scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from alab.errors import AlabError
from alab.acquisition.regression import (
    MIN_VARIANCE,
    REGRESSION_ACQUISITIONS,
    bald,
    decompose,
    epistemic_variance,
    gaussian_entropy,
    gaussian_params,
    mixture_entropy,
    total_variance,
)
from alab.regression_metrics import coverage, evaluate_regression, mixture_nll, rmse

DTYPES = [torch.float32, torch.float64]


def raw_for(s2: torch.Tensor) -> torch.Tensor:
    """The raw output whose softplus(raw) + MIN_VARIANCE is s2 (inverse softplus)."""
    v = s2.double() - MIN_VARIANCE
    return (v + torch.log(-torch.expm1(-v))).to(s2.dtype)


def outputs(mu_K_N: list, s2_K_N: list, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    mu = torch.tensor(mu_K_N, dtype=dtype)
    return torch.stack([mu, raw_for(torch.tensor(s2_K_N, dtype=dtype))], dim=-1)  # [K, N, 2]


def test_gaussian_params_inverts_the_softplus() -> None:
    mu, s2 = gaussian_params(outputs([[1.0, -2.0]], [[0.5, 3.0]]))
    torch.testing.assert_close(mu, torch.tensor([[1.0, -2.0]], dtype=torch.float64))
    torch.testing.assert_close(s2, torch.tensor([[0.5, 3.0]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_samples_have_no_epistemic_uncertainty(dtype: torch.dtype) -> None:
    one_1_N_2 = outputs([[0.3, -1.0, 5.0]], [[0.2, 1.0, 4.0]], dtype)
    same_K_N_2 = one_1_N_2.expand(7, -1, -1)
    aleatoric_N, epistemic_N = decompose(same_K_N_2)
    torch.testing.assert_close(epistemic_N, torch.zeros(3, dtype=dtype))
    torch.testing.assert_close(aleatoric_N, torch.tensor([0.2, 1.0, 4.0], dtype=dtype))
    torch.testing.assert_close(total_variance(same_K_N_2), aleatoric_N)
    torch.testing.assert_close(bald(same_K_N_2), torch.zeros(3, dtype=dtype), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_known_mixture_by_hand(dtype: torch.dtype) -> None:
    # Two samples, one item: means 1 and 3, variances 0.5 and 1.5.
    # aleatoric = (0.5 + 1.5)/2 = 1; epistemic = ((1-2)^2 + (3-2)^2)/2 = 1; total = 2.
    out = outputs([[1.0], [3.0]], [[0.5], [1.5]], dtype)
    aleatoric_N, epistemic_N = decompose(out)
    torch.testing.assert_close(aleatoric_N, torch.tensor([1.0], dtype=dtype))
    torch.testing.assert_close(epistemic_variance(out), torch.tensor([1.0], dtype=dtype))
    torch.testing.assert_close(total_variance(out), torch.tensor([2.0], dtype=dtype))


def test_total_variance_is_the_variance_of_the_mixture_drawn_from() -> None:
    """Law of total variance against an independent numpy computation of the mixture's second moment."""
    rng = np.random.default_rng(0)
    mu, s2 = rng.normal(size=(5, 4)), rng.uniform(0.1, 2, size=(5, 4))
    mixture_var = (s2 + mu**2).mean(axis=0) - mu.mean(axis=0) ** 2  # E[y^2] - E[y]^2
    torch.testing.assert_close(total_variance(outputs(mu.tolist(), s2.tolist())), torch.from_numpy(mixture_var))


def brute_force_entropy(mu: list[float], s2: list[float]) -> float:
    """-integral p log p by adaptive quadrature (scipy.integrate.quad), split at every component's mean."""

    def density(y: float) -> float:
        return float(np.mean([stats.norm.pdf(y, m, math.sqrt(v)) for m, v in zip(mu, s2)]))

    def integrand(y: float) -> float:
        p = density(y)
        return -p * math.log(p) if p > 0 else 0.0

    lo = min(m - 12 * math.sqrt(v) for m, v in zip(mu, s2))
    hi = max(m + 12 * math.sqrt(v) for m, v in zip(mu, s2))
    points = sorted({*mu, *(m + d * math.sqrt(v) for m, v in zip(mu, s2) for d in (-3, -1, 1, 3))})
    edges = [lo, *[p for p in points if lo < p < hi], hi]
    return sum(integrate.quad(integrand, a, b, limit=200, epsabs=1e-11)[0] for a, b in zip(edges[:-1], edges[1:]))


MIXTURES = [
    ([0.0, 0.0], [1.0, 1.0]),  # one Gaussian: 0.5 log(2 pi e)
    ([0.0, 3.0], [1.0, 0.25]),  # two bumps of different widths
    ([0.0, 0.1, 5.0], [0.01, 4.0, 0.5]),  # a narrow spike on a wide component
    ([-2.0, 0.0, 2.0, 10.0], [1e-3, 1e-3, 1e-3, 9.0]),  # three spikes and a wide far one
    ([0.0, 1e-3], [1e-4, 1e-4]),  # nearly identical, tiny
]


@pytest.mark.parametrize(("mu", "s2"), MIXTURES)
def test_mixture_entropy_matches_brute_force_integration(mu: list[float], s2: list[float]) -> None:
    estimate = mixture_entropy(torch.tensor(mu, dtype=torch.float64)[:, None], torch.tensor(s2, dtype=torch.float64)[:, None])
    assert estimate.shape == (1,)
    assert abs(float(estimate[0]) - brute_force_entropy(mu, s2)) < 2e-4


def test_mixture_entropy_of_one_gaussian_is_the_closed_form() -> None:
    s2 = torch.tensor([[0.01, 1.0, 100.0]], dtype=torch.float64)
    torch.testing.assert_close(mixture_entropy(torch.zeros_like(s2), s2), gaussian_entropy(s2[0]), atol=1e-9, rtol=0)


def test_bald_is_the_mutual_information_by_brute_force() -> None:
    mu, s2 = [0.0, 2.0, 2.5], [0.5, 0.2, 1.0]
    expected = brute_force_entropy(mu, s2) - float(np.mean([0.5 * math.log(2 * math.pi * math.e * v) for v in s2]))
    got = bald(outputs([[m] for m in mu], [[v] for v in s2]))
    assert abs(float(got[0]) - expected) < 1e-3


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 5),
    st.integers(0, 2**31 - 1),
)
def test_bald_lies_between_zero_and_the_gaussian_bound(K: int, N: int, seed: int) -> None:
    """0 <= I <= H[moment-matched Gaussian] - E_k H_k (a Gaussian has the largest entropy for its variance)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.stack([torch.randn(K, N, generator=g, dtype=torch.float64) * 3, torch.randn(K, N, generator=g, dtype=torch.float64) * 2], dim=-1)
    mi_N = bald(out)
    _, s2_K_N = gaussian_params(out)
    bound_N = gaussian_entropy(total_variance(out)) - gaussian_entropy(s2_K_N).mean(dim=0)
    # >= 0 exactly (power sampling needs it); the upper bound up to the quadrature's error (< 1e-3 nats,
    # see test_mixture_entropy_matches_brute_force_integration)
    assert bool((mi_N >= 0).all()) and bool((mi_N <= bound_N + 1e-3).all())
    # permuting the samples changes nothing; permuting the pool permutes the scores
    perm_K, perm_N = torch.randperm(K, generator=g), torch.randperm(N, generator=g)
    for name in REGRESSION_ACQUISITIONS.names():
        fn = REGRESSION_ACQUISITIONS.get(name)
        torch.testing.assert_close(fn(out[perm_K]), fn(out))
        torch.testing.assert_close(fn(out[:, perm_N]), fn(out)[perm_N])


def test_bald_discounts_disagreement_where_the_noise_is_large() -> None:
    """Same spread of means; the noisy item has the same epistemic variance but less information."""
    out = outputs([[0.0, 0.0], [1.0, 1.0]], [[0.1, 10.0], [0.1, 10.0]])
    torch.testing.assert_close(epistemic_variance(out)[0], epistemic_variance(out)[1])
    assert float(bald(out)[0]) > 5 * float(bald(out)[1])


@pytest.mark.parametrize("bad", [torch.zeros(3, 2), torch.zeros(2, 3, 3), torch.full((1, 2, 2), math.nan)])
def test_bad_inputs_are_one_line_errors(bad: torch.Tensor) -> None:
    with pytest.raises(AlabError):
        epistemic_variance(bad)


def test_training_loss_is_the_gaussian_nll() -> None:
    from alab.acquisition.regression import gaussian_nll_loss

    out_N_2 = outputs([[0.5, -1.0]], [[2.0, 0.3]])[0]
    y_N = torch.tensor([1.0, 0.0], dtype=torch.float64)
    expected = -np.mean(stats.norm.logpdf([1.0, 0.0], [0.5, -1.0], np.sqrt([2.0, 0.3])))
    torch.testing.assert_close(gaussian_nll_loss(out_N_2, y_N), torch.tensor(expected, dtype=torch.float64))
    assert F.softplus(torch.tensor(-50.0)) + MIN_VARIANCE > 0  # the variance floor keeps the loss finite


# ---- metrics ----


def test_rmse_and_mixture_nll_against_numpy_and_scipy() -> None:
    rng = np.random.default_rng(1)
    mu, s2, y = rng.normal(size=(4, 30)), rng.uniform(0.2, 3, size=(4, 30)), rng.normal(size=30)
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    assert rmse(t(mu), t(s2), t(y)) == pytest.approx(np.sqrt(np.mean((mu.mean(0) - y) ** 2)), rel=1e-12)
    density = np.mean(stats.norm.pdf(y, mu, np.sqrt(s2)), axis=0)
    assert mixture_nll(t(mu), t(s2), t(y)) == pytest.approx(-np.mean(np.log(density)), rel=1e-10)


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95])
def test_coverage_of_exact_gaussian_samples_is_nominal(level: float) -> None:
    rng = np.random.default_rng(2)
    n = 20000
    mu, sd = rng.normal(size=n), rng.uniform(0.5, 2, size=n)
    y = rng.normal(mu, sd)
    got = coverage(torch.from_numpy(mu)[None], torch.from_numpy(sd**2)[None], torch.from_numpy(y), level)
    assert abs(got - level) < 4 * math.sqrt(level * (1 - level) / n)
    # the same count as scipy's central interval
    lo, hi = stats.norm.interval(level, mu, sd)
    assert got == pytest.approx(np.mean((y >= lo) & (y <= hi)), abs=2 / n)


def test_coverage_of_a_mixture_uses_its_own_quantiles() -> None:
    """Two equal components at -1 and +1 (sd 0.1): the central 50% interval is about [-1.07, 1.07]."""
    mu = torch.tensor([[-1.0], [1.0]], dtype=torch.float64).expand(2, 3)
    s2 = torch.full((2, 3), 0.01, dtype=torch.float64)
    y = torch.tensor([0.0, -1.0, 1.5], dtype=torch.float64)  # inside (median), inside, outside
    assert coverage(mu, s2, y, 0.5) == pytest.approx(2 / 3)
    # an overconfident single Gaussian at 0 with sd 0.1 would cover only the first
    assert coverage(torch.zeros(1, 3, dtype=torch.float64), s2[:1], y, 0.5) == pytest.approx(1 / 3)


def test_evaluate_regression_has_the_curve_metrics() -> None:
    mu, s2, y = torch.zeros(2, 5), torch.ones(2, 5), torch.zeros(5)
    assert set(evaluate_regression(mu, s2, y)) == {"rmse", "nll", "coverage_50", "coverage_90", "coverage_95"}
    with pytest.raises(AlabError):
        rmse(mu, s2, torch.zeros(4))
