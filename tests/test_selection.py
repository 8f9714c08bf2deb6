from __future__ import annotations

import torch
import pytest

from alab.errors import AlabError
from alab.selection import STRATEGIES, random_subset, topk


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


def test_every_top_k_strategy_names_a_registered_acquisition() -> None:
    from alab.acquisition import ACQUISITIONS
    from alab.regression import REGRESSION_ACQUISITIONS

    for name in STRATEGIES.names():
        acquisition = STRATEGIES.get(name).acquisition
        assert acquisition is None or acquisition in ACQUISITIONS or acquisition in REGRESSION_ACQUISITIONS
