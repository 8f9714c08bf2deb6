"""Test-set metrics of a predictive distribution, and summaries of a learning curve. No I/O.

Beside them: `alab.metrics.trust` (uncertainty decomposition, retention curves, reliability bins,
out-of-distribution detection) and `alab.metrics.stopping` (stopping rules and their statistics).
"""

from __future__ import annotations

import math
import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from alab.errors import AlabError


def _check(log_probs_N_C: Tensor, y_N: Tensor) -> tuple[int, int]:
    """Validate predictions against labels and return (N, C)."""
    if log_probs_N_C.ndim != 2 or not log_probs_N_C.is_floating_point():
        raise AlabError(
            "metrics take floating log-probabilities of shape [N items, C classes]; got"
            f" {log_probs_N_C.dtype} of shape {list(log_probs_N_C.shape)}"
        )
    N, C = log_probs_N_C.shape
    if y_N.shape != (N,) or y_N.is_floating_point() or y_N.is_complex() or y_N.dtype == torch.bool:
        raise AlabError(
            f"metrics take integer labels of shape [{N}] to match the predictions; got"
            f" {y_N.dtype} of shape {list(y_N.shape)}"
        )
    if N == 0:
        raise AlabError("metrics need at least one test item; the test set is empty")
    if not bool(((y_N >= 0) & (y_N < C)).all()):
        raise AlabError(
            f"labels must lie in [0, {C}) for {C} classes; got [{int(y_N.min())}, {int(y_N.max())}]"
        )
    # -inf is a valid log-probability (p = 0); NaN and +inf are not. `< inf` is False for both.
    if not bool((log_probs_N_C < math.inf).all()):
        raise AlabError("non-finite log-probabilities (NaN or +inf) in the predictions to evaluate")
    return N, C


def accuracy(log_probs_N_C: Tensor, y_N: Tensor) -> float:
    """Accuracy: the fraction of items whose most probable class is the label.

    accuracy = (1/N) sum_n 1[argmax_c p_nc = y_n]; a tie goes to the lowest class (torch.argmax).
    Shapes: [N, C], [N] -> float.
    """
    _check(log_probs_N_C, y_N)
    return (log_probs_N_C.argmax(dim=1) == y_N).double().mean().item()


def nll(log_probs_N_C: Tensor, y_N: Tensor) -> float:
    """Mean negative log-likelihood of the labels, -(1/N) sum_n log p(y_n|x_n), in nats.

    Shapes: [N, C], [N] -> float (inf if a label has probability 0).
    """
    _check(log_probs_N_C, y_N)
    return -log_probs_N_C.gather(1, y_N.long()[:, None]).double().mean().item()  # [N, C] -> [N, 1]


def brier(log_probs_N_C: Tensor, y_N: Tensor) -> float:
    """Multi-class Brier score: (1/N) sum_n sum_c (p_nc - 1[y_n = c])^2, in [0, 2].

    Shapes: [N, C], [N] -> float. Brier (1950), "Verification of Forecasts Expressed in Terms of
    Probability" (the original, summed-over-classes form).
    """
    N, C = _check(log_probs_N_C, y_N)
    one_hot_N_C = torch.nn.functional.one_hot(y_N.long(), C).to(log_probs_N_C.dtype)
    squared_errors_N = (log_probs_N_C.exp() - one_hot_N_C).square().sum(dim=1)
    return squared_errors_N.double().mean().item()


def reliability_bins(log_probs_N_C: Tensor, y_N: Tensor, n_bins: int = 15) -> dict[str, list[float]]:
    """The reliability diagram's bins: equal-width confidence bins with their count, accuracy and mean confidence.

    Bin b holds confidences conf_n = max_c p_nc in [b/n_bins, (b+1)/n_bins); confidence 1.0 goes in
    the last bin. Returns {"lower", "upper", "count", "accuracy", "confidence"}, one entry per bin
    (accuracy and confidence NaN for an empty bin). DeGroot & Fienberg (1983); Guo et al. (2017).
    """
    N, _ = _check(log_probs_N_C, y_N)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise AlabError(f"reliability bins need a positive integer number of bins; got n_bins={n_bins!r}")
    # exp in float64: a bin edge then sees the confidence the log-probability itself encodes.
    confidences_N = log_probs_N_C.double().amax(dim=1).exp()
    correct_N = (log_probs_N_C.argmax(dim=1) == y_N).double()
    bins_N = (confidences_N * n_bins).long().clamp(0, n_bins - 1)
    count_B = confidences_N.new_zeros(n_bins).scatter_add_(0, bins_N, torch.ones_like(confidences_N))
    correct_B = confidences_N.new_zeros(n_bins).scatter_add_(0, bins_N, correct_N)
    confidence_B = confidences_N.new_zeros(n_bins).scatter_add_(0, bins_N, confidences_N)
    edges = [b / n_bins for b in range(n_bins + 1)]
    return {
        "lower": edges[:-1],
        "upper": edges[1:],
        "count": count_B.tolist(),
        "accuracy": (correct_B / count_B).tolist(),  # 0/0 = NaN: an empty bin
        "confidence": (confidence_B / count_B).tolist(),
    }


