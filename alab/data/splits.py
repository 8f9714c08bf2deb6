"""Deterministic index splits: a stratified held-out split, the validation carve-out, a balanced initial set.

Randomness comes only from the generator (or seed) passed in.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.random import Generator, default_rng

from alab.errors import AlabError


def stratified_split(y_N: np.ndarray, fraction: float, rng: Generator) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out): sorted int64 index arrays; round(fraction * N_c) items of each class c held out."""
    held_out = [
        rng.choice(idx_c, size=round(fraction * idx_c.size), replace=False)
        for idx_c in (np.flatnonzero(y_N == c) for c in np.unique(y_N))
    ]
    held_H = np.sort(np.concatenate(held_out)).astype(np.int64)
    keep_N = np.ones(y_N.shape[0], dtype=bool)
    keep_N[held_H] = False
    return np.flatnonzero(keep_N).astype(np.int64), held_H


def carve_validation(n: int, validation: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool, val): sorted int64 index arrays over range(n); `validation` items drawn uniformly by `seed`."""
    val_V = np.sort(default_rng(seed).choice(n, size=validation, replace=False)).astype(np.int64)
    keep_N = np.ones(n, dtype=bool)
    keep_N[val_V] = False
    return np.flatnonzero(keep_N).astype(np.int64), val_V


def subsample_pool(n: int, size: int, seed: int) -> np.ndarray:
    """`size` of range(n), sorted int64, drawn uniformly by `seed` (a stream apart from the validation carve-out's)."""
    return np.sort(default_rng([seed, 1]).choice(n, size=size, replace=False)).astype(np.int64)


def balanced_initial(y_N: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (int64, sorted) of `n` items of `y_N`: n // C of each of the C labels present in `y_N`.

    The remainder n % C goes one each to classes drawn at random (among those with an item to spare).
    Raises AlabError when some class has too few items.
    """
    if y_N.ndim != 1:
        raise AlabError(f"balanced_initial needs a 1-D label vector, got shape {tuple(y_N.shape)}")
    if n < 0:
        raise AlabError(f"the initial set size must be >= 0, got {n}")
    labels_N = y_N.detach().cpu()
    classes_C, counts_C = torch.unique(labels_N, return_counts=True)
    C = classes_C.numel()
    if n > labels_N.numel():
        raise AlabError(
            f"cannot draw an initial set of {n} from {labels_N.numel()} items; choose a smaller --initial"
        )
    per_class, remainder = divmod(n, C) if C else (0, 0)
    if bool((counts_C < per_class).any()):
        raise AlabError(
            f"cannot draw a balanced initial set of {n}: it needs {per_class} of each of {C} classes, "
            f"and the smallest class has {int(counts_C.min())}; choose a smaller --initial"
        )
    spare_S = torch.nonzero(counts_C > per_class).flatten()
    if spare_S.numel() < remainder:
        raise AlabError(
            f"cannot draw a balanced initial set of {n}: only {spare_S.numel()} classes have more than "
            f"{per_class} items, {remainder} needed; choose a smaller --initial"
        )
    take_C = torch.full((C,), per_class, dtype=torch.int64)
    take_C[spare_S[torch.randperm(spare_S.numel(), generator=generator)[:remainder]]] += 1

    chosen = []
    for c in range(C):
        idx_c = torch.nonzero(labels_N == classes_C[c]).flatten()
        chosen.append(idx_c[torch.randperm(idx_c.numel(), generator=generator)[: int(take_C[c])]])
    indices_n = torch.sort(torch.cat(chosen)).values if chosen else torch.empty(0, dtype=torch.int64)
    return indices_n.to(y_N.device)
