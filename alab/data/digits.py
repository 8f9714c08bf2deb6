"""scikit-learn's embedded 8x8 digits (1,797 images, 10 classes): no file, no download."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
from numpy.random import default_rng

from alab.data.dataset import DATASETS, DataRequest, Splits, splits_from_numpy
from alab.data.splits import stratified_split

TEST_FRACTION = 1 / 3
# The test split's seed is fixed, independent of the run's seed: every run of a comparison is
# scored on the same test set, whatever seeds the runs use.
TEST_SPLIT_SEED = 0


@DATASETS.register(
    "digits",
    summary="scikit-learn's 8x8 handwritten digits as 64 features: 1,797 images, 10 classes (embedded)",
)
def _digits(request: DataRequest) -> Splits:
    """Features pixel / 16; a stratified third of each class is the test set, fixed by TEST_SPLIT_SEED."""
    from sklearn.datasets import load_digits  # here, not at module level: sklearn is slow to import

    x_N_D, y_N = load_digits(return_X_y=True)
    checksum = hashlib.sha256(
        np.ascontiguousarray(x_N_D, dtype="<f8").tobytes() + np.ascontiguousarray(y_N, dtype="<i8").tobytes()
    ).hexdigest()
    train, test = stratified_split(y_N, TEST_FRACTION, default_rng(TEST_SPLIT_SEED))
    x_N_D = x_N_D / 16.0
    splits = splits_from_numpy(x_N_D[train], y_N[train], x_N_D[test], y_N[test], tuple(str(d) for d in range(10)), checksum)
    return dataclasses.replace(splits, rows_train=train, rows_test=test)  # --features rows follow load_digits' order
