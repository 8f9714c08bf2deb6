"""The weight-space posteriors' own closed forms: Laplace's GGN and evidence, SWAG's moments, cSGLD's
schedule, HMC's kernel and its diagnostics; then each of them through a run and on regression."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alab.backends import BACKENDS
from alab.backends.hmc import HMCParams, leapfrog, sample_hmc
from alab.backends.laplace import (
    evidence_prior_precision,
    full_ggn,
    kron_factors,
    log_evidence,
    output_fisher,
    with_bias_feature,
)
from alab.backends.mcmc import DualAveraging, effective_sample_size, split_rhat
from alab.backends.sgmcmc import SGMCMCParams, cyclical_step_size
from alab.backends.swag import Moments, swag_samples
from alab.errors import AlabError
from alab.acquisition.regression import gaussian_nll_loss
from test_backends import blobs

CPU = torch.device("cpu")
D64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, input_shape=(2,), num_classes=2, **params):
    return BACKENDS.get(name)(params, input_shape=input_shape, num_classes=num_classes, device=CPU)


# --- Laplace ----------------------------------------------------------------------------------------


def _loss_in_theta(phi_N_E: torch.Tensor, y_N: torch.Tensor, task: str):
    def loss(theta_P: torch.Tensor) -> torch.Tensor:
        outputs_N_O = phi_N_E @ theta_P.view(-1, phi_N_E.shape[1]).T
        return F.cross_entropy(outputs_N_O, y_N, reduction="sum") if task == "classification" else gaussian_nll_loss(outputs_N_O, y_N) * len(y_N)

    return loss


def test_the_full_ggn_of_the_softmax_is_the_hessian_of_the_cross_entropy_in_the_last_layer() -> None:
    """Outputs linear in theta: the GGN sum_n J^T Lambda J is the exact Hessian, here from autograd."""
    g = torch.Generator().manual_seed(0)
    phi_N_E = with_bias_feature(torch.randn(7, 3, generator=g, dtype=D64))
    theta_O_E = torch.randn(4, 4, generator=g, dtype=D64)
    y_N = torch.randint(0, 4, (7,), generator=g)
    fisher_N_O_O = output_fisher(phi_N_E @ theta_O_E.T, "classification")
    hessian_P_P = torch.autograd.functional.hessian(_loss_in_theta(phi_N_E, y_N, "classification"), theta_O_E.flatten())
    torch.testing.assert_close(full_ggn(phi_N_E, fisher_N_O_O), hessian_P_P)


def test_the_gaussian_heads_fisher_is_the_expected_hessian_of_its_nll() -> None:
    """E_y[Hessian of -log N(y; mu, softplus(raw) + floor)] in (mu, raw), by exact Gauss-Hermite quadrature in y."""
    outputs_1_2 = torch.tensor([[0.3, -0.7]], dtype=D64)
    mu, s2 = 0.3, F.softplus(torch.tensor(-0.7, dtype=D64)).item() + 1e-6
    nodes, weights = np.polynomial.hermite_e.hermegauss(10)  # exact for polynomials of degree < 20 in y
    expected_2_2 = torch.zeros(2, 2, dtype=D64)
    for t, w in zip(nodes, weights / weights.sum()):
        y = torch.tensor([mu + math.sqrt(s2) * t], dtype=D64)
        expected_2_2 += w * torch.autograd.functional.hessian(lambda o: gaussian_nll_loss(o.view(1, 2), y), outputs_1_2.flatten())
    torch.testing.assert_close(output_fisher(outputs_1_2, "regression")[0], expected_2_2)


def test_kfac_is_exact_for_one_item_and_its_eigenvalues_are_the_products() -> None:
    g = torch.Generator().manual_seed(1)
    phi_1_E = with_bias_feature(torch.randn(1, 3, generator=g, dtype=D64))
    fisher_1_O_O = output_fisher(torch.randn(1, 3, generator=g, dtype=D64), "classification")
    G, A = kron_factors(phi_1_E, fisher_1_O_O)
    torch.testing.assert_close(torch.kron(G, A), full_ggn(phi_1_E, fisher_1_O_O))
    phi_N_E = with_bias_feature(torch.randn(9, 3, generator=g, dtype=D64))
    G, A = kron_factors(phi_N_E, output_fisher(torch.randn(9, 3, generator=g, dtype=D64), "classification"))
    products = (torch.linalg.eigvalsh(G)[:, None] * torch.linalg.eigvalsh(A)[None, :]).flatten().sort().values
    torch.testing.assert_close(torch.linalg.eigvalsh(torch.kron(G, A)), products)


def test_the_evidence_is_maximized_and_equals_its_formula_with_a_log_determinant() -> None:
    g = torch.Generator().manual_seed(2)
    root = torch.randn(6, 6, generator=g, dtype=D64)
    H = root @ root.T
    lam = torch.linalg.eigvalsh(H)
    theta_norm2, log_lik = 3.7, -12.0
    delta = evidence_prior_precision(lam, theta_norm2)

    def direct(d: float) -> float:  # log p(D|theta*) + log N(theta*; 0, I/d) + (P/2) log 2 pi - (1/2) log det(H + d I)
        log_prior = 0.5 * 6 * math.log(d / (2 * math.pi)) - 0.5 * d * theta_norm2
        return log_lik + log_prior + 3 * math.log(2 * math.pi) - 0.5 * float(torch.logdet(H + d * torch.eye(6, dtype=D64)))

    assert log_evidence(log_lik, lam, theta_norm2, delta) == pytest.approx(direct(delta), abs=1e-9)
    grid = [delta * math.exp(s) for s in np.linspace(-3, 3, 121)]
    assert max(direct(d) for d in grid) <= direct(delta) + 1e-12
    gamma = float((lam / (lam + delta)).sum())
    assert delta == pytest.approx(gamma / theta_norm2, rel=1e-9)  # MacKay's fixed point


@pytest.mark.parametrize("hessian", ["full", "kron"])
def test_laplace_draws_have_the_posterior_covariance(hessian: str) -> None:
    """20,000 last layers: their mean is the MAP's and their covariance (H + delta I)^-1, H full or K-FAC."""
    x_N_2, y_N = blobs(20, seed=0)
    backend = make("laplace", model_options={"hidden": 3}, epochs=0, min_steps=100, hessian=hessian).fit(x_N_2, y_N, generator=torch.Generator().manual_seed(0))
    network, posterior = backend.network_, backend.posterior_
    from alab.backends.weights import last_layer, penultimate

    with torch.no_grad():
        features = penultimate(network, x_N_2)
        layer = last_layer(network)
        phi = with_bias_feature(features).double()
        fisher = output_fisher(F.linear(features, layer.weight, layer.bias).double(), "classification")
    H = full_ggn(phi, fisher) if hessian == "full" else len(y_N) * torch.kron(*kron_factors(phi, fisher))
    covariance_P_P = torch.linalg.inv(H + posterior["prior_precision"] * torch.eye(H.shape[0], dtype=D64))
    theta_S_P = backend.sample_last_layers(20000, torch.Generator().manual_seed(1)).double().flatten(1)
    theta_star = torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], dim=1).double().flatten()
    scale = covariance_P_P.diagonal().sqrt().max()
    torch.testing.assert_close(theta_S_P.mean(0), theta_star, rtol=0, atol=float(5 * scale / math.sqrt(20000)))
    torch.testing.assert_close(torch.cov(theta_S_P.T), covariance_P_P, rtol=0, atol=float(0.06 * scale**2))
    O, E = layer.weight.shape[0], phi.shape[1]
    blocks = torch.stack([covariance_P_P[o * E : (o + 1) * E, o * E : (o + 1) * E] for o in range(O)])
    torch.testing.assert_close(backend.row_covariances(), blocks)  # the probit's output variances use these


