"""Last-layer Laplace approximation (MacKay 1992; Daxberger et al. 2021, "Laplace Redux").

Train a dropout-free network to a MAP estimate; then the posterior over its last layer's weights
Theta = [W | b] (O outputs x E = D + 1 inputs, the bias as a constant feature) is the Gaussian

    q(theta) = N(theta*, (H + delta I)^-1),   H = sum_n J_n^T Lambda_n J_n   (the GGN, = the Fisher here)

with J_n = I_O (x) phi_n^T the Jacobian of the outputs in theta (phi_n: the penultimate features
and a 1) and Lambda_n the Fisher of the likelihood in the outputs: diag(p) - p p^T for the softmax,
diag(1/s2, sigmoid(raw)^2 / (2 s2^2)) for the heteroscedastic Gaussian (mean, raw variance). So
H = sum_n Lambda_n (x) phi_n phi_n^T exactly ("full"), or by K-FAC ("kron", Martens & Grosse 2015)
H ~ N G (x) A with G = mean Lambda_n, A = mean phi_n phi_n^T, whose eigenvalues are N g_i a_j.

The prior precision delta is chosen each round by the Laplace evidence (MacKay 1992; Immer et al. 2021)

    log Z(delta) = log p(D | theta*) - delta ||theta*||^2 / 2 + (P/2) log delta - (1/2) sum_i log(lambda_i + delta),

concave in delta; its maximum is MacKay's fixed point delta = gamma / ||theta*||^2 with
gamma = sum_i lambda_i / (lambda_i + delta), found by bisection. K posterior samples are K last
layers drawn from q, sharing the trunk (one wide product, `last_layer_networks`). The output is
linear in theta, so these are also samples of the GLM (linearized) predictive; its closed-form
probit approximation (MacKay 1992) is `mean_network()` (evaluation = "deterministic").

Why not laplace-torch (the field's library, which computes the same quantities): `pip install
laplace-torch` requires torchvision, whose PyPI wheel is built for CUDA torch and fails to import
beside a CPU build of torch (our CI's), and `import laplace` imports torchmetrics, which imports
torchvision: the import itself fails. Its regression likelihood is homoscedastic (MSE), not our
heteroscedastic head. The last-layer GGN is a closed form of a few lines; tests/test_posteriors.py
checks it against autograd's Hessian (softmax) and an exact quadrature of the expected Hessian
(Gaussian), and against laplace-torch 0.3 (Hessian, evidence, chosen delta) where it is installed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from alab.backends.base import BACKENDS, SampledNetworks
from alab.backends.mc_dropout import MCDropoutParams, train_classifier
from alab.backends.weights import dropout_free_network, gradient_embed, last_layer, last_layer_networks, penultimate
from alab.config import from_mapping
from alab.errors import AlabError
from alab.models import Network
from alab.acquisition.regression import MIN_VARIANCE

HESSIANS = ("auto", "full", "kron")
FULL_MAX = 5000  # hessian = "auto": the full GGN up to this many last-layer parameters (a [P, P] eigendecomposition), K-FAC above
PREDICTIVES = ("probit", "map")


@dataclass(frozen=True)
class LaplaceParams:
    """Hyperparameters of the last-layer Laplace backend (the `[backend]` table of a recipe)."""

    model: str = "auto"  # gal_cnn | kirsch_cnn | mlp | mlp_regression | auto, trained without dropout
    model_options: dict[str, Any] = field(default_factory=dict)  # the model's own keywords
    init: str = "torch"  # torch | glorot | keras0.3
    epochs: int = 50  # MAP training (Adam), as mc_dropout: passes over the labeled set ...
    min_steps: int = 1000  # ... but at least this many gradient steps
    batch_size: int = 64
    lr: float = 1e-3  # Adam
    weight_decay: float = 0.5  # c in the MAP's L2 penalty (c / N) ||w||^2
    hessian: str = "auto"  # full | kron | auto (full up to 5000 last-layer parameters, else kron)
    prior_precision: float = 0.0  # delta of the last layer's prior N(0, I / delta); 0: chosen each round by the evidence
    predictive: str = "probit"  # evaluation = "deterministic": probit (the GLM predictive in closed form) | map

    def __post_init__(self) -> None:
        for name in ("epochs", "min_steps"):
            if getattr(self, name) < 0:
                raise AlabError(f"backend.{name} must not be negative, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise AlabError(f"backend.batch_size must be at least 1, got {self.batch_size}")
        if self.lr <= 0 or self.weight_decay < 0 or self.prior_precision < 0:
            raise AlabError("backend.lr must be > 0, backend.weight_decay and backend.prior_precision >= 0")
        if self.hessian not in HESSIANS:
            raise AlabError(f"backend.hessian must be one of {', '.join(HESSIANS)}, got {self.hessian!r}")
        if self.predictive not in PREDICTIVES:
            raise AlabError(f"backend.predictive must be one of {', '.join(PREDICTIVES)}, got {self.predictive!r}")

    def training(self) -> MCDropoutParams:
        """The MAP fit's settings, in the form `train_classifier` takes."""
        return MCDropoutParams(
            model=self.model, model_options=self.model_options, init=self.init, epochs=self.epochs, min_steps=self.min_steps,
            batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
        )  # fmt: skip


