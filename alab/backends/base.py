"""The Backend protocol: a Bayesian model that trains on the labeled set and samples whole networks.

`sample_networks(k)` returns K posterior samples (dropout masks, ensemble members, weight draws) as one
callable: the same K networks score every item it is given, chunk after chunk, which is what joint
quantities such as BatchBALD need and what lets K networks run as one matrix product.

Embedding-based acquisition (BADGE, Coreset, Cluster-Margin) needs the fitted model's embeddings
too: `embed` (the penultimate features, `Embeds`) and `gradient_embed` (the last layer's loss
gradient, `GradientEmbeds`). A backend without them cannot run those strategies: the run is refused
before it starts (`alab.loop.build_parts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from alab.registry import Registry

# x [N, ...] -> log_probs [K, N, C]
SampledNetworks = Callable[[Tensor], Tensor]


class Backend(Protocol):
    """A Bayesian classifier. `fit` returns self; log-probabilities are [K, N, C], samples first.

    Optional: `mean_network()` (one network for deterministic evaluation, as K = 1) and
    `diagnostics() -> dict` (a JSON-ready report on the last fit, written by the loop per round).
    """

    def fit(self, x: Tensor, y: Tensor, *, generator: torch.Generator) -> Backend: ...

    def sample_networks(self, k: int, *, generator: torch.Generator) -> SampledNetworks: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Embeds(Protocol):
    """A backend that gives the penultimate features of its fitted model (deterministic: dropout off, mean weights)."""

    def embed(self, x: Tensor) -> Tensor: ...  # x [N, ...] -> features_N_D on the CPU


@runtime_checkable
class GradientEmbeds(Protocol):
    """A classifier backend that gives the last layer's loss gradient at the predicted class (`gradient_embedding`)."""

    def gradient_embed(self, x: Tensor) -> Tensor: ...  # x [N, ...] -> gradients_N_E on the CPU


def gradient_embedding(log_probs_B_N_C: Tensor, features_B_N_D: Tensor) -> Tensor:
    """The last layer's cross-entropy gradient at the predicted class, of B networks side by side: [N, B*C*D].

    One network, last layer z = W h + b, p = softmax(z), the label it predicts y^ = argmax_c p_c:
    dL(y^)/dW = (p - e_y^) h^T, a C x D matrix, flattened (Ash et al. 2020, "Deep Batch Active
    Learning by Diverse, Uncertain Gradient Lower Bounds": BADGE's gradient embedding, weights only).
    B networks trained on the sum of their losses (a deep ensemble's members): the gradient of that
    sum over every last layer is the B blocks side by side, all at the label the B networks predict
    together (argmax of their mean probabilities). Shapes: [B, N, C], [B, N, D] -> [N, B*C*D].
    """
    B, N, C = log_probs_B_N_C.shape
    probs_B_N_C = log_probs_B_N_C.exp()
    predicted_N = probs_B_N_C.mean(dim=0).argmax(dim=1)
    residual_B_N_C = probs_B_N_C - F.one_hot(predicted_N, C).to(probs_B_N_C.dtype)
    gradients_B_N_C_D = residual_B_N_C[..., None] * features_B_N_D[:, :, None, :]
    return gradients_B_N_C_D.permute(1, 0, 2, 3).reshape(N, -1)  # [B, N, C, D] -> [N, B, C, D] -> [N, B*C*D]


def predict_log_probs(backend: Backend, x: Tensor, k: int, *, generator: torch.Generator) -> Tensor:
    """log p(y | x, w_k) for K posterior samples: [K, N, C]."""
    return backend.sample_networks(k, generator=generator)(x)


SCHEDULES = ("full", "keras", "resampled")


