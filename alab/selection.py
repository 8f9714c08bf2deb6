"""Batch rules and strategies: which pool items to ask for, given their acquisition scores.

A strategy names the acquisition function the pool must be scored with (None: no scores needed)
and the rule that turns scores into a batch. Higher score = acquire, always.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from alab.batchbald import DEFAULT_NUM_SAMPLES, batchbald
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


@runtime_checkable
class JointStrategy(Strategy, Protocol):
    """A strategy that needs the candidates' log-probabilities, not only their scores (BatchBALD).

    The loop keeps the `candidates` best items by `acquisition`, gathers their log-probabilities
    under the same K sampled networks that scored the pool, and calls `select_joint`; the indices
    it returns are positions in that top list.
    """

    candidates: int

    def select_joint(self, log_probs_K_M_C: Tensor, b: int, *, generator: torch.Generator) -> Selection: ...


@dataclass(frozen=True)
class BatchBALD:
    """Greedy BatchBALD over the `candidates` best items by BALD (see `alab.batchbald`).

    Selection.scores are the marginal gains I[y_i; w | y_1..y_(i-1)]; their sum is the batch's
    joint mutual information. Pre-filtering the pool by BALD follows Kirsch et al. (2019)'s code.
    """

    acquisition: str = "bald"
    candidates: int = 1000
    num_samples: int = DEFAULT_NUM_SAMPLES

    def select(self, scores_N: Tensor | None, n: int, b: int, *, generator: torch.Generator) -> Selection:
        raise AlabError("batchbald needs the candidates' log-probabilities: call select_joint (the loop does)")

    def select_joint(self, log_probs_K_M_C: Tensor, b: int, *, generator: torch.Generator) -> Selection:
        indices_B, gains_B = batchbald(log_probs_K_M_C, b, num_samples=self.num_samples, generator=generator)
        return Selection(indices=indices_B, scores=gains_B.float())


def gumbel_topk(log_weights_N: Tensor, b: int, generator: torch.Generator) -> Tensor:
    """b indices drawn without replacement with probabilities proportional to exp(log_weights_N).

    argtop-b of log w_i + G_i, G_i ~ Gumbel(0, 1) i.i.d., is a draw of b items without
    replacement (sequential sampling proportional to w). Kool, van Hoof & Welling (2019),
    "Stochastic Beams and Where to Find Them: The Gumbel-Top-k Trick".
    """
    u_N = torch.rand(log_weights_N.shape, generator=generator, dtype=torch.float64)
    # -log(-log u); u = 0 has probability 2^-53 per draw but would give -inf, so keep it inside (0, 1).
    gumbel_N = -torch.log(-torch.log(u_N.clamp(min=torch.finfo(torch.float64).tiny)))
    return torch.sort(log_weights_N.double().cpu() + gumbel_N, descending=True, stable=True).indices[:b]


StochasticMode = Literal["power", "softmax", "softrank"]


@dataclass(frozen=True)
class Stochastic:
    """Sample the batch from the scores instead of taking the top b (Kirsch et al. 2023).

    Without replacement, with probabilities proportional to
      power:    s_i^beta                   (scores must be >= 0; a score of 0 is never picked
                                            while a positive one remains)
      softmax:  exp(beta * s_i)
      softrank: rank_i^(-beta)             (rank 1 = highest score)
    beta -> 0 is uniform sampling, beta -> inf top-k. Kirsch, Farquhar, Atighehchian, Jesson,
    Branchaud-Charron & Gal (2023), "Stochastic Batch Acquisition: A Simple Baseline for Deep
    Active Learning".
    """

    acquisition: str
    mode: StochasticMode
    beta: float = 1.0

    def select(self, scores_N: Tensor | None, n: int, b: int, *, generator: torch.Generator) -> Selection:
        assert scores_N is not None and len(scores_N) == n
        if not torch.isfinite(scores_N).all():
            raise AlabError("non-finite acquisition scores: the model diverged; lower backend.lr or raise backend.weight_decay")
        scores64_N = scores_N.double().cpu()
        if self.mode == "power":
            if bool((scores64_N < 0).any()):
                raise AlabError(f"power sampling needs scores >= 0, but {self.acquisition} gave {float(scores64_N.min()):.3g}")
            log_weights_N = self.beta * torch.log(scores64_N)
        elif self.mode == "softmax":
            log_weights_N = self.beta * scores64_N
        else:
            ranks_N = torch.empty(n, dtype=torch.float64)
            ranks_N[torch.sort(scores64_N, descending=True, stable=True).indices] = torch.arange(1, n + 1, dtype=torch.float64)
            log_weights_N = -self.beta * torch.log(ranks_N)
        chosen_B = gumbel_topk(log_weights_N, b, generator).to(scores_N.device)
        return Selection(indices=chosen_B, scores=scores_N[chosen_B])


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
STRATEGIES.add("batchbald", BatchBALD(), "BatchBALD: greedy joint mutual information of the batch (Kirsch 2019)")
for _name, _acquisition, _mode in (
    ("powerbald", "bald", "power"),
    ("softmaxbald", "bald", "softmax"),
    ("softrankbald", "bald", "softrank"),
    ("powerentropy", "max_entropy", "power"),
):
    STRATEGIES.add(
        _name,
        Stochastic(_acquisition, _mode),
        f"{_acquisition} scores, batch sampled by {_mode} (beta = 1) without replacement (Kirsch 2023)",
    )

# Regression strategies (`alab.regression`; "bald" and "random" above serve regression data sets too).
STRATEGIES.add("epistemic_variance", TopK("epistemic_variance"), "regression: top-k variance of the predicted means (epistemic)")
STRATEGIES.add("total_variance", TopK("total_variance"), "regression: top-k predictive variance (epistemic + aleatoric)")
