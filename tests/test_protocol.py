"""The protocol options a reproduction needs: minibatch schedules, L2 coverage, initialization, model
options, Kirsch et al.'s CNN, early stopping, deterministic evaluation, input scaling, a pool subset."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import alab.backends.mc_dropout as mc
from alab.backends import BACKENDS
from alab.backends.base import epoch_batches
from alab.config import BackendConfig, RunConfig
from alab.data import load_dataset
from alab.errors import AlabError
from alab.loop import build_parts, start_run
from alab.models import build_model, dropout_mask
from test_data import SyntheticIdx, write_synthetic

CPU = torch.device("cpu")


def batches(n: int, schedule: str, **kwargs) -> list[list[torch.Tensor]]:
    settings = {"epochs": 3, "min_steps": 0, **kwargs}
    return list(epoch_batches(n, 4, generator=torch.Generator().manual_seed(0), device=CPU, schedule=schedule, **settings))


def test_full_batches_leave_out_the_remainder_keras_keeps_a_ragged_last_batch() -> None:
    full, keras = batches(10, "full"), batches(10, "keras")
    assert [[len(b) for b in epoch] for epoch in full] == [[4, 4]] * 3
    assert [[len(b) for b in epoch] for epoch in keras] == [[4, 4, 2]] * 3  # ceil(10 / 4) steps, as Keras' fit
    for epoch in keras:
        assert sorted(torch.cat(epoch).tolist()) == list(range(10))  # every label once an epoch
    assert torch.equal(torch.cat(full[0]), torch.cat(keras[0])[:8])  # one shuffle per epoch, from the same generator


def test_resampled_epochs_draw_each_label_floor_or_ceil_of_e_over_n_times() -> None:
    (epoch,) = batches(7, "resampled", epochs=1, epoch_samples=30)
    counts = torch.bincount(torch.cat(epoch), minlength=7)
    assert [len(b) for b in epoch] == [4] * 7 + [2] and counts.sum() == 30
    assert set(counts.tolist()) <= {30 // 7, 30 // 7 + 1}
    (big,) = batches(40, "resampled", epochs=1, epoch_samples=30)  # more labels than draws: each once
    assert sorted(torch.cat(big).tolist()) == list(range(40))


def test_min_steps_cuts_the_last_epoch_short() -> None:
    cut = batches(10, "keras", epochs=0, min_steps=7)
    assert [len(epoch) for epoch in cut] == [3, 3, 1]


def test_the_full_schedule_draws_what_the_old_one_did() -> None:
    """The committed reference results were made by the old `minibatches`: one randperm per epoch, full batches."""
    generator = torch.Generator().manual_seed(5)
    expected = []
    for _ in range(3):
        order = torch.randperm(10, generator=generator)
        expected += [order[0:4], order[4:8]]
    got = [b for epoch in epoch_batches(10, 4, epochs=3, min_steps=0, generator=torch.Generator().manual_seed(5), device=CPU) for b in epoch]
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_glorot_initialization_has_keras_bounds_and_zero_biases() -> None:
    network = build_model("gal_cnn", (1, 28, 28), 10, torch.Generator().manual_seed(0), init="glorot").requires_grad_(False)
    dense = network.head.layers[0]  # 3,872 -> 128
    bound = math.sqrt(6 / (dense.in_features + dense.out_features))
    assert float(dense.weight.abs().max()) <= bound and float(dense.weight.abs().max()) > 0.99 * bound
    torch.testing.assert_close(dense.weight.var().item(), bound**2 / 3, rtol=0.02, atol=0)  # U(-b, b) has variance b^2 / 3
    conv = network.trunk[2]  # 32 -> 32, 4x4: fans 32 * 16 each
    conv_bound = math.sqrt(6 / (2 * 32 * 16))
    assert float(conv.weight.abs().max()) <= conv_bound
    for layer in (dense, conv, network.head.layers[1]):
        assert torch.count_nonzero(layer.bias) == 0


def test_keras03_initialization_counts_a_kernels_filters_as_its_fan_out() -> None:
    """Keras 0.3's get_fans on a Theano kernel (filters, channels, kh, kw): fan_in = channels*kh*kw, fan_out = filters."""
    network = build_model("gal_cnn", (1, 28, 28), 10, torch.Generator().manual_seed(0), init="keras0.3", options={"kernel_size": 3})
    network.requires_grad_(False)
    for conv, fan_in in ((network.trunk[0], 1 * 9), (network.trunk[2], 32 * 9)):
        bound = math.sqrt(6 / (fan_in + 32))  # glorot's would be sqrt(6 / (fan_in + 32 * 9))
        assert 0.99 * bound < float(conv.weight.abs().max()) <= bound
        torch.testing.assert_close(conv.weight.var().item(), bound**2 / 3, rtol=0.1, atol=0)
        assert torch.count_nonzero(conv.bias) == 0
    dense = network.head.layers[0]  # 4,608 -> 128: as glorot
    bound = math.sqrt(6 / (4608 + 128))
    assert 0.99 * bound < float(dense.weight.abs().max()) <= bound


