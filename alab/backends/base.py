"""The Backend protocol: a Bayesian model that trains on the labeled set and samples whole networks.

`sample_networks(k)` returns K posterior samples (dropout masks, ensemble members, weight draws) as one
callable: the same K networks score every item it is given, chunk after chunk, which is what joint
quantities such as BatchBALD need and what lets K networks run as one matrix product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

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


# name -> factory(params: dict, *, input_shape, num_classes, device) -> Backend
BackendFactory = Callable[..., Backend]
BACKENDS: Registry[BackendFactory] = Registry("backend")
