"""Variational inference over the weights: Bayes by Backprop (Blundell et al. 2015).

Posterior q(w) = prod_i N(w_i; mu_i, sigma_i^2), sigma_i = softplus(rho_i) = log(1 + exp(rho_i)).
Training maximizes the ELBO per labeled example, on each minibatch of B out of N labels:

    loss = (1/B) sum_b -log p(y_b | x_b, w)  +  kl_weight * KL(q || p) / N,     w ~ q

(the KL spread evenly over the N/B minibatches of an epoch, i.e. 1/N per example). The KL is in
closed form for the Gaussian prior and a one-sample Monte Carlo estimate log q(w) - log p(w) for the
scale-mixture and Laplace priors. The likelihood's weight noise uses the local reparameterization
trick (Kingma, Salimans & Welling 2015) in dense layers and Flipout (Wen et al. 2018) in
convolutions, so that every item in a minibatch sees its own, nearly independent, weight noise.

At prediction K whole networks are drawn: K explicit weight samples, shared by every item scored
with them (local reparameterization would give each item its own noise, which is not a network).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alab.backends.base import BACKENDS, SampledNetworks, gradient_embedding, minibatches
from alab.config import from_mapping
from alab.errors import AlabError
from alab.models import init_parameters

PRIORS = ("gaussian", "mixture", "laplace")
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class VIParams:
    """Hyperparameters of the variational inference backend (the `[backend]` table of a recipe)."""

    model: str = "auto"  # gal_cnn | mlp | auto (gal_cnn for 1x28x28 images, else mlp), without dropout
    prior: str = "gaussian"  # gaussian | mixture | laplace
    prior_sigma: float = 1.0  # gaussian: p(w) = N(0, prior_sigma^2)
    mixture_pi: float = 0.5  # mixture: pi N(0, sigma1^2) + (1 - pi) N(0, sigma2^2) (Blundell et al. 2015)
    mixture_sigma1: float = 0.5
    mixture_sigma2: float = 0.01
    laplace_scale: float = 0.1  # laplace: p(w) = exp(-|w| / b) / 2b
    kl_weight: float = 0.1  # 1 is the ELBO; < 1 down-weights the prior (a tempered posterior; see docs/backends.md)
    init_sigma: float = 1e-3  # initial posterior standard deviation; means start at PyTorch's initialization
    epochs: int = 50  # passes over the labeled set ...
    min_steps: int = 500  # ... but at least this many gradient steps (small labeled sets)
    batch_size: int = 64
    lr: float = 1e-2  # Adam (the scales move slowly at 1e-3: rho starts far below 0)

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise AlabError(f"backend.prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        for name in ("prior_sigma", "mixture_sigma1", "mixture_sigma2", "laplace_scale", "init_sigma", "lr"):
            if getattr(self, name) <= 0:
                raise AlabError(f"backend.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.mixture_pi < 1:
            raise AlabError(f"backend.mixture_pi must be in (0, 1), got {self.mixture_pi}")
        if self.kl_weight < 0 or self.epochs < 0 or self.min_steps < 0 or self.batch_size < 1:
            raise AlabError("backend.kl_weight, epochs and min_steps must not be negative; batch_size at least 1")


def _randn(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> Tensor:
    """Standard normal noise drawn on the CPU (reproducible across devices), then moved."""
    return torch.randn(tuple(shape), generator=generator).to(device)


def _signs(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> Tensor:
    """Rademacher signs, +-1 with probability 1/2 each."""
    return (torch.randint(0, 2, tuple(shape), generator=generator) * 2 - 1).to(device, torch.float32)


class _Bayesian:
    """Mean-field Gaussian weights: `weight`/`bias` are the means, sigma = softplus(`*_rho`)."""

    weight: nn.Parameter
    bias: nn.Parameter
    weight_rho: nn.Parameter
    bias_rho: nn.Parameter

    def _add_rho(self, init_sigma: float) -> None:
        rho = math.log(math.expm1(init_sigma))  # softplus^-1
        self.weight_rho = nn.Parameter(torch.full_like(self.weight, rho))
        self.bias_rho = nn.Parameter(torch.full_like(self.bias, rho))

    def pairs(self) -> list[tuple[Tensor, Tensor]]:
        """(mean, sigma) of each weight tensor."""
        return [(self.weight, F.softplus(self.weight_rho)), (self.bias, F.softplus(self.bias_rho))]

    def sample(self, k: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """K explicit weight draws: w_k = mu + sigma * eps_k; weight [K, *shape], bias [K, out]."""
        return tuple(mu + sigma * _randn((k, *mu.shape), generator, mu.device) for mu, sigma in self.pairs())  # type: ignore[return-value]


class BayesLinear(nn.Linear, _Bayesian):
    """Dense layer with a Gaussian posterior; training noise by local reparameterization.

    For y = W x + b with independent Gaussian weights, y_j is Gaussian with mean mu_W x + mu_b and
    variance (sigma_W^2) (x^2) + sigma_b^2, so y is sampled directly, one eps per item and unit
    (Kingma, Salimans & Welling 2015): lower-variance gradients than one shared weight draw.
    """

    def __init__(self, in_features: int, out_features: int, init_sigma: float) -> None:
        super().__init__(in_features, out_features)
        self._add_rho(init_sigma)

    def forward(self, x_N_D: Tensor, generator: torch.Generator) -> Tensor:  # type: ignore[override]
        (w_mu, w_sigma), (b_mu, b_sigma) = self.pairs()
        mean_N_O = F.linear(x_N_D, w_mu, b_mu)
        var_N_O = F.linear(x_N_D.square(), w_sigma.square(), b_sigma.square())
        return mean_N_O + var_N_O.sqrt() * _randn(mean_N_O.shape, generator, mean_N_O.device)


class BayesConv2d(nn.Conv2d, _Bayesian):
    """2-D convolution (stride 1, no padding) with a Gaussian posterior; training noise by Flipout.

    One perturbation dW ~ N(0, sigma^2) per minibatch, decorrelated across items by random signs
    (Wen et al. 2018): y_n = conv(x_n, mu) + [conv(x_n * s_n, dW) + db] * r_n, with s_n (input
    channels) and r_n (output channels) Rademacher. dW is symmetric, so each item's weights
    mu + dW (r_n s_n^T) are still distributed as q.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, init_sigma: float) -> None:
        super().__init__(in_channels, out_channels, kernel_size)
        self._add_rho(init_sigma)

    def forward(self, x_N_I_H_W: Tensor, generator: torch.Generator) -> Tensor:  # type: ignore[override]
        (w_mu, w_sigma), (b_mu, b_sigma) = self.pairs()
        device, n = x_N_I_H_W.device, x_N_I_H_W.shape[0]
        dw = w_sigma * _randn(w_mu.shape, generator, device)
        db = b_sigma * _randn(b_mu.shape, generator, device)
        s_N_I = _signs((n, self.in_channels, 1, 1), generator, device)
        r_N_O = _signs((n, self.out_channels, 1, 1), generator, device)
        mean = F.conv2d(x_N_I_H_W, w_mu, b_mu)
        return mean + F.conv2d(x_N_I_H_W * s_N_I, dw, db) * r_N_O


