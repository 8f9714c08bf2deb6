"""Stochastic batch rules: sample the batch from the scores instead of taking the top b.

Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal (2023), "Stochastic Batch
Acquisition: A Simple Baseline for Deep Active Learning". Draws without replacement by the
Gumbel-top-k trick, from the generator the loop passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from alab.acquisition.base import Selection
from alab.errors import AlabError


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