def test_laplace_agrees_with_laplace_torch() -> None:
    """Our last-layer full GGN, evidence and chosen delta against laplace-torch (an optional reference: `pip install laplace-torch`)."""
    laplace_torch = pytest.importorskip("laplace", reason="laplace-torch not installed (tests/test_posteriors.py: optional reference)")
    x_N_2, y_N = blobs(30, seed=1)
    backend = make("laplace", epochs=0, min_steps=200, hessian="full").fit(x_N_2, y_N, generator=torch.Generator().manual_seed(0))
    network = backend.network_
    sequential = torch.nn.Sequential(*network.trunk, network.head.layers[0], torch.nn.ReLU(), network.head.layers[1])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_N_2, y_N), batch_size=len(y_N))
    reference = laplace_torch.Laplace(sequential, "classification", subset_of_weights="last_layer", hessian_structure="full")
    reference.fit(loader)
    O, E = 2, network.head.layers[1].in_features + 1
    # theirs: [vec(W) row by row, b]; ours: Theta = [W | b] row by row
    order = torch.tensor([o * E + e for o in range(O) for e in range(E - 1)] + [o * E + E - 1 for o in range(O)])
    lam, Q = backend.posterior_["eigenvalues"], backend.posterior_["eigenvectors"]
    torch.testing.assert_close((Q * lam) @ Q.T, reference.H.double()[order.argsort()][:, order.argsort()], rtol=1e-4, atol=1e-4)
    delta = backend.posterior_["prior_precision"]
    theirs = float(reference.log_marginal_likelihood(prior_precision=torch.tensor([delta])))
    assert backend.posterior_["log_evidence"] == pytest.approx(theirs, rel=1e-4)
    reference.optimize_prior_precision(method="marglik", n_steps=300, lr=0.1)
    assert delta == pytest.approx(float(reference.prior_precision), rel=1e-3)


