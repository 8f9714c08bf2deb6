"""Batch rules and strategies: which pool items to ask for, given their acquisition scores.

A strategy names the acquisition function the pool must be scored with (None: no scores needed)
and the rule that turns scores into a batch. Higher score = acquire, always.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from alab.errors import AlabError
from alab.registry import Registry


@dataclass(frozen=True)
class Selection:
    """Chosen positions in the scored candidate list, best first, with their scores."""

    indices: Tensor  # [B] int64
    scores: Tensor  # [B] float


def topk(scores_N: Tensor, b: int) -> Selection:
    """The b highest scores; ties broken by position (lowest first) so the choice is reproducible."""
    if not torch.isfinite(scores_N).all():
        raise AlabError("non-finite acquisition scores: the model diverged; lower backend.lr or raise backend.weight_decay")
    # A stable descending sort keeps equal scores in pool order: deterministic across runs and devices.
    order_N = torch.sort(scores_N, descending=True, stable=True).indices
    chosen_B = order_N[:b]
    return Selection(indices=chosen_B, scores=scores_N[chosen_B])


def random_subset(n: int, b: int, generator: torch.Generator) -> Selection:
    """b of n positions uniformly without replacement."""
    chosen_B = torch.randperm(n, generator=generator)[:b]
    return Selection(indices=chosen_B, scores=torch.zeros(len(chosen_B)))


class Strategy(Protocol):
    """An acquisition function to score the pool with, and a batch rule."""

    acquisition: str | None

    def select(self, scores_N: Tensor | None, n: int, b: int, *, generator: torch.Generator) -> Selection: ...


@dataclass(frozen=True)
class TopK:
    """Score the pool with `acquisition`, take the b best (the classic batch rule)."""

    acquisition: str

    def select(self, scores_N: Tensor | None, n: int, b: int, *, generator: torch.Generator) -> Selection:
        assert scores_N is not None and len(scores_N) == n
        return topk(scores_N, b)


@dataclass(frozen=True)
class Uniform:
    """Uniform random sampling from the pool: the baseline every strategy must beat."""

    acquisition: None = None

    def select(self, scores_N: Tensor | None, n: int, b: int, *, generator: torch.Generator) -> Selection:
        return random_subset(n, b, generator)


STRATEGIES: Registry[Strategy] = Registry("strategy")
STRATEGIES.add("random", Uniform(), "uniform random sampling from the pool (baseline)")
for _name, _summary in {
    "bald": "top-k BALD, mutual information between label and weights (Houlsby 2011, Gal 2017)",
    "max_entropy": "top-k predictive entropy (Shannon 1948)",
    "variance": "top-k mean standard deviation of the class probabilities (Gal 2017's Mean STD)",
    "var_ratios": "top-k variation ratio, 1 - modal fraction across samples (Freeman 1965)",
    "margin": "top-k smallest margin between the two most probable classes",
    "least_confidence": "top-k lowest probability of the most probable class",
}.items():
    STRATEGIES.add(_name, TopK(_name), _summary)

# Regression strategies (`alab.regression`; "bald" and "random" above serve regression data sets too).
STRATEGIES.add("epistemic_variance", TopK("epistemic_variance"), "regression: top-k variance of the predicted means (epistemic)")
STRATEGIES.add("total_variance", TopK("total_variance"), "regression: top-k predictive variance (epistemic + aleatoric)")