def output_fisher(outputs_N_O: Tensor, task: str) -> Tensor:
    """Lambda_n, the Fisher of the likelihood in the network's outputs: [N, O] -> [N, O, O].

    classification: diag(p) - p p^T (also the Hessian of the cross-entropy in the logits);
    regression, outputs (mu, raw) with s2 = softplus(raw) + floor: diag(1/s2, sigmoid(raw)^2 / (2 s2^2)).
    """
    if task == "classification":
        p_N_C = torch.softmax(outputs_N_O, dim=-1)
        return torch.diag_embed(p_N_C) - p_N_C[:, :, None] * p_N_C[:, None, :]
    mu_N, raw_N = outputs_N_O.unbind(dim=-1)
    s2_N = F.softplus(raw_N) + MIN_VARIANCE
    return torch.diag_embed(torch.stack([1 / s2_N, torch.sigmoid(raw_N).square() / (2 * s2_N.square())], dim=-1))


def with_bias_feature(features_N_D: Tensor) -> Tensor:
    """phi_n = [features, 1]: [N, D] -> [N, E = D + 1]."""
    return torch.cat([features_N_D, features_N_D.new_ones(features_N_D.shape[0], 1)], dim=1)


def full_ggn(phi_N_E: Tensor, fisher_N_O_O: Tensor) -> Tensor:
    """H = sum_n Lambda_n (x) phi_n phi_n^T, [O*E, O*E], parameters ordered as Theta [O, E] row by row."""
    O, E = fisher_N_O_O.shape[1], phi_N_E.shape[1]
    return torch.einsum("nab,nd,ne->adbe", fisher_N_O_O, phi_N_E, phi_N_E).reshape(O * E, O * E)


def kron_factors(phi_N_E: Tensor, fisher_N_O_O: Tensor) -> tuple[Tensor, Tensor]:
    """K-FAC's G = mean_n Lambda_n [O, O] and A = mean_n phi_n phi_n^T [E, E]: H ~ N G (x) A."""
    N = phi_N_E.shape[0]
    return fisher_N_O_O.mean(dim=0), phi_N_E.T @ phi_N_E / N