# --- SWAG -------------------------------------------------------------------------------------------


def test_swag_moments_are_the_snapshots_moments_and_the_last_deviations() -> None:
    theta_S_P = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=D64)
    moments = Moments(5, rank=3, device=CPU)
    moments.mean_P, moments.sq_mean_P = moments.mean_P.double(), moments.sq_mean_P.double()
    for theta_P in theta_S_P:
        moments.collect(theta_P)
    torch.testing.assert_close(moments.mean_P, theta_S_P.mean(0))
    torch.testing.assert_close(moments.sq_mean_P, theta_S_P.square().mean(0))
    running_means = theta_S_P.cumsum(0) / torch.arange(1, 8, dtype=D64)[:, None]
    torch.testing.assert_close(torch.stack(moments.deviations), (theta_S_P - running_means)[-3:])


def test_swag_samples_have_the_diagonal_plus_low_rank_covariance() -> None:
    """Cov[theta] = diag / 2 + D^T D / (2 (C - 1)) (Maddox et al. 2019, eq. 1 with scale 1/2)."""
    g = torch.Generator().manual_seed(1)
    mean_P, deviations_C_P = torch.randn(4, generator=g), torch.randn(3, 4, generator=g)
    diag_P = torch.rand(4, generator=g) + 0.1
    sq_mean_P = diag_P + mean_P.square()
    theta_S_P = swag_samples(mean_P, sq_mean_P, deviations_C_P, 100000, torch.Generator().manual_seed(2)).double()
    expected = torch.diag(diag_P / 2) + deviations_C_P.T @ deviations_C_P / (2 * 2)
    torch.testing.assert_close(theta_S_P.mean(0), mean_P.double(), rtol=0, atol=0.02)
    torch.testing.assert_close(torch.cov(theta_S_P.T), expected.double(), rtol=0, atol=0.03)


def test_swag_on_the_head_shares_the_trunk() -> None:
    x_N_2, y_N = blobs(20, seed=0)
    backend = make("swag", weights="head", epochs=0, min_steps=50, swag_steps=40, swag_every=2).fit(x_N_2, y_N, generator=torch.Generator().manual_seed(0))
    trunk_weight = backend.network_.trunk[1].weight.detach().clone()
    fitted_only = make("swag", weights="head", epochs=0, min_steps=50, swag_steps=40, swag_every=2)
    assert backend.moments_["deviations"].shape == (20, sum(p.numel() for p in backend.network_.head.parameters()))
    fitted_only.fit(x_N_2, y_N, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fitted_only.network_.trunk[1].weight, trunk_weight, rtol=0, atol=0)


# --- cSGLD ------------------------------------------------------------------------------------------


def test_the_cyclical_step_size_is_a_cosine_from_lr_to_zero_each_cycle() -> None:
    assert cyclical_step_size(0, 100, 0.4) == pytest.approx(0.4)
    assert cyclical_step_size(50, 100, 0.4) == pytest.approx(0.2)
    assert cyclical_step_size(100, 100, 0.4) == pytest.approx(0.4)  # the next cycle restarts
    assert cyclical_step_size(99, 100, 0.4) == pytest.approx(0.2 * (math.cos(math.pi * 0.99) + 1))


