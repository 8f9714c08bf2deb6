"""One round's selection: what each kind of strategy needs beside the pool's scores, then its rule.

    TopK, Stochastic, Uniform   the candidates' scores (TopK: their streamed top-k)
    TargetStrategy (EPIG)       the target inputs' log-probabilities [K, M, C], before the pool is scored
    JointStrategy (BatchBALD)   the top candidates' log-probabilities [K, M, C], after
    EmbeddingStrategy           the candidates' (and the labeled set's) embeddings, after

Everything runs under the round's K sampled networks or the backend's fitted model, chunk by chunk,
and every random choice draws from the generator the loop passes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from alab.acquisition.base import Embedded, EmbeddingStrategy, JointStrategy, Selection, Strategy, TargetStrategy, TopK
from alab.backends import Backend, Embeds, GradientEmbeds, SampledNetworks
from alab.config import RunConfig
from alab.data import Dataset
from alab.errors import AlabError
from alab.scoring import candidate_log_probs, embed_items
from alab.tasks import Scored, Task

EMBEDDINGS = {"features": (Embeds, "embed", "penultimate features"), "gradient": (GradientEmbeds, "gradient_embed", "last-layer gradient embeddings")}


def check_backend_support(backend: Backend, backend_name: str, strategy_name: str, strategy: Strategy) -> None:
    """A one-line AlabError when `strategy` needs embeddings that `backend` does not give."""
    if isinstance(strategy, EmbeddingStrategy) and strategy.embedding in EMBEDDINGS:
        protocol, method, what = EMBEDDINGS[strategy.embedding]
        if not isinstance(backend, protocol):
            raise AlabError(
                f"strategy {strategy_name!r} needs the fitted model's {what} ({method}), which backend {backend_name!r} "
                f"does not give; use another backend (mc_dropout, ensemble and vi give them) or another strategy"
            )


def target_inputs(config: RunConfig, dataset: Dataset) -> Tensor | None:
    """EPIG's target inputs named by `epig_target_inputs`: None for the pool, else a tensor [M', ...] (labels never read)."""
    source = config.epig_target_inputs
    if source == "pool":
        return None
    if source in ("validation", "test"):
        x = dataset.x_val if source == "validation" else dataset.x_test
        if x is None or not len(x):
            fix = "set validation = N (items carved from the training split)" if source == "validation" else "choose another"
            raise AlabError(f"epig_target_inputs = {source!r}, but {dataset.name} has no {source} set here; {fix}")
        return x
    path = Path(source).expanduser()
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise AlabError(f"epig_target_inputs {path}: cannot read it as a .npy array ({err})") from None
    shape = tuple(dataset.input_shape)
    if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != shape or not len(array) or not np.issubdtype(array.dtype, np.number):
        raise AlabError(f"epig_target_inputs {path} must hold numbers of shape [M, {', '.join(map(str, shape))}] like the pool's items; got {array.dtype} {list(array.shape)}")
    if not np.isfinite(array).all():
        raise AlabError(f"epig_target_inputs {path} holds NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def round_scorer(
    strategy: Strategy, task: Task, networks: SampledNetworks, targets: Tensor | None, chunk_size: int
) -> Callable[[Tensor], Tensor] | None:
    """The pool's score this round: the strategy's registered acquisition, or EPIG's against `targets` [M, ...]."""
    if isinstance(strategy, TargetStrategy):
        assert targets is not None
        log_probs_K_M_C = candidate_log_probs(networks, targets, torch.arange(len(targets)), chunk_size=chunk_size)
        return strategy.scorer(log_probs_K_M_C)
    return task.acquisitions.get(strategy.acquisition) if strategy.acquisition is not None else None


def streamed_top_k(strategy: Strategy, b: int) -> int | None:
    """How many of the best-scored candidates the strategy chooses from (None: it needs every score, or none)."""
    if isinstance(strategy, (TopK, TargetStrategy)):
        return b
    if isinstance(strategy, JointStrategy):
        return strategy.candidates
    if isinstance(strategy, EmbeddingStrategy) and strategy.acquisition is not None:
        return strategy.candidates(b)
    return None


def select_batch(
    strategy: Strategy, pool: Scored, b: int, *, networks: SampledNetworks, backend: Backend, dataset: Dataset,
    candidates_N: Tensor, labeled_L: Tensor, chunk_size: int, generator: torch.Generator,
) -> Selection:  # fmt: skip
    """The batch, as positions in `candidates_N` (pool indices) with their scores, best or first picked first."""
    if isinstance(strategy, (JointStrategy, EmbeddingStrategy)):
        top = pool.top
        positions_M = top.indices if top is not None else torch.arange(len(candidates_N))
        scores_M = top.scores if top is not None else pool.scores_N
        if isinstance(strategy, JointStrategy):
            log_probs_K_M_C = candidate_log_probs(networks, dataset.x_pool, candidates_N[positions_M], chunk_size=chunk_size)
            chosen = strategy.select_joint(log_probs_K_M_C, b, generator=generator)
        else:
            embedded = embed(strategy, backend, dataset, candidates_N[positions_M], labeled_L, scores_M, chunk_size)
            chosen = strategy.select_embedded(embedded, b, generator=generator)
        return Selection(indices=positions_M[chosen.indices], scores=chosen.scores)
    if pool.top is not None:
        return pool.top
    return strategy.select(pool.scores_N, len(candidates_N), b, generator=generator)


def embed(
    strategy: EmbeddingStrategy, backend: Backend, dataset: Dataset, items_M: Tensor, labeled_L: Tensor,
    scores_M: Tensor | None, chunk_size: int,
) -> Embedded:  # fmt: skip
    """The items' (and, for a rule that reads them, the labeled set's) embeddings of the strategy's kind."""
    if strategy.embedding == "inputs":
        embedding: Callable[[Tensor], Tensor] = lambda x: x.flatten(1).float()  # noqa: E731
    else:
        embedding = getattr(backend, EMBEDDINGS[strategy.embedding][1])
    candidates_M_D = embed_items(embedding, dataset.x_pool, items_M, chunk_size=chunk_size)
    labeled_L_D = embed_items(embedding, dataset.x_pool, labeled_L, chunk_size=chunk_size) if strategy.labeled else candidates_M_D[:0]
    return Embedded(candidates_M_D, labeled_L_D, scores_M, len(dataset.classes))
