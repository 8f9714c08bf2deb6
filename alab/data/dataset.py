"""The `Dataset` record, the registry of loaders, and `load_dataset`, which applies the run's splits.

Adding a data set is one decorated function that returns its fixed train/test split:

    @DATASETS.register("my-set", summary="one line for `alab datasets`")
    def _my_set(request: DataRequest) -> Splits:
        ...  # read from request.directory(), return Splits(...)

A family of data sets named by an argument (`csv:PATH`) registers under its prefix with the colon
(`"csv:"`) and reads the argument from `request.arg`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alab.data.splits import carve_validation, subsample_pool
from alab.errors import AlabError
from alab.registry import Registry


@dataclass(frozen=True, eq=False)
class Dataset:
    """One data set as a run sees it: the pool to label, the held-out test set, an optional validation set."""

    name: str
    x_pool: torch.Tensor  # [N_pool, *input_shape] float32: training split minus validation
    y_pool: torch.Tensor  # [N_pool] int64 (regression: float32, original units)
    x_test: torch.Tensor  # [N_test, *input_shape] float32
    y_test: torch.Tensor  # [N_test] int64
    x_val: torch.Tensor | None  # [N_val, *input_shape] float32; None when validation=0
    y_val: torch.Tensor | None  # [N_val] int64
    classes: tuple[str, ...]  # class names, index = label
    input_shape: tuple[int, ...]
    checksum: str  # sha256 hex identifying the raw data (recorded in run.json)
    task: str = "classification"  # or "regression": float targets, no classes
    target_mean: float = 0.0  # regression: the pool's target mean and std; models train on
    target_std: float = 1.0  # (y - target_mean) / target_std, metrics are in the original units
    x_ood: torch.Tensor | None = None  # [N_ood, *input_shape]: inputs from outside the classes (`ood`), None without
    text_pool: tuple[str, ...] | None = None  # what a person reads of each pool item (text data sets), None without
    feature_names: tuple[str, ...] | None = None  # the names of the shown features of a table's items; None: x0, x1, ...
    x_shown_pool: torch.Tensor | None = None  # [N_pool, ...] what a person sees when the model reads other features (--features)


@dataclass(frozen=True, eq=False)
class Splits:
    """What a loader returns: the data set's fixed train/test split, before the run's validation carve-out."""

    x_train: torch.Tensor  # [N_train, *input_shape] float32
    y_train: torch.Tensor  # [N_train] int64
    x_test: torch.Tensor  # [N_test, *input_shape] float32
    y_test: torch.Tensor  # [N_test] int64
    classes: tuple[str, ...]
    checksum: str
    task: str = "classification"  # "regression": y float32 targets, classes ()
    input_scaling: str = "default"  # the scaling the loader applied, when it offers a choice (IDX images)
    text_train: tuple[str, ...] | None = None  # text data sets: each training item's text, what a person reads
    feature_names: tuple[str, ...] | None = None  # a table's column names, one per feature (of x_shown_train where set)
    rows_train: np.ndarray | None = None  # [N_train] each training item's row in the data set's own order (--features
    rows_test: np.ndarray | None = None  # [N_test] FILE has one row per item in that order); None: train, then test
    x_shown_train: torch.Tensor | None = None  # [N_train, ...] the inputs a person sees once --features replaced x_train


@dataclass(frozen=True)
class DataRequest:
    """What a loader is asked for: the full name, its argument (`csv:PATH` -> `PATH`), --data-dir, --classes."""

    name: str
    arg: str | None
    data_dir: Path | None
    classes: tuple[str, ...] | None = None  # class names given by the user (data sets without their own)
    target: str | None = None  # the target column of a user's table (csv:PATH --target COL)
    text: str | None = None  # the text column of a user's table (csv:PATH --text COL): a text classification set
    input_scaling: str = "default"  # "standardize" or "unit" for the loaders that offer both (IDX images)

    def directory(self) -> Path:
        """The data directory for this data set (see `resolve_data_dir`)."""
        return resolve_data_dir(self.name, self.data_dir)


Loader = Callable[[DataRequest], Splits]

DATASETS: Registry[Loader] = Registry("dataset")


def resolve_data_dir(name: str, data_dir: str | Path | None) -> Path:
    """The data directory: `data_dir` (--data-dir), else `$ALAB_DATA/<name>`, else `./datasets/<name>`."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    root = os.environ.get("ALAB_DATA")
    return Path(root).expanduser() / name if root else Path("datasets") / name


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    validation: int = 0,
    classes: tuple[str, ...] | list[str] | None = None,
    target: str | None = None,
    pool_size: int = 0,
    input_scaling: str = "default",
    target_classes: tuple[int, ...] | list[int] | None = None,
    ood: str = "none",
    ood_classes: tuple[int, ...] | list[int] | None = None,
    text: str | None = None,
    features: str | Path | None = None,
) -> Dataset:
    """Load data set `name`; `validation` items drawn from its training split by `seed`, the rest is the pool.

    The test split is fixed by the data set (never by `seed`), so all runs of a comparison share it.
    `classes` names the classes of a data set without its own (`folder:PATH`); given for any other
    data set, it must match the data set's classes. `target` names the target column of `csv:PATH`.
    A regression data set's target statistics come from its pool (after the validation carve-out).
    `pool_size` > 0: the pool is a random `pool_size` of what is left after the validation set,
    drawn by `seed` (Gal et al. 2017's code draws its pool of 40,000 from the 60,000 training images).
    `input_scaling`: "default" (the data set's usual), or "standardize" / "unit" where the loader
    offers the choice; AlabError where it does not. `target_classes` (class indices): the test and
    validation sets keep only the items of these classes, the pool keeps every class: a target
    distribution shifted from the pool's (Bickford Smith et al. 2023's MNIST settings for EPIG).
    `ood` names the out-of-distribution set (`Dataset.x_ood`): "held_out" removes `ood_classes` from
    the pool, test and validation sets (the other classes are renumbered 0..C'-1 in their order) and
    keeps their test inputs as the set; "noise" is uniform noise within the test inputs' range per
    feature, as many items as the test set, drawn by a fixed seed (the same for every run).
    `text` names the text column of `csv:PATH` (a text classification set, TF-IDF features).
    `features` (PATH.npy or PATH.parquet, one row per item in the data set's order: `Splits.rows_train`)
    replaces the inputs the model reads; what a person sees stays the item itself (`Dataset.x_shown_pool`).
    """
    if seed < 0:
        raise AlabError(f"seed must be a non-negative integer, got {seed}")
    family, colon, arg = name.partition(":")
    key = f"{family}:" if colon and f"{family}:" in DATASETS else name
    request = DataRequest(
        name=name,
        arg=arg if colon else None,
        data_dir=None if data_dir is None else Path(data_dir),
        classes=None if classes is None else tuple(classes),
        target=target,
        text=text,
        input_scaling=input_scaling,
    )
    if text is not None and key != "csv:":
        raise AlabError(f"--text names the text column of a table (csv:PATH --text COL); {name} is not one, leave it out")
    splits = DATASETS.get(key)(request)
    if features is not None:
        splits = with_features(splits, Path(features).expanduser(), name)
    if input_scaling != "default" and splits.input_scaling != input_scaling:
        raise AlabError(f"input_scaling = {input_scaling!r} is not offered by {name} (only by the IDX image sets and those made from them: mnist, fashion-mnist, repeated-mnist, ambiguous-, noisy- and imbalanced-mnist); remove it")
    if classes is not None and tuple(classes) != splits.classes:
        raise AlabError(f"--classes {','.join(classes)} does not match {name}'s classes {','.join(splits.classes)}; leave it out")

    n_train = splits.y_train.shape[0]
    if not 0 <= validation < n_train:
        raise AlabError(
            f"validation={validation} is out of range for {name}: choose 0 <= validation < {n_train} "
            "(the size of its training split)"
        )
    x_val = y_val = None
    pool_P: torch.Tensor | None = None  # the pool's rows of the training split; None: all of it, in order
    if validation:
        pool_idx, val_idx = carve_validation(n_train, validation, seed)
        pool_P, val_V = torch.from_numpy(pool_idx), torch.from_numpy(val_idx)
        x_val, y_val = splits.x_train[val_V], splits.y_train[val_V]
    if pool_size:
        n_left = n_train - validation
        if pool_size > n_left:
            raise AlabError(f"pool_size = {pool_size} is more than the {n_left} items left for the pool of {name}; lower it (0: all)")
        subset = torch.from_numpy(subsample_pool(n_left, pool_size, seed))
        pool_P = subset if pool_P is None else pool_P[subset]
    x_pool, y_pool = (splits.x_train, splits.y_train) if pool_P is None else (splits.x_train[pool_P], splits.y_train[pool_P])
    x_test, y_test = splits.x_test, splits.y_test
    classes, x_ood = splits.classes, None
    if ood == "held_out":
        x_pool, y_pool, x_test, y_test, x_val, y_val, classes, x_ood, kept_pool = _hold_out(
            name, splits, ood_classes, x_pool, y_pool, x_test, y_test, x_val, y_val
        )
        pool_P = kept_pool.nonzero().squeeze(1) if pool_P is None else pool_P[kept_pool]
    elif ood == "noise":
        low, high = x_test.amin(dim=0), x_test.amax(dim=0)
        uniform = torch.rand(x_test.shape, generator=torch.Generator().manual_seed(0))
        x_ood = low + (high - low) * uniform
    elif ood != "none":
        raise AlabError(f"ood must be none, noise or held_out, got {ood!r}")
    if target_classes is not None:
        if splits.task != "classification" or not all(isinstance(c, int) and 0 <= c < len(splits.classes) for c in target_classes):
            raise AlabError(f"target_classes must be class indices of {name}, 0..{len(splits.classes) - 1}; got {list(target_classes)}")
        keep_T = torch.isin(y_test, torch.tensor(list(target_classes)))
        x_test, y_test = x_test[keep_T], y_test[keep_T]
        if y_val is not None and x_val is not None:
            keep_V = torch.isin(y_val, torch.tensor(list(target_classes)))
            x_val, y_val = x_val[keep_V], y_val[keep_V]
    target_mean, target_std = 0.0, 1.0
    if splits.task == "regression":
        target_mean, target_std = float(y_pool.double().mean()), float(y_pool.double().std())
        if not target_std > 0:
            raise AlabError(f"{name}: the pool's targets are all equal; nothing to learn")
    return Dataset(
        name=name,
        x_pool=x_pool,
        y_pool=y_pool,
        x_test=x_test,
        y_test=y_test,
        x_val=x_val,
        y_val=y_val,
        classes=classes,
        input_shape=tuple(splits.x_train.shape[1:]),
        checksum=splits.checksum,
        task=splits.task,
        target_mean=target_mean,
        target_std=target_std,
        x_ood=x_ood,
        text_pool=None if splits.text_train is None else _take(splits.text_train, pool_P),
        feature_names=splits.feature_names,
        x_shown_pool=_shown_pool(splits, pool_P),
    )


