from __future__ import annotations

import pytest
import torch

from alab.errors import AlabError
from alab.models import DropoutHead, build_model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_masks_equal_k_explicit_masked_passes(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(1)
    head = DropoutHead([12, 16, 7, 5], [0.25, 0.5, 0.1]).to(dtype)
    features_N_D = torch.randn(9, 12, generator=generator, dtype=dtype)
    masks = [m.to(dtype) for m in head.sample_masks(4, generator)]
    folded_K_N_C = head.forward_masked(features_N_D, masks)
    for k in range(4):
        h = features_N_D
        for i, layer in enumerate(head.layers):
            h = layer(h * masks[i][k])  # the mask multiplies every item's input to layer i
            if i < len(head.layers) - 1:
                h = torch.relu(h)
        torch.testing.assert_close(folded_K_N_C[k], h)


def test_masks_are_inverted_dropout_with_the_right_rate() -> None:
    head = DropoutHead([400, 3], [0.25])
    (mask_K_D,) = head.sample_masks(50, torch.Generator().manual_seed(0))
    torch.testing.assert_close(mask_K_D.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert abs((mask_K_D == 0).float().mean().item() - 0.25) < 0.01  # 20,000 draws: std 0.003


def test_initialization_is_reproducible_from_the_generator() -> None:
    a = build_model("mlp", (64,), 10, torch.Generator().manual_seed(3))
    b = build_model("mlp", (64,), 10, torch.Generator().manual_seed(3))
    c = build_model("mlp", (64,), 10, torch.Generator().manual_seed(4))
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        torch.testing.assert_close(pa, pb)
        assert not torch.equal(pa, pc)


def test_gal_cnn_shapes_match_the_paper() -> None:
    net = build_model("auto", (1, 28, 28), 10, torch.Generator().manual_seed(0))
    assert [type(m).__name__ for m in net.trunk] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Flatten"]
    assert [layer.in_features for layer in net.head.layers] == [32 * 11 * 11, 128]
    assert net.head.dropout == (0.25, 0.5)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_gal_cnn_refuses_vectors() -> None:
    with pytest.raises(AlabError, match="image inputs"):
        build_model("gal_cnn", (64,), 10, torch.Generator())


@pytest.mark.parametrize(("name", "shape"), [("mlp", (64,)), ("mlp_regression", (5,)), ("gal_cnn", (1, 28, 28)), ("kirsch_cnn", (1, 28, 28))])
def test_embed_is_the_last_dense_layers_input_and_output_with_dropout_off(name: str, shape: tuple[int, ...]) -> None:
    """The penultimate features by hand: run every layer but the last (no masks), then the last one on them."""
    net = build_model(name, shape, 10, torch.Generator().manual_seed(5), "regression" if name == "mlp_regression" else "classification")
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(6))
    features_N_H, raw_N_O = net.embed(x)
    dense = net.head.dense if hasattr(net.head, "dense") else net.head
    h = net.trunk(x)
    if hasattr(net.head, "conv"):
        h = torch.relu(torch.nn.functional.max_pool2d(net.head.conv(h), 2)).flatten(1)
    for layer in dense.layers[:-1]:
        h = torch.relu(layer(h))
    torch.testing.assert_close(features_N_H, h, rtol=0, atol=0)
    torch.testing.assert_close(raw_N_O, net(x), rtol=0, atol=0)
    assert features_N_H.shape == (3, dense.layers[-1].in_features)
