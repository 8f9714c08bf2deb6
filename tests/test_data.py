"""Tests for alab.data: digits, splits, IDX parsing and checksums, real MNIST and its redistributed forms, fetching over HTTP."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import json
import re
import shutil
import socket
import threading
from collections.abc import Iterator, Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alab.data import DATASETS, balanced_initial, fetch_dataset, load_dataset, resolve_data_dir
from alab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, gunzip, parse_idx
from alab.data.mnist import FILES, IDX_SOURCES, idx_checksum
from alab.data.splits import carve_validation
from alab.errors import AlabError
from test_cli import alab

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
needs_mnist = pytest.mark.skipif(
    not all((SHARED_MNIST / f).is_file() for f in FILES),
    reason=f"the MNIST IDX files are not at {SHARED_MNIST} (a shared/ folder beside the repository)",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist; .ci/run installs it


def one_line(err: pytest.ExceptionInfo[AlabError]) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


def test_digits_shapes_and_types(sklearn_digits: tuple[np.ndarray, np.ndarray]) -> None:
    x_raw, y_raw = sklearn_digits
    d = load_dataset("digits")
    assert d.name == "digits" and d.input_shape == (64,) and len(d.classes) == 10
    assert d.x_pool.dtype == d.x_test.dtype == torch.float32
    assert d.y_pool.dtype == d.y_test.dtype == torch.int64
    assert d.x_pool.shape == (d.y_pool.shape[0], 64) and d.x_test.shape == (d.y_test.shape[0], 64)
    assert d.x_val is None and d.y_val is None
    assert d.y_pool.shape[0] + d.y_test.shape[0] == len(y_raw)
    assert float(d.x_pool.min()) >= 0.0 and float(d.x_pool.max()) <= 1.0
    # features are the raw pixels / 16, and every item is in exactly one split
    x_all = torch.cat([d.x_pool, d.x_test]).double() * 16
    torch.testing.assert_close(x_all.sum(0), torch.from_numpy(x_raw).sum(0))
    counts_C = np.bincount(y_raw, minlength=10)
    torch.testing.assert_close(
        torch.bincount(torch.cat([d.y_pool, d.y_test]), minlength=10), torch.from_numpy(counts_C)
    )
    # the test split holds a stratified third of each class
    test_counts_C = torch.bincount(d.y_test, minlength=10).numpy()
    np.testing.assert_array_equal(test_counts_C, np.round(counts_C / 3).astype(int))


def test_digits_is_deterministic_and_its_test_split_ignores_the_seed() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    c = load_dataset("digits", seed=7, validation=50)
    assert a.checksum == b.checksum == c.checksum and re.fullmatch(r"[0-9a-f]{64}", a.checksum)
    torch.testing.assert_close(a.x_pool, b.x_pool)
    torch.testing.assert_close(a.y_pool, b.y_pool)
    torch.testing.assert_close(a.x_test, c.x_test)
    torch.testing.assert_close(a.y_test, c.y_test)


def test_validation_is_carved_from_the_pool_by_seed() -> None:
    full = load_dataset("digits")
    a = load_dataset("digits", seed=1, validation=100)
    again = load_dataset("digits", seed=1, validation=100)
    other = load_dataset("digits", seed=2, validation=100)
    assert a.x_val is not None and a.y_val is not None and other.x_val is not None
    assert a.x_val.shape == (100, 64) and a.y_val.shape == (100,)
    assert a.y_pool.shape[0] == full.y_pool.shape[0] - 100
    torch.testing.assert_close(a.x_val, again.x_val)
    torch.testing.assert_close(a.x_pool, again.x_pool)
    assert not torch.equal(a.x_val, other.x_val)
    torch.testing.assert_close(
        torch.bincount(torch.cat([a.y_pool, a.y_val]), minlength=10),
        torch.bincount(full.y_pool, minlength=10),
    )
    # pool and validation together hold exactly the rows of the full pool
    pool_rows = {tuple(x.tolist()) for x in a.x_pool}
    val_rows = {tuple(x.tolist()) for x in a.x_val}
    full_rows = {tuple(x.tolist()) for x in full.x_pool}
    assert pool_rows | val_rows == full_rows


def test_target_classes_shift_the_test_and_validation_sets_and_leave_the_pool() -> None:
    """EPIG's setting: the pool holds every class, the target distribution (test and validation) some."""
    full = load_dataset("digits", seed=3, validation=300)
    shifted = load_dataset("digits", seed=3, validation=300, target_classes=[1, 7])
    assert shifted.x_val is not None and shifted.y_val is not None and full.y_val is not None
    torch.testing.assert_close(shifted.x_pool, full.x_pool, rtol=0, atol=0)
    torch.testing.assert_close(shifted.y_pool, full.y_pool, rtol=0, atol=0)
    for x, y, x_all, y_all in [(shifted.x_test, shifted.y_test, full.x_test, full.y_test), (shifted.x_val, shifted.y_val, full.x_val, full.y_val)]:
        keep = (y_all == 1) | (y_all == 7)
        assert set(y.tolist()) == {1, 7} and len(y) == int(keep.sum()) > 0
        torch.testing.assert_close(x, x_all[keep], rtol=0, atol=0)
    assert shifted.checksum == full.checksum  # the same data, seen through another target