def _epoch_shape(n: int, batch_size: int, schedule: str, epoch_samples: int) -> tuple[int, int]:
    """(draws, batches) of one epoch of `schedule` (see `epoch_batches`)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    draws = max(epoch_samples, n) if schedule == "resampled" else n
    return draws, n // batch_size if schedule == "full" else math.ceil(draws / batch_size)


def epoch_batches(
    n: int, batch_size: int, *, epochs: int, min_steps: int, generator: torch.Generator, device: torch.device,
    schedule: str = "full", epoch_samples: int = 0,
) -> Iterator[list[Tensor]]:  # fmt: skip
    """The minibatches (index tensors) of each epoch in turn, reshuffled each epoch from `generator`.

    Steps = max(min_steps, epochs * batches per epoch), B = min(batch_size, N); the last epoch may stop
    part way. Batches per epoch, by `schedule`:
      full       floor(N / B): every batch full, the N mod B items an epoch leaves out differ from
                 epoch to epoch. A ragged last batch (2 items at N = 130, B = 64) makes a noisy final
                 Adam step that cost up to 10 points of accuracy.
      keras      ceil(N / B), the last one ragged (Keras' fit, as in Gal et al. 2017's code).
      resampled  ceil(E / B) over randperm(E) mod N, E = max(`epoch_samples`, N): every label seen
                 floor(E / N) or ceil(E / N) times an epoch, whatever N (BlackHC/BatchBALD's
                 RandomFixedLengthSampler, E = 5056; src/random_fixed_length_sampler.py).
    """
    batch_size = min(batch_size, n)
    draws, per_epoch = _epoch_shape(n, batch_size, schedule, epoch_samples)
    steps = max(min_steps, epochs * per_epoch)
    while steps > 0:
        order = torch.randperm(draws, generator=generator)
        order = (order % n if schedule == "resampled" else order).to(device)
        batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(min(per_epoch, steps))]
        steps -= len(batches)
        yield batches


def random_shift(x_B_C_H_W: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Each image translated by its own (dy, dx), drawn uniformly from {-s..s}^2, edges replicated.

    The small random shifts of image augmentation (as in Simard, Steinkraus & Platt 2003's
    elastic-and-affine MNIST distortions, shifts only); offsets come from `generator` (on the CPU).
    """
    B, _, H, W = x_B_C_H_W.shape
    s = max_shift
    offsets_B_2 = torch.randint(0, 2 * s + 1, (B, 2), generator=generator).to(x_B_C_H_W.device)
    padded = F.pad(x_B_C_H_W, (s, s, s, s), mode="replicate")  # [B, C, H + 2s, W + 2s]
    rows_B_H = torch.arange(H, device=padded.device) + offsets_B_2[:, :1]
    cols_B_W = torch.arange(W, device=padded.device) + offsets_B_2[:, 1:]
    batch_B = torch.arange(B, device=padded.device)[:, None, None]
    shifted_B_H_W_C = padded.permute(0, 2, 3, 1)[batch_B, rows_B_H[:, :, None], cols_B_W[:, None, :]]
    return shifted_B_H_W_C.permute(0, 3, 1, 2).contiguous()


def minibatches(
    n: int, batch_size: int, *, epochs: int, min_steps: int, generator: torch.Generator, device: torch.device, desc: str,
    schedule: str = "full", epoch_samples: int = 0,
) -> Iterator[Tensor]:  # fmt: skip
    """The batches of `epoch_batches`, one after another, with a progress bar."""
    total = max(min_steps, epochs * _epoch_shape(n, min(batch_size, n), schedule, epoch_samples)[1])
    bar = tqdm(total=total, desc=desc, leave=False, disable=None, mininterval=0.5)
    with bar:
        for epoch in epoch_batches(
            n, batch_size, epochs=epochs, min_steps=min_steps, generator=generator, device=device,
            schedule=schedule, epoch_samples=epoch_samples,
        ):  # fmt: skip
            for batch in epoch:
                yield batch
                bar.update()


# name -> factory(params: dict, *, input_shape, num_classes, device) -> Backend
BackendFactory = Callable[..., Backend]
BACKENDS: Registry[BackendFactory] = Registry("backend")
