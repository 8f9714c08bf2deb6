"""Data sets by name: loaders, deterministic splits, checksum-verified files, download."""

from __future__ import annotations

from alab.data import digits, folder, mnist, regression, repeated, stress  # noqa: F401  (importing registers the data sets)
from alab.data.dataset import DATASETS, DataRequest, Dataset, Splits, load_dataset, resolve_data_dir
from alab.data.fetch import fetch_dataset
from alab.data.splits import balanced_initial

__all__ = [
    "DATASETS",
    "DataRequest",
    "Dataset",
    "Splits",
    "balanced_initial",
    "fetch_dataset",
    "load_dataset",
    "resolve_data_dir",
]