class BayesNetwork(nn.Module):
    """A feed-forward stack of Bayesian layers (BayesConv2d, BayesLinear) and ReLU/max-pool/flatten."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def bayesian(self) -> list[_Bayesian]:
        return [layer for layer in self.layers if isinstance(layer, _Bayesian)]

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Logits [N, C], each item with its own weight noise (local reparameterization / Flipout)."""
        h = x
        for layer in self.layers:
            h = layer(h, generator) if isinstance(layer, _Bayesian) else layer(h)
        return h

    def sample(self, k: int, generator: torch.Generator) -> list[tuple[Tensor, Tensor]]:
        """K networks: one (weight [K, ...], bias [K, out]) draw per Bayesian layer."""
        return [layer.sample(k, generator) for layer in self.bayesian()]

    def forward_sampled(self, x: Tensor, samples: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        """Logits [K, N, C] of the K networks `samples`, the same K for every item.

        Convolutions keep the K networks side by side in the channels, [N, K*channels, H, W]: the first
        one runs the K kernels as one wide convolution, later ones as a grouped convolution (groups=K).
        """
        return self.embed_sampled(x, samples)[1]

    def embed_sampled(self, x: Tensor, samples: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """(features_K_N_D, logits_K_N_C) of the K networks `samples`: the last Bayesian layer's input and output."""
        draws = iter(samples)
        last = self.bayesian()[-1]
        h, k = x, 0  # k = 0 until the first Bayesian layer: h is shared by the K networks
        features = h
        for layer in self.layers:
            if layer is last:
                features = h if h.ndim == 3 else h.expand(samples[-1][0].shape[0], *h.shape)  # [N, D] shared -> [K, N, D]
            if isinstance(layer, BayesConv2d):
                weight_K_O_I_h_w, bias_K_O = next(draws)
                groups, k = (1 if k == 0 else k), weight_K_O_I_h_w.shape[0]
                h = F.conv2d(h, weight_K_O_I_h_w.flatten(0, 1), bias_K_O.flatten(), groups=groups)
            elif isinstance(layer, BayesLinear):
                weight_K_O_I, bias_K_O = next(draws)
                # [N, I] broadcasts over K; [K, N, I] is a batched product -> [K, N, O]
                h = torch.matmul(h, weight_K_O_I.transpose(1, 2)) + bias_K_O[:, None, :]
                k = weight_K_O_I.shape[0]
            elif isinstance(layer, nn.Flatten) and k > 0:
                h = h.reshape(h.shape[0], k, -1).transpose(0, 1)  # [N, K*C, H, W] -> [K, N, C*H*W]
            else:
                h = layer(h)
        return features, h


def bayes_mlp(input_shape: tuple[int, ...], num_classes: int, init_sigma: float, hidden: int = 128) -> BayesNetwork:
    """`alab.models.mlp` without dropout: dense 128, dense 128, dense C, ReLU between."""
    dims = [math.prod(input_shape), hidden, hidden, num_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [BayesLinear(d_in, d_out, init_sigma)] + ([nn.ReLU()] if i < len(dims) - 2 else [])
    return BayesNetwork(layers)


def bayes_cnn(input_shape: tuple[int, ...], num_classes: int, init_sigma: float) -> BayesNetwork:
    """`alab.models.gal_cnn` without dropout: conv32-4, conv32-4, maxpool 2, dense 128, dense C."""
    channels, height, width = input_shape
    flat = 32 * ((height - 6) // 2) * ((width - 6) // 2)
    return BayesNetwork([
        BayesConv2d(channels, 32, 4, init_sigma), nn.ReLU(), BayesConv2d(32, 32, 4, init_sigma), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), BayesLinear(flat, 128, init_sigma), nn.ReLU(), BayesLinear(128, num_classes, init_sigma),
    ])  # fmt: skip


def build_bayes_network(params: VIParams, input_shape: tuple[int, ...], num_classes: int, generator: torch.Generator) -> BayesNetwork:
    """The named architecture with means from PyTorch's default initialization drawn from `generator`."""
    name = params.model
    if name == "auto":
        name = "gal_cnn" if tuple(input_shape) == (1, 28, 28) else "mlp"
    if name == "gal_cnn":
        if len(input_shape) != 3:
            raise AlabError(f"model gal_cnn needs image inputs (channels, height, width), got shape {input_shape}; use model = 'mlp'")
        network = bayes_cnn(tuple(input_shape), num_classes, params.init_sigma)
    elif name == "mlp":
        network = bayes_mlp(tuple(input_shape), num_classes, params.init_sigma)
    else:
        raise AlabError(f"unknown VI model {name!r}; choose one of: auto, gal_cnn, mlp")
    init_parameters(network, generator)  # the means; the rhos keep init_sigma
    return network


def gaussian_kl(mu: Tensor, sigma: Tensor, prior_sigma: float) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, s^2)) summed: sum log(s/sigma) + (sigma^2 + mu^2) / (2 s^2) - 1/2."""
    return (math.log(prior_sigma) - sigma.log() + (sigma.square() + mu.square()) / (2 * prior_sigma**2) - 0.5).sum()


def prior_log_prob(w: Tensor, params: VIParams) -> Tensor:
    """log p(w) summed over entries, for the mixture or Laplace prior.

    mixture: log[pi N(w; 0, s1^2) + (1 - pi) N(w; 0, s2^2)] (Blundell et al. 2015, eq. 7);
    laplace: -log(2b) - |w| / b.
    """
    if params.prior == "laplace":
        return (-math.log(2 * params.laplace_scale) - w.abs() / params.laplace_scale).sum()
    components = [(params.mixture_pi, params.mixture_sigma1), (1 - params.mixture_pi, params.mixture_sigma2)]
    log_terms = [math.log(pi) - math.log(s) - LOG_SQRT_2PI - w.square() / (2 * s * s) for pi, s in components]
    return torch.logaddexp(*log_terms).sum()


def kl_divergence(network: BayesNetwork, params: VIParams, generator: torch.Generator) -> Tensor:
    """KL(q || p) over all weights: closed form (Gaussian prior) or log q(w) - log p(w) at one w ~ q."""
    total = torch.zeros((), device=next(network.parameters()).device)
    for layer in network.bayesian():
        for mu, sigma in layer.pairs():
            if params.prior == "gaussian":
                total = total + gaussian_kl(mu, sigma, params.prior_sigma)
                continue
            eps = _randn(mu.shape, generator, mu.device)
            w = mu + sigma * eps
            log_q = (-sigma.log() - LOG_SQRT_2PI - 0.5 * eps.square()).sum()  # log N(w; mu, sigma^2)
            total = total + log_q - prior_log_prob(w, params)
    return total


def train_vi(network: BayesNetwork, x_N: Tensor, y_N: Tensor, params: VIParams, generator: torch.Generator) -> None:
    """Adam on the per-example negative ELBO (module docstring), minibatches drawn from `generator`."""
    n = x_N.shape[0]
    optimizer = torch.optim.Adam(network.parameters(), lr=params.lr)
    network.train()
    batches = minibatches(
        n, params.batch_size, epochs=params.epochs, min_steps=params.min_steps, generator=generator, device=x_N.device,
        desc="train vi",
    )  # fmt: skip
    for batch_B in batches:
        nll = F.cross_entropy(network(x_N[batch_B], generator), y_N[batch_B])
        loss = nll + params.kl_weight * kl_divergence(network, params, generator) / n
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    network.eval()


class VIBackend:
    """Bayes by Backprop: a mean-field Gaussian posterior over every weight, sampled as K whole networks."""

    def __init__(self, params: VIParams, *, input_shape: tuple[int, ...], num_classes: int, device: torch.device) -> None:
        self.params = params
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.device = device
        self.network_: BayesNetwork | None = None
        build_bayes_network(params, self.input_shape, num_classes, torch.Generator())  # a bad model or shape: refused now, before a run starts

    def fit(self, x: Tensor, y: Tensor, *, generator: torch.Generator) -> VIBackend:
        """A fresh posterior each call (means initialized from `generator`), then `train_vi`."""
        self.network_ = build_bayes_network(self.params, self.input_shape, self.num_classes, generator).to(self.device)
        train_vi(self.network_, x.to(self.device), y.to(self.device), self.params, generator)
        return self

    def sample_networks(self, k: int, *, generator: torch.Generator) -> SampledNetworks:
        """K weight draws w_k ~ q, made now from `generator` and shared by every item: log_probs [K, N, C]."""
        network = self._fitted()
        with torch.no_grad():
            samples = network.sample(k, generator)

        def log_probs_K_N_C(x: Tensor) -> Tensor:
            return torch.log_softmax(network.forward_sampled(x.to(self.device), samples), dim=-1)

        return log_probs_K_N_C

    def mean_network(self) -> SampledNetworks:
        """The network at the posterior means, as K = 1: log_probs [1, N, C]."""
        network = self._fitted()
        means = self._means()

        def log_probs_1_N_C(x: Tensor) -> Tensor:
            with torch.no_grad():
                return torch.log_softmax(network.forward_sampled(x.to(self.device), means), dim=-1)

        return log_probs_1_N_C

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """The mean network's penultimate features (the last layer's input at the posterior means), [N, D]."""
        features_1_N_D, _ = self._fitted().embed_sampled(x.to(self.device), self._means())
        return features_1_N_D[0].float().cpu()

    @torch.no_grad()
    def gradient_embed(self, x: Tensor) -> Tensor:
        """The mean network's last-layer gradient at its predicted class (`gradient_embedding`): [N, C*D]."""
        features_1_N_D, logits_1_N_C = self._fitted().embed_sampled(x.to(self.device), self._means())
        return gradient_embedding(torch.log_softmax(logits_1_N_C.float(), dim=-1), features_1_N_D.float()).cpu()

    def _means(self) -> list[tuple[Tensor, Tensor]]:
        """The posterior means as one network (K = 1) of `forward_sampled`."""
        return [(layer.weight.detach()[None], layer.bias.detach()[None]) for layer in self._fitted().bayesian()]

    def state_dict(self) -> dict[str, Any]:
        return {"params": asdict(self.params), "network": self._fitted().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        generator = torch.Generator().manual_seed(0)  # weights are overwritten just below
        self.network_ = build_bayes_network(self.params, self.input_shape, self.num_classes, generator).to(self.device)
        self.network_.load_state_dict(state["network"])
        self.network_.eval()

    def _fitted(self) -> BayesNetwork:
        if self.network_ is None:
            raise RuntimeError("fit the backend (or load a checkpoint) before sampling networks")
        return self.network_


@BACKENDS.register("vi", "Bayes by Backprop (Blundell et al. 2015): mean-field Gaussian weights, K weight draws")
def make_vi(params: dict[str, Any], *, input_shape: tuple[int, ...], num_classes: int, device: torch.device) -> VIBackend:
    return VIBackend(from_mapping(VIParams, params, "backend"), input_shape=input_shape, num_classes=num_classes, device=device)
