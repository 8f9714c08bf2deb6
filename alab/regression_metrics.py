"""Test-set metrics of a regression model's predictive mixture. No I/O.

The predictive distribution is the equal-weight mixture of the K posterior samples' Gaussians,
p(y|x) = (1/K) sum_k N(y; mu_k, s2_k) (`alab.acquisition.regression`). Every metric here is of that mixture
itself, not of a Gaussian matched to its moments: the NLL is the mixture's exact log density, and
an interval's coverage uses the mixture's exact CDF. All take `mu_K_N`, `s2_K_N` and `y_N` in the
same (original) units.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from alab.errors import AlabError
from alab.acquisition.regression import mixture_log_density

COVERAGE_LEVELS = (0.5, 0.9, 0.95)


def _check(mu_K_N: Tensor, s2_K_N: Tensor, y_N: Tensor) -> None:
    if mu_K_N.ndim != 2 or mu_K_N.shape != s2_K_N.shape or y_N.shape != mu_K_N.shape[1:]:
        raise AlabError(
            "regression metrics take means and variances of shape [K, N] and targets of shape [N]; got"
            f" {list(mu_K_N.shape)}, {list(s2_K_N.shape)}, {list(y_N.shape)}"
        )
    if y_N.numel() == 0:
        raise AlabError("metrics need at least one test item; the test set is empty")
    if not bool((s2_K_N > 0).all()):
        raise AlabError("predictive variances must be positive")


def rmse(mu_K_N: Tensor, s2_K_N: Tensor, y_N: Tensor) -> float:
    """Root mean squared error of the predictive mean: sqrt((1/N) sum_n (mean_k mu_kn - y_n)^2)."""
    _check(mu_K_N, s2_K_N, y_N)
    return math.sqrt(float((mu_K_N.double().mean(dim=0) - y_N.double()).square().mean()))


def mixture_nll(mu_K_N: Tensor, s2_K_N: Tensor, y_N: Tensor) -> float:
    """Mean negative log-likelihood of the predictive mixture, in nats (per item, in y's units):

    NLL = -(1/N) sum_n log (1/K) sum_k N(y_n; mu_kn, s2_kn).
    """
    _check(mu_K_N, s2_K_N, y_N)
    return -float(mixture_log_density(y_N.double()[None], mu_K_N.double(), s2_K_N.double()).mean())


def mixture_cdf(y_N: Tensor, mu_K_N: Tensor, s2_K_N: Tensor) -> Tensor:
    """F(y_n) = (1/K) sum_k Phi((y_n - mu_kn) / s_kn), the predictive mixture's CDF. Shapes -> [N]."""
    z_K_N = (y_N.double()[None] - mu_K_N.double()) / s2_K_N.double().sqrt()
    return torch.special.ndtr(z_K_N).mean(dim=0)


def coverage(mu_K_N: Tensor, s2_K_N: Tensor, y_N: Tensor, level: float) -> float:
    """Fraction of targets inside the predictive mixture's central `level` interval.

    y_n lies in the central interval [F^-1((1 - level)/2), F^-1((1 + level)/2)] exactly when
    |F(y_n) - 1/2| <= level / 2 (F is increasing), so no quantile needs solving. A calibrated model
    covers `level` of the targets; less is overconfident, more underconfident. Gneiting, Balabdaoui
    & Raftery (2007), "Probabilistic forecasts, calibration and sharpness" (the PIT).
    """
    _check(mu_K_N, s2_K_N, y_N)
    if not 0 < level < 1:
        raise AlabError(f"a coverage level lies in (0, 1), got {level}")
    pit_N = mixture_cdf(y_N, mu_K_N, s2_K_N)
    return float(((pit_N - 0.5).abs() <= level / 2).double().mean())


def evaluate_regression(mu_K_N: Tensor, s2_K_N: Tensor, y_N: Tensor) -> dict[str, float]:
    """All test-set metrics at once: rmse, nll, coverage_50, coverage_90, coverage_95."""
    metrics = {"rmse": rmse(mu_K_N, s2_K_N, y_N), "nll": mixture_nll(mu_K_N, s2_K_N, y_N)}
    for level in COVERAGE_LEVELS:
        metrics[f"coverage_{round(level * 100)}"] = coverage(mu_K_N, s2_K_N, y_N, level)
    return metrics
