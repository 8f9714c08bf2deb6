"""Batch rules (alab.acquisition.base, stochastic): top-k, stochastic sampling (power, softmax, soft-rank) by
Gumbel-top-k, and the strategy registry (alab.acquisition.strategies)."""

from __future__ import annotations

import math

import pytest
import torch

from alab.errors import AlabError
from alab.acquisition.base import JointStrategy, random_subset, topk
from alab.acquisition.joint import BatchBALD
from alab.acquisition.stochastic import Stochastic, gumbel_topk
from alab.acquisition.strategies import STRATEGIES


def test_gumbel_top_1_samples_proportionally_to_the_weights() -> None:
    weights_N = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    draws = 20_000
    counts_N = torch.zeros(4, dtype=torch.float64)
    for _ in range(draws):
        counts_N[gumbel_topk(weights_N.log(), 1, generator)] += 1
    # Binomial standard error at p = 0.4 and 20,000 draws is 0.0035; 5 sigma.
    torch.testing.assert_close(counts_N / draws, weights_N / weights_N.sum(), rtol=0, atol=0.018)


def test_gumbel_top_2_matches_sequential_sampling_without_replacement() -> None:
    weights_N = torch.tensor([1.0, 2.0, 7.0], dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    draws = 20_000
    first_two = {}
    for _ in range(draws):
        pair = tuple(gumbel_topk(weights_N.log(), 2, generator).tolist())
        first_two[pair] = first_two.get(pair, 0) + 1
    w = weights_N.tolist()
    expected = w[0] / 10 * w[2] / (10 - w[0])  # P(first 0, then 2)
    assert abs(first_two.get((0, 2), 0) / draws - expected) < 0.012


@pytest.mark.parametrize("mode", ["power", "softmax", "softrank"])
def test_stochastic_picks_distinct_items_reproducibly(mode: str) -> None:
    scores_N = torch.rand(50, generator=torch.Generator().manual_seed(2))
    rule = Stochastic("bald", mode)  # type: ignore[arg-type]
    first = rule.select(scores_N, 50, 10, generator=torch.Generator().manual_seed(5))
    again = rule.select(scores_N, 50, 10, generator=torch.Generator().manual_seed(5))
    assert first.indices.tolist() == again.indices.tolist()
    assert len(set(first.indices.tolist())) == 10
    torch.testing.assert_close(first.scores, scores_N[first.indices])


@pytest.mark.parametrize("mode", ["power", "softmax", "softrank"])
def test_large_beta_is_top_k(mode: str) -> None:
    scores_N = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3])
    rule = Stochastic("bald", mode, beta=1e4)  # type: ignore[arg-type]
    chosen = rule.select(scores_N, 5, 2, generator=torch.Generator().manual_seed(0))
    assert sorted(chosen.indices.tolist()) == [1, 3]


# The laws of one pick (b = 1) from scores [0.2, 0.9, 0.5] (ranks 3, 1, 2), weights by hand. Any two
# of these six laws differ by at least 0.044 in some item's probability (power vs softmax at beta 1:
# 0.104; a rule that ignores beta 2 is off by 0.128 or more), and every other law by more.
@pytest.mark.parametrize(
    ("mode", "beta", "weights"),
    [
        ("power", 1.0, [0.2, 0.9, 0.5]),  # s_i^beta
        ("power", 2.0, [0.2**2, 0.9**2, 0.5**2]),
        ("softmax", 1.0, [math.exp(0.2), math.exp(0.9), math.exp(0.5)]),  # exp(beta s_i)
        ("softmax", 2.0, [math.exp(0.4), math.exp(1.8), math.exp(1.0)]),
        ("softrank", 1.0, [1 / 3, 1.0, 1 / 2]),  # rank_i^(-beta)
        ("softrank", 2.0, [1 / 9, 1.0, 1 / 4]),
    ],
    ids=["power-beta1", "power-beta2", "softmax-beta1", "softmax-beta2", "softrank-beta1", "softrank-beta2"],
)
def test_stochastic_picks_follow_their_law(mode: str, beta: float, weights: list[float]) -> None:
    scores_N = torch.tensor([0.2, 0.9, 0.5], dtype=torch.float64)
    rule = Stochastic("bald", mode, beta=beta)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(3)
    draws = 20_000
    counts_N = torch.zeros(3, dtype=torch.float64)
    for _ in range(draws):
        counts_N[rule.select(scores_N, 3, 1, generator=generator).indices] += 1
    weights_N = torch.tensor(weights, dtype=torch.float64)
    # Binomial standard error of a frequency over 20,000 draws is at most 0.0035 (p = 0.5); 5 sigma,
    # well inside the 0.044 that separates these laws.
    torch.testing.assert_close(counts_N / draws, weights_N / weights_N.sum(), rtol=0, atol=0.018)


