"""Text data sets: a user's table `csv:PATH --text COL`, one item per row, classified by a person or a column.

The model reads TF-IDF features of the text (scikit-learn's `TfidfVectorizer`: words and word pairs,
sublinear term frequency, L2-normalized rows, the vocabulary fitted on the training split only, at
most TFIDF_MAX_FEATURES terms), or the user's own embeddings (`--features FILE`); a person always
reads the text itself (on the page, in the terminal, in Label Studio).

With `--target COL` every row carries its class in that column: a random third (fixed, as for every
table) is the test set, and the simulated oracle can answer from the rest. Without it the rows are an
unlabeled pool (only a person can label them) and `--classes a,b,c` names the classes; there is no
test set, so the run's metrics are NaN.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from alab.data.dataset import DataRequest, Splits, splits_from_numpy
from alab.errors import AlabError

TFIDF_MAX_FEATURES = 5000


def text_splits(path: Path, table: Any, request: DataRequest) -> Splits:
    """The `Splits` of a table's text column `request.text`, labeled by `request.target` or by a person."""
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer

    from alab.data.regression import random_split

    column = request.text
    if column not in table.columns:
        raise AlabError(f"{path} has no column {column!r} for --text; columns: {', '.join(map(str, table.columns))}")
    empty = np.flatnonzero(table[column].isna().to_numpy() | (table[column].astype(str).str.strip() == "").to_numpy())
    if empty.size:
        raise AlabError(f"{path}: the text column {column!r} is empty on line {int(empty[0]) + 2}; every row needs a text")
    texts_N = table[column].astype(str).to_numpy()
    if request.target is None:
        if not request.classes:
            raise AlabError(f"{request.name} --text {column} needs the class names: add --classes a,b,c, or --target COL for a column of labels")
        classes, labels_N = tuple(request.classes), np.full(len(texts_N), -1)
        train_N, test_M = np.arange(len(texts_N)), np.zeros(0, dtype=np.int64)
    else:
        classes, labels_N = class_labels(path, table, request)
        if len(texts_N) < 6:
            raise AlabError(f"{path} has {len(texts_N)} rows; a labeled text set needs at least 6 (a third are held out)")
        train_N, test_M = random_split(len(texts_N))
    if not pd.Series(texts_N[train_N]).str.contains(r"\w", regex=True).any():
        raise AlabError(f"{path}: the text column {column!r} holds no words")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=TFIDF_MAX_FEATURES, dtype=np.float32)
    x_train = vectorizer.fit_transform(texts_N[train_N]).toarray()
    x_test = vectorizer.transform(texts_N[test_M]).toarray() if test_M.size else np.zeros((0, x_train.shape[1]), np.float32)
    digest = hashlib.sha256(path.read_bytes())
    digest.update(f"\0text={column}\0target={request.target}\0classes={','.join(classes)}".encode())
    splits = splits_from_numpy(x_train, labels_N[train_N], x_test, labels_N[test_M], classes, digest.hexdigest())
    return dataclasses.replace(splits, text_train=tuple(texts_N[train_N]), rows_train=train_N, rows_test=test_M)


def class_labels(path: Path, table: Any, request: DataRequest) -> tuple[tuple[str, ...], np.ndarray]:
    """(classes, class index per row) of the target column: --classes in their order, else the labels sorted."""
    target = request.target
    if target not in table.columns:
        raise AlabError(f"{path} has no column {target!r} for --target; columns: {', '.join(map(str, table.columns))}")
    if request.text is not None and target == request.text:
        raise AlabError(f"--target and --text both name {target!r}; the target is the column of class labels")
    names_N = table[target].astype(str).str.strip().to_numpy()
    missing = np.flatnonzero(table[target].isna().to_numpy() | (names_N == ""))
    if missing.size:
        raise AlabError(
            f"{path}: no label in column {target!r} on line {int(missing[0]) + 2}; label every row, "
            "or leave --target out (with --classes) to label them all yourself"
        )
    classes = tuple(request.classes) if request.classes else tuple(sorted(set(names_N)))
    unknown = sorted(set(names_N) - set(classes))
    if unknown:
        raise AlabError(f"{path}: label {unknown[0]!r} in column {target!r} is not one of --classes {','.join(classes)}")
    if len(classes) < 2:
        raise AlabError(f"{path}: column {target!r} holds one class ({classes[0]!r}); a classifier needs two or more")
    index = {name: c for c, name in enumerate(classes)}
    return classes, np.asarray([index[name] for name in names_N], dtype=np.int64)