def test_carve_validation_partitions_the_indices() -> None:
    pool_P, val_V = carve_validation(50, 12, seed=3)
    assert val_V.shape == (12,) and pool_P.shape == (38,)
    np.testing.assert_array_equal(np.sort(np.concatenate([pool_P, val_V])), np.arange(50))
    assert np.all(np.diff(val_V) > 0) and np.all(np.diff(pool_P) > 0)
    np.testing.assert_array_equal(carve_validation(50, 12, seed=3)[1], val_V)


@pytest.mark.parametrize("validation", [-1, 1198, 5000])
def test_validation_out_of_range_is_refused(validation: int) -> None:
    with pytest.raises(AlabError) as err:
        load_dataset("digits", validation=validation)
    assert "validation" in one_line(err)


def test_negative_seed_and_unknown_name_are_refused() -> None:
    with pytest.raises(AlabError) as err:
        load_dataset("digits", seed=-1)
    assert "seed" in one_line(err)
    with pytest.raises(AlabError) as err:
        load_dataset("mnits")
    assert all(name in one_line(err) for name in ("digits", "mnist", "fashion-mnist"))
    with pytest.raises(AlabError):
        load_dataset("csv:/nowhere.csv")


def test_registry_lists_the_data_sets_with_summaries() -> None:
    assert {"digits", "mnist", "fashion-mnist"} <= set(DATASETS.names())
    for name in DATASETS.names():
        assert DATASETS.summary(name) and "\n" not in DATASETS.summary(name)


def test_resolve_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ALAB_DATA", raising=False)
    assert resolve_data_dir("mnist", None) == Path("datasets") / "mnist"
    monkeypatch.setenv("ALAB_DATA", str(tmp_path))
    assert resolve_data_dir("mnist", None) == tmp_path / "mnist"
    assert resolve_data_dir("mnist", tmp_path / "elsewhere") == tmp_path / "elsewhere"
    assert resolve_data_dir("mnist", str(tmp_path)) == tmp_path


# ---------------------------------------------------------------- balanced_initial


def labels_with_counts(counts: list[int]) -> torch.Tensor:
    y_N = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return y_N[torch.randperm(len(y_N), generator=torch.Generator().manual_seed(99))]


