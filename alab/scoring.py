"""Run K sampled networks over the pool in chunks, on the device, keeping only what selection needs.

Memory is O(chunk): log-probabilities [K, chunk, C] live for one chunk, then reduce to scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from alab.acquisition import bald, max_entropy, predictive_log_probs
from alab.backends.base import SampledNetworks


@dataclass(frozen=True)
class PoolScores:
    """Acquisition scores of the candidates (if asked for) and the pool's mean uncertainties."""

    scores_N: Tensor | None  # [N] on the CPU, candidates' order
    mean_bald: float  # epistemic uncertainty, averaged over the pool
    mean_entropy: float  # total uncertainty
    seconds: float


def chunks(indices_N: Tensor, chunk_size: int) -> Iterator[Tensor]:
    for start in range(0, len(indices_N), chunk_size):
        yield indices_N[start : start + chunk_size]


def score_pool(
    networks: SampledNetworks,
    x: Tensor,
    indices_N: Tensor,
    acquisition: Callable[[Tensor], Tensor] | None,
    *,
    chunk_size: int,
    desc: str = "score",
) -> PoolScores:
    """Score the items `x[indices_N]` with `acquisition` over the K `networks`, chunk by chunk."""
    start = time.perf_counter()
    scores: list[Tensor] = []
    bald_sum = torch.zeros((), dtype=torch.float64)
    entropy_sum = torch.zeros((), dtype=torch.float64)
    with torch.inference_mode():
        for chunk in tqdm(list(chunks(indices_N, chunk_size)), desc=desc, leave=False, disable=None):
            log_probs_K_B_C = networks(x[chunk])
            # Sums stay on the device until the end: no host synchronization per chunk.
            bald_sum = bald_sum.to(log_probs_K_B_C.device) + bald(log_probs_K_B_C).sum(dtype=torch.float64)
            entropy_sum = entropy_sum.to(log_probs_K_B_C.device) + max_entropy(log_probs_K_B_C).sum(dtype=torch.float64)
            if acquisition is not None:
                scores.append(acquisition(log_probs_K_B_C).float())
    n = max(len(indices_N), 1)
    scores_N = torch.cat(scores).cpu() if acquisition is not None else None
    return PoolScores(scores_N, float(bald_sum) / n, float(entropy_sum) / n, time.perf_counter() - start)


def candidate_log_probs(networks: SampledNetworks, x: Tensor, indices_M: Tensor, *, chunk_size: int) -> Tensor:
    """log p(y | x, w_k) of the items `x[indices_M]` under the same K `networks`: [K, M, C], on their device.

    For joint strategies (BatchBALD), after `score_pool` has found the M candidates: a second pass over
    M items only, so memory is O(K * M * C) whatever the pool size.
    """
    out: list[Tensor] = []
    with torch.inference_mode():
        for chunk in chunks(indices_M, chunk_size):
            out.append(networks(x[chunk]))
    return torch.cat(out, dim=1)


def predict(networks: SampledNetworks, x: Tensor, *, chunk_size: int) -> Tensor:
    """The posterior predictive log p(y | x) = log mean_k p(y | x, w_k): [N, C] on the CPU."""
    out: list[Tensor] = []
    with torch.inference_mode():
        for chunk in chunks(torch.arange(len(x)), chunk_size):
            out.append(predictive_log_probs(networks(x[chunk])).cpu())
    return torch.cat(out)
