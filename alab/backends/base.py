"""The Backend protocol: a Bayesian model that trains on the labeled set and samples whole networks.

`sample_networks(k)` returns K posterior samples (dropout masks, ensemble members, weight draws) as one
callable: the same K networks score every item it is given, chunk after chunk, which is what joint
quantities such as BatchBALD need and what lets K networks run as one matrix product.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from alab.registry import Registry

# x [N, ...] -> log_probs [K, N, C]
SampledNetworks = Callable[[Tensor], Tensor]


class Backend(Protocol):
    """A Bayesian classifier. `fit` returns self; log-probabilities are [K, N, C], samples first."""

    def fit(self, x: Tensor, y: Tensor, *, generator: torch.Generator) -> Backend: ...

    def sample_networks(self, k: int, *, generator: torch.Generator) -> SampledNetworks: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def predict_log_probs(backend: Backend, x: Tensor, k: int, *, generator: torch.Generator) -> Tensor:
    """log p(y | x, w_k) for K posterior samples: [K, N, C]."""
    return backend.sample_networks(k, generator=generator)(x)


def minibatches(
    n: int, batch_size: int, *, epochs: int, min_steps: int, generator: torch.Generator, device: torch.device, desc: str
) -> Iterator[Tensor]:
    """Indices of full minibatches, reshuffled each epoch from `generator`, with a progress bar.

    Steps = max(min_steps, epochs * floor(N / B)), B = min(batch_size, N). Every batch is full: the
    N mod B items an epoch leaves out differ from epoch to epoch. A ragged last batch (2 items at
    N = 130, B = 64) makes a noisy final Adam step that cost up to 10 points of accuracy.
    """
    batch_size = min(batch_size, n)
    batches_per_epoch = n // batch_size
    steps = max(min_steps, epochs * batches_per_epoch)
    order_N = torch.empty(0, dtype=torch.long)
    for step in tqdm(range(steps), desc=desc, leave=False, disable=None, mininterval=0.5):
        start = (step % batches_per_epoch) * batch_size
        if start == 0:
            order_N = torch.randperm(n, generator=generator).to(device)
        yield order_N[start : start + batch_size]


# name -> factory(params: dict, *, input_shape, num_classes, device) -> Backend
BackendFactory = Callable[..., Backend]
BACKENDS: Registry[BackendFactory] = Registry("backend")
