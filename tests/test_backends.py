"""One conformance suite over every registered backend, then each backend's own closed forms."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from alab.acquisition.scores import bald
from alab.backends import BACKENDS, Backend, Embeds, GradientEmbeds, predict_log_probs
from alab.backends.ensemble import EnsembleParams, stacked_logits
from alab.backends.vi import (
    BayesConv2d,
    BayesLinear,
    VIParams,
    build_bayes_network,
    gaussian_kl,
    kl_divergence,
    prior_log_prob,
)
from alab.config import config_from_dict
from alab.errors import AlabError
from alab.models import build_model

# Short training: enough for the 2-D toy problems, seconds per fit.
FAST: dict[str, dict[str, Any]] = {
    "mc_dropout": {"epochs": 0, "min_steps": 200},
    "ensemble": {"epochs": 0, "min_steps": 200},
    "vi": {"epochs": 0, "min_steps": 300},
    "laplace": {"epochs": 0, "min_steps": 200},
    "swag": {"epochs": 0, "min_steps": 200, "swag_steps": 200},
    "sgmcmc": {"cycles": 4, "cycle_steps": 100},
    "hmc": {"chains": 2, "init_steps": 200, "warmup": 30, "draws": 30, "leapfrog_steps": 10, "keep": 8},
}
# Shorter still, for the determinism check: a few steps of each
SHORT: dict[str, dict[str, Any]] = {
    "mc_dropout": {"min_steps": 20},
    "ensemble": {"min_steps": 20},
    "vi": {"min_steps": 20},
    "laplace": {"min_steps": 20},
    "swag": {"min_steps": 20, "swag_steps": 20, "swag_every": 5, "rank": 4},
    "sgmcmc": {"cycles": 2, "cycle_steps": 20, "sample_every": 2},
    "hmc": {"init_steps": 5, "warmup": 3, "draws": 3, "keep": 3},
}
# A key each backend's table has, and a valid value for it (HMC is full-batch: no batch_size)
TABLE_KEY: dict[str, tuple[str, Any]] = {name: ("batch_size", 32) for name in FAST} | {"hmc": ("chains", 3)}
CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks are tiny: a second thread only adds synchronization (ruinous on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_registered_backend_is_covered() -> None:
    assert sorted(FAST) == BACKENDS.names()


def make(name: str, input_shape: tuple[int, ...] = (2,), num_classes: int = 2, **params: Any) -> Backend:
    return BACKENDS.get(name)({**FAST[name], **params}, input_shape=input_shape, num_classes=num_classes, device=CPU)


def blobs(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two separable Gaussian blobs in 2-D, centred at (-2, 0) and (2, 0), standard deviation 0.5."""
    g = torch.Generator().manual_seed(seed)
    centres_2_2 = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    y_N = torch.arange(2).repeat_interleave(n_per_class)
    x_N_2 = centres_2_2[y_N] + 0.5 * torch.randn(len(y_N), 2, generator=g)
    return x_N_2, y_N


def expected_k(backend: Backend, k: int) -> int:
    """K asked for, or fewer where the posterior is a fixed set: an ensemble's members, the MCMC draws kept."""
    p = backend.params
    fixed = {"members": p.__dict__.get("members"), "sgmcmc": None, "hmc": p.__dict__.get("keep")}
    if hasattr(p, "samples_per_cycle"):
        fixed["sgmcmc"] = p.cycles * p.samples_per_cycle
    sizes = [size for size in fixed.values() if size is not None]
    return min(k, *sizes) if sizes else k


@pytest.fixture(scope="module", params=sorted(FAST))
def fitted(request: pytest.FixtureRequest) -> tuple[str, Backend, torch.Tensor, torch.Tensor]:
    x_N_2, y_N = blobs(50, seed=0)
    backend = make(request.param)
    returned = backend.fit(x_N_2, y_N, generator=torch.Generator().manual_seed(1))
    assert returned is backend  # fit returns self
    return request.param, backend, x_N_2, y_N


