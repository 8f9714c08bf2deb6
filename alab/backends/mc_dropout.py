"""MC dropout (Gal & Ghahramani 2016): dropout at test time as approximate variational inference.

Retrained from scratch each round, as in Gal, Islam & Ghahramani 2017 (warm start is an option).
The L2 penalty is scaled to the labeled set, lambda = c / N (Gal 2017's code), the prior-length-scale
form of the dropout posterior's KL term. At scoring time K dropout masks are drawn once and shared by
every item: K whole networks, folded into the head's weights (see `alab.models`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from alab.backends.base import BACKENDS, SampledNetworks, minibatches
from alab.config import from_mapping
from alab.errors import AlabError
from alab.models import Network, build_model, inference_trunk, stacked_dense_forward


@dataclass(frozen=True)
class MCDropoutParams:
    """Hyperparameters of the MC dropout backend (the `[backend]` table of a recipe)."""

    model: str = "auto"  # gal_cnn | mlp | mlp_regression | auto (gal_cnn for 1x28x28 images, mlp_regression for regression, else mlp)
    epochs: int = 50  # passes over the labeled set ...
    min_steps: int = 1000  # ... but at least this many gradient steps (small labeled sets)
    batch_size: int = 64
    lr: float = 1e-3  # Adam
    weight_decay: float = 0.1  # c in the L2 penalty (c / N) * ||w||^2, N = labeled set size
    warm_start: bool = False  # continue from last round's weights instead of a fresh initialization
    masks: str = "shared"  # scoring: K masks shared by every item (K whole networks) | per_item

    def __post_init__(self) -> None:
        for name in ("epochs", "min_steps", "batch_size"):
            if getattr(self, name) < 0 or (name == "batch_size" and self.batch_size == 0):
                raise AlabError(f"backend.{name} must be positive, got {getattr(self, name)}")
        if self.masks not in ("shared", "per_item"):
            raise AlabError(f"backend.masks must be 'shared' or 'per_item', got {self.masks!r}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise AlabError("backend.lr must be > 0 and backend.weight_decay >= 0")


def train_classifier(
    network: Network,
    x_N: Tensor,
    y_N: Tensor,
    params: MCDropoutParams,
    generator: torch.Generator,
    *,
    desc: str = "train",
) -> None:
    """Adam on the network's mean loss (cross-entropy, or Gaussian NLL for regression) plus (c/N)||w||^2.

    Minibatches drawn from `generator`.

    Full minibatches (`minibatches`); dropout masks drawn per item from `generator`.
    """
    n = x_N.shape[0]
    # Keras' l2(c/N) adds (c/N) * w^2 to the loss; Adam's weight_decay adds wd * w to the gradient.
    optimizer = torch.optim.Adam(network.parameters(), lr=params.lr, weight_decay=2 * params.weight_decay / n)
    network.train()
    batches = minibatches(
        n, params.batch_size, epochs=params.epochs, min_steps=params.min_steps, generator=generator, device=x_N.device, desc=desc
    )
    for batch in batches:
        loss = network.loss(network(x_N[batch], generator), y_N[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    network.eval()


class MCDropoutBackend:
    """MC dropout classifier: a `Network` trained with dropout, sampled by K shared dropout masks."""

    def __init__(
        self,
        params: MCDropoutParams,
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        device: torch.device,
        task: str = "classification",
    ) -> None:
        self.params = params
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.device = device
        self.task = task
        self.network_: Network | None = None
        build_model(params.model, self.input_shape, num_classes, torch.Generator(), task)  # a bad model or shape: refused now, before a run starts

    def fit(self, x: Tensor, y: Tensor, *, generator: torch.Generator) -> MCDropoutBackend:
        if self.network_ is None or not self.params.warm_start:
            self.network_ = build_model(self.params.model, self.input_shape, self.num_classes, generator, self.task).to(self.device)
        train_classifier(self.network_, x.to(self.device), y.to(self.device), self.params, generator)
        return self

    def sample_networks(self, k: int, *, generator: torch.Generator) -> SampledNetworks:
        """K networks given by K dropout masks, shared by every item (or fresh masks per item).

        Shared masks are folded into the head's weights once, here; each call then runs the trunk
        once (channels-last) and the K heads as one wide matrix product (`stacked_dense_forward`).
        """
        network = self._fitted()
        trunk = inference_trunk(network.trunk)
        if self.params.masks == "per_item":

            @torch.no_grad()
            def per_item_log_probs_K_N_C(x: Tensor) -> Tensor:
                features_N_D = trunk(x.to(self.device))
                logits_K_N_C = torch.stack([network.head(features_N_D, generator) for _ in range(k)])
                return network.output(logits_K_N_C.float())

            return per_item_log_probs_K_N_C
        with torch.no_grad():  # samples of the posterior predict; they are never trained
            layers = network.head.fold_masks(network.head.sample_masks(k, generator))

        @torch.no_grad()
        def log_probs_K_N_C(x: Tensor) -> Tensor:
            features_N_D = trunk(x.to(self.device))
            return network.output(stacked_dense_forward(features_N_D, layers).float())

        return log_probs_K_N_C  # regression: [K, N, 2] (mean, raw variance)

    def state_dict(self) -> dict[str, Any]:
        return {"params": asdict(self.params), "network": self._fitted().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        generator = torch.Generator().manual_seed(0)  # weights are overwritten just below
        self.network_ = build_model(self.params.model, self.input_shape, self.num_classes, generator, self.task).to(self.device)
        self.network_.load_state_dict(state["network"])
        self.network_.eval()

    def _fitted(self) -> Network:
        if self.network_ is None:
            raise RuntimeError("fit the backend (or load a checkpoint) before sampling networks")
        return self.network_


@BACKENDS.register("mc_dropout", "MC dropout (Gal & Ghahramani 2016): K shared dropout masks, retrained each round")
def make_mc_dropout(
    params: dict[str, Any], *, input_shape: tuple[int, ...], num_classes: int, device: torch.device, task: str = "classification"
) -> MCDropoutBackend:
    return MCDropoutBackend(
        from_mapping(MCDropoutParams, params, "backend"), input_shape=input_shape, num_classes=num_classes, device=device, task=task
    )
