"""Stress sets: MNIST and digits made harder in the three ways that make acquisition lose to random.

Each is the original data set with its training split (the pool) changed and its test set left as
it is, built from a fixed seed so that every run and seed sees the same data set
(`datasets/stress.md` is the card):

- `ambiguous-*`: the training split plus as many ambiguous items, each a blend
  x = lam * x_a + (1 - lam) * x_b of two training images of different classes, lam ~ U(0.35, 0.65),
  labelled a with probability lam and b otherwise: inputs between two classes whose labels are
  drawn from their mixture, after Mukhoti et al. 2021's Ambiguous-MNIST (Dirty-MNIST is MNIST plus
  as many ambiguous items; BlackHC/ddu_dirty_mnist README.md). Theirs decodes blends of a VAE's
  latents and keeps those an ensemble finds ambiguous; ours blends pixels, which needs no model.
  Entropy-style scores chase these items: their uncertainty is aleatoric, no label removes it.
- `noisy-*`: each pool label, with probability `LABEL_NOISE` (0.2), replaced by one of the other
  classes drawn uniformly (symmetric label noise); the simulated oracle answers with these labels.
- `imbalanced-*`: a long-tailed pool, class c (in class order) keeping floor(n_min * rho^(-c/(C-1)))
  of its items (n_min the smallest class's count), the exponential profile of Cao et al. 2019
  (LDAM) and Cui et al. 2019 (class-balanced loss); rho = 100 for MNIST (5,421 zeros, 54 nines) and
  10 for digits, whose classes hold ~120 training images (116 zeros, 11 nines).

Index rule: in an ambiguous set the originals keep their indices 0..N-1 and ambiguous item k is at
N + k (`is_ambiguous`), with the default `validation = 0`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable

import torch

from alab.data.dataset import DATASETS, DataRequest, Splits, resolve_data_dir
from alab.data.digits import _digits
from alab.data.mnist import load_idx

STRESS_SEED = 0
BLEND_RANGE = (0.35, 0.65)
LABEL_NOISE = 0.2
IMBALANCE = {"mnist": 100.0, "digits": 10.0}


def _generator(kind: str) -> torch.Generator:
    """A generator per kind of stress set, from STRESS_SEED: the same data set for every run."""
    return torch.Generator().manual_seed(STRESS_SEED * 1000 + {"ambiguous": 1, "noisy": 2, "imbalanced": 3}[kind])


def _checksum(splits: Splits, description: str) -> str:
    return hashlib.sha256(f"{splits.checksum} {description} seed {STRESS_SEED}".encode()).hexdigest()


def blend_pairs(y_N: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a_M, b_M, lam_M): `n` pairs of training indices with y[a] != y[b], and each pair's weight lam."""
    a_M = torch.randint(len(y_N), (n,), generator=generator)
    b_M = torch.randint(len(y_N), (n,), generator=generator)
    while bool((same_M := y_N[a_M] == y_N[b_M]).any()):  # redraw b where the pair shares a class
        b_M[same_M] = torch.randint(len(y_N), (int(same_M.sum()),), generator=generator)
    low, high = BLEND_RANGE
    lam_M = low + (high - low) * torch.rand(n, generator=generator)
    return a_M, b_M, lam_M


def ambiguous(splits: Splits) -> Splits:
    """The training split followed by as many blends of two classes, each labelled from the blend's mixture."""
    x_N, y_N = splits.x_train, splits.y_train
    generator = _generator("ambiguous")
    a_M, b_M, lam_M = blend_pairs(y_N, len(y_N), generator)
    lam_shape = (-1,) + (1,) * (x_N.ndim - 1)
    x_M = x_N[a_M] * lam_M.view(lam_shape) + x_N[b_M] * (1 - lam_M).view(lam_shape)
    y_M = torch.where(torch.rand(len(y_N), generator=generator) < lam_M, y_N[a_M], y_N[b_M])
    return dataclasses.replace(
        splits,
        x_train=torch.cat([x_N, x_M]),
        y_train=torch.cat([y_N, y_M]),
        checksum=_checksum(splits, f"ambiguous blends {BLEND_RANGE}"),
    )


def is_ambiguous(pool_index_N: torch.Tensor, n_originals: int) -> torch.Tensor:
    """Whether each item of an ambiguous pool is a blend (index >= N originals), for validation = 0."""
    return pool_index_N >= n_originals


def noisy(splits: Splits, rate: float = LABEL_NOISE) -> Splits:
    """Each training label, with probability `rate`, replaced by one of the other C - 1 classes, uniformly."""
    y_N, C = splits.y_train, len(splits.classes)
    generator = _generator("noisy")
    flip_N = torch.rand(len(y_N), generator=generator) < rate
    shift_N = torch.randint(1, C, (len(y_N),), generator=generator)  # 1..C-1: never the true class
    y_noisy_N = torch.where(flip_N, (y_N + shift_N) % C, y_N)
    return dataclasses.replace(splits, y_train=y_noisy_N, checksum=_checksum(splits, f"symmetric label noise {rate}"))


def long_tail_counts(counts_C: list[int], ratio: float) -> list[int]:
    """Items kept per class: floor(n_min * ratio^(-c/(C-1))), n_min the smallest class's count."""
    n_min, C = min(counts_C), len(counts_C)
    return [math.floor(n_min * ratio ** (-c / (C - 1))) for c in range(C)]


def imbalanced(splits: Splits, ratio: float) -> Splits:
    """A long-tailed training split (`long_tail_counts`), items of each class drawn at random, order kept."""
    y_N, C = splits.y_train, len(splits.classes)
    generator = _generator("imbalanced")
    counts = [int((y_N == c).sum()) for c in range(C)]
    keep = []
    for c, n_keep in enumerate(long_tail_counts(counts, ratio)):
        idx_c = torch.nonzero(y_N == c).flatten()
        keep.append(idx_c[torch.randperm(len(idx_c), generator=generator)[:n_keep]])
    keep_K = torch.cat(keep).sort().values
    return dataclasses.replace(
        splits,
        x_train=splits.x_train[keep_K],
        y_train=y_N[keep_K],
        checksum=_checksum(splits, f"long tail ratio {ratio}"),
    )


def _mnist(request: DataRequest) -> Splits:
    return load_idx("mnist", resolve_data_dir("mnist", request.data_dir), request.input_scaling)


def _register(name: str, load: Callable[[DataRequest], Splits], stress: Callable[[Splits], Splits], summary: str) -> None:
    DATASETS.add(name, lambda request: stress(load(request)), summary)


_register("ambiguous-mnist", _mnist, ambiguous, "MNIST plus 60,000 blends of two digits labelled from the blend (aleatoric); test unchanged")
_register("noisy-mnist", _mnist, noisy, "MNIST with 20% of the pool's labels flipped to another class at random; test clean")
_register("imbalanced-mnist", _mnist, lambda splits: imbalanced(splits, IMBALANCE["mnist"]),
          "MNIST with a long-tailed pool (ratio 100: 5,421 zeros, 54 nines); test balanced")  # fmt: skip
_register("ambiguous-digits", _digits, ambiguous, "digits plus 1,198 blends of two digits labelled from the blend (embedded)")
_register("noisy-digits", _digits, noisy, "digits with 20% of the pool's labels flipped to another class at random (embedded)")
_register("imbalanced-digits", _digits, lambda splits: imbalanced(splits, IMBALANCE["digits"]),
          "digits with a long-tailed pool (ratio 10: 116 zeros, 11 nines) (embedded)")  # fmt: skip
