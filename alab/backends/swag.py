"""SWA-Gaussian (Maddox, Izmailov, Garipov, Vetrov & Wilson 2019): a Gaussian fitted to the SGD trajectory.

After the usual fit (Adam to a MAP estimate, dropout off), SGD with a constant learning rate and
small minibatches (`swag_batch_size`: the trajectory's spread is SGD's noise) goes on for `swag_steps` steps; every `swag_every` steps the weights theta_s are a snapshot. With the
snapshots' first and second moments (running means over S snapshots) and the last C deviations,

    theta_SWA = mean_s theta_s,   Sigma_diag = mean_s theta_s^2 - theta_SWA^2,   D = [theta_s - theta_SWA(s)]_{last C},

a posterior sample is (Maddox et al. 2019, eq. 1; wjmaddox/swa_gaussian, `SWAG.sample`, scale 1/2)

    theta = theta_SWA + (1/sqrt 2) Sigma_diag^(1/2) z1 + (1/sqrt(2 (C - 1))) D^T z2,   z1 ~ N(0, I_P), z2 ~ N(0, I_C),

the deviation theta_s - theta_SWA(s) taken against the running mean at snapshot s, as their code does.
`weights = "all"` is SWAG over every weight (Maddox et al.'s); `"head"` over the dense head only,
with the trunk fixed at the fit's weights: the trunk's features are computed once, SGD runs on the
head alone, and the K networks share the trunk (one wide product at scoring).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from alab.backends.base import BACKENDS, SampledNetworks, epoch_batches
from alab.backends.ensemble import stacked_logits
from alab.backends.mc_dropout import MCDropoutParams, train_classifier
from alab.backends.weights import Flat, dropout_free_network, gradient_embed, penultimate, stacked_networks
from alab.config import from_mapping
from alab.errors import AlabError
from alab.models import DropoutHead, Network, inference_trunk, stacked_dense_forward

WEIGHTS = ("all", "head")


@dataclass(frozen=True)
class SWAGParams:
    """Hyperparameters of the SWAG backend (the `[backend]` table of a recipe)."""

    model: str = "auto"  # gal_cnn | kirsch_cnn | mlp | mlp_regression | auto, trained without dropout
    model_options: dict[str, Any] = field(default_factory=dict)  # the model's own keywords
    init: str = "torch"  # torch | glorot | keras0.3
    epochs: int = 50  # the fit before SWAG (Adam), as mc_dropout: passes over the labeled set ...
    min_steps: int = 1000  # ... but at least this many gradient steps
    batch_size: int = 64
    lr: float = 1e-3  # Adam, the fit before SWAG
    weight_decay: float = 0.5  # c in the L2 penalty (c / N) ||w||^2, in the fit and in SWAG's SGD
    weights: str = "all"  # all (every weight, Maddox et al.) | head (the dense head; the trunk fixed and shared)
    swag_lr: float = 0.05  # SWAG's SGD: constant learning rate, momentum 0.9 (chosen on digits, see docs/backends.md)
    swag_batch_size: int = 16  # SWAG's SGD minibatch: small, so that SGD is noisy even when N < batch_size
    swag_steps: int = 400  # SGD steps after the fit ...
    swag_every: int = 10  # ... a snapshot every this many
    rank: int = 20  # C, the deviations kept for the low-rank part

    def __post_init__(self) -> None:
        for name in ("epochs", "min_steps"):
            if getattr(self, name) < 0:
                raise AlabError(f"backend.{name} must not be negative, got {getattr(self, name)}")
        for name in ("batch_size", "swag_batch_size", "swag_steps", "swag_every"):
            if getattr(self, name) < 1:
                raise AlabError(f"backend.{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.swag_lr <= 0 or self.weight_decay < 0:
            raise AlabError("backend.lr and backend.swag_lr must be > 0, backend.weight_decay >= 0")
        if self.weights not in WEIGHTS:
            raise AlabError(f"backend.weights must be one of {', '.join(WEIGHTS)}, got {self.weights!r}")
        if self.rank < 2 or self.swag_steps // self.swag_every < self.rank:
            raise AlabError(
                f"backend.rank must be at least 2 and at most swag_steps / swag_every snapshots ({self.swag_steps // self.swag_every}), got {self.rank}"
            )

    def training(self) -> MCDropoutParams:
        """The fit's settings, in the form `train_classifier` takes."""
        return MCDropoutParams(
            model=self.model, model_options=self.model_options, init=self.init, epochs=self.epochs, min_steps=self.min_steps,
            batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
        )  # fmt: skip