def test_shape_and_normalized_finite_log_probs(fitted) -> None:
    name, backend, x_N_2, _ = fitted
    for k in (1, 3, 8):
        log_probs_K_N_C = predict_log_probs(backend, x_N_2[:7], k, generator=torch.Generator().manual_seed(2))
        assert log_probs_K_N_C.shape == (expected_k(backend, k), 7, 2)
        assert torch.isfinite(log_probs_K_N_C).all()
        sums_K_N = log_probs_K_N_C.logsumexp(dim=-1)
        torch.testing.assert_close(sums_K_N, torch.zeros_like(sums_K_N), atol=1e-5, rtol=0)


def test_the_same_networks_score_every_chunk(fitted) -> None:
    """A sample is a whole network: scoring in two chunks equals scoring at once."""
    _, backend, x_N_2, _ = fitted
    networks = backend.sample_networks(4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = networks(x_N_2)
        parts = torch.cat([networks(x_N_2[:30]), networks(x_N_2[30:])], dim=1)
    torch.testing.assert_close(parts, whole)


def test_learns_a_separable_problem(fitted) -> None:
    _, backend, x_N_2, y_N = fitted
    log_probs_K_N_C = predict_log_probs(backend, x_N_2, 5, generator=torch.Generator().manual_seed(2))
    accuracy = (log_probs_K_N_C.logsumexp(dim=0).argmax(dim=-1) == y_N).float().mean()
    assert accuracy > 0.95


def test_state_dict_round_trip_gives_identical_predictions(fitted) -> None:
    name, backend, x_N_2, _ = fitted
    state = backend.state_dict()
    restored = make(name)
    restored.load_state_dict(state)
    before = predict_log_probs(backend, x_N_2, 4, generator=torch.Generator().manual_seed(5))
    after = predict_log_probs(restored, x_N_2, 4, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_epistemic_uncertainty_grows_away_from_the_data(fitted, request: pytest.FixtureRequest) -> None:
    """Mean BALD on a ring of radius 12 around the data is at least twice the mean BALD on the data."""
    name, backend, x_N_2, _ = fitted
    if name == "laplace":
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "last-layer Laplace on a ReLU network: along a ray the logits' mean and spread grow together, so far-away "
            "BALD levels off (Kristiadi et al. 2020), here 1.5x the on-data BALD, which the evidence's small delta keeps high"
        )))  # fmt: skip
    angles_A = torch.linspace(0, 2 * math.pi, 64)
    far_A_2 = 12 * torch.stack([angles_A.cos(), angles_A.sin()], dim=1)
    generator = torch.Generator().manual_seed(6)
    networks = backend.sample_networks(20, generator=generator)
    with torch.no_grad():
        on_data, far = bald(networks(x_N_2)).mean(), bald(networks(far_A_2)).mean()
    assert far >= 2 * on_data, (float(far), float(on_data))


def embedded_network(name: str, backend: Any) -> Any:
    """The network a weight-space backend embeds with: its MAP (laplace), its SWA mean (swag), its newest kept state (hmc, sgmcmc)."""
    from alab.backends.weights import sample_network

    if name in ("laplace", "swag"):
        return backend._fitted()[0]
    network, samples = backend._fitted()
    index = 0 if name == "hmc" else next(iter(samples.values())).shape[0] - 1
    return sample_network(network, samples, index)