def test_balanced_initial_takes_n_over_c_of_each_class() -> None:
    y_N = labels_with_counts([5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    idx_n = balanced_initial(y_N, 20, torch.Generator().manual_seed(0))
    assert idx_n.dtype == torch.int64 and idx_n.unique().numel() == 20
    torch.testing.assert_close(torch.bincount(y_N[idx_n], minlength=10), torch.full((10,), 2))


def test_balanced_initial_spreads_the_remainder() -> None:
    y_N = labels_with_counts([5] * 10)
    counts_C = torch.bincount(y_N[balanced_initial(y_N, 23, torch.Generator().manual_seed(0))], minlength=10)
    assert int(counts_C.sum()) == 23 and int((counts_C == 3).sum()) == 3 and int((counts_C == 2).sum()) == 7


def test_balanced_initial_is_deterministic_per_seed() -> None:
    y_N = labels_with_counts([100] * 10)
    a = balanced_initial(y_N, 20, torch.Generator().manual_seed(1))
    b = balanced_initial(y_N, 20, torch.Generator().manual_seed(1))
    c = balanced_initial(y_N, 20, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_balanced_initial_handles_labels_that_are_not_0_to_c() -> None:
    y_N = torch.tensor([3, 7, 7, 3, 7, 3, 9, 9])
    idx_n = balanced_initial(y_N, 6, torch.Generator().manual_seed(0))
    assert sorted(y_N[idx_n].tolist()) == [3, 3, 7, 7, 9, 9]


@pytest.mark.parametrize(("counts", "n"), [([2] * 10, 21), ([1, 5, 5], 6), ([2, 2, 3], 8)])
def test_balanced_initial_refuses_the_impossible(counts: list[int], n: int) -> None:
    with pytest.raises(AlabError) as err:
        balanced_initial(labels_with_counts(counts), n, torch.Generator().manual_seed(0))
    assert "--initial" in one_line(err)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=1, max_size=6), seed=st.integers(0, 2**31), data=st.data()
)
def test_balanced_initial_property(counts: list[int], seed: int, data: st.DataObject) -> None:
    y_N = labels_with_counts(counts)
    n = data.draw(st.integers(0, len(y_N) + 2))
    C, q = len(counts), n // len(counts)
    # a selection with q or q + 1 per class summing to n exists iff:
    possible = min(counts) >= q and sum(min(c, q + 1) for c in counts) >= n
    if not possible:
        with pytest.raises(AlabError):
            balanced_initial(y_N, n, torch.Generator().manual_seed(seed))
        return
    idx_n = balanced_initial(y_N, n, torch.Generator().manual_seed(seed))
    assert idx_n.numel() == n == idx_n.unique().numel()
    per_class_C = torch.bincount(y_N[idx_n], minlength=C)
    assert int(per_class_C.min()) >= q and int(per_class_C.max()) <= q + (n % C > 0)


# ---------------------------------------------------------------- IDX files


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """IDX encoding of a uint8 array: magic (0x0800 + ndim unless given), big-endian dims, data."""
    magic = 0x0800 + array.ndim if magic is None else magic
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_gz(path: Path, array: np.ndarray, magic: int | None = None) -> str:
    """Write `array` as a gzip-compressed IDX file; return the SHA-256 of its IDX bytes (what a load checks)."""
    data = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(data))
    return hashlib.sha256(data).hexdigest()


def test_idx_round_trip() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(gunzip(gzip.compress(idx_bytes(images)), "x"), IMAGES_MAGIC, "x"), images)
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels), LABELS_MAGIC, "y"), labels)


def test_idx_wrong_magic_is_refused() -> None:
    with pytest.raises(AlabError) as err:
        parse_idx(idx_bytes(np.zeros((3, 2, 2), np.uint8)), LABELS_MAGIC, "labels.gz")
    assert "magic" in one_line(err) and str(IMAGES_MAGIC) in one_line(err)


@pytest.mark.parametrize("cut", [1, 100, 400, 402])
def test_idx_truncated_is_refused(cut: int) -> None:
    data = idx_bytes(np.ones((4, 5, 5), np.uint8))
    with pytest.raises(AlabError) as err:
        parse_idx(data[: len(data) - cut], IMAGES_MAGIC, "images")
    assert "truncated" in one_line(err)


