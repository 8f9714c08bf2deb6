"""Run K sampled networks over the pool in chunks, on the device, keeping only what selection needs.

Memory is O(chunk) whatever the pool size: log-probabilities [K, chunk, C] live for one chunk, then
reduce on the device to scores, and, for top-k rules, to a running top-k of the pool so far. Nothing
waits for the device inside the loop (no host synchronization per chunk): sums, the running top-k
and the finiteness check stay on the device until the pool is done. On a GPU, each chunk is
gathered on the host into pinned memory and copied without blocking, so the next chunk is gathered
while the device computes; the matrix products can run under autocast (bf16/fp16) while the
log-softmax and every reduction stay in float32.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from alab.acquisition.base import Selection
from alab.acquisition.scores import bald, max_entropy, predictive_log_probs
from alab.backends.base import SampledNetworks
from alab.errors import AlabError

NON_FINITE = "non-finite acquisition scores: the model diverged; lower backend.lr in the run's config.toml, then `alab resume` it"


class PoolSource(Protocol):
    """Anything that gives the pool items at some indices as a tensor: a Tensor, or a lazy reader."""

    def __getitem__(self, indices_B: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class PoolScores:
    """Acquisition scores of the candidates (or their streamed top-k) and the pool's mean uncertainties."""

    scores_N: Tensor | None  # [N] on the CPU, candidates' order; None when top_k was asked for
    mean_bald: float  # epistemic uncertainty, averaged over the pool
    mean_entropy: float  # total uncertainty
    seconds: float
    top: Selection | None = None  # the top_k best positions in the candidate list, on the CPU


def chunks(indices_N: Tensor, chunk_size: int) -> Iterator[Tensor]:
    for start in range(0, len(indices_N), chunk_size):
        yield indices_N[start : start + chunk_size]


class RunningTopK:
    """The b highest scores seen so far, merged chunk by chunk on the device, without host syncs.

    Equals `alab.acquisition.base.topk` over the whole pool, ties included (lowest position first): the kept
    items all precede the new chunk, and both are in position order among equal scores, so a
    stable descending sort of [kept, chunk] keeps the whole-pool order.
    """

    def __init__(self, b: int) -> None:
        self.b = b
        self.scores_B: Tensor | None = None
        self.positions_B: Tensor | None = None
        self.finite: Tensor | None = None  # a 0-d bool on the device

    def update(self, scores_M: Tensor, start: int) -> None:
        """Merge the scores of positions start .. start + M - 1."""
        positions_M = torch.arange(start, start + len(scores_M), device=scores_M.device)
        finite = torch.isfinite(scores_M).all()
        if self.scores_B is None or self.positions_B is None or self.finite is None:
            self.finite, candidates, positions = finite, scores_M, positions_M
        else:
            self.finite = self.finite & finite
            candidates = torch.cat([self.scores_B, scores_M])
            positions = torch.cat([self.positions_B, positions_M])
        order = torch.sort(candidates, descending=True, stable=True).indices[: self.b]
        self.scores_B, self.positions_B = candidates[order], positions[order]

    def result(self) -> Selection:
        """The selection (best first) on the CPU; AlabError if any score was NaN or infinite."""
        if self.scores_B is None or self.positions_B is None or self.finite is None:
            return Selection(indices=torch.zeros(0, dtype=torch.long), scores=torch.zeros(0))
        if not bool(self.finite):
            raise AlabError(NON_FINITE)
        return Selection(indices=self.positions_B.cpu(), scores=self.scores_B.cpu())


def _to_device(x_B: Tensor, device: torch.device) -> Tensor:
    """Host -> device without blocking: pinned (page-locked) host memory lets the copy run async."""
    if device.type == "cpu" or x_B.device == device:
        return x_B
    return x_B.pin_memory().to(device, non_blocking=True)


def score_pool(
    networks: SampledNetworks,
    x: Tensor | PoolSource,
    indices_N: Tensor,
    acquisition: Callable[[Tensor], Tensor] | None,
    *,
    chunk_size: int,
    top_k: int | None = None,
    device: torch.device | None = None,
    autocast: torch.dtype | None = None,
    desc: str = "score",
) -> PoolScores:
    """Score the items `x[indices_N]` with `acquisition` over the K `networks`, chunk by chunk.

    `top_k`: keep only a running top-k of the scores (`PoolScores.top`, equal to `topk(scores_N,
    top_k)`), so memory stays O(chunk) however large the pool. `device`: where the chunks go
    (default: wherever `networks` puts them). `autocast`: a low-precision dtype for the networks'
    matrix products on a GPU (log-probabilities and every reduction stay float32).
    """
    start = time.perf_counter()
    device = device if device is not None else torch.device("cpu")
    scores: list[Tensor] = []
    running = RunningTopK(top_k) if top_k is not None and acquisition is not None else None
    bald_sum = torch.zeros((), dtype=torch.float64, device=device)
    entropy_sum = torch.zeros((), dtype=torch.float64, device=device)
    position = 0
    with torch.inference_mode():
        for chunk in tqdm(list(chunks(indices_N, chunk_size)), desc=desc, leave=False, disable=None):
            x_B = _to_device(x[chunk], device)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                log_probs_K_B_C = networks(x_B)
            log_probs_K_B_C = log_probs_K_B_C.float()
            # Sums stay on the device until the end: no host synchronization per chunk.
            bald_B = bald(log_probs_K_B_C)
            bald_sum = bald_sum.to(bald_B.device) + bald_B.sum(dtype=torch.float64)
            entropy_sum = entropy_sum.to(bald_B.device) + max_entropy(log_probs_K_B_C).sum(dtype=torch.float64)
            if acquisition is not None:
                scores_B = bald_B if acquisition is bald else acquisition(log_probs_K_B_C).float()
                if running is not None:
                    running.update(scores_B, position)
                else:
                    scores.append(scores_B)
            position += len(chunk)
    n = max(len(indices_N), 1)
    top = running.result() if running is not None else None
    scores_N = torch.cat(scores).cpu() if acquisition is not None and running is None else None
    if scores_N is not None and not bool(torch.isfinite(scores_N).all()):
        raise AlabError(NON_FINITE)
    return PoolScores(scores_N, float(bald_sum) / n, float(entropy_sum) / n, time.perf_counter() - start, top)


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


def embed_items(embed: Callable[[Tensor], Tensor], x: Tensor | PoolSource, indices_N: Tensor, *, chunk_size: int) -> Tensor:
    """`embed` (x [B, ...] -> [B, D]) of the items `x[indices_N]`, chunk by chunk: [N, D] float32 on the CPU.

    For embedding-based selection: the backend's `embed` or `gradient_embed`, or the inputs themselves.
    """
    out: list[Tensor] = []
    with torch.inference_mode():
        for chunk in list(chunks(indices_N, chunk_size)) or [indices_N]:  # an empty set still has a width D
            out.append(embed(x[chunk]).float().cpu())
    return torch.cat(out)


def predict(networks: SampledNetworks, x: Tensor, *, chunk_size: int) -> Tensor:
    """The posterior predictive log p(y | x) = log mean_k p(y | x, w_k): [N, C] on the CPU."""
    out: list[Tensor] = []
    with torch.inference_mode():
        for chunk in chunks(torch.arange(len(x)), chunk_size):
            out.append(predictive_log_probs(networks(x[chunk])).cpu())
    return torch.cat(out)
