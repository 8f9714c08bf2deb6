"""What every batch rule shares: the selection it returns, top-k, and the strategy protocols.

A strategy names the acquisition function the pool must be scored with (None: no scores needed)
and the rule that turns scores into a batch. Higher score = acquire, always. The kinds of strategy
the loop knows, by what they need besides the scores: `TopK` and `Uniform` here; `JointStrategy`
(the candidates' log-probabilities, `alab.acquisition.joint`); `TargetStrategy` (target inputs'
log-probabilities under the same networks: EPIG, `alab.acquisition.scores`); `EmbeddingStrategy`
(the items' embeddings: BADGE, Coreset, Cluster-Margin, TypiClust, ProbCover,
`alab.acquisition.embedding`); stochastic rules need the scores only (`alab.acquisition.stochastic`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from alab.errors import AlabError


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


@runtime_checkable
class JointStrategy(Strategy, Protocol):
    """A strategy that needs the candidates' log-probabilities, not only their scores (BatchBALD).

    The loop keeps the `candidates` best items by `acquisition`, gathers their log-probabilities
    under the same K sampled networks that scored the pool, and calls `select_joint`; the indices
    it returns are positions in that top list.
    """

    candidates: int

    def select_joint(self, log_probs_K_M_C: Tensor, b: int, *, generator: torch.Generator) -> Selection: ...


@runtime_checkable
class TargetStrategy(Strategy, Protocol):
    """A top-k strategy whose scores need the log-probabilities of target inputs x*_1..x*_M (EPIG).

    Before scoring the pool, the loop runs the same K sampled networks over this round's targets and
    scores the pool with `scorer(log_probs_K_M_C)`; `select` then takes the top b.
    """

    def scorer(self, log_probs_K_M_C: Tensor) -> Callable[[Tensor], Tensor]: ...


@dataclass(frozen=True)
class Embedded:
    """What an embedding rule chooses from: the candidates' embeddings, the labeled set's, and the candidates' scores."""

    candidates_N_D: Tensor  # [N, D] on the CPU, in candidate order
    labeled_L_D: Tensor  # [L, D]; [0, D] for a rule that does not read it
    scores_N: Tensor | None  # the candidates' `acquisition` scores; None for a rule that names none
    num_classes: int  # the task's classes (0 for regression)


@runtime_checkable
class EmbeddingStrategy(Strategy, Protocol):
    """A strategy that chooses from the items' embeddings (BADGE, Coreset, Cluster-Margin, TypiClust, ProbCover).

    `embedding` names what to embed the items with: "features" (the fitted model's penultimate
    features, `Backend.embed`), "gradient" (its last layer's gradient, `Backend.gradient_embed`) or
    "inputs" (the inputs, flattened). With an `acquisition`, the loop first keeps the
    `candidates(b)` best items by it (None: all) and embeds only those. `labeled`: the rule reads the
    labeled set's embeddings too. `classification`: it needs class log-probabilities or classes.
    `select_embedded` returns positions in the candidates it was given.
    """

    embedding: str
    labeled: bool
    classification: bool

    def candidates(self, b: int) -> int | None: ...

    def select_embedded(self, embedded: Embedded, b: int, *, generator: torch.Generator) -> Selection: ...

