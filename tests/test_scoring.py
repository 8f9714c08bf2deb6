"""Pool scoring: K folded networks equal K explicit masked passes; streamed top-k equals whole-pool top-k."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from alab.acquisition.base import topk
from alab.acquisition.scores import ACQUISITIONS, bald
from alab.backends import BACKENDS
from alab.errors import AlabError
from alab.models import DropoutHead, Network, build_model, stacked_dense_forward
from alab.scoring import RunningTopK, score_pool

DTYPES = [torch.float32, torch.float64]
# float32: the folded product sums the same terms in another order (a few ulps of |logits| ~ 1).
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def explicit_masked_logits(head: DropoutHead, features_N_D: Tensor, masks: list[Tensor]) -> Tensor:
    """Reference: K separate passes, each multiplying every layer's input by that network's mask."""
    out = []
    for k in range(masks[0].shape[0]):
        h_N_D = features_N_D
        for i, (mask_K_D, layer) in enumerate(zip(masks, head.layers)):
            h_N_D = layer(h_N_D * mask_K_D[k].to(h_N_D.dtype))
            if i < len(head.layers) - 1:
                h_N_D = torch.relu(h_N_D)
        out.append(h_N_D)
    return torch.stack(out)  # K x [N, C] -> [K, N, C]


def network(name: str, input_shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> Network:
    return build_model(name, input_shape, 10, torch.Generator().manual_seed(seed)).to(dtype).eval()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,input_shape", [("gal_cnn", (1, 28, 28)), ("mlp", (12,))])
def test_folded_heads_equal_explicit_masked_passes(name: str, input_shape: tuple[int, ...], dtype: torch.dtype) -> None:
    net = network(name, input_shape, dtype)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(37, *input_shape, generator=generator, dtype=dtype)
    masks = net.head.sample_masks(7, generator)
    with torch.inference_mode():
        features_N_D = net.trunk(x)
        expected_K_N_C = explicit_masked_logits(net.head, features_N_D, masks)
        folded_K_N_C = stacked_dense_forward(features_N_D, net.head.fold_masks(masks))
    assert folded_K_N_C.shape == (7, 37, 10) and folded_K_N_C.dtype == dtype
    torch.testing.assert_close(folded_K_N_C, expected_K_N_C, **TOL[dtype])
    # some inputs were really dropped, and differently per network: the test can tell masks apart
    assert bool((masks[0] == 0).any()) and not torch.equal(masks[0][0], masks[0][1])


def looped_dense_logits(x_N_D: Tensor, layers: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Reference: each of the K networks on its own, one F.linear per layer, ReLU between layers."""
    out = []
    for k in range(layers[0][0].shape[0]):
        h_N_D = x_N_D
        for i, (weight_K_O_I, bias_K_O) in enumerate(layers):
            h_N_D = F.linear(h_N_D, weight_K_O_I[k], bias_K_O[k])
            if i < len(layers) - 1:
                h_N_D = torch.relu(h_N_D)
        out.append(h_N_D)
    return torch.stack(out)  # K x [N, C] -> [K, N, C]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", [[6, 4], [6, 5, 4, 3]], ids=["one layer", "three layers"])
def test_stacked_forward_both_branches_equal_a_loop_over_the_networks(dims: list[int], dtype: torch.dtype) -> None:
    """The per-network branch (CPU) and the batched one (other devices), both forced here, equal K plain passes."""
    generator = torch.Generator().manual_seed(2)
    K, N = 3, 5
    layers = [
        (torch.randn(K, d_out, d_in, generator=generator, dtype=dtype), torch.randn(K, d_out, generator=generator, dtype=dtype))
        for d_in, d_out in zip(dims[:-1], dims[1:])
    ]
    x_N_D = torch.randn(N, dims[0], generator=generator, dtype=dtype)
    expected_K_N_C = looped_dense_logits(x_N_D, layers)
    per_network_K_N_C = stacked_dense_forward(x_N_D, layers, batched=False)
    batched_K_N_C = stacked_dense_forward(x_N_D, layers, batched=True)
    assert batched_K_N_C.shape == per_network_K_N_C.shape == (K, N, dims[-1]) and batched_K_N_C.dtype == dtype
    torch.testing.assert_close(per_network_K_N_C, expected_K_N_C, **TOL[dtype])
    torch.testing.assert_close(batched_K_N_C, expected_K_N_C, **TOL[dtype])
    torch.testing.assert_close(batched_K_N_C, per_network_K_N_C, **TOL[dtype])
    assert torch.equal(stacked_dense_forward(x_N_D, layers), per_network_K_N_C)  # the default on the CPU


def mc_dropout(masks: str = "shared", dtype: torch.dtype = torch.float32):
    backend = BACKENDS.get("mc_dropout")({"masks": masks}, input_shape=(1, 28, 28), num_classes=10, device=torch.device("cpu"))
    backend.network_ = network("gal_cnn", (1, 28, 28), dtype)
    return backend


@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_networks_equals_k_explicit_passes_across_chunks(dtype: torch.dtype) -> None:
    """The closure folds the masks once; every chunk is scored by the same K networks."""
    backend = mc_dropout(dtype=dtype)
    x = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(3), dtype=dtype)
    networks = backend.sample_networks(5, generator=torch.Generator().manual_seed(4))
    masks = backend.network_.head.sample_masks(5, torch.Generator().manual_seed(4))
    with torch.inference_mode():
        chunked_K_N_C = torch.cat([networks(x[:20]), networks(x[20:])], dim=1)
        expected_K_N_C = torch.log_softmax(explicit_masked_logits(backend.network_.head, backend.network_.trunk(x), masks), -1)
    torch.testing.assert_close(chunked_K_N_C, expected_K_N_C.float(), **TOL[torch.float32])


