"""Regression data sets (task "regression", float targets): `toy1d`, `diabetes`, and a user's table `csv:PATH`.

Inputs are standardized with the training split's statistics (the test split never informs them);
targets stay in their original units here, and `load_dataset` records the pool's target mean and
std on the `Dataset`, with which models are trained and metrics brought back to the original units.
Each data set's test split is fixed (never drawn by the run's seed), so a comparison shares it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch
from numpy.random import default_rng

from alab.data.dataset import DATASETS, DataRequest, Splits, splits_from_numpy
from alab.errors import AlabError

TEST_FRACTION = 1 / 3
TEST_SPLIT_SEED = 0

# toy1d: y = sin(2x) + x/2 + noise on x in [-4, 4]. The pool is dense but for a sparse gap at the right
# end, and the noise is large in one region: there labels cannot help (aleatoric); in the gap they can
# (epistemic). The gap is at the end because MC dropout's epistemic variance is largest at the edges
# of the data anyway: an interior gap competes with the range's two ends (see docs/regression.md).
TOY_NOISY = (-2.5, -0.5)  # noise sd rises from 0.1 to 1.0 at x = -1.5 and back (a bump)
TOY_GAP = (1.5, 4.0)  # few pool items here: unexplored, epistemic uncertainty stays high
TOY_POOL = (290, 10)  # pool items left of and inside the gap
TOY_TEST = 400  # test items, uniform over [-4, 4], gap included
TOY_SEED = 20240601


def toy1d_function(x: np.ndarray) -> np.ndarray:
    """The toy's noiseless mean, f(x) = sin(2x) + x/2."""
    return np.sin(2 * x) + 0.5 * x


def toy1d_noise_sd(x: np.ndarray) -> np.ndarray:
    """The toy's noise sd: 0.1, plus a bump 0.9 cos^2 across TOY_NOISY (peak 1.0 at its middle)."""
    lo, hi = TOY_NOISY
    inside = (x > lo) & (x < hi)
    return 0.1 + np.where(inside, 0.9 * np.cos(np.pi * (x - (lo + hi) / 2) / (hi - lo)) ** 2, 0.0)


def _checksum(*arrays: np.ndarray) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a, dtype="<f8").tobytes() for a in arrays)).hexdigest()


def standardized(x_train_N_D: np.ndarray, x_test_M_D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets standardized by the training split's mean and sd per column (a constant column becomes 0, not NaN)."""
    mean_D = x_train_N_D.mean(axis=0) if len(x_train_N_D) else 0.0
    std_D = x_train_N_D.std(axis=0) if len(x_train_N_D) else 1.0
    std_D = np.where(std_D > 0, std_D, 1.0)
    return (x_train_N_D - mean_D) / std_D, (x_test_M_D - mean_D) / std_D


def regression_splits(
    x_train_N_D: np.ndarray, y_train_N: np.ndarray, x_test_M_D: np.ndarray, y_test_M: np.ndarray, checksum: str
) -> Splits:
    """`Splits` of a regression data set: inputs standardized by the training split, y float32 as given."""
    x_train_N_D, x_test_M_D = standardized(x_train_N_D, x_test_M_D)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return Splits(
        x_train=tensor(x_train_N_D),
        y_train=tensor(y_train_N),
        x_test=tensor(x_test_M_D),
        y_test=tensor(y_test_M),
        classes=(),
        checksum=checksum,
        task="regression",
    )


def random_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) sorted index arrays; a third held out, fixed by TEST_SPLIT_SEED."""
    test_M = np.sort(default_rng(TEST_SPLIT_SEED).choice(n, size=round(TEST_FRACTION * n), replace=False))
    keep_N = np.ones(n, dtype=bool)
    keep_N[test_M] = False
    return np.flatnonzero(keep_N), test_M


def toy1d_raw() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_pool, y_pool, x_test, y_test) of the toy, unstandardized: x in [-4, 4]. Fixed by TOY_SEED."""
    rng = default_rng(TOY_SEED)
    left, gap = TOY_POOL
    x_pool = np.concatenate([rng.uniform(-4, TOY_GAP[0], left), rng.uniform(*TOY_GAP, gap)])
    x_test = rng.uniform(-4, 4, TOY_TEST)
    y_pool = toy1d_function(x_pool) + toy1d_noise_sd(x_pool) * rng.standard_normal(x_pool.size)
    y_test = toy1d_function(x_test) + toy1d_noise_sd(x_test) * rng.standard_normal(x_test.size)
    return x_pool, y_pool, x_test, y_test


