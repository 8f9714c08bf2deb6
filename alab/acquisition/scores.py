"""Acquisition functions: pure scores of a pool from posterior samples of its log-probabilities.

Every function maps `log_probs_K_N_C` (K posterior samples, N pool items, C classes; natural-log
probabilities) to `scores_N` on the input's device and dtype. Higher score = acquire, always.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from alab.errors import AlabError
from alab.registry import Registry

ACQUISITIONS: Registry[Callable[[Tensor], Tensor]] = Registry("acquisition function")


def _check(log_probs_K_N_C: Tensor) -> tuple[int, int, int]:
    """Validate an acquisition input and return its (K, N, C)."""
    if log_probs_K_N_C.ndim != 3 or not log_probs_K_N_C.is_floating_point():
        raise AlabError(
            "acquisition functions take floating log-probabilities of shape [K samples, N items,"
            f" C classes]; got {log_probs_K_N_C.dtype} of shape {list(log_probs_K_N_C.shape)}"
        )
    K, N, C = log_probs_K_N_C.shape
    if K < 1 or C < 2:
        raise AlabError(
            f"acquisition functions need K >= 1 samples and C >= 2 classes; got K={K}, C={C}"
        )
    # -inf is a valid log-probability (p = 0); NaN and +inf are not. `< inf` is False for both.
    # Checked on the CPU only: on a GPU, reading the answer would wait for the device on every chunk;
    # NaN and +inf inputs give non-finite scores there, which `score_pool` refuses once per pool.
    if log_probs_K_N_C.device.type == "cpu" and not bool((log_probs_K_N_C < math.inf).all()):
        raise AlabError(
            "non-finite log-probabilities (NaN or +inf) in the acquisition input; check the"
            " model's outputs (a diverged fit, or logits passed where log_softmax was expected)"
        )
    return K, N, C


def predictive_log_probs(log_probs_K_N_C: Tensor) -> Tensor:
    """Log of the posterior predictive: log E_w p(y|x,w) = logsumexp_k log p_k - log K.

    Shapes: [K, N, C] -> [N, C].
    """
    K = log_probs_K_N_C.shape[0]
    return torch.logsumexp(log_probs_K_N_C, dim=0) - math.log(K)


def entropy(log_probs_C: Tensor) -> Tensor:
    """Shannon entropy over the last axis, in nats: H[p] = -sum_c p_c log p_c, with 0 log 0 = 0.

    Shapes: [..., C] -> [...]. Shannon (1948).
    """
    # exp(-inf) * finfo.min = 0, where exp(-inf) * -inf would be NaN.
    finite_log_probs_C = log_probs_C.clamp(min=torch.finfo(log_probs_C.dtype).min)
    return -(log_probs_C.exp() * finite_log_probs_C).sum(dim=-1)


@ACQUISITIONS.register("bald")
def bald(log_probs_K_N_C: Tensor) -> Tensor:
    """BALD: mutual information between the label and the weights, I[y; w | x].

    I[y; w | x] = H[E_w p(y|x,w)] - E_w H[p(y|x,w)], in nats, >= 0 (rounding clamped to 0).
    Shapes: [K, N, C] -> [N]. Houlsby et al. (2011), "Bayesian Active Learning for
    Classification and Preference Learning"; Gal, Islam & Ghahramani (2017), "Deep Bayesian
    Active Learning with Image Data".
    """
    _check(log_probs_K_N_C)
    predictive_entropy_N = entropy(predictive_log_probs(log_probs_K_N_C))
    expected_entropy_N = entropy(log_probs_K_N_C).mean(dim=0)  # [K, N] -> [N]
    return (predictive_entropy_N - expected_entropy_N).clamp(min=0)


@ACQUISITIONS.register("max_entropy")
def max_entropy(log_probs_K_N_C: Tensor) -> Tensor:
    """Max entropy: the entropy of the posterior predictive, H[E_w p(y|x,w)].

    H = -sum_c pbar_c log pbar_c with pbar = E_w p(y|x,w), in nats, in [0, ln C].
    Shapes: [K, N, C] -> [N]. Shannon (1948); Gal, Islam & Ghahramani (2017).
    """
    _check(log_probs_K_N_C)
    return entropy(predictive_log_probs(log_probs_K_N_C))


@ACQUISITIONS.register("variance")
def variance(log_probs_K_N_C: Tensor) -> Tensor:
    """Mean STD: the per-class standard deviation of p(y=c|x,w) over samples, averaged over classes.

    score = (1/C) sum_c sqrt(E_w[p_c^2] - E_w[p_c]^2) (population std over the K samples).
    Shapes: [K, N, C] -> [N]. Kampffmeyer, Salberg & Jenssen (2016); Gal, Islam & Ghahramani
    (2017), "Mean STD".
    """
    _check(log_probs_K_N_C)
    probs_K_N_C = log_probs_K_N_C.exp()
    # Centred two-pass form: the same quantity as the formula, without its cancellation.
    deviations_K_N_C = probs_K_N_C - probs_K_N_C.mean(dim=0)
    std_N_C = deviations_K_N_C.square().mean(dim=0).sqrt()  # [K, N, C] -> [N, C]
    return std_N_C.mean(dim=1)


@ACQUISITIONS.register("var_ratios")
def var_ratios(log_probs_K_N_C: Tensor) -> Tensor:
    """Variation ratios: the fraction of samples whose predicted class is not the modal one.

    score = 1 - max_c #{k : argmax_c' p_k(c') = c} / K, in [0, 1 - 1/K], as Gal et al.'s code
    counts it. A sample's argmax tie goes to the lowest class index (torch.argmax); ties in the
    mode need no rule, since the mode count is the same whichever class wins.
    Shapes: [K, N, C] -> [N]. Freeman (1965), "Elementary Applied Statistics";
    Gal, Islam & Ghahramani (2017).
    """
    K, N, C = _check(log_probs_K_N_C)
    predictions_N_K = log_probs_K_N_C.argmax(dim=2).T  # [K, N, C] -> [K, N] -> [N, K]
    votes_N_K = torch.ones_like(predictions_N_K, dtype=log_probs_K_N_C.dtype)
    counts_N_C = log_probs_K_N_C.new_zeros((N, C)).scatter_add_(1, predictions_N_K, votes_N_K)
    return 1 - counts_N_C.amax(dim=1) / K


@ACQUISITIONS.register("margin")
def margin(log_probs_K_N_C: Tensor) -> Tensor:
    """Margin: minus the gap between the two most probable classes of the posterior predictive.

    score = -(pbar_(1) - pbar_(2)), pbar = E_w p(y|x,w) sorted descending; in [-1, 0].
    Shapes: [K, N, C] -> [N]. Scheffer, Decomain & Wrobel (2001), "Active Hidden Markov Models
    for Information Extraction".
    """
    _check(log_probs_K_N_C)
    top_N_2 = predictive_log_probs(log_probs_K_N_C).exp().topk(2, dim=1).values
    return top_N_2[:, 1] - top_N_2[:, 0]


@ACQUISITIONS.register("least_confidence")
def least_confidence(log_probs_K_N_C: Tensor) -> Tensor:
    """Least confidence: one minus the posterior predictive's top probability.

    score = 1 - max_c E_w p(y=c|x,w), in [0, 1 - 1/C].
    Shapes: [K, N, C] -> [N]. Lewis & Gale (1994), "A Sequential Algorithm for Training Text
    Classifiers"; Settles (2009), "Active Learning Literature Survey".
    """
    _check(log_probs_K_N_C)
    max_log_probs_N = predictive_log_probs(log_probs_K_N_C).amax(dim=1)
    return -torch.expm1(max_log_probs_N)  # 1 - exp(m), accurate when the top p is near 1