class Moments:
    """Running first and second moments of snapshots [P], and the last C deviations [C, P] (Maddox et al. 2019)."""

    def __init__(self, size: int, rank: int, device: torch.device) -> None:
        self.count = 0
        self.mean_P = torch.zeros(size, device=device)
        self.sq_mean_P = torch.zeros(size, device=device)
        self.rank = rank
        self.deviations: list[Tensor] = []

    def collect(self, theta_P: Tensor) -> None:
        self.count += 1
        self.mean_P += (theta_P - self.mean_P) / self.count
        self.sq_mean_P += (theta_P.square() - self.sq_mean_P) / self.count
        self.deviations = [*self.deviations, theta_P - self.mean_P][-self.rank :]


def swag_samples(mean_P: Tensor, sq_mean_P: Tensor, deviations_C_P: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """K draws theta = mean + (1/sqrt 2) diag^(1/2) z1 + (1/sqrt(2 (C - 1))) D^T z2: [K, P] (module docstring)."""
    C, P = deviations_C_P.shape
    diag_P = (sq_mean_P - mean_P.square()).clamp(min=1e-30)
    z1_K_P = torch.randn(k, P, generator=generator).to(mean_P.device)
    z2_K_C = torch.randn(k, C, generator=generator).to(mean_P.device)
    return mean_P + diag_P.sqrt() * z1_K_P / math.sqrt(2) + z2_K_C @ deviations_C_P / math.sqrt(2 * (C - 1))


class SWAGBackend:
    """SWAG: the SWA mean, a diagonal and a rank-C covariance from the SGD trajectory, K weight draws."""

    def __init__(
        self, params: SWAGParams, *, input_shape: tuple[int, ...], num_classes: int, device: torch.device,
        task: str = "classification",
    ) -> None:  # fmt: skip
        self.params = params
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.device = device
        self.task = task
        self.network_: Network | None = None
        self.moments_: dict[str, Tensor] | None = None
        self._build(torch.Generator())  # a bad model, option or shape: refused now, before a run starts

    def _build(self, generator: torch.Generator) -> Network:
        p = self.params
        return dropout_free_network(p.model, self.input_shape, self.num_classes, generator, self.task, init=p.init, options=p.model_options)

    def _swag_module(self, network: Network) -> nn.Module:
        """The weights SWAG covers: the whole network, or its head."""
        return network if self.params.weights == "all" else network.head

    def fit(self, x: Tensor, y: Tensor, *, generator: torch.Generator) -> SWAGBackend:
        """The fit (Adam, fresh initialization), then SWAG's SGD and snapshots; the network is left at theta_SWA."""
        p = self.params
        network = self._build(generator).to(self.device)
        x_N, y_N = x.to(self.device), y.to(self.device)
        train_classifier(network, x_N, y_N, p.training(), generator, desc="train swag")
        module = self._swag_module(network)
        if p.weights == "head":
            with torch.no_grad():
                inputs_N = torch.cat([network.trunk(x_N[i : i + 1024]) for i in range(0, len(x_N), 1024)])
        else:
            inputs_N = x_N
        flat = Flat(module)
        moments = Moments(flat.size, p.rank, self.device)
        n = len(y_N)
        optimizer = torch.optim.SGD(module.parameters(), lr=p.swag_lr, momentum=0.9, weight_decay=2 * p.weight_decay / n)
        module.train()
        step = 0
        epochs = epoch_batches(n, p.swag_batch_size, epochs=0, min_steps=p.swag_steps, generator=generator, device=self.device)
        for epoch in epochs:
            for batch_B in epoch:
                loss = network.loss(module(inputs_N[batch_B]), y_N[batch_B])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if step % p.swag_every == 0:
                    moments.collect(flat.flatten(dict(module.named_parameters())).detach())
        with torch.no_grad():
            for name, value in flat.unflatten(moments.mean_P).items():
                module.get_parameter(name).copy_(value)
        network.eval()
        self.network_ = network
        self.moments_ = {"sq_mean": moments.sq_mean_P, "deviations": torch.stack(moments.deviations)}
        return self

    def sample_networks(self, k: int, *, generator: torch.Generator) -> SampledNetworks:
        """K weight draws (module docstring), made now: whole networks, or K heads on the shared trunk."""
        network, moments = self._fitted()
        module = self._swag_module(network)
        flat = Flat(module)
        mean_P = flat.flatten(dict(module.named_parameters())).detach()
        stacked = flat.unflatten(swag_samples(mean_P, moments["sq_mean"], moments["deviations"], k, generator))
        if self.params.weights == "all":
            return stacked_networks(network, stacked, self.device)
        return self._head_networks(network, stacked)

    def _head_networks(self, network: Network, stacked: dict[str, Tensor]) -> SampledNetworks:
        """K heads on one trunk: K dense stacks (`DropoutHead`), else one vmapped `functional_call` of the head."""
        trunk = inference_trunk(network.trunk)
        head = network.head
        if isinstance(head, DropoutHead):
            layers = [(stacked[f"layers.{i}.weight"].contiguous(), stacked[f"layers.{i}.bias"].contiguous()) for i in range(len(head.layers))]

            @torch.no_grad()
            def dense_K_N_O(x: Tensor) -> Tensor:
                return network.output(stacked_dense_forward(trunk(x.to(self.device)), layers).float())

            return dense_K_N_O
        base = copy.deepcopy(head).to("meta")

        @torch.no_grad()
        def vmapped_K_N_O(x: Tensor) -> Tensor:
            return network.output(stacked_logits(base, stacked, trunk(x.to(self.device))).float())  # type: ignore[arg-type]

        return vmapped_K_N_O

    def mean_network(self) -> SampledNetworks:
        """The SWA mean theta_SWA as K = 1 (evaluation = "deterministic")."""
        network, _ = self._fitted()
        trunk = inference_trunk(network.trunk)

        @torch.no_grad()
        def outputs_1_N_O(x: Tensor) -> Tensor:
            return network.output(network.head(trunk(x.to(self.device))).float())[None]

        return outputs_1_N_O

    def embed(self, x: Tensor) -> Tensor:
        """theta_SWA's penultimate features [N, D]."""
        with torch.no_grad():
            return penultimate(self._fitted()[0], x.to(self.device))

    def gradient_embed(self, x: Tensor) -> Tensor:
        """BADGE's gradient embedding [N, C*D] of theta_SWA."""
        with torch.no_grad():
            return gradient_embed(self._fitted()[0], x.to(self.device))

    def state_dict(self) -> dict[str, Any]:
        network, moments = self._fitted()
        return {"params": asdict(self.params), "network": network.state_dict(), "moments": dict(moments)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network_ = self._build(torch.Generator().manual_seed(0)).to(self.device)  # weights are overwritten just below
        self.network_.load_state_dict(state["network"])
        self.network_.eval()
        self.moments_ = {name: t.to(self.device) for name, t in state["moments"].items()}

    def _fitted(self) -> tuple[Network, dict[str, Tensor]]:
        if self.network_ is None or self.moments_ is None:
            raise RuntimeError("fit the backend (or load a checkpoint) before sampling networks")
        return self.network_, self.moments_


@BACKENDS.register("swag", "SWA-Gaussian (Maddox et al. 2019): diagonal plus low-rank Gaussian from the SGD trajectory")
def make_swag(
    params: dict[str, Any], *, input_shape: tuple[int, ...], num_classes: int, device: torch.device, task: str = "classification"
) -> SWAGBackend:
    return SWAGBackend(from_mapping(SWAGParams, params, "backend"), input_shape=input_shape, num_classes=num_classes, device=device, task=task)
