"""MNIST and Fashion-MNIST from their IDX files (.gz or uncompressed), each verified against its official SHA-256.

Pool: the 60,000 training images (less the run's validation items); test: the official 10,000.
Images are scaled to [0, 1], then standardized with the data set's usual mean and std (or, with
input_scaling = "unit", left in [0, 1]): [N, 1, 28, 28].
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alab.data.dataset import DATASETS, DataRequest, Splits, splits_from_numpy
from alab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, idx_path, read_idx
from alab.errors import AlabError

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)  # as released; a load also takes each uncompressed
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class IdxSource:
    """An IDX data set in the MNIST layout: where to fetch it, its official checksums, its pixel stats."""

    url: str  # base URL of a mirror of the official files (`alab datasets fetch`)
    sha256: Mapping[str, str]  # .gz file name -> official SHA-256 hex of the .gz file (the data set's identity)
    idx_sha256: Mapping[str, str]  # .gz file name -> SHA-256 hex of the IDX bytes inside it (what a load checks)
    mean: float  # of the training pixels scaled to [0, 1]
    std: float
    classes: tuple[str, ...]


IDX_SOURCES: dict[str, IdxSource] = {
    # sha256: official SHA-256 of the files at yann.lecun.com/exdb/mnist (as in TensorFlow Datasets).
    # idx_sha256: of their decompressed bytes, measured on files with those .gz SHA-256s (whose
    # decompressed MD5s are the widely published 6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...).
    "mnist": IdxSource(
        url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        sha256={
            TRAIN_IMAGES: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            TRAIN_LABELS: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            TEST_IMAGES: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            TEST_LABELS: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        idx_sha256={
            TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mean=0.1307,
        std=0.3081,
        classes=tuple(str(d) for d in range(10)),
    ),
    # sha256: of Zalando's release, from TensorFlow Datasets' url_checksums/fashion_mnist.txt.
    # idx_sha256: of their decompressed bytes, measured on Debian's dataset-fashion-mnist
    # 0.0~git20200523.55506a9-1, whose gzip streams, given back the file name and the official
    # header mtime (1504176606 train, 1504176627 t10k), are byte for byte the .gz files above.
    "fashion-mnist": IdxSource(
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        sha256={
            TRAIN_IMAGES: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            TRAIN_LABELS: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            TEST_IMAGES: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            TEST_LABELS: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        idx_sha256={
            TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mean=0.2860,
        std=0.3530,
        classes=FASHION_CLASSES,
    ),
}


def idx_checksum(sha256: Mapping[str, str]) -> str:
    """One SHA-256 for the four files: that of their `sha256sum` listing (`sha256sum *.gz | sha256sum`).

    Computed from the official .gz table, whatever form the files were read in: the data are the
    same (their IDX bytes were verified), so runs started on either form resume on the other.
    """
    listing = "".join(f"{sha256[file]}  {file}\n" for file in sorted(FILES))
    return hashlib.sha256(listing.encode()).hexdigest()


def load_idx(name: str, directory: Path, input_scaling: str = "default") -> Splits:
    """The official train/test split of IDX data set `name` from `directory`, every file checksum-verified.

    Each file is read uncompressed if present, else as .gz (`alab.data.idx.idx_path`). Pixels are
    standardized ("default", "standardize": (x / 255 - mean) / std, the usual in PyTorch and in
    Kirsch et al. 2019) or scaled to [0, 1] ("unit": x / 255, as in Gal et al. 2017's Keras code).
    """
    if input_scaling not in ("default", "standardize", "unit"):
        raise AlabError(f"input_scaling for {name} must be default, standardize or unit, got {input_scaling!r}")
    source = IDX_SOURCES[name]
    fix = f"run `alab datasets fetch {name}` or pass --data-dir DIR holding the four official IDX files (.gz or not)"
    if not directory.is_dir():
        raise AlabError(
            f"{name}: no data directory {directory.absolute()} (looked at --data-dir, else "
            f"$ALAB_DATA/{name}, else ./datasets/{name}); {fix}"
        )
    located = {file: idx_path(directory, file.removesuffix(".gz")) for file in FILES}
    missing = [file for file, path in located.items() if path is None]
    if missing:
        raise AlabError(f"{name}: {', '.join(missing)} missing from {directory.absolute()}; {fix}")
    paths = {file: path for file, path in located.items() if path is not None}

    def read(file: str, magic: int) -> np.ndarray:
        return read_idx(paths[file], source.idx_sha256[file], magic, fix)

    x_train, x_test = read(TRAIN_IMAGES, IMAGES_MAGIC), read(TEST_IMAGES, IMAGES_MAGIC)
    y_train, y_test = read(TRAIN_LABELS, LABELS_MAGIC), read(TEST_LABELS, LABELS_MAGIC)
    for split, images, labels in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        if images.shape[0] != labels.shape[0]:
            raise AlabError(
                f"{name}: {split} has {images.shape[0]} images but {labels.shape[0]} labels in {directory}"
            )
        if labels.size and int(labels.max()) >= len(source.classes):
            raise AlabError(
                f"{name}: {split} label {int(labels.max())} is not a class 0-{len(source.classes) - 1}"
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise AlabError(f"{name}: train images are {x_train.shape[1:]} but test images {x_test.shape[1:]}")
    unit = input_scaling == "unit"
    splits = splits_from_numpy(
        _scale(x_train, source, unit), y_train, _scale(x_test, source, unit), y_test, source.classes, idx_checksum(source.sha256)
    )
    return dataclasses.replace(splits, input_scaling="unit" if unit else "standardize")


def _scale(images_N_H_W: np.ndarray, source: IdxSource, unit: bool) -> np.ndarray:
    """uint8 [N, H, W] -> float32 [N, 1, H, W]: pixel / 255 (unit), or (pixel / 255 - mean) / std."""
    x = images_N_H_W.astype(np.float32)
    if unit:
        x *= 1 / 255
    else:
        x *= 1 / (255 * source.std)
        x -= source.mean / source.std
    return x[:, None]  # [N, H, W] -> [N, 1, H, W]


@DATASETS.register(
    "mnist", summary="MNIST handwritten digits, 28x28: 60,000 train, 10,000 test (IDX files; fetchable)"
)
def _mnist(request: DataRequest) -> Splits:
    return load_idx("mnist", request.directory(), request.input_scaling)


@DATASETS.register(
    "fashion-mnist",
    summary="Zalando's Fashion-MNIST, 28x28 clothing: 60,000 train, 10,000 test (IDX files; fetchable)",
)
def _fashion_mnist(request: DataRequest) -> Splits:
    return load_idx("fashion-mnist", request.directory(), request.input_scaling)
