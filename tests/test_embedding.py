"""Embedding-based rules (alab.acquisition.embedding): k-center greedy against brute force and exhaustive search,
BADGE's seeding distribution, Cluster-Margin's round robin, TypiClust and ProbCover on hand-made sets, and every
rule's picks reproducible from the round's generator."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from torch import Tensor

from alab.acquisition.base import Embedded, EmbeddingStrategy
from alab.acquisition.embedding import (
    cluster_round_robin,
    kcenter_greedy,
    kmeanspp_seeding,
    probcover,
    purity_radius,
    typiclust,
)
from alab.acquisition.strategies import STRATEGIES
from alab.errors import AlabError


def points(n: int, d: int, seed: int) -> Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- Coreset: greedy k-center --------------------------------------------------------------------


def np_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))


def np_kcenter_greedy(candidates: np.ndarray, centers: np.ndarray, b: int) -> list[int]:
    """The greedy rule by hand: each time, the candidate whose nearest center is farthest (first on ties)."""
    chosen: list[int] = []
    for _ in range(b):
        all_centers = np.concatenate([centers, candidates[chosen]])
        nearest = np_distances(candidates, all_centers).min(axis=1)
        nearest[chosen] = -1.0
        chosen.append(int(np.argmax(nearest)))
    return chosen


def covering_radius(candidates: np.ndarray, centers: np.ndarray, picks: tuple[int, ...] | list[int]) -> float:
    return float(np_distances(candidates, np.concatenate([centers, candidates[list(picks)]])).min(axis=1).max())


@pytest.mark.parametrize(("n", "l", "b", "seed"), [(8, 1, 2, 0), (9, 2, 3, 1), (10, 1, 4, 2), (7, 3, 1, 3), (12, 2, 3, 4)])
def test_kcenter_greedy_is_the_greedy_rule_and_within_twice_the_exhaustive_optimum(n: int, l: int, b: int, seed: int) -> None:
    candidates, centers = points(n, 3, seed), points(l, 3, 100 + seed)
    indices_B, radii_B = kcenter_greedy(candidates, centers, b)
    assert indices_B.tolist() == np_kcenter_greedy(candidates.numpy(), centers.numpy(), b)
    greedy = covering_radius(candidates.numpy(), centers.numpy(), indices_B.tolist())
    best = min(covering_radius(candidates.numpy(), centers.numpy(), s) for s in itertools.combinations(range(n), b))
    assert best <= greedy + 1e-12 and greedy <= 2 * best + 1e-12  # Gonzalez (1985): a 2-approximation
    # radii_B[i] is the covering radius before pick i: the distance of the pick to its nearest center, decreasing
    for i in range(b):
        assert radii_B[i].item() == pytest.approx(covering_radius(candidates.numpy(), centers.numpy(), indices_B[:i].tolist()), rel=1e-12)
    assert (radii_B[1:] <= radii_B[:-1] + 1e-12).all()


def test_kcenter_greedy_needs_a_center_and_picks_distinct_items_of_a_tiny_pool() -> None:
    with pytest.raises(AlabError, match="at least one labeled item"):
        kcenter_greedy(points(4, 2, 0), points(0, 2, 1), 2)
    copies = torch.zeros(3, 2, dtype=torch.float64)  # every candidate at the one center: all distances 0
    assert sorted(kcenter_greedy(copies, copies[:1], 5)[0].tolist()) == [0, 1, 2]


# --- BADGE: k-means++ seeding --------------------------------------------------------------------


def test_kmeanspp_starts_at_the_largest_norm_and_draws_the_next_with_probability_d_squared() -> None:
    x_N_E = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-2.0, 0.0], [2.5, 0.5]])
    d2_N = (x_N_E - x_N_E[0]).square().sum(dim=1).double()  # from the first pick, [3, 0] (largest norm)
    generator = torch.Generator().manual_seed(0)
    draws = 20_000
    counts_N = torch.zeros(5, dtype=torch.float64)
    for _ in range(draws):
        indices_B, d2_B = kmeanspp_seeding(x_N_E, 2, generator)
        assert indices_B[0] == 0
        counts_N[indices_B[1]] += 1
    # Binomial standard error at most 0.0035 over 20,000 draws; 5 sigma
    torch.testing.assert_close(counts_N / draws, d2_N / d2_N.sum(), rtol=0, atol=0.018)
    assert d2_B[0] == pytest.approx(9.0) and d2_B[1] == pytest.approx(float(d2_N[indices_B[1]]))


def test_kmeanspp_third_pick_uses_the_distance_to_the_nearest_pick() -> None:
    x_N_E = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    generator = torch.Generator().manual_seed(1)
    third = torch.zeros(4, dtype=torch.float64)
    runs = 0
    for _ in range(20_000):
        indices_B, _ = kmeanspp_seeding(x_N_E, 3, generator)
        if indices_B[:2].tolist() == [0, 1]:  # the far end first, then the other end (its D^2 is by far the largest)
            third[indices_B[2]] += 1
            runs += 1
    nearest_d2_N = torch.minimum((x_N_E - x_N_E[0]).square().sum(1), (x_N_E - x_N_E[1]).square().sum(1)).double()
    nearest_d2_N[:2] = 0
    assert runs > 15_000
    torch.testing.assert_close(third / runs, nearest_d2_N / nearest_d2_N.sum(), rtol=0, atol=0.02)


def test_kmeanspp_falls_back_to_uniform_once_only_copies_remain() -> None:
    x_N_E = torch.ones(4, 3)
    indices_B, d2_B = kmeanspp_seeding(x_N_E, 4, torch.Generator().manual_seed(2))
    assert sorted(indices_B.tolist()) == [0, 1, 2, 3] and d2_B[1:].tolist() == [0.0, 0.0, 0.0]


# --- Cluster-Margin: clusters in turn ------------------------------------------------------------


def test_cluster_round_robin_takes_one_item_of_each_cluster_smallest_first() -> None:
    centers = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    sizes = [5, 2, 3]
    x_M_D = torch.cat([c + 0.1 * points(s, 2, i).float() for i, (c, s) in enumerate(zip(centers, sizes))])
    group_M = np.repeat([0, 1, 2], sizes)
    counts = np.zeros(len(x_M_D))
    for seed in range(300):
        picked = cluster_round_robin(x_M_D, 3, torch.Generator().manual_seed(seed)).tolist()
        assert group_M[picked].tolist() == [1, 2, 0]  # clusters of 2, 3 and 5 items
        counts[picked] += 1
    # within a cluster, every item equally likely: 300 / size each (binomial sd <= 8.7; 5 sigma)
    np.testing.assert_allclose(counts, 300 / np.repeat(sizes, sizes), atol=44)


def test_cluster_round_robin_is_reproducible_and_gives_all_of_a_set_smaller_than_the_batch() -> None:
    x_M_D = points(20, 4, 5)
    a = cluster_round_robin(x_M_D, 6, torch.Generator().manual_seed(3))
    b = cluster_round_robin(x_M_D, 6, torch.Generator().manual_seed(3))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 6
    assert sorted(cluster_round_robin(x_M_D[:4], 6, torch.Generator()).tolist()) == [0, 1, 2, 3]


# --- TypiClust -----------------------------------------------------------------------------------


def np_typicality(x: np.ndarray, k: int) -> np.ndarray:
    """1 / the mean Euclidean distance to the k nearest other items, by hand."""
    distances = np_distances(x, x)
    np.fill_diagonal(distances, np.inf)
    return 1.0 / np.sort(distances, axis=1)[:, :k].mean(axis=1)


def test_typiclust_picks_the_most_typical_item_of_the_uncovered_clusters_largest_first() -> None:
    # Three far-apart blobs; the labeled item is in blob A, so B (14 items) then C (12) are picked from.
    blob = lambda center, n, seed: torch.tensor(center, dtype=torch.float64) + points(n, 2, seed)  # noqa: E731
    a, b_, c = blob([0.0, 0.0], 10, 0), blob([100.0, 0.0], 14, 1), blob([0.0, 100.0], 12, 2)
    candidates = torch.cat([a[1:], b_, c])
    indices_B, typicality_B = typiclust(candidates, a[:1], 2, torch.Generator().manual_seed(0))
    offset_b, offset_c = 9, 9 + 14
    typical_b = np_typicality(b_.numpy(), min(20, 14 // 2))
    typical_c = np_typicality(c.numpy(), min(20, 12 // 2))
    assert indices_B.tolist() == [offset_b + int(np.argmax(typical_b)), offset_c + int(np.argmax(typical_c))]
    np.testing.assert_allclose(typicality_B.numpy(), [typical_b.max(), typical_c.max()], rtol=1e-5)  # distances in float32


def test_typiclust_keeps_picking_past_the_large_clusters() -> None:
    x = points(30, 3, 7)
    indices_B, _ = typiclust(x[1:], x[:1], 25, torch.Generator().manual_seed(1))
    assert len(set(indices_B.tolist())) == 25 and max(indices_B.tolist()) < 29


# --- ProbCover -----------------------------------------------------------------------------------


def test_purity_radius_is_just_below_the_quantile_of_the_distance_to_another_cluster() -> None:
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=np.float32)
    # distances to the other cluster: 10, 9, 8 | 8, 9; the 5% quantile of 5 values is the smallest
    delta = purity_radius(x, num_classes=2, purity=0.95, seed=0)
    assert delta < 8.0 and delta == pytest.approx(8.0, abs=1e-5)
    assert purity_radius(x, num_classes=2, purity=0.5, seed=0) == pytest.approx(9.0, abs=1e-5)  # floor(0.5 * 5) = 2: [8, 8, 9, ...]


def np_probcover(x: np.ndarray, labeled: int, b: int, delta: float) -> list[int]:
    """The greedy rule by hand: each time, the candidate whose closed ball covers the most uncovered items."""
    within = np_distances(x, x) <= delta
    covered = within[:labeled].any(axis=0)
    chosen: list[int] = []
    for _ in range(b):
        gains = [-1 if i in chosen else int((within[labeled + i] & ~covered).sum()) for i in range(len(x) - labeled)]
        chosen.append(int(np.argmax(gains)))
        covered |= within[labeled + chosen[-1]]
    return chosen


@pytest.mark.parametrize("labeled", [0, 1])
def test_probcover_is_greedy_maximum_coverage(labeled: int) -> None:
    line = torch.tensor([[0.5], [0.0], [1.0], [5.0], [10.0], [10.4], [10.8], [11.2], [20.0]], dtype=torch.float64)
    indices_B, covered_B = probcover(line[labeled:], line[:labeled], 3, 2, torch.Generator(), delta=1.0)
    expected = np_probcover(line.numpy(), labeled, 3, 1.0)
    assert indices_B.tolist() == expected
    first = [5 - labeled, 0, 3 - labeled] if labeled == 0 else [5 - labeled, 3 - labeled, 8 - labeled]
    assert indices_B.tolist() == first  # 10.4 covers four, then 0.5 three (unless labeled), then 5 or 20 one
    assert covered_B.tolist()[0] == 4.0


def test_probcover_picks_at_random_once_everything_is_covered() -> None:
    line = torch.tensor([[0.0], [0.1], [0.2], [0.3]], dtype=torch.float64)
    a, scores = probcover(line, line[:0], 4, 2, torch.Generator().manual_seed(0), delta=1.0)
    assert a[0] == 0 and scores.tolist() == [4.0, 0.0, 0.0, 0.0] and sorted(a.tolist()) == [0, 1, 2, 3]
    b, _ = probcover(line, line[:0], 4, 2, torch.Generator().manual_seed(0), delta=1.0)
    assert a.tolist() == b.tolist()


# --- every rule: reproducible from the round's generator -----------------------------------------

EMBEDDING_RULES = [name for name in STRATEGIES.names() if isinstance(STRATEGIES.get(name), EmbeddingStrategy)]


def test_the_five_embedding_rules_are_registered() -> None:
    assert set(EMBEDDING_RULES) == {"badge", "coreset", "cluster_margin", "typiclust", "probcover"}


@pytest.mark.parametrize("name", EMBEDDING_RULES)
def test_each_rule_picks_distinct_candidates_reproducibly_from_the_generator(name: str) -> None:
    rule = STRATEGIES.get(name)
    embedded = Embedded(points(60, 5, 11).float(), points(6, 5, 12).float(), torch.rand(60, generator=torch.Generator().manual_seed(13)), 3)
    first = rule.select_embedded(embedded, 8, generator=torch.Generator().manual_seed(4))
    again = rule.select_embedded(embedded, 8, generator=torch.Generator().manual_seed(4))
    assert first.indices.tolist() == again.indices.tolist()
    torch.testing.assert_close(first.scores, again.scores, rtol=0, atol=0)
    assert len(set(first.indices.tolist())) == 8 and 0 <= min(first.indices.tolist()) and max(first.indices.tolist()) < 60
    assert torch.isfinite(first.scores).all()
    with pytest.raises(AlabError, match="select_embedded"):
        rule.select(embedded.scores_N, 60, 8, generator=torch.Generator())


def test_cluster_margin_scores_are_its_candidates_margins() -> None:
    rule = STRATEGIES.get("cluster_margin")
    assert rule.acquisition == "margin" and rule.candidates(10) == 100
    scores_M = torch.rand(40, generator=torch.Generator().manual_seed(5))
    chosen = rule.select_embedded(Embedded(points(40, 3, 6).float(), torch.zeros(0, 3), scores_M, 3), 5, generator=torch.Generator())
    torch.testing.assert_close(chosen.scores, scores_M[chosen.indices], rtol=0, atol=0)


def test_badge_uses_gradients_and_coreset_features_and_the_cold_start_rules_inputs() -> None:
    kinds = {name: (STRATEGIES.get(name).embedding, STRATEGIES.get(name).labeled) for name in EMBEDDING_RULES}
    assert kinds == {"badge": ("gradient", False), "coreset": ("features", True), "cluster_margin": ("features", False),
                     "typiclust": ("inputs", True), "probcover": ("inputs", True)}  # fmt: skip
    assert all(re.search(r"\(\w.* (19|20)\d\d\)$", STRATEGIES.summary(name)) for name in EMBEDDING_RULES)  # each names its paper
