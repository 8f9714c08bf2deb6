"""Image augmentation by small random shifts: each image moved by its own offset, edges replicated,
drawn from the fit's generator; refused for inputs that are not images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alab.backends.base import random_shift
from alab.backends.mc_dropout import MCDropoutBackend, MCDropoutParams
from alab.errors import AlabError


def shifted(x_C_H_W: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x moved down by dy and right by dx, the edge rows and columns repeated (an independent construction)."""
    _, H, W = x_C_H_W.shape
    rows = (torch.arange(H) - dy).clamp(0, H - 1)
    cols = (torch.arange(W) - dx).clamp(0, W - 1)
    return x_C_H_W[:, rows][:, :, cols]


def test_each_image_is_one_of_the_shifts_and_every_shift_occurs() -> None:
    x_B = torch.randn(400, 2, 7, 6)
    out_B = random_shift(x_B, 2, torch.Generator().manual_seed(3))
    seen = set()
    for x, y in zip(x_B, out_B):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(y, shifted(x, dy, dx))]
        assert matches, "an output that is no shift of its input"
        seen.update(matches)
    assert len(seen) == 25
    assert torch.equal(random_shift(x_B, 2, torch.Generator().manual_seed(3)), out_B)  # from the generator alone
    assert torch.equal(random_shift(x_B, 0, torch.Generator()), x_B)


def test_pad_replicates_the_border() -> None:
    x = torch.arange(9.0).view(1, 1, 3, 3)
    assert torch.equal(F.pad(x, (1, 1, 1, 1), mode="replicate")[0, 0, 0], torch.tensor([0.0, 0.0, 1.0, 2.0, 2.0]))


def test_augment_shift_is_refused_for_flat_inputs_and_trains_images_differently() -> None:
    with pytest.raises(AlabError, match=r"augment_shift shifts images \[C, H, W\]; these inputs have shape \[64\]"):
        MCDropoutBackend(MCDropoutParams(augment_shift=2), input_shape=(64,), num_classes=10, device=torch.device("cpu"))
    with pytest.raises(AlabError, match="augment_shift must be positive"):
        MCDropoutParams(augment_shift=-1)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 28, 28, generator=generator), torch.randint(0, 10, (40,), generator=generator)
    weights = []
    for shift in (0, 2):
        params = MCDropoutParams(model="gal_cnn", epochs=1, min_steps=3, augment_shift=shift)
        backend = MCDropoutBackend(params, input_shape=(1, 28, 28), num_classes=10, device=torch.device("cpu"))
        backend.fit(x, y, generator=torch.Generator().manual_seed(1))
        weights.append(torch.cat([p.flatten() for p in backend.network_.parameters()]))
    assert not torch.equal(weights[0], weights[1])