def _take(texts: tuple[str, ...], pool_P: torch.Tensor | None) -> tuple[str, ...]:
    return texts if pool_P is None else tuple(texts[int(i)] for i in pool_P)


def _shown_pool(splits: Splits, pool_P: torch.Tensor | None) -> torch.Tensor | None:
    shown = splits.x_shown_train
    return shown if shown is None or pool_P is None else shown[pool_P]


def read_features(path: Path) -> np.ndarray:
    """[N, D] float64 features of a `.npy` file (2-D) or a Parquet table (its numeric columns); AlabError otherwise."""
    if not path.is_file():
        raise AlabError(f"--features {path}: no such file; give a .npy array or a .parquet table, one row per item")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise AlabError(f"cannot read {path} as a .npy array: {err}") from None
    elif path.suffix == ".parquet":
        import pandas as pd

        try:
            table = pd.read_parquet(path)
        except ImportError:
            raise AlabError("reading Parquet needs pyarrow: pip install pyarrow (or pip install -e '.[parquet]' in the alab clone), or save the features as .npy") from None
        except (ValueError, OSError) as err:
            raise AlabError(f"cannot read {path} as Parquet: {err}") from None
        text_columns = [str(c) for c in table.columns if not pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c])]
        if text_columns:
            raise AlabError(f"{path}: column {text_columns[0]!r} is not numeric; a features table holds numbers only")
        array = table.to_numpy(dtype=np.float64)
    else:
        raise AlabError(f"--features {path}: give a .npy array or a .parquet table (one row per item), not {path.suffix or 'a file without a suffix'}")
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number) or array.shape[1] == 0:
        raise AlabError(f"{path} must hold a 2-D array of numbers, one row per item; it has shape {array.shape} and dtype {array.dtype}")
    bad = np.argwhere(~np.isfinite(array.astype(np.float64)))
    if bad.size:
        row, column = (int(v) for v in bad[0])
        raise AlabError(f"{path}: row {row} column {column} is {array[row, column]} (NaN or infinite); every feature must be a finite number")
    return array.astype(np.float64)


