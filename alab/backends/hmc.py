"""Full-batch Hamiltonian Monte Carlo over every weight of a small network (Neal 2011): the reference posterior.

Target: p(theta | D) ~ exp(-U(theta)), U = sum_n -log p(y_n | x_n, theta) + ||theta||^2 / (2 prior_std^2),
on all N labels at once (no minibatch: the chain's stationary law is the posterior itself). Each
iteration draws a momentum r ~ N(0, I), runs L leapfrog steps of size eps,

    r <- r - (eps/2) grad U(theta);  theta <- theta + eps r;  r <- r - (eps/2) grad U(theta),

and accepts the end point with probability min(1, exp(H_0 - H_L)), H = U + ||r||^2 / 2 (Metropolis);
a non-finite H is a rejection. Several chains run side by side (their weights stacked, [C, P], one
vmapped forward for all), each from its own initialization drawn from the run's generator, moved to
a mode by `init_steps` full-batch Adam steps first (a MAP start: warmup need not cross the long
transient from the prior). In warmup each chain's eps is adapted by dual averaging to a mean
acceptance of `target_accept` (Hoffman & Gelman 2014; 0.65 is optimal for HMC, Beskos et al. 2013),
then fixed. After warmup `draws` iterations per chain; `keep` of them, evenly spaced in each chain
and interleaved across chains, are the K networks.

The prior N(0, 1) on every weight and bias is the scale at which the digits MLP's posterior fits its
labels (docs/backends.md): tighter priors (1/fan_in variances) hold the weights near 0 against a few
hundred labels and predict at chance. sgmcmc uses the same prior, so the two target one posterior.

Diagnostics (`diagnostics()`, written by the loop to <run>/hmc.json each round): each chain's
acceptance rate and final step size, and split R-hat and ESS (`alab.backends.mcmc`) of the
log-likelihood trace and of a few weights. Weights are identifiable only up to permutations of the
hidden units, so their R-hat across chains that sit in different modes is large by construction;
the log-likelihood's is the one to read.

Cost: L full-data gradients per draw, and mixing slows as the dimension grows, so models with more
than MAX_PARAMETERS weights are refused (the digits MLP has 26,634; the Gal CNN about 500,000).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from alab.backends.base import BACKENDS, SampledNetworks
from alab.backends.ensemble import stacked_logits
from alab.backends.mcmc import DualAveraging, effective_sample_size, split_rhat
from alab.backends.weights import (
    Flat,
    Stacked,
    dropout_free_network,
    gradient_embed,
    parameter_count,
    penultimate,
    sample_network,
    stacked_networks,
)
from alab.config import from_mapping
from alab.errors import AlabError
from alab.models import Network

MAX_PARAMETERS = 100_000
TRACED_WEIGHTS = 8  # the first weights of the flat vector whose R-hat and ESS are reported


@dataclass(frozen=True)
class HMCParams:
    """Hyperparameters of the HMC backend (the `[backend]` table of a recipe)."""

    model: str = "auto"  # mlp | mlp_regression | auto (a model of at most 100,000 weights), without dropout
    model_options: dict[str, Any] = field(default_factory=dict)  # the model's own keywords, e.g. { hidden = 64 }
    init: str = "torch"  # torch | glorot | keras0.3: each chain's initialization
    prior_std: float = 1.0  # the prior N(0, prior_std^2) on every weight and bias
    chains: int = 4
    init_steps: int = 500  # full-batch Adam steps from each chain's initialization (the MAP start)
    lr: float = 1e-3  # Adam, for the MAP start
    warmup: int = 200  # iterations a chain with step-size adaptation (discarded)
    draws: int = 200  # iterations a chain after warmup
    leapfrog_steps: int = 20  # L
    step_size: float = 1e-3  # eps at the start of warmup
    target_accept: float = 0.65  # dual averaging's target mean acceptance probability
    keep: int = 20  # draws kept as the K networks, evenly spaced over the chains

    def __post_init__(self) -> None:
        for name in ("chains", "draws", "leapfrog_steps", "keep"):
            if getattr(self, name) < 1:
                raise AlabError(f"backend.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("init_steps", "warmup"):
            if getattr(self, name) < 0:
                raise AlabError(f"backend.{name} must not be negative, got {getattr(self, name)}")
        if self.lr <= 0 or self.prior_std <= 0 or self.step_size <= 0:
            raise AlabError("backend.lr, backend.prior_std and backend.step_size must be > 0")
        if not 0 < self.target_accept < 1:
            raise AlabError(f"backend.target_accept must be in (0, 1), got {self.target_accept}")
        if self.keep > self.chains * self.draws:
            raise AlabError(f"backend.keep ({self.keep}) must be at most chains x draws ({self.chains * self.draws})")


class Potential:
    """U(theta) and its gradient for C chains at once: theta [C, P] -> U [C], grad [C, P], log-likelihood [C]."""

    def __init__(self, network: Network, x_N: Tensor, y_N: Tensor, prior_std: float) -> None:
        self.network = network
        self.base = copy.deepcopy(network).to("meta")
        self.flat = Flat(network)
        self.x_N, self.y_N = x_N, y_N
        self.prior_std = prior_std

    def __call__(self, theta_C_P: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        theta = theta_C_P.detach().requires_grad_(True)
        with torch.enable_grad():
            raw_C_N_O = stacked_logits(self.base, self.flat.unflatten(theta), self.x_N)
            finite_C = torch.isfinite(raw_C_N_O).flatten(1).all(dim=1)
            safe_C_N_O = torch.where(finite_C[:, None, None], raw_C_N_O, torch.zeros_like(raw_C_N_O))
            # the network's own mean loss (cross-entropy or Gaussian NLL) per chain, times N: -log p(D | theta)
            nll_C = torch.stack([self.network.loss(raw_N_O, self.y_N) for raw_N_O in safe_C_N_O]) * len(self.y_N)
            u_C = nll_C + theta.square().sum(dim=1) / (2 * self.prior_std**2)
            (grad_C_P,) = torch.autograd.grad(u_C.sum(), theta)  # chains do not interact: row c is grad U(theta_c)
        infinite = torch.full_like(u_C, math.inf)
        return torch.where(finite_C, u_C.detach(), infinite), grad_C_P, torch.where(finite_C, -nll_C.detach(), -infinite)


def leapfrog(potential: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]], theta_C_P: Tensor, r_C_P: Tensor, grad_C_P: Tensor, step_C: Tensor, steps: int) -> tuple[Tensor, ...]:
    """L leapfrog steps from (theta, r) with per-chain step sizes [C]: (theta, r, U, grad, log-likelihood) at the end."""
    eps_C_1 = step_C[:, None]
    r_C_P = r_C_P - eps_C_1 / 2 * grad_C_P
    for i in range(steps):
        theta_C_P = theta_C_P + eps_C_1 * r_C_P
        u_C, grad_C_P, log_lik_C = potential(theta_C_P)
        r_C_P = r_C_P - (eps_C_1 if i < steps - 1 else eps_C_1 / 2) * grad_C_P
    return theta_C_P, r_C_P, u_C, grad_C_P, log_lik_C


def sample_hmc(
    potential: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]], theta_C_P: Tensor, p: HMCParams, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Warmup (dual averaging) and draws of C chains from theta [C, P]: (draws [S, C, P], log-lik [S, C], accept prob [S, C], eps [C]).

    `potential(theta [C, P]) -> (U [C], grad U [C, P], log-likelihood [C])`; momenta and Metropolis
    uniforms from `generator`, on the CPU.
    """
    u_C, grad_C_P, log_lik_C = potential(theta_C_P)
    adaptation = DualAveraging(torch.full((p.chains,), p.step_size, dtype=torch.float64), p.target_accept)
    step_C = torch.full((p.chains,), p.step_size, dtype=torch.float64)
    draws, log_liks, accepts = [], [], []
    for i in tqdm(range(p.warmup + p.draws), desc="hmc", leave=False, disable=None, mininterval=0.5):
        if i == p.warmup and p.warmup > 0:
            step_C = adaptation.final()
        r_C_P = torch.randn(theta_C_P.shape, generator=generator).to(theta_C_P.device)
        proposal = leapfrog(potential, theta_C_P, r_C_P, grad_C_P, step_C.to(theta_C_P), p.leapfrog_steps)
        theta_new, r_new, u_new, grad_new, log_lik_new = proposal
        log_ratio_C = (u_C + 0.5 * r_C_P.square().sum(1) - u_new - 0.5 * r_new.square().sum(1)).double().cpu()
        accept_prob_C = torch.nan_to_num(log_ratio_C.clamp(max=0).exp(), nan=0.0)
        accept_C = torch.rand(p.chains, generator=generator, dtype=torch.float64) < accept_prob_C
        keep_C = accept_C.to(theta_C_P.device)
        theta_C_P = torch.where(keep_C[:, None], theta_new, theta_C_P)
        grad_C_P = torch.where(keep_C[:, None], grad_new, grad_C_P)
        u_C, log_lik_C = torch.where(keep_C, u_new, u_C), torch.where(keep_C, log_lik_new, log_lik_C)
        if i < p.warmup:
            step_C = adaptation.update(accept_prob_C)
        else:
            draws.append(theta_C_P.clone())
            log_liks.append(log_lik_C.double().cpu())
            accepts.append(accept_prob_C)
    return torch.stack(draws), torch.stack(log_liks), torch.stack(accepts), step_C


