"""Scores on log-probabilities: pure functions of a pool's posterior samples.

Every function in ACQUISITIONS maps `log_probs_K_N_C` (K posterior samples, N pool items, C classes;
natural-log probabilities) to `scores_N` on the input's device and dtype. Higher score = acquire,
always. EPIG also takes the log-probabilities of M target inputs under the same K networks,
`log_probs_K_M_C`, so it is a strategy of its own (`EPIG`) rather than a registered function.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from alab.acquisition.base import Selection, topk
from alab.errors import AlabError
from alab.registry import Registry

EPIG_BLOCK_ELEMENTS = 1 << 22  # joint probabilities [chunk, C, M*C] per matrix product in `epig` (16 MiB in float32)

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


def epig(log_probs_K_N_C: Tensor, log_probs_K_M_C: Tensor, *, block_elements: int = EPIG_BLOCK_ELEMENTS) -> Tensor:
    """EPIG: the expected information gain about the predictions on target inputs, E_x* I[y; y* | x, x*].

    EPIG(x) ~= (1/M) sum_m I[y; y*_m | x, x*_m] over M target inputs x*_m ~ p*(x*), each pair by
        I[y; y*] = H[y] + H[y*] - H[y, y*],   p(y, y*) = (1/K) sum_k p(y | x, w_k) p(y* | x*, w_k),
    with the same K networks for pool and targets. In nats, in [0, min(H[y], ln C)] (rounding
    clamped to 0); 0 when the K networks agree. For x* = x it is I[y; y'] <= BALD (y - w - y' is a
    Markov chain), equal to BALD when every network's prediction is one-hot. The joint [chunk, C, M*C]
    is one matrix product per chunk of the pool, chunk * C * M * C <= `block_elements`: memory is
    bounded whatever N. Shapes: [K, N, C], [K, M, C] -> [N]. Bickford Smith, Kirsch, Farquhar, Gal,
    Foster & Rainforth (2023), "Prediction-oriented Bayesian active learning".
    """
    K, N, C = _check(log_probs_K_N_C)
    K_t, M, C_t = _check(log_probs_K_M_C)
    if (K_t, C_t) != (K, C) or M < 1:
        raise AlabError(
            f"EPIG needs the targets' log-probabilities under the same K networks and C classes as the pool's, "
            f"at least one target; got pool [K={K}, C={C}] and targets [K={K_t}, M={M}, C={C_t}]"
        )
    probs_K_N_C = log_probs_K_N_C.exp()
    probs_K_MC = log_probs_K_M_C.exp().reshape(K, M * C)  # [K, M, C] -> [K, M*C]
    pool_entropy_N = entropy(predictive_log_probs(log_probs_K_N_C))
    target_entropy = entropy(predictive_log_probs(log_probs_K_M_C)).mean()  # mean_m H[y*_m]
    chunk = max(1, block_elements // (C * M * C))
    joint_entropy = []
    for start in range(0, N, chunk):
        probs_K_B_C = probs_K_N_C[:, start : start + chunk]
        B = probs_K_B_C.shape[1]
        probs_BC_K = probs_K_B_C.permute(1, 2, 0).reshape(B * C, K)  # [K, B, C] -> [B, C, K] -> [B*C, K]
        joint_BC_MC = probs_BC_K @ probs_K_MC / K  # p(y = c, y*_m = c*), rows (b, c), columns (m, c*)
        # -sum p log p over c, m and c*, divided by M: the mean over targets of H[y, y*_m]. [B*C, M*C] -> [B]
        joint_entropy.append(-torch.special.xlogy(joint_BC_MC, joint_BC_MC).reshape(B, C * M * C).sum(dim=1) / M)
    joint_entropy_N = torch.cat(joint_entropy) if joint_entropy else pool_entropy_N.new_zeros(0)
    return (pool_entropy_N + target_entropy - joint_entropy_N).clamp(min=0)


@dataclass(frozen=True)
class EPIG:
    """Top-k EPIG against the run's target inputs (`epig`); the loop gives their log-probabilities.

    The targets are M inputs drawn each round (the run's `epig_targets` and `epig_target_inputs`):
    a random sample of the pool by default, or of the inputs the user will predict on.
    """

    acquisition: None = None  # no registered score: `scorer` makes one per round

    def scorer(self, log_probs_K_M_C: Tensor) -> Callable[[Tensor], Tensor]:
        """The pool's score for this round's targets: log_probs_K_N_C -> EPIG scores_N."""
        return functools.partial(epig, log_probs_K_M_C=log_probs_K_M_C)

    def select(self, scores_N: Tensor | None, n: int, b: int, *, generator: torch.Generator) -> Selection:
        assert scores_N is not None and len(scores_N) == n
        return topk(scores_N, b)