def test_power_refuses_negative_scores_and_all_refuse_non_finite() -> None:
    with pytest.raises(AlabError, match=">= 0"):
        Stochastic("margin", "power").select(torch.tensor([-0.5, 0.1]), 2, 1, generator=torch.Generator())
    with pytest.raises(AlabError, match="non-finite"):
        Stochastic("bald", "softmax").select(torch.tensor([math.nan, 0.1]), 2, 1, generator=torch.Generator())


def test_strategies_are_registered() -> None:
    for name in ("batchbald", "powerbald", "softmaxbald", "softrankbald", "powerentropy"):
        assert name in STRATEGIES
    assert STRATEGIES.get("powerentropy").acquisition == "max_entropy"
    assert isinstance(STRATEGIES.get("batchbald"), JointStrategy)
    assert not isinstance(STRATEGIES.get("powerbald"), JointStrategy)


def test_batchbald_strategy_selects_from_log_probs() -> None:
    log_probs_K_M_C = torch.randn(4, 30, 3, generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    selection = BatchBALD().select_joint(log_probs_K_M_C, 5, generator=torch.Generator().manual_seed(0))
    assert len(set(selection.indices.tolist())) == 5
    with pytest.raises(AlabError, match="log-probabilities"):
        BatchBALD().select(torch.zeros(30), 30, 5, generator=torch.Generator())


def test_topk_takes_the_highest_and_breaks_ties_by_position() -> None:
    scores_N = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.2, 0.5])
    selection = topk(scores_N, 3)
    assert selection.indices.tolist() == [1, 3, 2]
    torch.testing.assert_close(selection.scores, torch.tensor([0.9, 0.9, 0.5]))


def test_topk_refuses_non_finite_scores() -> None:
    with pytest.raises(AlabError, match="non-finite"):
        topk(torch.tensor([0.1, float("nan")]), 1)


def test_random_subset_is_seeded_and_without_replacement() -> None:
    a = random_subset(100, 10, torch.Generator().manual_seed(0)).indices
    b = random_subset(100, 10, torch.Generator().manual_seed(0)).indices
    c = random_subset(100, 10, torch.Generator().manual_seed(1)).indices
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert len(set(a.tolist())) == 10


def test_every_strategy_names_a_registered_acquisition() -> None:
    from alab.acquisition.scores import ACQUISITIONS
    from alab.acquisition.regression import REGRESSION_ACQUISITIONS

    for name in STRATEGIES.names():
        acquisition = STRATEGIES.get(name).acquisition
        assert acquisition is None or acquisition in ACQUISITIONS or acquisition in REGRESSION_ACQUISITIONS


def test_every_strategy_is_listed_with_its_paper() -> None:
    """`alab strategies` prints these summaries: each names the paper it follows, as (Author ... year)."""
    import re

    for name in STRATEGIES.names():
        if name != "random":
            assert re.search(r"\([A-Z][^()]* (19|20)\d\d[a-z]?[^()]*\)$", STRATEGIES.summary(name)), (name, STRATEGIES.summary(name))
    assert {"epig", "badge", "coreset", "cluster_margin", "typiclust", "probcover"} <= set(STRATEGIES.names())


def test_a_duplicate_strategy_name_is_refused() -> None:
    with pytest.raises(ValueError, match="strategy 'badge' is already registered"):
        STRATEGIES.add("badge", STRATEGIES.get("coreset"))