def test_csgld_keeps_the_last_states_of_each_cycle() -> None:
    backend = make("sgmcmc", cycles=3, cycle_steps=50, samples_per_cycle=3, sample_every=4)
    kept = [t for t in range(150) if backend.keeps(t)]
    assert kept == [41, 45, 49, 91, 95, 99, 141, 145, 149]
    with pytest.raises(AlabError, match="must fit in the 10 sampling steps"):
        SGMCMCParams(cycle_steps=50, samples_per_cycle=3, sample_every=5)


def test_sgld_noise_alone_samples_the_prior() -> None:
    """Inputs 0: the first layer's weights get no gradient from the data and follow Langevin on the prior N(0, 0.5^2)."""
    x_N_2, y_N = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)  # N = 4: noise and prior both scale with 1/N
    backend = make("sgmcmc", model_options={"hidden": 64}, prior_std=0.5, lr=0.1, cycles=1, cycle_steps=4000, exploration=0.0,
                   samples_per_cycle=1, batch_size=4).fit(x_N_2, y_N, generator=torch.Generator().manual_seed(0))  # fmt: skip
    first_W = backend.samples_["trunk.1.weight"].flatten()  # 128 weights, 2 -> 64
    assert abs(float(first_W.mean())) < 0.15 and 0.42 < float(first_W.std()) < 0.58  # 128 draws: std within +-16%


# --- HMC --------------------------------------------------------------------------------------------


def _gaussian_potential(precision_P_P: torch.Tensor):
    def potential(theta_C_P: torch.Tensor):
        u_C = 0.5 * ((theta_C_P @ precision_P_P) * theta_C_P).sum(1)
        return u_C, theta_C_P @ precision_P_P, -u_C

    return potential


def test_leapfrog_is_reversible_and_nearly_conserves_energy() -> None:
    precision = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=D64)
    potential = _gaussian_potential(precision)
    theta, r = torch.tensor([[1.0, -0.5]], dtype=D64), torch.tensor([[0.3, 0.8]], dtype=D64)
    u0, grad0, _ = potential(theta)
    step = torch.tensor([0.01], dtype=D64)
    theta1, r1, u1, grad1, _ = leapfrog(potential, theta, r, grad0, step, 50)
    assert abs(float(u1 + 0.5 * r1.square().sum() - u0 - 0.5 * r.square().sum())) < 1e-4
    theta2, r2, *_ = leapfrog(potential, theta1, -r1, grad1, step, 50)
    torch.testing.assert_close(theta2, theta)
    torch.testing.assert_close(-r2, r)


def test_hmc_samples_a_correlated_gaussian_at_the_target_acceptance() -> None:
    covariance = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=D64)
    params = HMCParams(chains=4, warmup=300, draws=1500, leapfrog_steps=5, step_size=0.01, target_accept=0.65, keep=4)
    draws_S_C_P, _, accept_S_C, step_C = sample_hmc(_gaussian_potential(torch.linalg.inv(covariance)), torch.zeros(4, 2, dtype=D64), params, torch.Generator().manual_seed(0))
    flat = draws_S_C_P.reshape(-1, 2)
    torch.testing.assert_close(flat.mean(0), torch.zeros(2, dtype=D64), rtol=0, atol=0.1)
    torch.testing.assert_close(torch.cov(flat.T), covariance, rtol=0, atol=0.1)
    assert 0.5 < float(accept_S_C.mean()) < 0.8
    assert split_rhat(draws_S_C_P[:, :, 0].T) < 1.02


def test_dual_averaging_finds_the_step_size_of_the_target_acceptance() -> None:
    """With acceptance exp(-eps) (deterministic), eps converges to -log(0.65)."""
    adaptation = DualAveraging(torch.tensor([1e-3], dtype=D64), target=0.65)
    step = torch.tensor([1e-3], dtype=D64)
    for _ in range(2000):
        step = adaptation.update(torch.exp(-step))
    assert float(adaptation.final()) == pytest.approx(-math.log(0.65), rel=0.02)


def test_split_rhat_by_hand() -> None:
    """Halves [1,2], [3,4], [2,3], [4,5]: n = 2, W = 1/2, B = 2 var(1.5, 3.5, 2.5, 4.5) = 10/3, var+ = W/2 + B/2."""
    rhat = split_rhat(torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0]]))
    assert rhat == pytest.approx(math.sqrt((0.25 + 5 / 3) / 0.5))


