"""Deep ensembles (Lakshminarayanan, Pritzel & Blundell 2017): M networks from M initializations.

The posterior is represented by its M members, p(y | x) ~ (1/M) sum_m p(y | x, w_m); a member is a
`Network` from `alab.models` with dropout off. The members are not trained one after another: their
parameters are stacked along a leading member axis (`torch.func.stack_module_state`) and one
`vmap` of `functional_call` runs all M forward and backward passes as batched operations, with one
Adam over the stacked tensors. Adam and the L2 penalty act elementwise, so this is exactly M
independent Adams, each on its own member's mean cross-entropy.

Minibatch order is shared: one permutation of the labeled set per epoch, the same for every member
(diversity comes from the initializations, which Lakshminarayanan et al. found to matter most, and
a shared batch lets the first layer of all M members run as one wide matrix product).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from alab.backends.base import BACKENDS, SampledNetworks, gradient_embedding, minibatches
from alab.config import from_mapping
from alab.errors import AlabError
from alab.models import Network, build_model

Stacked = dict[str, Tensor]  # parameter name -> [M, *shape]


@dataclass(frozen=True)
class EnsembleParams:
    """Hyperparameters of the deep ensemble backend (the `[backend]` table of a recipe)."""

    model: str = "auto"  # gal_cnn | mlp | auto (gal_cnn for 1x28x28 images, else mlp)
    members: int = 5  # M networks, each from its own initialization
    epochs: int = 50  # passes over the labeled set ...
    min_steps: int = 300  # ... but at least this many gradient steps (small labeled sets)
    batch_size: int = 64
    lr: float = 1e-3  # Adam
    weight_decay: float = 0.5  # c in each member's L2 penalty (c / N) * ||w||^2, N = labeled set size

    def __post_init__(self) -> None:
        for name in ("members", "batch_size"):
            if getattr(self, name) < 1:
                raise AlabError(f"backend.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("epochs", "min_steps"):
            if getattr(self, name) < 0:
                raise AlabError(f"backend.{name} must not be negative, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise AlabError("backend.lr must be > 0 and backend.weight_decay >= 0")


def stacked_logits(base: Network, stacked: Stacked, x: Tensor) -> Tensor:
    """Logits [M, N, C] of the M members in `stacked` on the same inputs x [N, ...], one vmapped call.

    `base` only supplies the architecture (its own weights may live on the meta device).
    """

    def member_logits(member: Stacked, x: Tensor) -> Tensor:
        return functional_call(base, member, (x,))  # generator None: dropout off

    return vmap(member_logits, in_dims=(0, None))(stacked, x)


class _Embedding(nn.Module):
    """`Network.embed` as a module's forward, so that `functional_call` can run it with a member's weights."""

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.network.embed(x)


def stacked_embeddings(base: Network, stacked: Stacked, x: Tensor) -> tuple[Tensor, Tensor]:
    """(features_M_N_D, logits_M_N_C) of the M members on the same inputs: each one's last layer input and output."""
    embedding = _Embedding(base)

    def member_embedding(member: Stacked, x: Tensor) -> tuple[Tensor, Tensor]:
        return functional_call(embedding, {f"network.{name}": t for name, t in member.items()}, (x,))

    return vmap(member_embedding, in_dims=(0, None))(stacked, x)


def train_stacked(
    base: Network, stacked: Stacked, x_N: Tensor, y_N: Tensor, params: EnsembleParams, generator: torch.Generator
) -> None:
    """Adam on sum_m [mean cross-entropy of member m + (c/N)||w_m||^2], all members in one vmapped step.

    Full minibatches (`minibatches`), one shared order per epoch from `generator`. The members' gradients do not interact: member m's loss depends only on w_m.
    """
    n = x_N.shape[0]
    tensors = list(stacked.values())
    # Keras' l2(c/N) adds (c/N) * w^2 to the loss; Adam's weight_decay adds wd * w to the gradient.
    # fused: one kernel over the stacked tensors (several times faster than the per-tensor loop on CPU)
    optimizer = torch.optim.Adam(tensors, lr=params.lr, weight_decay=2 * params.weight_decay / n, fused=True)
    batches = minibatches(
        n, params.batch_size, epochs=params.epochs, min_steps=params.min_steps, generator=generator, device=x_N.device,
        desc="train ensemble",
    )  # fmt: skip
    for batch_B in batches:
        logits_M_B_C = stacked_logits(base, stacked, x_N[batch_B])
        M, B, C = logits_M_B_C.shape
        y_MB = y_N[batch_B].expand(M, B).reshape(-1)
        # sum over members of each member's mean loss: [M*B] -> scalar
        loss = F.cross_entropy(logits_M_B_C.reshape(M * B, C), y_MB, reduction="sum") / B
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