def last_layer_gradients(name: str, backend: Any, x_1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """By autograd, of one item: the cross-entropy at the predicted class, its gradient over every
    last layer's weight [B, C, D] and bias [B, C] (B networks: an ensemble's members, else 1).

    The embeddings' reference: dL/dW = r h^T and dL/db = r, so the penultimate features are
    h = (dL/dW)[c] / (dL/db)[c] for any class c, here the predicted one (r = p - 1 there, never 0).
    """
    if name not in ("ensemble", "vi"):  # one plain network: mc_dropout's with dropout off, else the one `embed` uses
        network = backend.network_ if name == "mc_dropout" else embedded_network(name, backend)
        last = network.head.layers[-1]
        weights, biases = [last.weight], [last.bias]
        forward = lambda: network(x_1)[None]  # noqa: E731 (no generator: dropout off)
    elif name == "ensemble":
        base, stacked = backend._fitted()
        members = [{k: v[m].clone().requires_grad_(k.startswith("head.layers.1")) for k, v in stacked.items()} for m in range(backend.params.members)]
        weights, biases = [m["head.layers.1.weight"] for m in members], [m["head.layers.1.bias"] for m in members]
        forward = lambda: torch.stack([functional_call(base, m, (x_1,)) for m in members])  # noqa: E731
    else:
        means = [(layer.weight.detach()[None].clone(), layer.bias.detach()[None].clone()) for layer in backend.network_.bayesian()]
        weights, biases = [means[-1][0].requires_grad_()], [means[-1][1].requires_grad_()]
        forward = lambda: backend.network_.forward_sampled(x_1, means)  # noqa: E731
    with torch.enable_grad():
        logits_B_1_C = forward()
        predicted = int(logits_B_1_C.softmax(-1).mean(dim=0).argmax(dim=-1))
        loss = sum(F.cross_entropy(logits_1_C, torch.tensor([predicted])) for logits_1_C in logits_B_1_C)
        grads = torch.autograd.grad(loss, [*weights, *biases])
    B = len(weights)
    return torch.stack([g.reshape(g.shape[-2:]) for g in grads[:B]]), torch.stack([g.reshape(-1) for g in grads[B:]])


def test_every_backend_gives_embeddings_that_autograd_confirms(fitted) -> None:
    """`gradient_embed` is the last layers' loss gradient at the predicted class, `embed` their input, per network side by side."""
    name, backend, x_N_2, _ = fitted
    assert isinstance(backend, Embeds) and isinstance(backend, GradientEmbeds)
    x_6_2 = torch.cat([x_N_2[:3], torch.tensor([[0.0, 0.0], [0.2, 0.3], [-0.2, -0.3]])])  # 3 items near the boundary
    features_N_F, gradients_N_E = backend.embed(x_6_2), backend.gradient_embed(x_6_2)
    recovered = 0
    for n in range(6):
        weight_grads_B_C_D, bias_grads_B_C = last_layer_gradients(name, backend, x_6_2[n : n + 1])
        torch.testing.assert_close(gradients_N_E[n], weight_grads_B_C_D.reshape(-1), rtol=1e-4, atol=1e-6)
        c = int(bias_grads_B_C[0].abs().argmax())  # the predicted class: r = p - 1
        if float(bias_grads_B_C[:, c].abs().min()) < 1e-6:  # p = 1 in float32 (HMC's sharp draws): r = 0, h is not recoverable
            continue
        features_B_D = weight_grads_B_C_D[:, c, :] / bias_grads_B_C[:, c : c + 1]
        torch.testing.assert_close(features_N_F[n], features_B_D.reshape(-1), rtol=1e-4, atol=1e-5)
        recovered += 1
    assert recovered, "every item predicted with probability 1: the features were never checked"


@pytest.mark.parametrize("name", sorted(FAST))
def test_seeded_determinism(name: str) -> None:
    x_N_2, y_N = blobs(10, seed=0)

    def run(seed: int) -> torch.Tensor:
        backend = make(name, **SHORT[name]).fit(x_N_2, y_N, generator=torch.Generator().manual_seed(seed))
        return predict_log_probs(backend, x_N_2, 3, generator=torch.Generator().manual_seed(9))

    torch.testing.assert_close(run(1), run(1), rtol=0, atol=0)
    assert not torch.equal(run(1), run(2))


@pytest.mark.parametrize("name", sorted(FAST))
def test_params_are_validated_by_the_recipe_table(name: str) -> None:
    key, value = TABLE_KEY[name]
    config = config_from_dict({"backend": {"name": name, key: value}})
    backend = BACKENDS.get(config.backend.name)(config.backend.params, input_shape=(2,), num_classes=2, device=CPU)
    assert getattr(backend.params, key) == value
    with pytest.raises(AlabError, match="unknown key backend.no_such_key"):
        BACKENDS.get(name)({"no_such_key": 1}, input_shape=(2,), num_classes=2, device=CPU)
    with pytest.raises(AlabError, match="backend.lr must be"):
        BACKENDS.get(name)({"lr": "fast"}, input_shape=(2,), num_classes=2, device=CPU)


# --- deep ensembles -------------------------------------------------------------------------------


def test_vmapped_members_equal_their_plain_networks() -> None:
    backend = make("ensemble", input_shape=(1, 28, 28), num_classes=10, members=3, model="gal_cnn")
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    backend.load_state_dict({"members": backend.init_members(torch.Generator().manual_seed(1))[1]})
    log_probs_K_N_C = predict_log_probs(backend, x, 3, generator=torch.Generator())
    generator = torch.Generator().manual_seed(1)  # the members, rebuilt one by one as `init_members` draws them
    for m in range(3):
        member = build_model("gal_cnn", (1, 28, 28), 10, generator)
        torch.testing.assert_close(log_probs_K_N_C[m], torch.log_softmax(member(x), dim=-1), rtol=1e-5, atol=1e-5)


def test_ensemble_training_equals_sequential_members() -> None:
    """One vmapped Adam over stacked members = M plain Adams over the same minibatches."""
    x_N_2, y_N = blobs(20, seed=3)
    params = EnsembleParams(members=2, epochs=3, min_steps=0, batch_size=16, weight_decay=0.5)
    backend = BACKENDS.get("ensemble")(dict(members=2, epochs=3, min_steps=0, batch_size=16), input_shape=(2,), num_classes=2, device=CPU)
    backend.fit(x_N_2, y_N, generator=torch.Generator().manual_seed(4))

    generator = torch.Generator().manual_seed(4)
    members = [build_model("mlp", (2,), 2, generator) for _ in range(2)]
    optimizers = [torch.optim.Adam(m.parameters(), lr=params.lr, weight_decay=2 * params.weight_decay / 40) for m in members]
    for _ in range(params.epochs):
        order_N = torch.randperm(40, generator=generator)
        for start in range(0, 40 - 40 % 16, 16):  # full batches only, as `minibatches` gives
            batch_B = order_N[start : start + 16]
            for member, optimizer in zip(members, optimizers):
                loss = F.cross_entropy(member(x_N_2[batch_B]), y_N[batch_B])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    logits_M_N_C = stacked_logits(backend.base_, backend.stacked_, x_N_2)
    for m, member in enumerate(members):
        torch.testing.assert_close(logits_M_N_C[m], member(x_N_2).detach(), rtol=1e-4, atol=1e-5)


# --- variational inference ------------------------------------------------------------------------


def test_gaussian_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu, sigma = torch.randn(50, generator=g), torch.rand(50, generator=g) + 0.1
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma), torch.distributions.Normal(0.0, 0.7)).sum()
    torch.testing.assert_close(gaussian_kl(mu, sigma, 0.7), expected)


