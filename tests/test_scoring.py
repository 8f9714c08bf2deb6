from __future__ import annotations

import pytest
import torch

from alab.acquisition import bald, max_entropy
from alab.backends import BACKENDS
from alab.scoring import predict, score_pool


@pytest.fixture(scope="module")
def fitted_backend():
    generator = torch.Generator().manual_seed(0)
    x_N_D = torch.randn(60, 64, generator=generator)
    y_N = (x_N_D[:, 0] > 0).long()
    backend = BACKENDS.get("mc_dropout")({"min_steps": 20, "epochs": 1}, input_shape=(64,), num_classes=2, device=torch.device("cpu"))
    return backend.fit(x_N_D, y_N, generator=generator)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_streamed_scoring_equals_whole_pool_scoring(fitted_backend, chunk_size: int) -> None:
    x_pool = torch.randn(150, 64, generator=torch.Generator().manual_seed(5))
    indices_N = torch.arange(0, 150, 2)
    networks = fitted_backend.sample_networks(6, generator=torch.Generator().manual_seed(9))
    whole_K_N_C = networks(x_pool[indices_N])
    streamed = score_pool(networks, x_pool, indices_N, bald, chunk_size=chunk_size)
    torch.testing.assert_close(streamed.scores_N, bald(whole_K_N_C))
    assert streamed.mean_bald == pytest.approx(bald(whole_K_N_C).mean().item(), rel=1e-5)
    assert streamed.mean_entropy == pytest.approx(max_entropy(whole_K_N_C).mean().item(), rel=1e-5)


def test_the_same_networks_score_every_chunk(fitted_backend) -> None:
    x_N_D = torch.randn(10, 64, generator=torch.Generator().manual_seed(2))
    networks = fitted_backend.sample_networks(5, generator=torch.Generator().manual_seed(3))
    # Item 0 scored alone or among others: the same K networks, so the same K predictions.
    torch.testing.assert_close(networks(x_N_D[:1])[:, 0], networks(x_N_D)[:, 0])
    torch.testing.assert_close(predict(networks, x_N_D, chunk_size=3), predict(networks, x_N_D, chunk_size=10))