def test_per_item_masks_option() -> None:
    """masks = 'per_item': the same input gets a different mask in every row (K independent passes)."""
    backend = mc_dropout("per_item")
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(5)).expand(6, 1, 28, 28)
    with torch.inference_mode():
        log_probs_K_N_C = backend.sample_networks(4, generator=torch.Generator().manual_seed(6))(x)
        shared_K_N_C = mc_dropout().sample_networks(4, generator=torch.Generator().manual_seed(6))(x)
    assert log_probs_K_N_C.shape == (4, 6, 10)
    torch.testing.assert_close(log_probs_K_N_C.exp().sum(-1), torch.ones(4, 6))
    assert not torch.equal(log_probs_K_N_C[:, 0], log_probs_K_N_C[:, 1])
    torch.testing.assert_close(shared_K_N_C[:, 0], shared_K_N_C[:, 1])  # shared: identical items agree
    with pytest.raises(AlabError, match="backend.masks"):
        BACKENDS.get("mc_dropout")({"masks": "per-item"}, input_shape=(4,), num_classes=2, device=torch.device("cpu"))


def table_networks(log_probs_N_K_C: Tensor):
    """Fake K networks: an item is its own index into a table of log-probabilities."""

    def networks(x_B: Tensor) -> Tensor:
        return log_probs_N_K_C[x_B.long()].transpose(0, 1)  # [B, K, C] -> [K, B, C]

    return networks


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(0, 3), min_size=1, max_size=60),
    b=st.integers(1, 70),
    chunk_size=st.integers(1, 25),
)
def test_streamed_topk_equals_whole_pool_topk_with_ties(values: list[int], b: int, chunk_size: int) -> None:
    """Few distinct scores: many ties, which both must break by position (lowest first)."""
    scores_N = torch.tensor(values, dtype=torch.float32)
    running = RunningTopK(b)
    for start in range(0, len(scores_N), chunk_size):
        running.update(scores_N[start : start + chunk_size], start)
    expected = topk(scores_N, b)
    assert torch.equal(running.result().indices, expected.indices)
    assert torch.equal(running.result().scores, expected.scores)


@pytest.mark.parametrize("acquisition", ["bald", "margin", "var_ratios"])
def test_score_pool_streamed_equals_whole_pool(acquisition: str) -> None:
    generator = torch.Generator().manual_seed(7)
    log_probs_N_K_C = torch.log_softmax(torch.randn(300, 6, 4, generator=generator), -1)
    log_probs_N_K_C[100:150] = log_probs_N_K_C[0]  # 51 identical items: a tie across chunks
    networks = table_networks(log_probs_N_K_C)
    x_N = torch.arange(300.0)
    candidates_N = torch.randperm(300, generator=generator)[:250]
    fn = ACQUISITIONS.get(acquisition)
    whole = score_pool(networks, x_N, candidates_N, fn, chunk_size=32)
    streamed = score_pool(networks, x_N, candidates_N, fn, chunk_size=32, top_k=40)
    assert whole.scores_N is not None and streamed.scores_N is None and streamed.top is not None
    expected = topk(whole.scores_N, 40)
    assert torch.equal(streamed.top.indices, expected.indices)
    torch.testing.assert_close(streamed.top.scores, expected.scores)
    torch.testing.assert_close(whole.scores_N, fn(log_probs_N_K_C[candidates_N].transpose(0, 1)))
    assert streamed.mean_bald == pytest.approx(float(bald(log_probs_N_K_C[candidates_N].transpose(0, 1)).double().mean()))


@pytest.mark.parametrize("top_k", [3, None], ids=["streamed top-k", "whole pool"])
def test_non_finite_scores_raise(top_k: int | None) -> None:
    networks = table_networks(torch.log_softmax(torch.randn(10, 3, 2), -1))

    def broken(log_probs_K_N_C: Tensor) -> Tensor:
        scores_N = torch.zeros(log_probs_K_N_C.shape[1])
        scores_N[-1] = float("nan")  # one bad item in one chunk
        return scores_N

    with pytest.raises(AlabError, match="non-finite"):
        score_pool(networks, torch.arange(10.0), torch.arange(10), broken, chunk_size=4, top_k=top_k)


class LazyImages:
    """A pool read lazily from uint8 storage (e.g. a numpy memmap), converted per chunk."""

    def __init__(self, images_N_H_W: np.ndarray) -> None:
        self.images_N_H_W = images_N_H_W

    def __getitem__(self, indices_B: Tensor) -> Tensor:
        return torch.from_numpy(self.images_N_H_W[indices_B.numpy()]).float().div_(255).unsqueeze(1)


def test_lazy_pool_source_equals_tensor_pool(tmp_path) -> None:
    images = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.uint8, shape=(90, 28, 28))
    images[:] = np.random.default_rng(8).integers(0, 256, size=images.shape, dtype=np.uint8)
    backend = mc_dropout()
    networks = backend.sample_networks(4, generator=torch.Generator().manual_seed(9))
    candidates_N = torch.arange(3, 90, 2)
    lazy = score_pool(networks, LazyImages(images), candidates_N, bald, chunk_size=16, top_k=5)
    eager = score_pool(networks, torch.from_numpy(np.array(images)).float().div(255).unsqueeze(1), candidates_N, bald, chunk_size=16)
    assert eager.scores_N is not None and lazy.top is not None
    assert torch.equal(lazy.top.indices, topk(eager.scores_N, 5).indices)
