"""A person's own images: `folder:PATH` with `--classes a,b,c`; BALD chooses which of them to ask about.

Every image under PATH (png, jpg, jpeg, bmp, gif, webp; searched recursively, in sorted order) is a
pool item with no label (y = -1: only a person can label it). An optional `PATH/test.csv` with
columns `file,label` (file relative to PATH, label a class name) is a labeled test set; its images
leave the pool. Without it the run's metrics are NaN (nothing honest to measure).

Images are read as grey, resized to 28x28 and scaled to [0, 1]: [N, 1, 28, 28], the input of the
Gal et al. 2017 CNN.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from alab.data.dataset import DATASETS, DataRequest, Splits, splits_from_numpy
from alab.errors import AlabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SIDE = 28
TEST_CSV = "test.csv"


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            grey = image.convert("L").resize((SIDE, SIDE), Image.BILINEAR)
    except (OSError, UnidentifiedImageError) as err:
        raise AlabError(f"cannot read image {path}: {err}") from None
    return np.asarray(grey, dtype=np.float32)[None] / 255.0  # [1, 28, 28]


def _read_test_csv(root: Path, classes: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    path = root / TEST_CSV
    if not path.exists():
        return [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
            raise AlabError(f"{path} needs the columns file and label")
        files, labels = [], []
        for line, row in enumerate(reader, start=2):
            file = (root / row["file"].strip()).resolve()
            if not file.is_file() or root not in file.parents:
                raise AlabError(f"{path} line {line}: {row['file']!r} is not an image inside {root}")
            if row["label"].strip() not in classes:
                raise AlabError(f"{path} line {line}: label {row['label']!r} is not a class ({', '.join(classes)})")
            files.append(file)
            labels.append(classes.index(row["label"].strip()))
    return files, labels


@DATASETS.register(
    "folder:",
    summary="your own images: folder:PATH --classes a,b,c (unlabeled pool; optional PATH/test.csv: file,label)",
)
def _folder(request: DataRequest) -> Splits:
    classes = request.classes
    if not classes:
        raise AlabError(f"{request.name} needs the class names: add --classes a,b,c (or classes = [...] in the config)")
    root = Path(request.arg or "").expanduser()
    if not root.is_dir():
        raise AlabError(f"{request.name}: {root} is not a folder of images")
    root = root.resolve()
    test_files, test_labels = _read_test_csv(root, classes)
    held_out = set(test_files)
    pool_files = [
        p for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p not in held_out
    ]
    if not pool_files:
        raise AlabError(f"{request.name}: no images ({', '.join(IMAGE_SUFFIXES)}) in {root} outside test.csv")
    digest = hashlib.sha256(",".join(classes).encode())
    for path in [*pool_files, *test_files]:
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    empty = np.zeros((0, 1, SIDE, SIDE), dtype=np.float32)
    x_test = np.stack([_read_image(p) for p in test_files]) if test_files else empty
    return splits_from_numpy(
        np.stack([_read_image(p) for p in pool_files]),
        np.full(len(pool_files), -1),
        x_test,
        np.asarray(test_labels, dtype=np.int64),
        tuple(classes),
        digest.hexdigest(),
    )
