"""Metrics: closed forms, hand-worked ECE, cross-checks against numpy and scikit-learn, curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.metrics
import torch
from torch import Tensor

from alab.errors import AlabError
from alab.metrics import accuracy, area_under_curve, brier, ece, evaluate, labels_to_reach, nll

DTYPES = [torch.float32, torch.float64]
TIGHT = dict(rtol=1e-12, atol=1e-12)
# float32 inputs: exp and sums carry float32 rounding before the float64 reduction.
TOL = {torch.float32: dict(rtol=1e-6, atol=1e-6), torch.float64: TIGHT}


def log_of(probs: list, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.tensor(probs, dtype=torch.float64).log().to(dtype)


def close(actual: float, expected: float, **tol: float) -> None:
    torch.testing.assert_close(actual, expected, **(tol or TIGHT))


def random_predictions(dtype: torch.dtype, n: int = 500, c: int = 10) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    logits_N_C = 2 * torch.randn(n, c, generator=generator, dtype=torch.float64)
    y_N = torch.randint(c, (n,), generator=generator)
    return torch.log_softmax(logits_N_C, dim=-1).to(dtype), y_N


# --- closed forms ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_perfect_one_hot_predictions(dtype: torch.dtype) -> None:
    y_N = torch.tensor([2, 0, 1, 2])
    log_probs_N_C = torch.nn.functional.one_hot(y_N, 3).to(dtype).log()  # p = 0 -> -inf
    assert evaluate(log_probs_N_C, y_N) == {"accuracy": 1.0, "nll": 0.0, "brier": 0.0, "ece": 0.0}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [2, 3, 10])
def test_uniform_predictions(c: int, dtype: torch.dtype) -> None:
    y_N = torch.tensor([0, 1, 1, c - 1, 0])
    log_probs_N_C = torch.log_softmax(torch.zeros(5, c, dtype=dtype), dim=-1)
    # Brier: (1 - 1/C)^2 on the label + (C - 1) (1/C)^2 elsewhere = 1 - 1/C.
    close(brier(log_probs_N_C, y_N), 1 - 1 / c, **TOL[dtype])
    close(nll(log_probs_N_C, y_N), math.log(c), **TOL[dtype])
    # Every argmax is a tie, which goes to class 0: accuracy is the share of label 0.
    close(accuracy(log_probs_N_C, y_N), 2 / 5)
    # All confidences 1/C fall in one bin.
    close(ece(log_probs_N_C, y_N), abs(2 / 5 - 1 / c), **TOL[dtype])


# C = 4; bins of width 1/3: [0, 1/3), [1/3, 2/3), [2/3, 1].
ECE_PROBS = [
    [0.3, 0.25, 0.25, 0.2],  # y=1: wrong, conf .3 -> bin 0
    [0.4, 0.3, 0.2, 0.1],  # y=0: right, conf .4 -> bin 1
    [0.1, 0.5, 0.2, 0.2],  # y=2: wrong, conf .5 -> bin 1
    [0.9, 0.05, 0.03, 0.02],  # y=0: right, conf .9 -> bin 2
    [0.0, 0.0, 1.0, 0.0],  # y=2: right, conf 1.0 -> the last bin
    [0.2, 0.1, 0.7, 0.0],  # y=1: wrong, conf .7 -> bin 2
]
ECE_LABELS = torch.tensor([1, 0, 2, 0, 2, 1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_ece_by_hand(dtype: torch.dtype) -> None:
    log_probs_N_C = log_of(ECE_PROBS, dtype)
    by_bin = [1 / 6 * abs(0 - 0.3), 2 / 6 * abs(1 / 2 - 0.45), 3 / 6 * abs(2 / 3 - 2.6 / 3)]
    close(ece(log_probs_N_C, ECE_LABELS, n_bins=3), sum(by_bin), **TOL[dtype])
    # One bin: |overall accuracy - mean confidence|.
    close(ece(log_probs_N_C, ECE_LABELS, n_bins=1), abs(3 / 6 - 3.8 / 6), **TOL[dtype])
    close(accuracy(log_probs_N_C, ECE_LABELS), 0.5)


def test_ece_bins_are_closed_below() -> None:
    # Two bins, [0, .5) and [.5, 1]: confidence exactly .5 (right, by the tie to class 0) shares
    # the upper bin with .75 (wrong). Bins closed above would instead give |1 - .5|/2 + |0 - .75|/2.
    log_probs_N_C = log_of([[0.5, 0.5], [0.25, 0.75]])
    close(ece(log_probs_N_C, torch.tensor([0, 0]), n_bins=2), abs(1 / 2 - (0.5 + 0.75) / 2))


# --- cross-checks ------------------------------------------------------------------------------


def np_ece(probs_N_C: np.ndarray, y_N: np.ndarray, n_bins: int) -> float:
    confidences, predictions = probs_N_C.max(axis=1), probs_N_C.argmax(axis=1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (confidences >= lo) & ((confidences < hi) | (b == n_bins - 1))
        if in_bin.any():
            gap = (predictions[in_bin] == y_N[in_bin]).mean() - confidences[in_bin].mean()
            total += in_bin.mean() * abs(gap)
    return total


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_bins", [1, 4, 15])
def test_ece_matches_numpy(n_bins: int, dtype: torch.dtype) -> None:
    log_probs_N_C, y_N = random_predictions(dtype)
    probs_N_C = log_probs_N_C.double().exp().numpy()
    close(ece(log_probs_N_C, y_N, n_bins=n_bins), np_ece(probs_N_C, y_N.numpy(), n_bins))


@pytest.mark.parametrize("dtype", DTYPES)
def test_brier_nll_accuracy_match_references(dtype: torch.dtype) -> None:
    log_probs_N_C, y_N = random_predictions(dtype)
    probs_N_C, labels_N = log_probs_N_C.double().exp().numpy(), y_N.numpy()
    one_hot_N_C = np.eye(probs_N_C.shape[1])[labels_N]
    expected_brier = np.mean(np.sum((probs_N_C - one_hot_N_C) ** 2, axis=1))
    close(brier(log_probs_N_C, y_N), expected_brier, **TOL[dtype])
    if dtype == torch.float64:  # sklearn wants probabilities summing to 1 at float64 precision
        classes = range(probs_N_C.shape[1])
        sklearn_nll = sklearn.metrics.log_loss(labels_N, probs_N_C, labels=classes)
        close(nll(log_probs_N_C, y_N), sklearn_nll)
    picked_N = log_probs_N_C.double().numpy()[np.arange(len(labels_N)), labels_N]
    close(nll(log_probs_N_C, y_N), -float(np.mean(picked_N)))
    expected_accuracy = sklearn.metrics.accuracy_score(labels_N, probs_N_C.argmax(axis=1))
    close(accuracy(log_probs_N_C, y_N), expected_accuracy)


def test_evaluate_gathers_every_metric() -> None:
    log_probs_N_C, y_N = random_predictions(torch.float64, n=50)
    metrics = evaluate(log_probs_N_C, y_N)
    assert list(metrics) == ["accuracy", "nll", "brier", "ece"]
    assert metrics == {
        "accuracy": accuracy(log_probs_N_C, y_N),
        "nll": nll(log_probs_N_C, y_N),
        "brier": brier(log_probs_N_C, y_N),
        "ece": ece(log_probs_N_C, y_N, n_bins=15),
    }
    assert all(isinstance(value, float) for value in metrics.values())


def test_labels_may_be_any_integer_dtype() -> None:
    log_probs_N_C = log_of(ECE_PROBS)
    assert evaluate(log_probs_N_C, ECE_LABELS.int()) == evaluate(log_probs_N_C, ECE_LABELS)


@pytest.mark.parametrize(
    ("log_probs", "y", "message"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), r"shape \[N items, C classes\]"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), r"integer labels of shape \[4\]"),
        (torch.zeros(4, 2), torch.zeros(4), r"integer labels"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), r"test set is empty"),
        (torch.zeros(2, 2), torch.tensor([0, 2]), r"labels must lie in \[0, 2\)"),
        (torch.tensor([[math.nan, 0.0]]), torch.tensor([0]), r"non-finite log-probabilities"),
    ],
    ids=["1-d", "length", "float-labels", "empty", "out-of-range", "nan"],
)
@pytest.mark.parametrize("metric", [accuracy, nll, brier, ece, evaluate])
def test_bad_inputs_raise_one_line(metric, log_probs: Tensor, y: Tensor, message: str) -> None:
    with pytest.raises(AlabError, match=message) as info:
        metric(log_probs, y)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
def test_ece_refuses_bad_bins(n_bins: object) -> None:
    with pytest.raises(AlabError, match="positive integer number of bins"):
        ece(log_of(ECE_PROBS), ECE_LABELS, n_bins=n_bins)


# --- learning curves ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_labeled", [np.linspace(20, 1000, 50), [10, 11, 40, 41, 300]])
def test_area_under_a_linear_curve_is_its_mean(n_labeled) -> None:
    n = np.asarray(n_labeled, dtype=np.float64)
    line = 0.3 + 0.6 * (n - n[0]) / (n[-1] - n[0])  # from 0.3 to 0.9
    # Trapezoids are exact on a line, whose mean over the label range is the midpoint.
    close(area_under_curve(n_labeled, line), 0.6)
    if isinstance(n_labeled, np.ndarray):  # evenly spaced: also the mean of the points
        close(area_under_curve(n_labeled, line), float(line.mean()))


def test_area_under_curve_by_hand() -> None:
    # Trapezoids: 10 * (0.2 + 0.6) / 2 + 20 * (0.6 + 0.7) / 2 = 17 over a range of 30.
    close(area_under_curve((0, 10, 30), [0.2, 0.6, 0.7]), 17 / 30)
    close(area_under_curve([50, 100, 150], [0.8, 0.8, 0.8]), 0.8)
    close(area_under_curve([50], [0.7]), 0.7)


@pytest.mark.parametrize(
    ("n_labeled", "accuracy", "message"),
    [
        ([], [], "at least one point"),
        ([10, 20], [0.5], "equal length"),
        ([[10, 20]], [[0.5, 0.6]], "1-D"),
        ([10, 10, 20], [0.5, 0.6, 0.7], "increase strictly"),
        ([20, 10], [0.5, 0.6], "increase strictly"),
        ([10, 20], [0.5, math.nan], "non-finite"),
    ],
)
def test_area_under_curve_refuses_bad_curves(n_labeled: list, accuracy: list, message: str) -> None:
    with pytest.raises(AlabError, match=message):
        area_under_curve(n_labeled, accuracy)


def test_labels_to_reach() -> None:
    n_labeled, curve = [20, 30, 40, 50], [0.5, 0.7, 0.65, 0.9]
    assert labels_to_reach(n_labeled, curve, 0.4) == 20  # reached at the start
    assert labels_to_reach(n_labeled, curve, 0.7) == 30  # equality counts
    assert labels_to_reach(n_labeled, curve, 0.66) == 30  # the first time, though it dips after
    assert labels_to_reach(n_labeled, curve, 0.9) == 50  # at the end
    assert labels_to_reach(n_labeled, curve, 0.95) is None
    assert labels_to_reach([], [], 0.5) is None
    found = labels_to_reach(np.array(n_labeled), np.array(curve), 0.8)
    assert found == 50 and type(found) is int
    with pytest.raises(AlabError, match="finite target"):
        labels_to_reach(n_labeled, curve, math.nan)