def test_gal_cnn_with_3x3_kernels_is_the_table_1_network() -> None:
    """Gal et al.'s Q=5 scripts: nb_conv = 3, two conv32, pool 2, Flatten -> 4608, Dense 128."""
    network = build_model("gal_cnn", (1, 28, 28), 10, torch.Generator(), options={"kernel_size": 3})
    assert network.trunk[0].weight.shape == (32, 1, 3, 3) and network.head.layers[0].in_features == 4608
    assert network(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"kernel": 3}, r"unknown key backend\.model_options\.kernel for model gal_cnn; valid keys: kernel_size"),
     ({"kernel_size": "3"}, r"model_options\.kernel_size must be int"),
     ({"kernel_size": 20}, r"kernel_size must be between 1 and 14")],
)  # fmt: skip
def test_model_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(AlabError, match=message):
        build_model("gal_cnn", (1, 28, 28), 10, torch.Generator(), options=options)


def test_kirsch_cnn_has_the_batchbald_networks_parameters() -> None:
    """BlackHC/BatchBALD src/mnist_model.py: conv 1->32 5x5, conv 32->64 5x5, fc 1024->128, fc 128->10."""
    network = build_model("kirsch_cnn", (1, 28, 28), 10, torch.Generator())
    assert sum(p.numel() for p in network.parameters()) == (32 * 25 + 32) + (64 * 32 * 25 + 64) + (1024 * 128 + 128) + (128 * 10 + 10)


def test_kirsch_cnn_folded_masks_equal_the_network_with_its_dropout_where_the_paper_puts_it() -> None:
    """K folded networks against an independent forward: conv1 -> mask -> pool -> relu -> conv2 -> mask -> ..."""
    network = build_model("kirsch_cnn", (1, 28, 28), 10, torch.Generator().manual_seed(1)).double().eval()
    x_N = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    masks = [m.double() for m in network.head.sample_masks(3, torch.Generator().manual_seed(3))]
    with torch.no_grad():
        folded_K_N_C = network.head.masked(masks)(network.trunk(x_N))
    conv1, conv2, (fc1, fc2) = network.trunk[0], network.head.conv, network.head.dense.layers
    for k in range(3):
        m1, m2, m3 = masks[0][k], masks[1][k].view(64, 16)[:, 0], masks[2][k]
        assert torch.equal(masks[1][k], m2.repeat_interleave(16))  # one mask entry per channel
        h = torch.relu(F.max_pool2d(conv1(x_N) * m1[None, :, None, None], 2))
        h = torch.relu(F.max_pool2d(conv2(h) * m2[None, :, None, None], 2)).flatten(1)
        expected_N_C = fc2(torch.relu(fc1(h)) * m3)
        torch.testing.assert_close(folded_K_N_C[k], expected_N_C)


def test_kirsch_cnn_trains_with_channel_masks_per_item() -> None:
    network = build_model("kirsch_cnn", (1, 28, 28), 10, torch.Generator().manual_seed(1))
    x_N = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    a = network(x_N, torch.Generator().manual_seed(3))
    b = network(x_N, torch.Generator().manual_seed(4))
    assert a.shape == (4, 10) and not torch.equal(a, b)
    torch.testing.assert_close(network(x_N), network.head(network.trunk(x_N)))


def test_l2_on_the_head_first_weight_only() -> None:
    network = build_model("gal_cnn", (1, 28, 28), 10, torch.Generator())
    params = mc.MCDropoutParams(weight_decay=2.5, weight_decay_on="head_first_weight")
    decayed, free = mc._parameter_groups(network, params, n=50)
    assert decayed["params"] == [network.head.layers[0].weight] and decayed["weight_decay"] == 2 * 2.5 / 50
    assert free["weight_decay"] == 0 and len(free["params"]) == len(list(network.parameters())) - 1
    (everything,) = mc._parameter_groups(network, dataclasses.replace(params, weight_decay_on="all"), n=50)
    assert len(everything["params"]) == len(list(network.parameters()))