def test_rhat_and_ess_of_independent_and_autocorrelated_chains() -> None:
    g = torch.Generator().manual_seed(0)
    iid_C_S = torch.randn(4, 5000, generator=g, dtype=D64)
    assert split_rhat(iid_C_S) < 1.005
    assert effective_sample_size(iid_C_S) == pytest.approx(20000, rel=0.1)
    phi, ar_C_S = 0.5, torch.zeros(4, 5000, dtype=D64)  # AR(1): ESS = C S (1 - phi) / (1 + phi)
    noise = torch.randn(4, 5000, generator=g, dtype=D64)
    for t in range(1, 5000):
        ar_C_S[:, t] = phi * ar_C_S[:, t - 1] + noise[:, t]
    assert effective_sample_size(ar_C_S) == pytest.approx(20000 / 3, rel=0.12)
    assert split_rhat(iid_C_S + torch.arange(4, dtype=D64)[:, None]) > 1.5  # chains in different places


def test_hmc_refuses_a_model_too_large_in_one_line() -> None:
    with pytest.raises(AlabError, match=r"at most 100,000 weights.*has \d{3},\d{3}") as error:
        make("hmc", input_shape=(1, 28, 28), num_classes=10)
    assert "\n" not in str(error.value)


# --- through a run, and regression ------------------------------------------------------------------


TINY = {
    "laplace": {"epochs": 1, "min_steps": 10},
    "swag": {"epochs": 1, "min_steps": 10, "swag_steps": 20, "swag_every": 1},
    "sgmcmc": {"cycles": 2, "cycle_steps": 20, "sample_every": 2},
    "hmc": {"chains": 2, "init_steps": 10, "warmup": 4, "draws": 4, "leapfrog_steps": 3, "keep": 4},
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_run_records_the_resolved_table_and_the_fits_diagnostics(name: str, tmp_path) -> None:
    from alab.config import BackendConfig, RunConfig
    from alab.loop import start_run

    config = RunConfig(initial=10, query_size=5, rounds=1, samples=3, backend=BackendConfig(name, TINY[name]))
    run_dir = start_run(config, tmp_path / "run", echo=lambda line: None)
    assert (run_dir / "curve.csv").read_text().count("\n") == 3
    diagnostics_path = run_dir / f"{name}.json"
    if name in ("hmc", "laplace"):
        rounds = json.loads(diagnostics_path.read_text())
        assert [entry["round"] for entry in rounds] == [0, 1]
        key = "rhat_log_likelihood" if name == "hmc" else "prior_precision"
        assert all(math.isfinite(entry[key]) for entry in rounds)
    else:
        assert not diagnostics_path.exists()


# The Gaussian NLL's gradient in the mean scales with 1/s2: plain SGD (SWAG, SGLD) needs small steps
REGRESSION = {
    "laplace": {"min_steps": 300},
    "swag": {"min_steps": 300, "swag_lr": 3e-4},
    "sgmcmc": {"cycle_steps": 200, "lr": 0.05},
    "hmc": {"init_steps": 300},
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_regression_gives_gaussian_outputs_that_fit_a_line(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    x_N_1 = torch.linspace(-1, 1, 40)[:, None]
    y_N = 2 * x_N_1[:, 0] + 0.1 * torch.randn(40, generator=g)
    backend = BACKENDS.get(name)({**TINY[name], **REGRESSION[name]}, input_shape=(1,), num_classes=0, device=CPU, task="regression")
    backend.fit(x_N_1, y_N, generator=torch.Generator().manual_seed(1))
    outputs_K_N_2 = backend.sample_networks(4, generator=torch.Generator().manual_seed(2))(x_N_1)
    assert outputs_K_N_2.shape == (4, 40, 2) and torch.isfinite(outputs_K_N_2).all()
    rmse = float((outputs_K_N_2[..., 0].mean(0) - y_N).square().mean().sqrt())
    assert rmse < 0.5, rmse  # the targets' std is 1.2


@pytest.mark.parametrize("name", sorted(TINY))
def test_embed_gives_one_networks_penultimate_features(name: str) -> None:
    x_N_2, y_N = blobs(10, seed=0)
    backend = make(name, **TINY[name]).fit(x_N_2, y_N, generator=torch.Generator().manual_seed(0))
    features_N_D = backend.embed(x_N_2)
    assert features_N_D.shape == (20, 128) and torch.isfinite(features_N_D).all() and (features_N_D >= 0).all()  # after a ReLU

