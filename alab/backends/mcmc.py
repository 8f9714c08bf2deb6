"""MCMC helpers: dual-averaging step-size adaptation, split R-hat and the effective sample size.

Every function takes draws as [chains, draws] (one scalar quantity, e.g. the log-likelihood).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class DualAveraging:
    """Step sizes adapted so the mean acceptance probability is `target` (Hoffman & Gelman 2014, Algorithm 5).

    One state per chain ([C]): with H_m = (1 - 1/(m + t0)) H_{m-1} + (target - alpha_m) / (m + t0),
    log eps_m = mu - sqrt(m) / gamma H_m and log eps~_m = m^-kappa log eps_m + (1 - m^-kappa) log eps~_{m-1};
    mu = log(10 eps_0), gamma = 0.05, t0 = 10, kappa = 0.75 (the paper's values). After warmup use eps~ (`final`).
    """

    def __init__(self, step_size_C: Tensor, target: float, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75) -> None:
        self.mu_C = torch.log(10 * step_size_C)
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.h_C = torch.zeros_like(step_size_C)
        self.log_step_C = step_size_C.log()
        self.log_step_bar_C = torch.zeros_like(step_size_C)
        self.m = 0

    def update(self, accept_prob_C: Tensor) -> Tensor:
        """The next step sizes [C], given this iteration's acceptance probabilities [C]."""
        self.m += 1
        m = self.m
        self.h_C = (1 - 1 / (m + self.t0)) * self.h_C + (self.target - accept_prob_C) / (m + self.t0)
        self.log_step_C = self.mu_C - math.sqrt(m) / self.gamma * self.h_C
        eta = m**-self.kappa
        self.log_step_bar_C = eta * self.log_step_C + (1 - eta) * self.log_step_bar_C
        return self.log_step_C.exp()

    def final(self) -> Tensor:
        return self.log_step_bar_C.exp()


def split_rhat(draws_C_S: Tensor) -> float:
    """Split R-hat (Gelman et al., BDA3 section 11.4): each chain halved, then sqrt(var+ / W).

    With M = 2C half-chains of n draws: W = mean of the within-chain variances, B = n * variance of
    the chain means (both with n - 1, M - 1), var+ = (n - 1)/n W + B/n. 1 when the chains agree.
    """
    C, S = draws_C_S.shape
    n = S // 2
    if n < 2:
        return math.nan  # a within-chain variance needs two draws a half
    halves_M_n = torch.cat([draws_C_S[:, :n], draws_C_S[:, S - n :]]).double()  # [2C, n]
    W = halves_M_n.var(dim=1).mean()
    B = n * halves_M_n.mean(dim=1).var()
    var_plus = (n - 1) / n * W + B / n
    return float((var_plus / W).sqrt())


def _autocovariance(draws_C_S: Tensor) -> Tensor:
    """Each chain's autocovariance at lags 0..S-1 (biased, 1/S), by FFT: [C, S]."""
    C, S = draws_C_S.shape
    centered = draws_C_S.double() - draws_C_S.double().mean(dim=1, keepdim=True)
    spectrum = torch.fft.rfft(centered, n=2 * S)
    return torch.fft.irfft(spectrum * spectrum.conj(), n=2 * S)[:, :S] / S


def effective_sample_size(draws_C_S: Tensor) -> float:
    """ESS = C S / tau, tau = -1 + 2 sum_k P_k (Geyer's initial monotone sequence, as Stan computes it).

    rho_t = 1 - (W - mean_c acov_c(t)) / var+ (the multi-chain autocorrelation; W and var+ as in
    `split_rhat`, unsplit), P_k = rho_2k + rho_2k+1, summed while positive and made non-increasing
    (Geyer 1992; Stan Reference Manual, "Effective sample size").
    """
    C, S = draws_C_S.shape
    acov_C_S = _autocovariance(draws_C_S)
    W = (acov_C_S[:, 0] * S / (S - 1)).mean()
    var_plus = W * (S - 1) / S + (draws_C_S.double().mean(dim=1).var() if C > 1 else 0.0)
    rho_S = 1 - (W - acov_C_S.mean(dim=0)) / var_plus
    tau, previous = -1.0, math.inf
    for k in range(S // 2):
        pair = float(rho_S[2 * k] + rho_S[2 * k + 1])
        if pair <= 0:
            break
        previous = min(previous, pair)
        tau += 2 * previous
    return C * S / tau