def test_early_stopping_stops_after_patience_epochs_and_keeps_the_best(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])  # best at epoch 2; two worse epochs end it before the 0.9
    snapshots = []

    def scripted(network, validation):
        snapshots.append({k: v.clone() for k, v in network.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(mc, "_validation_score", scripted)
    x_N, y_N = torch.randn(40, 64), torch.arange(40) % 10
    backend = BACKENDS.get("mc_dropout")(
        {"model": "mlp", "epochs": 10, "min_steps": 0, "batch_size": 8, "early_stopping": 2},
        input_shape=(64,), num_classes=10, device=CPU, validation=(x_N[:10], y_N[:10]),
    )  # fmt: skip
    backend.fit(x_N, y_N, generator=torch.Generator().manual_seed(0))
    assert len(snapshots) == 4
    for name, tensor in backend.network_.state_dict().items():
        torch.testing.assert_close(tensor, snapshots[1][name], rtol=0, atol=0)


def test_early_stopping_without_a_validation_set_is_refused() -> None:
    with pytest.raises(AlabError, match=r"early_stopping needs a validation set: set validation = N"):
        BACKENDS.get("mc_dropout")({"early_stopping": 3}, input_shape=(64,), num_classes=10, device=CPU)


def test_the_validation_set_reaches_the_backend_and_the_score_is_its_accuracy(small_config: RunConfig) -> None:
    config = dataclasses.replace(small_config, validation=100, backend=BackendConfig("mc_dropout", {"early_stopping": 2, "epochs": 5}))
    parts = build_parts(config)
    x_V, y_V = parts.backend.validation
    assert torch.equal(x_V, parts.dataset.x_val) and torch.equal(y_V, parts.dataset.y_val)
    network = build_model("mlp", (64,), 10, torch.Generator().manual_seed(0)).eval()
    predicted_V = network(x_V).argmax(dim=1)
    assert mc._validation_score(network, (x_V, y_V)) == pytest.approx(float((predicted_V == y_V).double().mean()), abs=0)


def test_deterministic_evaluation_is_the_network_with_dropout_off(tmp_path: Path, small_config: RunConfig) -> None:
    config = dataclasses.replace(small_config, rounds=0, evaluation="deterministic")
    start_run(config, tmp_path / "run", echo=lambda line: None)
    parts = build_parts(config)
    parts.backend.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["backend"])
    network = parts.backend.network_
    with torch.no_grad():
        expected = (network(parts.dataset.x_test).argmax(dim=1) == parts.dataset.y_test).double().mean().item()
    accuracy = float((tmp_path / "run" / "curve.csv").read_text().splitlines()[1].split(",")[2])
    assert accuracy == pytest.approx(expected, abs=1e-12)
    mc_run = dataclasses.replace(config, evaluation="mc")
    start_run(mc_run, tmp_path / "mc", echo=lambda line: None)
    assert (tmp_path / "mc" / "curve.csv").read_text() != (tmp_path / "run" / "curve.csv").read_text()


def test_deterministic_evaluation_is_refused_for_an_ensemble(small_config: RunConfig) -> None:
    with pytest.raises(AlabError, match=r"evaluation = deterministic needs one mean network, which backend 'ensemble'"):
        build_parts(dataclasses.replace(small_config, evaluation="deterministic", backend=BackendConfig("ensemble", {})))


@pytest.fixture
def synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SyntheticIdx:
    syn = write_synthetic(tmp_path / "mnist", n_train=60)
    syn.official("mnist", monkeypatch)
    return syn


def test_unit_input_scaling_is_pixels_over_255(synthetic: SyntheticIdx) -> None:
    d = load_dataset("mnist", data_dir=synthetic.directory, input_scaling="unit")
    torch.testing.assert_close(d.x_pool.double(), torch.from_numpy(synthetic.images["train"][:, None] / 255.0), rtol=0, atol=1e-7)
    assert load_dataset("mnist", data_dir=synthetic.directory, input_scaling="standardize").x_pool.min() < 0
    with pytest.raises(AlabError, match=r"input_scaling = 'unit' is not offered by digits"):
        load_dataset("digits", input_scaling="unit")


def test_a_pool_subset_is_drawn_by_the_seed_from_what_the_validation_set_leaves(synthetic: SyntheticIdx) -> None:
    full = load_dataset("mnist", data_dir=synthetic.directory, seed=3, validation=10)
    a = load_dataset("mnist", data_dir=synthetic.directory, seed=3, validation=10, pool_size=20)
    b = load_dataset("mnist", data_dir=synthetic.directory, seed=3, validation=10, pool_size=20)
    c = load_dataset("mnist", data_dir=synthetic.directory, seed=4, validation=10, pool_size=20)
    assert len(a.y_pool) == 20 and torch.equal(a.x_pool, b.x_pool) and not torch.equal(a.x_pool, c.x_pool)
    assert torch.equal(a.x_val, full.x_val)  # the validation set does not move
    rows = {tuple(x.flatten().tolist()) for x in full.x_pool}
    assert all(tuple(x.flatten().tolist()) in rows for x in a.x_pool)
    with pytest.raises(AlabError, match=r"pool_size = 51 is more than the 50 items left"):
        load_dataset("mnist", data_dir=synthetic.directory, seed=3, validation=10, pool_size=51)


def test_dropout_masks_are_still_drawn_as_before() -> None:
    """Grouped masks with groups of 1 draw the same numbers as the plain masks the reference runs used."""
    network = build_model("mlp", (64,), 10, torch.Generator())
    masks = network.head.sample_masks(3, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    expected = [dropout_mask((3, layer.in_features), 0.5, g, CPU) for layer in network.head.layers]
    assert all(torch.equal(a, b) for a, b in zip(masks, expected, strict=True))
    assert np.isclose(float(masks[0].mean()), 1.0, atol=0.2)
