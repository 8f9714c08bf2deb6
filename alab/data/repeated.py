"""Repeated data sets (Kirsch, van Amersfoort & Gal 2019): every pool item three times, each copy noisy.

The standard test of batch diversity: top-k BALD spends a batch on copies of the same few images,
BatchBALD does not. As in the paper's code (batchbald_redux `create_repeated_MNIST_dataset`), the
training split is concatenated `REPETITIONS` times and isotropic Gaussian noise N(0, 0.1^2)
(standard deviation 0.1) is added to every copy, after the data set's usual preprocessing (for MNIST
the standardized pixels). `repeated-mnist` reads the MNIST files (--data-dir, else $ALAB_DATA/mnist,
else ./datasets/mnist). The test set is the original's, noise-free.

Index rule: copy j of original i is at training index j * N + i (N originals), so
`original_index(i) = i % N`; with the default `validation = 0` the pool is the training split and the
rule holds for pool indices. The noise is drawn from a fixed seed, so the data set is the same for
every run; its checksum is the original's combined with the noise's parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch

from alab.data.dataset import DATASETS, DataRequest, Splits, resolve_data_dir
from alab.data.digits import _digits
from alab.data.mnist import load_idx

REPETITIONS = 3
NOISE_STD = 0.1
NOISE_SEED = 0


def repeat_with_noise(splits: Splits, repetitions: int = REPETITIONS, noise_std: float = NOISE_STD) -> Splits:
    """The training split `repetitions` times (copy j of item i at j * N + i), each copy plus N(0, noise_std^2)."""
    x_N = splits.x_train
    generator = torch.Generator().manual_seed(NOISE_SEED)
    x_RN = x_N.repeat(repetitions, *([1] * (x_N.ndim - 1)))  # [N, ...] -> [R*N, ...], copies in blocks of N
    for copy_N in x_RN.split(len(x_N)):  # one block at a time: peak memory one copy above the result
        copy_N.add_(torch.randn(copy_N.shape, generator=generator, dtype=copy_N.dtype), alpha=noise_std)
    checksum = hashlib.sha256(f"{splits.checksum} repeated {repetitions} noise {noise_std} seed {NOISE_SEED}".encode())
    return dataclasses.replace(splits, x_train=x_RN, y_train=splits.y_train.repeat(repetitions), checksum=checksum.hexdigest())


def original_index(pool_index_N: torch.Tensor, n_originals: int) -> torch.Tensor:
    """Which original each item of a repeated pool copies: i % N (for validation = 0)."""
    return pool_index_N % n_originals


@DATASETS.register(
    "repeated-digits",
    summary="digits, each pool image 3 times with N(0, 0.1) noise (3,594 pool items); test set unchanged",
)
def _repeated_digits(request: DataRequest) -> Splits:
    return repeat_with_noise(_digits(request))


@DATASETS.register(
    "repeated-mnist",
    summary="MNIST, each pool image 3 times with N(0, 0.1) noise on standardized pixels (Kirsch 2019); test unchanged",
)
def _repeated_mnist(request: DataRequest) -> Splits:
    return repeat_with_noise(load_idx("mnist", resolve_data_dir("mnist", request.data_dir), request.input_scaling))