def evidence_prior_precision(eigenvalues_P: Tensor, theta_norm2: float) -> float:
    """argmax_delta log Z(delta) (module docstring): the root of gamma(delta) - delta ||theta*||^2, by bisection in log delta.

    gamma(delta) - delta ||theta||^2 decreases from gamma(0+) >= 0 to -inf, and gamma <= P bounds
    the root by P / ||theta||^2.
    """
    lam_P = eigenvalues_P.double().clamp(min=0)
    P = lam_P.numel()

    def excess(log_delta: float) -> float:  # 2 delta d log Z / d delta
        delta = math.exp(log_delta)
        return float((lam_P / (lam_P + delta)).sum()) - delta * theta_norm2

    lo, hi = math.log(1e-10), math.log(P / max(theta_norm2, 1e-30))
    if excess(lo) <= 0:
        return math.exp(lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def log_evidence(log_likelihood: float, eigenvalues_P: Tensor, theta_norm2: float, delta: float) -> float:
    """log Z(delta) of the module docstring (the Laplace approximation to the marginal likelihood)."""
    lam_P = eigenvalues_P.double().clamp(min=0)
    P = lam_P.numel()
    return log_likelihood - 0.5 * (delta * theta_norm2 - P * math.log(delta) + float(torch.log(lam_P + delta).sum()))


class LaplaceBackend:
    """Last-layer Laplace: a MAP network and a Gaussian over its last layer, K last layers drawn from it."""

    def __init__(
        self, params: LaplaceParams, *, input_shape: tuple[int, ...], num_classes: int, device: torch.device,
        task: str = "classification",
    ) -> None:  # fmt: skip
        self.params = params
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.device = device
        self.task = task
        self.network_: Network | None = None
        self.posterior_: dict[str, Any] | None = None
        self._build(torch.Generator())  # a bad model, option or shape: refused now, before a run starts

    def _build(self, generator: torch.Generator) -> Network:
        p = self.params
        return dropout_free_network(p.model, self.input_shape, self.num_classes, generator, self.task, init=p.init, options=p.model_options)

    def fit(self, x: Tensor, y: Tensor, *, generator: torch.Generator) -> LaplaceBackend:
        """MAP training from a fresh initialization, then the last layer's GGN and the evidence's prior precision."""
        network = self._build(generator).to(self.device)
        x, y = x.to(self.device), y.to(self.device)
        train_classifier(network, x, y, self.params.training(), generator, desc="train laplace")
        self.network_ = network
        self.posterior_ = self._posterior(network, x, y)
        return self

    def _posterior(self, network: Network, x_N: Tensor, y_N: Tensor) -> dict[str, Any]:
        """The GGN's eigendecomposition (full, or K-FAC's two factors), the MAP's log-likelihood, and delta."""
        with torch.no_grad():
            features_N_D = torch.cat([penultimate(network, x_N[i : i + 1024]) for i in range(0, len(x_N), 1024)])
            layer = last_layer(network)
            outputs_N_O = F.linear(features_N_D, layer.weight, layer.bias)
            phi_N_E = with_bias_feature(features_N_D).double()
            fisher_N_O_O = output_fisher(outputs_N_O.double(), self.task)
            log_likelihood = -float(network.loss(outputs_N_O, y_N)) * len(y_N)
        theta_norm2 = float(torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], dim=1).double().square().sum())
        O, E = fisher_N_O_O.shape[1], phi_N_E.shape[1]
        kind = self.params.hessian if self.params.hessian != "auto" else ("full" if O * E <= FULL_MAX else "kron")
        if kind == "full":
            lam_P, Q_P_P = torch.linalg.eigh(full_ggn(phi_N_E, fisher_N_O_O))
            posterior: dict[str, Any] = {"kind": "full", "eigenvalues": lam_P.clamp(min=0), "eigenvectors": Q_P_P}
        else:
            G_O_O, A_E_E = kron_factors(phi_N_E, fisher_N_O_O)
            (g_O, Q_G), (a_E, Q_A) = torch.linalg.eigh(G_O_O), torch.linalg.eigh(A_E_E)
            lam_P = (len(y_N) * g_O.clamp(min=0)[:, None] * a_E.clamp(min=0)[None, :]).flatten()  # [O, E] -> [O*E]
            posterior = {"kind": "kron", "eigenvalues": lam_P, "q_outputs": Q_G, "q_inputs": Q_A}
        delta = self.params.prior_precision or evidence_prior_precision(lam_P, theta_norm2)
        posterior.update(
            prior_precision=delta, log_evidence=log_evidence(log_likelihood, lam_P, theta_norm2, delta), labels=len(y_N)
        )
        return posterior

    def diagnostics(self) -> dict[str, Any]:
        """What this round's fit chose: the Hessian's structure, the prior precision and the log evidence."""
        posterior = self._fitted()[1]
        return {key: posterior[key] for key in ("kind", "prior_precision", "log_evidence", "labels")}

    def _scale(self) -> Tensor:
        """(lambda + delta)^-1/2: the posterior's standard deviations along its eigenvectors, [P] (kron: [O, E])."""
        network, posterior = self._fitted()
        scale_P = (posterior["eigenvalues"] + posterior["prior_precision"]).rsqrt()
        if posterior["kind"] == "kron":
            return scale_P.view(posterior["q_outputs"].shape[0], posterior["q_inputs"].shape[0])
        return scale_P

    def sample_last_layers(self, k: int, generator: torch.Generator) -> Tensor:
        """K draws Theta_k ~ q: [K, O, E], z drawn on the CPU from `generator` (reproducible across devices).

        full: theta* + Q (s * z); kron: Theta* + Q_G (S * Z) Q_A^T, as (Q_G (x) Q_A) vec(Z) = vec(Q_G Z Q_A^T).
        """
        network, posterior = self._fitted()
        layer = last_layer(network)
        theta_O_E = torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], dim=1).double()
        O, E = theta_O_E.shape
        scale = self._scale()
        z_K_P = torch.randn(k, O * E, generator=generator, dtype=torch.float64).to(theta_O_E.device)
        if posterior["kind"] == "full":
            deltas_K_O_E = ((z_K_P * scale) @ posterior["eigenvectors"].T).view(k, O, E)
        else:
            deltas_K_O_E = posterior["q_outputs"] @ (z_K_P.view(k, O, E) * scale) @ posterior["q_inputs"].T
        return (theta_O_E + deltas_K_O_E).float()

    def sample_networks(self, k: int, *, generator: torch.Generator) -> SampledNetworks:
        """K networks: the MAP trunk shared, K last layers drawn from q once: outputs [K, N, O]."""
        network, _ = self._fitted()
        theta_K_O_E = self.sample_last_layers(k, generator)
        return last_layer_networks(network, theta_K_O_E[:, :, :-1], theta_K_O_E[:, :, -1], self.device)

    def row_covariances(self) -> Tensor:
        """Sigma_oo, the [E, E] covariance of each row o of Theta under q: [O, E, E].

        full: Q_o diag(s^2) Q_o^T with Q_o the rows of Q for output o; kron: Q_A diag(w_o) Q_A^T with
        w_oj = sum_i Q_G[o, i]^2 s_ij^2. The variance of output o at phi_n is phi_n^T Sigma_oo phi_n.
        """
        network, posterior = self._fitted()
        scale = self._scale()
        if posterior["kind"] == "full":
            O = last_layer(network).out_features
            Q_O_E_P = posterior["eigenvectors"].view(O, -1, scale.numel())  # rows (o, e) of Q
            return torch.einsum("oep,p,ofp->oef", Q_O_E_P, scale.square(), Q_O_E_P)
        Q_G, Q_A = posterior["q_outputs"], posterior["q_inputs"]
        weights_O_E = Q_G.square() @ scale.square()  # [O, O] @ [O, E]
        return torch.einsum("ej,oj,fj->oef", Q_A, weights_O_E, Q_A)

    def mean_network(self) -> SampledNetworks:
        """One network for evaluation = "deterministic", as K = 1: the probit-approximated GLM predictive or the MAP.

        probit (MacKay 1992; Daxberger et al. 2021, eq. 12): p ~ softmax(f* / sqrt(1 + pi/8 var_f)),
        the closed form of the predictive of the logits f ~ N(f*, diag(J Sigma J^T)); regression: the MAP.
        """
        network, _ = self._fitted()
        layer = last_layer(network)
        probit = self.params.predictive == "probit" and self.task == "classification"
        covariances_O_E_E = self.row_covariances() if probit else None

        @torch.no_grad()
        def log_probs_1_N_C(x: Tensor) -> Tensor:
            features_N_D = penultimate(network, x.to(self.device))
            outputs_N_O = F.linear(features_N_D, layer.weight, layer.bias)
            if probit:
                phi_N_E = with_bias_feature(features_N_D).double()
                variances_N_O = torch.einsum("ne,oef,nf->no", phi_N_E, covariances_O_E_E, phi_N_E)
                outputs_N_O = outputs_N_O / (1 + math.pi / 8 * variances_N_O).sqrt().float()
            return network.output(outputs_N_O.float())[None]

        return log_probs_1_N_C

    def embed(self, x: Tensor) -> Tensor:
        """The MAP network's penultimate features [N, D]."""
        with torch.no_grad():
            return penultimate(self._fitted()[0], x.to(self.device))

    def gradient_embed(self, x: Tensor) -> Tensor:
        """BADGE's gradient embedding [N, C*D] of the MAP network."""
        with torch.no_grad():
            return gradient_embed(self._fitted()[0], x.to(self.device))

    def state_dict(self) -> dict[str, Any]:
        network, posterior = self._fitted()
        return {"params": asdict(self.params), "network": network.state_dict(), "posterior": dict(posterior)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network_ = self._build(torch.Generator().manual_seed(0)).to(self.device)  # weights are overwritten just below
        self.network_.load_state_dict(state["network"])
        self.network_.eval()
        self.posterior_ = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in state["posterior"].items()}

    def _fitted(self) -> tuple[Network, dict[str, Any]]:
        if self.network_ is None or self.posterior_ is None:
            raise RuntimeError("fit the backend (or load a checkpoint) before sampling networks")
        return self.network_, self.posterior_


@BACKENDS.register("laplace", "Last-layer Laplace (MacKay 1992): GGN (full or K-FAC), prior precision by the evidence")
def make_laplace(
    params: dict[str, Any], *, input_shape: tuple[int, ...], num_classes: int, device: torch.device, task: str = "classification"
) -> LaplaceBackend:
    return LaplaceBackend(from_mapping(LaplaceParams, params, "backend"), input_shape=input_shape, num_classes=num_classes, device=device, task=task)