def ece(log_probs_N_C: Tensor, y_N: Tensor, n_bins: int = 15) -> float:
    """Expected calibration error over `n_bins` equal-width confidence bins (`reliability_bins`).

    ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|,
    with conf_n = max_c p_nc and correct_n = 1[argmax_c p_nc = y_n]; empty bins add nothing.
    Shapes: [N, C], [N] -> float. Naeini, Cooper & Hauskrecht (2015), "Obtaining Well Calibrated
    Probabilities Using Bayesian Binning"; Guo et al. (2017), "On Calibration of Modern Neural
    Networks".
    """
    bins = reliability_bins(log_probs_N_C, y_N, n_bins)
    N = sum(bins["count"])
    return sum(n / N * abs(a - c) for n, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"]) if n)


def evaluate(log_probs_N_C: Tensor, y_N: Tensor) -> dict[str, float]:
    """All test-set metrics at once: {"accuracy", "nll", "brier", "ece"} (ECE with 15 bins)."""
    return {
        "accuracy": accuracy(log_probs_N_C, y_N),
        "nll": nll(log_probs_N_C, y_N),
        "brier": brier(log_probs_N_C, y_N),
        "ece": ece(log_probs_N_C, y_N),
    }


def _curve(n_labeled: ArrayLike, accuracy: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a learning curve and return it as two float64 arrays."""
    n_labeled_T = np.asarray(n_labeled, dtype=np.float64)
    accuracy_T = np.asarray(accuracy, dtype=np.float64)
    if n_labeled_T.ndim != 1 or n_labeled_T.shape != accuracy_T.shape:
        raise AlabError(
            "a learning curve is two 1-D sequences of equal length (n_labeled, accuracy); got"
            f" shapes {list(n_labeled_T.shape)} and {list(accuracy_T.shape)}"
        )
    if not (np.isfinite(n_labeled_T).all() and np.isfinite(accuracy_T).all()):
        raise AlabError("a learning curve holds a non-finite n_labeled or accuracy")
    return n_labeled_T, accuracy_T


def area_under_curve(n_labeled: ArrayLike, accuracy: ArrayLike) -> float:
    """Normalized area under the learning curve: the curve's mean accuracy over its label range.

    AUC = (1 / (n_T - n_1)) sum_t (n_{t+1} - n_t) (a_t + a_{t+1}) / 2 (trapezoids), so a
    curve of accuracies in [0, 1] scores in [0, 1] and a flat curve scores its accuracy, whatever
    the budget. A single point scores its own accuracy. n_labeled must increase strictly.
    """
    n_labeled_T, accuracy_T = _curve(n_labeled, accuracy)
    if len(n_labeled_T) == 0:
        raise AlabError("area_under_curve needs at least one point of the learning curve")
    if len(n_labeled_T) == 1:
        return float(accuracy_T[0])
    widths_T1 = np.diff(n_labeled_T)
    if not (widths_T1 > 0).all():
        raise AlabError(
            f"n_labeled must increase strictly along a learning curve; got {n_labeled_T.tolist()}"
        )
    area = float(np.sum(widths_T1 * (accuracy_T[1:] + accuracy_T[:-1]) / 2))
    return area / float(n_labeled_T[-1] - n_labeled_T[0])


def labels_to_reach(n_labeled: ArrayLike, accuracy: ArrayLike, target: float) -> int | None:
    """The first n_labeled, in curve order, at which accuracy >= target; None if never reached."""
    n_labeled_T, accuracy_T = _curve(n_labeled, accuracy)
    if not math.isfinite(target):
        raise AlabError(f"labels_to_reach needs a finite target accuracy; got {target!r}")
    reached_T = np.flatnonzero(accuracy_T >= target)
    return int(n_labeled_T[reached_T[0]]) if len(reached_T) else None