@pytest.mark.parametrize("prior", ["mixture", "laplace"])
def test_prior_log_densities_match_torch_distributions(prior: str) -> None:
    params = VIParams(prior=prior, mixture_pi=0.3, mixture_sigma1=1.5, mixture_sigma2=0.05, laplace_scale=0.4)
    w = torch.randn(100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    D = torch.distributions
    if prior == "laplace":
        reference = D.Laplace(0.0, 0.4).log_prob(w).sum()
    else:
        mixture = D.MixtureSameFamily(D.Categorical(torch.tensor([0.3, 0.7], dtype=torch.float64)),
                                      D.Normal(torch.zeros(2, dtype=torch.float64), torch.tensor([1.5, 0.05], dtype=torch.float64)))  # fmt: skip
        reference = mixture.log_prob(w).sum()
    torch.testing.assert_close(prior_log_prob(w, params), reference)


def test_monte_carlo_kl_is_unbiased() -> None:
    """With a Gaussian written as a one-component 'mixture', the MC estimate averages to the closed form."""
    gaussian = VIParams(prior="gaussian", prior_sigma=0.5, init_sigma=0.2)
    mixture = VIParams(prior="mixture", mixture_pi=0.5, mixture_sigma1=0.5, mixture_sigma2=0.5, init_sigma=0.2)
    network = build_bayes_network(gaussian, (3,), 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact = kl_divergence(network, gaussian, torch.Generator())
        g = torch.Generator().manual_seed(1)
        estimates = torch.stack([kl_divergence(network, mixture, g) for _ in range(400)])
    torch.testing.assert_close(estimates.mean(), exact, rtol=0, atol=4 * float(estimates.std()) / math.sqrt(400))


def _moments(samples_S_N_O: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return samples_S_N_O.mean(dim=0), samples_S_N_O.var(dim=0)


@pytest.mark.parametrize("layer_kind", ["linear", "conv"])
def test_training_noise_has_the_moments_of_explicit_weight_draws(layer_kind: str) -> None:
    """Local reparameterization / Flipout outputs match, in mean and variance, K explicit weight samples."""
    g = torch.Generator().manual_seed(0)
    if layer_kind == "linear":
        layer, x = BayesLinear(4, 3, init_sigma=0.3), torch.randn(2, 4, generator=g)
    else:
        layer, x = BayesConv2d(2, 3, 2, init_sigma=0.3), torch.randn(2, 2, 3, 3, generator=g)
    S = 4000
    with torch.no_grad():
        # Each call's batch holds R copies of x. Local reparameterization gives the copies independent
        # noise; Flipout gives them uncorrelated but dependent noise (one shared dW), so it needs
        # many calls for the variance estimate to settle.
        R = 500 if layer_kind == "linear" else 4
        copies = x.repeat(R, *([1] * (x.dim() - 1)))  # [R * N, ...]
        outputs = [layer(copies, g) for _ in range(S // R)]
        noisy = torch.cat([out.view(R, x.shape[0], *out.shape[1:]) for out in outputs])  # [S, N, ...]
        weight_S, bias_S = layer.sample(S, g)
        if layer_kind == "linear":
            explicit = torch.matmul(x, weight_S.transpose(1, 2)) + bias_S[:, None, :]
        else:
            out_N_SO_H_W = F.conv2d(x, weight_S.flatten(0, 1), bias_S.flatten())  # the S kernels side by side
            explicit = out_N_SO_H_W.view(x.shape[0], S, -1, *out_N_SO_H_W.shape[2:]).transpose(0, 1)
    (mean_a, var_a), (mean_b, var_b) = _moments(noisy), _moments(explicit)
    torch.testing.assert_close(mean_a, mean_b, rtol=0, atol=6 * float(var_b.max().sqrt()) / math.sqrt(S))
    torch.testing.assert_close(var_a, var_b, rtol=0.15, atol=1e-4)


def test_sampled_cnn_equals_each_network_run_alone() -> None:
    """The grouped-convolution path gives, for each of the K draws, the plain network with those weights."""
    network = build_bayes_network(VIParams(model="gal_cnn", init_sigma=0.1), (1, 28, 28), 10, torch.Generator().manual_seed(0))
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        samples = network.sample(2, torch.Generator().manual_seed(2))
        logits_K_N_C = network.forward_sampled(x, samples)
        for k in range(2):
            h = x
            draws = iter(samples)
            for layer in network.layers:
                if isinstance(layer, BayesConv2d):
                    w, b = next(draws)
                    h = F.conv2d(h, w[k], b[k])
                elif isinstance(layer, BayesLinear):
                    w, b = next(draws)
                    h = F.linear(h, w[k], b[k])
                else:
                    h = layer(h)
            torch.testing.assert_close(logits_K_N_C[k], h, rtol=1e-4, atol=1e-4)


def test_vi_params_are_checked() -> None:
    with pytest.raises(AlabError, match="backend.prior must be one of gaussian, mixture, laplace"):
        VIParams(prior="cauchy")
    with pytest.raises(AlabError, match="mixture_pi"):
        VIParams(mixture_pi=1.0)


# --- choice everywhere ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ensemble", "vi"])
def test_a_recipe_runs_end_to_end_and_records_the_resolved_table(name: str, tmp_path) -> None:
    from alab.config import load_config, load_toml
    from alab.loop import start_run

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'initial = 10\nquery_size = 5\nrounds = 1\nsamples = 3\n[backend]\nname = "{name}"\nmin_steps = 10\nepochs = 1\n')
    run_dir = start_run(load_config(recipe, {"strategy": "bald"}), tmp_path / "run", echo=lambda line: None)
    written = load_toml(run_dir / "config.toml")["backend"]
    assert written["name"] == name and written["min_steps"] == 10
    assert set(written) - {"name"} == set(BACKENDS.get(name)({}, input_shape=(2,), num_classes=2, device=CPU).params.__dataclass_fields__)
    assert (run_dir / "curve.csv").read_text().count("\n") == 3  # header + rounds 0 and 1


def test_the_cli_lists_every_backend() -> None:
    from typer.testing import CliRunner

    from alab.cli import app

    result = CliRunner().invoke(app, ["backends"])
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()] == ["ensemble", "hmc", "laplace", "mc_dropout", "sgmcmc", "swag", "vi"]