class HMCBackend:
    """Full-batch HMC with several chains and dual-averaging step sizes; `keep` draws as K whole networks."""

    def __init__(
        self, params: HMCParams, *, input_shape: tuple[int, ...], num_classes: int, device: torch.device,
        task: str = "classification",
    ) -> None:  # fmt: skip
        self.params = params
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.device = device
        self.task = task
        self.network_: Network | None = None
        self.samples_: Stacked | None = None
        self.diagnostics_: dict[str, Any] = {}
        size = parameter_count(self._build(torch.Generator()))  # a bad model, option or shape: refused now
        if size > MAX_PARAMETERS:
            raise AlabError(
                f"backend hmc samples networks of at most {MAX_PARAMETERS:,} weights (full-batch leapfrog costs L full-data "
                f"gradients a draw), and model {params.model!r} has {size:,} here: use a smaller model (model = 'mlp', "
                "model_options.hidden) or backend sgmcmc"
            )

    def _build(self, generator: torch.Generator) -> Network:
        p = self.params
        return dropout_free_network(p.model, self.input_shape, self.num_classes, generator, self.task, init=p.init, options=p.model_options)

    def fit(self, x: Tensor, y: Tensor, *, generator: torch.Generator) -> HMCBackend:
        """C chains from C initializations: Adam to a mode, warmup with adaptation, draws; keep K; record diagnostics."""
        p = self.params
        networks = [self._build(generator).to(self.device) for _ in range(p.chains)]
        flat = Flat(networks[0])
        theta_C_P = torch.stack([flat.flatten(dict(net.named_parameters())).detach() for net in networks])
        potential = Potential(networks[0], x.to(self.device), y.to(self.device), p.prior_std)
        theta_C_P = self._map_start(potential, theta_C_P)
        draws_S_C_P, log_lik_S_C, accept_S_C, step_C = sample_hmc(potential, theta_C_P, p, generator)
        self.network_ = networks[0]
        self.samples_ = flat.unflatten(self._thin(draws_S_C_P))
        self.diagnostics_ = self._diagnostics(draws_S_C_P, log_lik_S_C, accept_S_C, step_C)
        return self

    def _map_start(self, potential: Potential, theta_C_P: Tensor) -> Tensor:
        """`init_steps` full-batch Adam steps on sum_c U(theta_c): each chain to a mode near its initialization."""
        theta = theta_C_P.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([theta], lr=self.params.lr)
        for _ in range(self.params.init_steps):
            _, grad_C_P, _ = potential(theta.detach())
            optimizer.zero_grad(set_to_none=True)
            theta.grad = grad_C_P / len(potential.y_N)  # Adam is scale-free; per example, as the other backends
            optimizer.step()
        return theta.detach()

    def _thin(self, draws_S_C_P: Tensor) -> Tensor:
        """`keep` draws [K, P]: evenly spaced in each chain, interleaved (k = 0, 1, ... visit chains 0, 1, ...)."""
        S, C, _ = draws_S_C_P.shape
        per_chain = math.ceil(self.params.keep / C)
        index = torch.linspace(S - 1, 0, per_chain).round().long()  # newest first
        return draws_S_C_P[index].reshape(per_chain * C, -1)[: self.params.keep].clone()  # [per_chain, C, P] -> [per_chain*C, P]

    def _diagnostics(self, draws_S_C_P: Tensor, log_lik_S_C: Tensor, accept_S_C: Tensor, step_C: Tensor) -> dict[str, Any]:
        traced_C_S_W = draws_S_C_P[:, :, :TRACED_WEIGHTS].double().cpu().permute(1, 0, 2)
        traces = {"log_likelihood": log_lik_S_C.T, **{f"weight_{w}": traced_C_S_W[:, :, w] for w in range(traced_C_S_W.shape[2])}}
        summary = {name: {"rhat": split_rhat(trace), "ess": effective_sample_size(trace)} for name, trace in traces.items()}
        weights = [summary[name] for name in summary if name.startswith("weight_")]
        return {
            "chains": self.params.chains,
            "draws_per_chain": draws_S_C_P.shape[0],
            "acceptance_rate": accept_S_C.mean(dim=0).tolist(),
            "step_size": step_C.tolist(),
            "rhat_log_likelihood": summary["log_likelihood"]["rhat"],
            "ess_log_likelihood": summary["log_likelihood"]["ess"],
            "rhat_weights_max": max(s["rhat"] for s in weights),
            "ess_weights_min": min(s["ess"] for s in weights),
            "mean_log_likelihood": float(log_lik_S_C.mean()),
        }

    def diagnostics(self) -> dict[str, Any]:
        """This fit's acceptance rates, step sizes, split R-hat and ESS (module docstring): JSON-ready."""
        return dict(self.diagnostics_)

    def sample_networks(self, k: int, *, generator: torch.Generator) -> SampledNetworks:
        """The first min(k, keep) kept draws as whole networks (nothing is drawn here): log-probs [K, N, C]."""
        network, samples = self._fitted()
        return stacked_networks(network, {name: t[:k] for name, t in samples.items()}, self.device)

    def embed(self, x: Tensor) -> Tensor:
        """The penultimate features [N, D] of the newest kept state, the first network of `sample_networks`."""
        network, samples = self._fitted()
        with torch.no_grad():
            return penultimate(sample_network(network, samples, 0), x.to(self.device))

    def gradient_embed(self, x: Tensor) -> Tensor:
        """BADGE's gradient embedding [N, C*D] of the same network as `embed`."""
        network, samples = self._fitted()
        with torch.no_grad():
            return gradient_embed(sample_network(network, samples, 0), x.to(self.device))

    def state_dict(self) -> dict[str, Any]:
        _, samples = self._fitted()
        return {"params": asdict(self.params), "samples": {name: t.clone() for name, t in samples.items()}, "diagnostics": self.diagnostics_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network_ = self._build(torch.Generator().manual_seed(0)).to(self.device)  # only the architecture is used
        self.samples_ = {name: t.to(self.device) for name, t in state["samples"].items()}
        self.diagnostics_ = dict(state.get("diagnostics", {}))

    def _fitted(self) -> tuple[Network, Stacked]:
        if self.network_ is None or self.samples_ is None:
            raise RuntimeError("fit the backend (or load a checkpoint) before sampling networks")
        return self.network_, self.samples_


@BACKENDS.register("hmc", "Full-batch HMC (Neal 2011) with dual-averaging step sizes, several chains: small models only")
def make_hmc(
    params: dict[str, Any], *, input_shape: tuple[int, ...], num_classes: int, device: torch.device, task: str = "classification"
) -> HMCBackend:
    return HMCBackend(from_mapping(HMCParams, params, "backend"), input_shape=input_shape, num_classes=num_classes, device=device, task=task)