def test_idx_trailing_bytes_and_broken_gzip_are_refused() -> None:
    data = idx_bytes(np.ones(7, np.uint8))
    with pytest.raises(AlabError):
        parse_idx(data + b"\x00", LABELS_MAGIC, "labels")
    packed = gzip.compress(data)
    with pytest.raises(AlabError) as err:
        gunzip(packed[: len(packed) // 2], "labels")
    assert "gzip" in one_line(err)


@dataclasses.dataclass
class SyntheticIdx:
    directory: Path
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    sha256: dict[str, str]  # of each .gz file
    idx_sha256: dict[str, str]  # of the IDX bytes inside it

    def official(self, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """Patch these files' checksums in as data set `name`'s official ones."""
        source = dataclasses.replace(IDX_SOURCES[name], sha256=dict(self.sha256), idx_sha256=dict(self.idx_sha256))
        monkeypatch.setitem(IDX_SOURCES, name, source)


def write_synthetic(directory: Path, n_train: int = 40, n_test: int = 20) -> SyntheticIdx:
    """Four small MNIST-layout IDX .gz files with random pixels and labels."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images = {
        s: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        for s, n in (("train", n_train), ("t10k", n_test))
    }
    labels = {s: rng.integers(0, 10, size=len(x), dtype=np.uint8) for s, x in images.items()}
    idx_sha256 = {}
    for split in ("train", "t10k"):
        idx_sha256[f"{split}-images-idx3-ubyte.gz"] = write_idx_gz(
            directory / f"{split}-images-idx3-ubyte.gz", images[split]
        )
        idx_sha256[f"{split}-labels-idx1-ubyte.gz"] = write_idx_gz(
            directory / f"{split}-labels-idx1-ubyte.gz", labels[split]
        )
    sha256 = {file: hashlib.sha256((directory / file).read_bytes()).hexdigest() for file in idx_sha256}
    return SyntheticIdx(directory, images, labels, sha256, idx_sha256)


@pytest.fixture
def synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SyntheticIdx:
    """Synthetic files in tmp_path/mnist, made "official" by patching the expected checksums."""
    syn = write_synthetic(tmp_path / "mnist")
    syn.official("mnist", monkeypatch)
    return syn


def test_mnist_loader_reads_standardizes_and_checksums(synthetic: SyntheticIdx) -> None:
    d = load_dataset("mnist", data_dir=synthetic.directory)
    assert (
        d.input_shape == (1, 28, 28)
        and d.x_pool.shape == (40, 1, 28, 28)
        and d.x_test.shape == (20, 1, 28, 28)
    )
    assert d.x_pool.dtype == torch.float32 and d.y_pool.dtype == torch.int64
    for x, y, split in ((d.x_pool, d.y_pool, "train"), (d.x_test, d.y_test, "t10k")):
        expected = (synthetic.images[split][:, None].astype(np.float64) / 255 - 0.1307) / 0.3081
        torch.testing.assert_close(x.double(), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(y, torch.from_numpy(synthetic.labels[split].astype(np.int64)))
    listing = "".join(f"{synthetic.sha256[f]}  {f}\n" for f in sorted(synthetic.sha256))  # `sha256sum *.gz`
    assert d.checksum == hashlib.sha256(listing.encode()).hexdigest()
    v = load_dataset("mnist", data_dir=synthetic.directory, seed=4, validation=10)
    assert v.x_pool.shape[0] == 30 and v.x_val is not None and v.x_val.shape == (10, 1, 28, 28)


def test_fashion_mnist_uses_its_own_statistics_and_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syn = write_synthetic(tmp_path / "fashion-mnist", n_train=12, n_test=6)
    syn.official("fashion-mnist", monkeypatch)
    source = IDX_SOURCES["fashion-mnist"]
    d = load_dataset("fashion-mnist", data_dir=syn.directory)
    assert len(d.classes) == 10 and d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    expected = (syn.images["train"][:, None].astype(np.float64) / 255 - source.mean) / source.std
    torch.testing.assert_close(d.x_pool.double(), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)
    assert source.mean != IDX_SOURCES["mnist"].mean


def test_no_global_random_state_in_the_data_package() -> None:
    package = Path(__file__).resolve().parents[1] / "alab" / "data"
    for path in package.glob("*.py"):
        text = path.read_text()
        assert "np.random." not in text and "torch.manual_seed" not in text, path.name


@pytest.mark.parametrize("file", FILES)
def test_an_altered_byte_is_refused(synthetic: SyntheticIdx, file: str) -> None:
    """One byte flipped in the IDX data, then compressed again: a sound gzip file whose data are not the official ones."""
    path = synthetic.directory / file
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(AlabError) as err:
        load_dataset("mnist", data_dir=synthetic.directory)
    message = one_line(err)
    got = hashlib.sha256(bytes(data)).hexdigest()
    assert file in message and synthetic.idx_sha256[file][:12] in message and got[:12] in message
    assert "truncated or altered" in message


def test_a_corrupt_gzip_stream_is_refused(synthetic: SyntheticIdx) -> None:
    path = synthetic.directory / FILES[0]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(AlabError) as err:
        load_dataset("mnist", data_dir=synthetic.directory)
    assert FILES[0] in one_line(err) and "gzip" in one_line(err)


def test_a_truncated_file_is_refused(synthetic: SyntheticIdx) -> None:
    path = synthetic.directory / FILES[0]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(AlabError) as err:
        load_dataset("mnist", data_dir=synthetic.directory)
    assert FILES[0] in one_line(err) and "truncated" in one_line(err)


def test_wrong_magic_with_a_matching_checksum_is_refused(
    synthetic: SyntheticIdx, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = "train-labels-idx1-ubyte.gz"
    synthetic.idx_sha256[file] = write_idx_gz(synthetic.directory / file, synthetic.labels["train"], magic=IMAGES_MAGIC)
    synthetic.official("mnist", monkeypatch)
    with pytest.raises(AlabError) as err:
        load_dataset("mnist", data_dir=synthetic.directory)
    assert "magic" in one_line(err) and file in one_line(err)


def test_image_and_label_counts_must_agree(synthetic: SyntheticIdx, monkeypatch: pytest.MonkeyPatch) -> None:
    file = "t10k-labels-idx1-ubyte.gz"
    synthetic.idx_sha256[file] = write_idx_gz(synthetic.directory / file, synthetic.labels["t10k"][:-1])
    synthetic.official("mnist", monkeypatch)
    with pytest.raises(AlabError) as err:
        load_dataset("mnist", data_dir=synthetic.directory)
    assert "labels" in one_line(err)


def test_missing_directory_and_files_say_where_and_how(synthetic: SyntheticIdx) -> None:
    nowhere = synthetic.directory.parent / "nowhere"
    with pytest.raises(AlabError) as err:
        load_dataset("mnist", data_dir=nowhere)
    assert str(nowhere) in one_line(err) and "alab datasets fetch mnist" in one_line(err)
    assert "--data-dir" in one_line(err)
    (synthetic.directory / FILES[2]).unlink()
    with pytest.raises(AlabError) as err:
        load_dataset("mnist", data_dir=synthetic.directory)
    assert FILES[2] in one_line(err) and "alab datasets fetch mnist" in one_line(err)


# ---------------------------------------------------------------- real MNIST


def source_md_counts(label: str) -> list[int]:
    text = (SHARED_MNIST / "SOURCE.md").read_text()
    match = re.search(rf"{label} label counts[^:]*:\s*([\d ]+)", text)
    assert match, f"no {label!r} label counts in SOURCE.md"
    return [int(c) for c in match.group(1).split()]


@pytest.fixture(scope="module")
def real_mnist():
    return load_dataset("mnist", data_dir=SHARED_MNIST)


@needs_mnist
def test_real_mnist(real_mnist) -> None:
    d = real_mnist
    assert d.x_pool.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.classes == tuple(str(i) for i in range(10))
    assert torch.bincount(d.y_pool, minlength=10).tolist() == source_md_counts("Train")
    assert torch.bincount(d.y_test, minlength=10).tolist() == source_md_counts("Test")
    # standardized with MNIST's training mean and std: about 0 and 1; pixel 0 and 255 at the ends
    assert abs(float(d.x_pool.mean())) < 1e-3 and abs(float(d.x_pool.std()) - 1) < 1e-3
    assert float(d.x_pool.min()) == pytest.approx(-0.1307 / 0.3081, abs=1e-5)
    assert float(d.x_pool.max()) == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-5)
    # the checksum is that of the SHA256SUMS listing shipped beside the files
    assert d.checksum == hashlib.sha256((SHARED_MNIST / "SHA256SUMS").read_bytes()).hexdigest()


@functools.cache
def official_idx(file: str) -> bytes:
    """The IDX bytes inside the shared official MNIST file `file` (a .gz name), decompressed once per session."""
    return gzip.decompress((SHARED_MNIST / file).read_bytes())


def flipped(data: bytes) -> bytes:
    """`data` with the lowest bit of its middle byte flipped."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def mnist_folder(directory: Path, forms: Sequence[str], altered: str | None = None) -> Path:
    """The shared MNIST data written into `directory` as a redistribution would hold them.

    Each file in every one of `forms`: "gz", compressed again without the file name in the gzip
    header (as Debian's are) and at another level, so not the official bytes; "idx", uncompressed
    (torchvision's raw/ folder holds both). The IDX data of file `altered` get one byte flipped.
    """
    directory.mkdir(parents=True)
    for file in FILES:
        data = flipped(official_idx(file)) if file == altered else official_idx(file)
        if "gz" in forms:
            (directory / file).write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
        if "idx" in forms:
            (directory / file.removesuffix(".gz")).write_bytes(data)
    return directory


def assert_same_data(a, b) -> None:
    for x, y in ((a.x_pool, b.x_pool), (a.y_pool, b.y_pool), (a.x_test, b.x_test), (a.y_test, b.y_test)):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@needs_mnist
@pytest.mark.parametrize("forms", [("gz",), ("idx",), ("gz", "idx")], ids=["recompressed", "uncompressed", "both"])
def test_mnist_from_a_redistribution_is_the_official_data(real_mnist, tmp_path: Path, forms: tuple[str, ...]) -> None:
    directory = mnist_folder(tmp_path / "mnist", forms)
    if "gz" in forms:
        raw = (directory / FILES[0]).read_bytes()
        assert not raw[3] & 0x08, "the gzip header names no file (FNAME flag clear)"
        assert hashlib.sha256(raw).hexdigest() != IDX_SOURCES["mnist"].sha256[FILES[0]]
    d = load_dataset("mnist", data_dir=directory)
    # the data set's identity in run.json is unchanged: a run started on the official files resumes here
    assert d.checksum == real_mnist.checksum == idx_checksum(IDX_SOURCES["mnist"].sha256)
    assert_same_data(d, real_mnist)


@needs_mnist
def test_the_uncompressed_file_is_read_when_both_are_there(real_mnist, tmp_path: Path) -> None:
    file = "train-labels-idx1-ubyte.gz"
    good_beside_bad = mnist_folder(tmp_path / "a", ("gz",), altered=file)
    (good_beside_bad / file.removesuffix(".gz")).write_bytes(official_idx(file))
    assert_same_data(load_dataset("mnist", data_dir=good_beside_bad), real_mnist)  # the altered .gz is never read
    bad_beside_good = mnist_folder(tmp_path / "b", ("gz",))
    (bad_beside_good / file.removesuffix(".gz")).write_bytes(flipped(official_idx(file)))
    with pytest.raises(AlabError) as err:
        load_dataset("mnist", data_dir=bad_beside_good)
    assert f"train-labels-idx1-ubyte in {bad_beside_good} is truncated or altered" in one_line(err)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason=f"no {DEBIAN_FASHION_MNIST}: apt-get install dataset-fashion-mnist")
def test_a_run_on_debians_fashion_mnist(tmp_path: Path) -> None:
    """Debian recompresses Zalando's files (no file name in the gzip header): the same data, the same identity."""
    (tmp_path / "fast.toml").write_text("[backend]\nepochs = 1\nmin_steps = 20\n")
    args = ["run", "--dataset", "fashion-mnist", "--data-dir", str(DEBIAN_FASHION_MNIST), "--rounds", "0", "--initial", "20",
            "--pool-subsample", "100", "--samples", "2", "--config", str(tmp_path / "fast.toml")]  # fmt: skip
    alab(*args, "--out", str(tmp_path / "run"), cwd=tmp_path, check=True)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["dataset_checksum"] == idx_checksum(IDX_SOURCES["fashion-mnist"].sha256)
    rows = (tmp_path / "run" / "curve.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("0,20,")


# ---------------------------------------------------------------- fetch


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving `directory`; yields its base URL and the paths requested."""
    requested: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@needs_mnist
def test_fetch_downloads_verifies_and_skips(tmp_path: Path) -> None:
    target = tmp_path / "mnist"
    with serve(SHARED_MNIST) as (url, requested):
        assert fetch_dataset("mnist", target, url=url, progress=False) == target
        assert sorted(requested) == sorted(f"/{f}" for f in FILES)
        for file in FILES:
            assert (target / file).read_bytes() == (SHARED_MNIST / file).read_bytes()
        fetch_dataset("mnist", target, url=url, progress=False)
        assert len(requested) == 4  # all present and verified: nothing downloaded again
    assert leftovers(target) == []


@needs_mnist
def test_fetch_keeps_files_whose_data_are_official(tmp_path: Path) -> None:
    target = mnist_folder(tmp_path / "mnist", ("gz",))
    before = {file: (target / file).read_bytes() for file in FILES}
    with serve(SHARED_MNIST) as (url, requested):
        fetch_dataset("mnist", target, url=url, progress=False)
    assert requested == [] and {file: (target / file).read_bytes() for file in FILES} == before


@needs_mnist
def test_fetch_refuses_an_altered_file_and_leaves_nothing(tmp_path: Path) -> None:
    target, served = tmp_path / "mnist", tmp_path / "served"
    target.mkdir()
    served.mkdir()
    bad = "t10k-labels-idx1-ubyte.gz"
    for file in FILES:
        if file != bad:
            shutil.copy(SHARED_MNIST / file, target / file)
    raw = bytearray((SHARED_MNIST / bad).read_bytes())
    raw[100] ^= 0x01
    (served / bad).write_bytes(bytes(raw))
    with serve(served) as (url, requested), pytest.raises(AlabError) as err:
        fetch_dataset("mnist", target, url=url, progress=False)
    assert requested == [f"/{bad}"]
    assert bad in one_line(err) and IDX_SOURCES["mnist"].sha256[bad][:12] in one_line(err)
    assert not (target / bad).exists() and leftovers(target) == []
    assert sorted(p.name for p in target.iterdir()) == sorted(f for f in FILES if f != bad)


def test_fetch_replaces_a_corrupt_file_and_shows_progress(
    synthetic: SyntheticIdx, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "fetched"
    target.mkdir()
    (target / FILES[1]).write_bytes(b"not the file")
    with serve(synthetic.directory) as (url, _):
        fetch_dataset("mnist", target, url=url, progress=True)
    for file in FILES:
        assert (target / file).read_bytes() == (synthetic.directory / file).read_bytes()
    assert FILES[0] in capsys.readouterr().err  # the progress bar, on stderr


def test_fetch_defaults_to_alab_data(
    synthetic: SyntheticIdx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALAB_DATA", str(tmp_path / "data"))
    with serve(synthetic.directory) as (url, _):
        assert fetch_dataset("mnist", url=url, progress=False) == tmp_path / "data" / "mnist"
    assert load_dataset("mnist").y_pool.shape == (40,)


def test_fetch_network_errors_are_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port on 127.0.0.1 with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(AlabError) as err:
        fetch_dataset("mnist", tmp_path / "a", url=url, progress=False)
    assert url in one_line(err)
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve(empty) as (url, _), pytest.raises(AlabError) as err:
        fetch_dataset("mnist", tmp_path / "b", url=url, progress=False)
    assert "404" in one_line(err)
    assert leftovers(tmp_path / "a") == leftovers(tmp_path / "b") == []


def test_fetch_refuses_a_data_set_without_files(tmp_path: Path) -> None:
    with pytest.raises(AlabError) as err:
        fetch_dataset("digits", tmp_path)
    assert "mnist" in one_line(err)
