"""Trust metrics and stopping rules against closed forms and brute force: decomposition, retention, AURC, OOD, kappa."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from alab.errors import AlabError
from alab.metrics import ece, reliability_bins
from alab.metrics.stopping import STOP_RULES, cohen_kappa, parse_stop, stop_round, stop_statistics
from alab.metrics.trust import aurc, decompose, ood_detection, ood_scores, retention_curve


def _log_probs(K: int, N: int, C: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, N, C, generator=g, dtype=torch.float64).mul(2).log_softmax(-1)


def test_decomposition_matches_its_closed_form_and_adds_up() -> None:
    log_probs_K_N_C = _log_probs(7, 30, 4)
    parts = decompose(log_probs_K_N_C)
    p_K_N_C = log_probs_K_N_C.exp()
    p_N_C = p_K_N_C.mean(0)
    total_N = -(p_N_C * p_N_C.log()).sum(-1)
    aleatoric_N = -(p_K_N_C * log_probs_K_N_C).sum(-1).mean(0)
    torch.testing.assert_close(parts["total"], total_N)
    torch.testing.assert_close(parts["aleatoric"], aleatoric_N)
    torch.testing.assert_close(parts["total"], parts["aleatoric"] + parts["epistemic"])
    assert bool((parts["epistemic"] > -1e-12).all())  # mutual information is not negative
    same_K_N_C = log_probs_K_N_C[:1].expand(5, -1, -1)  # K identical networks: nothing epistemic
    torch.testing.assert_close(decompose(same_K_N_C)["epistemic"], torch.zeros(30, dtype=torch.float64), atol=1e-12, rtol=0)


def test_retention_curve_is_the_accuracy_of_the_most_certain_items() -> None:
    g = torch.Generator().manual_seed(1)
    correct_N = torch.rand(50, generator=g) > 0.3
    uncertainty_N = torch.rand(50, generator=g)
    fractions = (0.1, 0.33, 0.5, 1.0)
    curve = retention_curve(correct_N, uncertainty_N, fractions)
    for f, value in zip(fractions, curve):
        k = math.ceil(f * 50)
        kept = sorted(range(50), key=lambda n: float(uncertainty_N[n]))[:k]
        assert value == pytest.approx(float(correct_N[kept].double().mean()))
    assert curve[-1] == pytest.approx(float(correct_N.double().mean()))


def test_aurc_by_brute_force_and_at_its_extremes() -> None:
    correct_N = torch.tensor([True, False, True, True, False, True])
    uncertainty_N = torch.tensor([0.3, 0.9, 0.1, 0.5, 0.2, 0.4])
    order = sorted(range(6), key=lambda n: float(uncertainty_N[n]))
    errors = [0.0 if correct_N[n] else 1.0 for n in order]
    brute = sum(sum(errors[:k]) / k for k in range(1, 7)) / 6
    assert aurc(correct_N, uncertainty_N) == pytest.approx(brute)
    # the errors last (a perfect ranking): sum_k max(0, k - 4) / k over 6 items with 2 errors
    best = aurc(torch.tensor([1, 1, 1, 1, 0, 0]).bool(), torch.arange(6.0))
    assert best == pytest.approx((1 / 5 + 2 / 6) / 6)
    worst = aurc(torch.tensor([0, 0, 1, 1, 1, 1]).bool(), torch.arange(6.0))
    assert worst > aurc(correct_N, uncertainty_N) > best


def test_ood_detection_against_pairwise_counting() -> None:
    g = torch.Generator().manual_seed(2)
    in_N, out_M = torch.randn(40, generator=g), torch.randn(30, generator=g) + 1.0
    pairs = [(float(o > i) + 0.5 * float(o == i)) for i, o in itertools.product(in_N.tolist(), out_M.tolist())]
    found = ood_detection(in_N, out_M)
    assert found["auroc"] == pytest.approx(sum(pairs) / len(pairs))
    # FPR95: accept the test items below the threshold that keeps 95% of them; the share of OOD items accepted
    threshold = sorted(in_N.tolist())[math.ceil(0.95 * 40) - 1]
    assert found["fpr95"] == pytest.approx(float((out_M <= threshold).double().mean()))
    separated = ood_detection(torch.zeros(20), torch.ones(20))
    assert separated == {"auroc": 1.0, "fpr95": 0.0}
    assert ood_detection(torch.ones(20), torch.ones(20))["auroc"] == pytest.approx(0.5)


def test_ood_scores_rank_a_disagreeing_ensemble_above_an_agreeing_one() -> None:
    agree_K_1_C = torch.tensor([[0.9, 0.1]]).log().expand(4, 1, 2)
    disagree_K_1_C = torch.tensor([[[0.99, 0.01]], [[0.01, 0.99]], [[0.99, 0.01]], [[0.01, 0.99]]]).log()
    scores = ood_scores(torch.cat([agree_K_1_C, disagree_K_1_C], dim=1))
    assert float(scores["bald"][1]) > float(scores["bald"][0]) + 0.5
    assert float(scores["max_prob"][0]) == pytest.approx(0.1)
    assert float(scores["max_prob"][1]) == pytest.approx(0.5)


def test_reliability_bins_are_the_bins_behind_ece() -> None:
    log_probs_N_C = _log_probs(1, 200, 5, seed=3)[0]
    y_N = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(4))
    bins = reliability_bins(log_probs_N_C, y_N, n_bins=10)
    assert sum(bins["count"]) == 200 and len(bins["count"]) == 10
    conf_N = log_probs_N_C.exp().amax(1).double()
    for b, (lo, hi) in enumerate(zip(bins["lower"], bins["upper"])):
        in_bin = (conf_N >= lo) & ((conf_N < hi) | (b == 9))
        assert bins["count"][b] == int(in_bin.sum())
        if in_bin.any():
            assert bins["confidence"][b] == pytest.approx(float(conf_N[in_bin].mean()))
    gap = sum(n * abs(a - c) for n, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"]) if n) / 200
    assert ece(log_probs_N_C, y_N, n_bins=10) == pytest.approx(gap)


def test_cohen_kappa_by_its_formula() -> None:
    a = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    b = np.array([0, 1, 1, 1, 2, 0, 2, 0])
    p_o = float((a == b).mean())
    p_e = sum(float((a == c).mean()) * float((b == c).mean()) for c in range(3))
    assert cohen_kappa(a, b, 3) == pytest.approx((p_o - p_e) / (1 - p_e))
    assert cohen_kappa(np.zeros(5), np.zeros(5), 3) == 1.0  # identical, even where p_e = 1


def test_stop_rules_read_their_column_as_documented() -> None:
    kappa = STOP_RULES["kappa"]
    values = [math.nan, 0.9, 0.995, 0.99, 0.999, 0.999]
    assert stop_round(kappa, values) == 4  # the first round whose last three kappas average >= 0.99 (0.9947 at 4; 0.9613 at 3)
    assert stop_round(kappa, values, threshold=0.999) is None
    overall = STOP_RULES["overall_uncertainty"]
    assert stop_round(overall, [0.5, 0.2, 0.04, 0.06]) == 2
    change = STOP_RULES["accuracy_change"]
    assert stop_round(change, [0.5, 0.7, 0.8, 0.802, 0.804, 0.805, 0.806]) == 5  # changes .002, .002, .001 end at round 5
    assert parse_stop("kappa") == (kappa, 0.99)
    assert parse_stop("max_uncertainty:0.2") == (STOP_RULES["max_uncertainty"], 0.2)
    for bad in ("bogus", "kappa:x", "kappa:inf"):
        with pytest.raises(AlabError):
            parse_stop(bad)


def test_stop_statistics_of_a_round() -> None:
    probs_S_C = np.array([[1.0, 0.0], [0.5, 0.5], [0.8, 0.2]])
    stats = stop_statistics(probs_S_C, np.array([0, 1, 0]))
    entropy_S = np.array([0.0, math.log(2), -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))]) / math.log(2)
    assert stats["stop_overall_uncertainty"] == pytest.approx(entropy_S.mean())
    assert stats["stop_max_uncertainty"] == pytest.approx(1.0)
    assert stats["stop_expected_accuracy"] == pytest.approx((1.0 + 0.5 + 0.8) / 3)
    assert stats["stop_kappa"] == pytest.approx(cohen_kappa(np.array([0, 0, 0]), np.array([0, 1, 0]), 2))
    assert math.isnan(stop_statistics(probs_S_C, None)["stop_kappa"])