class EnsembleBackend:
    """A deep ensemble: M `Network`s (dropout off) stacked and trained together with `torch.func.vmap`."""

    def __init__(self, params: EnsembleParams, *, input_shape: tuple[int, ...], num_classes: int, device: torch.device) -> None:
        self.params = params
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.device = device
        self.base_: Network | None = None
        self.stacked_: Stacked | None = None
        build_model(params.model, self.input_shape, num_classes, torch.Generator())  # a bad model or shape: refused now, before a run starts

    def init_members(self, generator: torch.Generator) -> tuple[Network, Stacked]:
        """M members initialized one after another from `generator`, stacked: names -> [M, *shape]."""
        members = [
            build_model(self.params.model, self.input_shape, self.num_classes, generator).to(self.device)
            for _ in range(self.params.members)
        ]
        stacked, buffers = stack_module_state(members)
        if buffers:
            raise AlabError(f"ensembles of model {self.params.model!r} with buffers (batch norm) are not supported")
        base = copy.deepcopy(members[0]).to("meta")
        return base, stacked

    def fit(self, x: Tensor, y: Tensor, *, generator: torch.Generator) -> EnsembleBackend:
        """Fresh initializations each call (from `generator`), then `train_stacked`."""
        self.base_, self.stacked_ = self.init_members(generator)
        train_stacked(self.base_, self.stacked_, x.to(self.device), y.to(self.device), self.params, generator)
        for tensor in self.stacked_.values():
            tensor.requires_grad_(False)
        return self

    def sample_networks(self, k: int, *, generator: torch.Generator) -> SampledNetworks:
        """The first K = min(k, M) members: log_probs [K, N, C].

        The members are the posterior's samples, so nothing is drawn and `generator` is not used; asking
        for more samples than members gives all M (the members are exchangeable, so the first K are
        as good a subset as any).
        """
        base, stacked = self._fitted()
        subset = {name: tensor[: min(k, self.params.members)] for name, tensor in stacked.items()}

        def log_probs_K_N_C(x: Tensor) -> Tensor:
            return torch.log_softmax(stacked_logits(base, subset, x.to(self.device)), dim=-1)

        return log_probs_K_N_C

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """The members' penultimate features side by side, [N, M*D].

        Concatenated, not averaged: members from different initializations do not share a feature
        space (their hidden units are in no common order), so a mean of their features measures
        nothing; squared distances in the concatenation are the sum of each member's.
        """
        base, stacked = self._fitted()
        features_M_N_D, _ = stacked_embeddings(base, stacked, x.to(self.device))
        return features_M_N_D.permute(1, 0, 2).reshape(x.shape[0], -1).float().cpu()  # [M, N, D] -> [N, M*D]

    @torch.no_grad()
    def gradient_embed(self, x: Tensor) -> Tensor:
        """The members' last-layer gradients at the ensemble's predicted class, side by side (`gradient_embedding`): [N, M*C*D].

        The gradient of the ensemble's training loss (the sum of the members' cross-entropies) over every member's last layer.
        """
        base, stacked = self._fitted()
        features_M_N_D, logits_M_N_C = stacked_embeddings(base, stacked, x.to(self.device))
        return gradient_embedding(torch.log_softmax(logits_M_N_C.float(), dim=-1), features_M_N_D.float()).cpu()

    def state_dict(self) -> dict[str, Any]:
        _, stacked = self._fitted()
        return {"params": asdict(self.params), "members": {name: t.detach().clone() for name, t in stacked.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_, _ = self.init_members(torch.Generator().manual_seed(0))  # weights are replaced just below
        self.stacked_ = {name: t.to(self.device) for name, t in state["members"].items()}

    def _fitted(self) -> tuple[Network, Stacked]:
        if self.base_ is None or self.stacked_ is None:
            raise RuntimeError("fit the backend (or load a checkpoint) before sampling networks")
        return self.base_, self.stacked_


@BACKENDS.register("ensemble", "Deep ensembles (Lakshminarayanan et al. 2017): M networks trained together with vmap")
def make_ensemble(params: dict[str, Any], *, input_shape: tuple[int, ...], num_classes: int, device: torch.device) -> EnsembleBackend:
    return EnsembleBackend(from_mapping(EnsembleParams, params, "backend"), input_shape=input_shape, num_classes=num_classes, device=device)