@DATASETS.register(
    "toy1d",
    summary="1-D regression toy: y = sin(2x) + x/2, a noisy region (-2.5, -0.5), a sparse gap (1.5, 4) (embedded)",
)
def _toy1d(request: DataRequest) -> Splits:
    x_pool, y_pool, x_test, y_test = toy1d_raw()
    return regression_splits(x_pool[:, None], y_pool, x_test[:, None], y_test, _checksum(x_pool, y_pool, x_test, y_test))


@DATASETS.register(
    "diabetes",
    summary="scikit-learn's diabetes regression: 442 patients, 10 features, disease progression (embedded)",
)
def _diabetes(request: DataRequest) -> Splits:
    """Efron et al. (2004), "Least Angle Regression"; a random third is the test set, fixed by TEST_SPLIT_SEED."""
    from sklearn.datasets import load_diabetes  # here, not at module level: sklearn is slow to import

    x_N_D, y_N = load_diabetes(return_X_y=True)
    train, test = random_split(len(y_N))
    return regression_splits(x_N_D[train], y_N[train], x_N_D[test], y_N[test], _checksum(x_N_D, y_N))


@DATASETS.register(
    "csv:",
    summary="your own table: csv:PATH --target COL (regression on the other, numeric, columns; a third held out; "
    "a column of class names, or --classes a,b, makes it classification, and --classes without --target a pool a person labels), "
    "or csv:PATH --text COL [--target COL | --classes a,b] (text classification, alab.data.text)",
)
def _csv(request: DataRequest) -> Splits:
    import pandas as pd

    from alab.data.text import class_labels, text_splits

    path = Path(request.arg or "").expanduser()
    if not request.arg or not path.is_file():
        raise AlabError(f"{request.name}: no such file; give csv:PATH of a table with a header row")
    if request.target is None and request.text is None and request.classes is None:
        raise AlabError(
            f"{request.name} needs --target COL, the column to predict (or --classes a,b for rows a person labels, "
            "or --text COL, a column of texts to classify)"
        )
    try:
        table = pd.read_csv(path, keep_default_na=request.text is None)  # texts: only an empty cell is missing, not "NA"
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise AlabError(f"cannot read {path} as CSV: {err}") from None
    if request.text is not None:
        return text_splits(path, table, request)
    if request.target is not None and request.target not in table.columns:
        raise AlabError(f"{path} has no column {request.target!r}; columns: {', '.join(map(str, table.columns))}")

    def numeric(column: str) -> bool:
        return pd.api.types.is_numeric_dtype(table[column]) and not pd.api.types.is_bool_dtype(table[column])

    classify = request.classes is not None or (request.target is not None and not numeric(request.target))
    features = table.drop(columns=[request.target]) if request.target is not None else table
    if features.shape[1] == 0:
        raise AlabError(f"{path} has no column besides the target {request.target!r} to predict it from")
    for column in features.columns if classify else table.columns:
        if not numeric(column):
            raise AlabError(f"{path}: column {column!r} is not numeric; drop it or encode it as numbers")
        missing = np.flatnonzero(~np.isfinite(table[column].to_numpy(dtype=np.float64)))
        if missing.size:
            raise AlabError(f"{path}: column {column!r} is empty or not finite on line {int(missing[0]) + 2}")
    if len(table) < 6 and request.target is not None:
        raise AlabError(f"{path} has {len(table)} rows; a labeled table needs at least 6 (a third are held out)")
    x_N_D = features.to_numpy(dtype=np.float64)
    names = tuple(map(str, features.columns))
    if classify:  # a person or the target column names each row's class; the model reads the standardized columns
        if request.target is None:
            classes, labels_N = tuple(request.classes or ()), np.full(len(table), -1)
            train, test = np.arange(len(table)), np.zeros(0, dtype=np.int64)
        else:
            classes, labels_N = class_labels(path, table, request)
            train, test = random_split(len(table))
        digest = hashlib.sha256(path.read_bytes())
        digest.update(f"\0target={request.target}\0classes={','.join(classes)}".encode())
        x_train, x_test = standardized(x_N_D[train], x_N_D[test])
        splits = splits_from_numpy(x_train, labels_N[train], x_test, labels_N[test], classes, digest.hexdigest())
    else:
        assert request.target is not None
        y_N = table[request.target].to_numpy(dtype=np.float64)
        train, test = random_split(len(y_N))
        checksum = hashlib.sha256(path.read_bytes() + b"\0target=" + request.target.encode()).hexdigest()
        splits = regression_splits(x_N_D[train], y_N[train], x_N_D[test], y_N[test], checksum)
    shown = torch.from_numpy(np.ascontiguousarray(x_N_D[train], dtype=np.float32))  # a person reads the table's own values
    return dataclasses.replace(splits, feature_names=names, rows_train=train, rows_test=test, x_shown_train=shown)