def with_features(splits: Splits, path: Path, name: str) -> Splits:
    """`splits` whose inputs are the rows of the features file; the items themselves are kept for the person."""
    features_N_D = read_features(path)
    n_train, n_test = len(splits.y_train), len(splits.y_test)
    if features_N_D.shape[0] != n_train + n_test:
        raise AlabError(
            f"{path} has {features_N_D.shape[0]} rows but {name} has {n_train + n_test} items ({n_train} training, {n_test} test); "
            "give one row per item, in the data set's order"
        )
    rows_train = np.arange(n_train) if splits.rows_train is None else splits.rows_train
    rows_test = np.arange(n_train, n_train + n_test) if splits.rows_test is None else splits.rows_test

    def as_tensor(rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(features_N_D[rows], dtype=np.float32))

    shown = None if splits.text_train is not None else splits.x_train if splits.x_shown_train is None else splits.x_shown_train
    checksum = hashlib.sha256(splits.checksum.encode() + b"\0features=" + path.read_bytes()).hexdigest()
    return dataclasses.replace(
        splits, x_train=as_tensor(rows_train), x_test=as_tensor(rows_test), x_shown_train=shown, checksum=checksum
    )


def _hold_out(name: str, splits: Splits, ood_classes: tuple[int, ...] | list[int] | None, *sets: torch.Tensor | None) -> tuple:
    """Remove `ood_classes` from the pool, test and validation sets; renumber the rest; their test inputs are the OOD set.

    Returns the sets, the kept classes' names, the OOD inputs and the mask of the pool items kept.
    """
    x_pool, y_pool, x_test, y_test, x_val, y_val = sets
    C = len(splits.classes)
    held = sorted(set(ood_classes or ()))
    if splits.task != "classification" or not held or not all(isinstance(c, int) and 0 <= c < C for c in held) or len(held) > C - 2:
        raise AlabError(f"ood = held_out needs ood_classes: class indices of {name} in 0..{C - 1}, leaving at least two classes; got {ood_classes!r}")
    kept = [c for c in range(C) if c not in held]
    renumber_C = torch.full((C,), -1, dtype=torch.long)
    renumber_C[kept] = torch.arange(len(kept))
    held_C = torch.tensor(held)

    def keep(x: torch.Tensor | None, y: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if x is None or y is None:
            return x, y
        mask = ~torch.isin(y, held_C)
        return x[mask], renumber_C[y[mask]]

    x_ood = x_test[torch.isin(y_test, held_C)]
    kept_pool = ~torch.isin(y_pool, held_C)
    return (*keep(x_pool, y_pool), *keep(x_test, y_test), *keep(x_val, y_val), tuple(splits.classes[c] for c in kept), x_ood, kept_pool)


def splits_from_numpy(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: tuple[str, ...],
    checksum: str,
) -> Splits:
    """`Splits` from numpy arrays: features as float32, labels as int64 (copied only to change dtype)."""
    return Splits(
        x_train=torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test, dtype=np.int64)),
        classes=classes,
        checksum=checksum,
    )
