"""Cyclical stochastic-gradient Langevin dynamics, cSGLD (Zhang, Li, Zhang, Chen & Wilson 2020).

The posterior over all N labels, p(theta | D) ~ exp(-U), U = sum_n -log p(y_n | x_n, theta) - log p(theta),
with the Gaussian prior N(0, prior_std^2) on every weight and bias (see `hmc` for its scale).
SGLD with step eta follows theta <- theta - eta grad U~ + sqrt(2 eta T) eps, grad U~ the minibatch
estimate (N/B) sum_b grad(-log p) - grad log p(theta). Written per example, alpha = N eta:

    theta <- theta - alpha_t [mean_b grad(-log p(y_b | x_b, theta)) - grad log p(theta) / N] + sqrt(2 alpha_t T / N) eps,

so the noise shrinks with the data set: the posterior is over N labels. The step size is cyclical
(Zhang et al. 2020, eq. 1): over M cycles of S steps, alpha_t = (alpha_0 / 2) [cos(pi mod(t, S) / S) + 1].
In the first fraction beta of each cycle (exploration) the noise is off (plain SGD, fast moves to a
new mode); in the rest (sampling) it is on, and the last `samples_per_cycle` states, `sample_every`
steps apart and ending at the cycle's last step, are kept (ruqizhang/csgmcmc keeps the last epochs'
states of each cycle). K = cycles x samples_per_cycle networks, each a whole set of weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from alab.backends.base import BACKENDS, SampledNetworks, epoch_batches
from alab.backends.weights import Stacked, dropout_free_network, gradient_embed, penultimate, sample_network, stack_states, stacked_networks
from alab.config import from_mapping
from alab.errors import AlabError
from alab.models import Network


@dataclass(frozen=True)
class SGMCMCParams:
    """Hyperparameters of the cSGLD backend (the `[backend]` table of a recipe)."""

    model: str = "auto"  # gal_cnn | kirsch_cnn | mlp | mlp_regression | auto, without dropout
    model_options: dict[str, Any] = field(default_factory=dict)  # the model's own keywords
    init: str = "torch"  # torch | glorot | keras0.3: the first cycle's start
    prior_std: float = 1.0  # the prior N(0, prior_std^2) on every weight and bias (as hmc's)
    cycles: int = 10  # M
    cycle_steps: int = 200  # S, minibatch steps a cycle
    exploration: float = 0.8  # beta: the fraction of each cycle without noise
    samples_per_cycle: int = 2  # states kept at the end of each cycle ...
    sample_every: int = 10  # ... this many steps apart
    batch_size: int = 64
    lr: float = 0.1  # alpha_0, the peak step size per example
    temperature: float = 1.0  # T: 1 is the posterior; < 1 a cold one

    def __post_init__(self) -> None:
        for name in ("cycles", "cycle_steps", "samples_per_cycle", "sample_every", "batch_size"):
            if getattr(self, name) < 1:
                raise AlabError(f"backend.{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.prior_std <= 0 or self.temperature < 0:
            raise AlabError("backend.lr and backend.prior_std must be > 0, backend.temperature >= 0")
        if not 0 <= self.exploration < 1:
            raise AlabError(f"backend.exploration must be in [0, 1), got {self.exploration}")
        sampling = self.cycle_steps - math.ceil(self.exploration * self.cycle_steps)
        if (self.samples_per_cycle - 1) * self.sample_every >= sampling:
            raise AlabError(
                f"backend.samples_per_cycle x sample_every must fit in the {sampling} sampling steps of a cycle (cycle_steps x (1 - exploration))"
            )


def cyclical_step_size(t: int, cycle_steps: int, lr: float) -> float:
    """alpha_t = (alpha_0 / 2) [cos(pi mod(t, S) / S) + 1] (Zhang et al. 2020, eq. 1)."""
    return lr / 2 * (math.cos(math.pi * (t % cycle_steps) / cycle_steps) + 1)


class SGMCMCBackend:
    """cSGLD: M cycles of SGLD with a cosine step size, the ends of each cycle kept as K whole networks."""

    def __init__(
        self, params: SGMCMCParams, *, input_shape: tuple[int, ...], num_classes: int, device: torch.device,
        task: str = "classification",
    ) -> None:  # fmt: skip
        self.params = params
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.device = device
        self.task = task
        self.network_: Network | None = None
        self.samples_: Stacked | None = None
        self._build(torch.Generator())  # a bad model, option or shape: refused now, before a run starts

    def _build(self, generator: torch.Generator) -> Network:
        p = self.params
        return dropout_free_network(p.model, self.input_shape, self.num_classes, generator, self.task, init=p.init, options=p.model_options)

    def keeps(self, t: int) -> bool:
        """Whether step t (0-based) ends on a state to keep: the last samples_per_cycle, sample_every apart, of a cycle."""
        p = self.params
        from_end = p.cycle_steps - 1 - t % p.cycle_steps
        return from_end % p.sample_every == 0 and from_end // p.sample_every < p.samples_per_cycle

    def fit(self, x: Tensor, y: Tensor, *, generator: torch.Generator) -> SGMCMCBackend:
        """A fresh initialization, then M cycles of cSGLD; minibatches and noise from `generator`."""
        p = self.params
        network = self._build(generator).to(self.device)
        x_N, y_N = x.to(self.device), y.to(self.device)
        n = len(y_N)
        parameters = dict(network.named_parameters())
        explore = math.ceil(p.exploration * p.cycle_steps)
        kept, t = [], 0
        epochs = epoch_batches(n, p.batch_size, epochs=0, min_steps=p.cycles * p.cycle_steps, generator=generator, device=self.device)
        network.train()
        for epoch in epochs:
            for batch_B in epoch:
                loss = network.loss(network(x_N[batch_B]), y_N[batch_B])
                network.zero_grad(set_to_none=True)
                loss.backward()
                alpha = cyclical_step_size(t, p.cycle_steps, p.lr)
                noisy = t % p.cycle_steps >= explore
                with torch.no_grad():
                    for w in parameters.values():
                        w -= alpha * (w.grad + w / (p.prior_std**2 * n))  # -grad log N(0, s^2) = w / s^2
                        if noisy:
                            w += math.sqrt(2 * alpha * p.temperature / n) * torch.randn(w.shape, generator=generator).to(w.device)
                if self.keeps(t):
                    kept.append({name: w.detach().clone() for name, w in parameters.items()})
                t += 1
        network.eval()
        self.network_ = network
        self.samples_ = stack_states(kept)
        return self

    def sample_networks(self, k: int, *, generator: torch.Generator) -> SampledNetworks:
        """The first min(k, M x samples_per_cycle) kept states, last cycle first: log-probs [K, N, C].

        Nothing is drawn (`generator` is unused): the kept states are the samples. The last cycles
        come first, as the first ones may still carry the initialization.
        """
        network, samples = self._fitted()
        count = next(iter(samples.values())).shape[0]
        order = torch.arange(count - 1, count - 1 - min(k, count), -1)
        return stacked_networks(network, {name: t[order] for name, t in samples.items()}, self.device)

    def embed(self, x: Tensor) -> Tensor:
        """The penultimate features [N, D] of the newest kept state, the first network of `sample_networks`."""
        network, samples = self._fitted()
        newest = next(iter(samples.values())).shape[0] - 1
        with torch.no_grad():
            return penultimate(sample_network(network, samples, newest), x.to(self.device))

    def gradient_embed(self, x: Tensor) -> Tensor:
        """BADGE's gradient embedding [N, C*D] of the same network as `embed`."""
        network, samples = self._fitted()
        newest = next(iter(samples.values())).shape[0] - 1
        with torch.no_grad():
            return gradient_embed(sample_network(network, samples, newest), x.to(self.device))

    def state_dict(self) -> dict[str, Any]:
        _, samples = self._fitted()
        return {"params": asdict(self.params), "samples": {name: t.clone() for name, t in samples.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network_ = self._build(torch.Generator().manual_seed(0)).to(self.device)  # only the architecture is used
        self.samples_ = {name: t.to(self.device) for name, t in state["samples"].items()}

    def _fitted(self) -> tuple[Network, Stacked]:
        if self.network_ is None or self.samples_ is None:
            raise RuntimeError("fit the backend (or load a checkpoint) before sampling networks")
        return self.network_, self.samples_


@BACKENDS.register("sgmcmc", "Cyclical SGLD (Zhang et al. 2020): one kept state per cycle end, whole networks")
def make_sgmcmc(
    params: dict[str, Any], *, input_shape: tuple[int, ...], num_classes: int, device: torch.device, task: str = "classification"
) -> SGMCMCBackend:
    return SGMCMCBackend(from_mapping(SGMCMCParams, params, "backend"), input_shape=input_shape, num_classes=num_classes, device=device, task=task)
