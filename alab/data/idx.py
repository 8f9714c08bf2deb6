"""IDX files (the MNIST format), gzip-compressed or not, checked against the official SHA-256 of their IDX bytes.

IDX layout: a big-endian 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the items row-major. The MNIST family uses type 0x08
(unsigned byte): magic 2051 for images [N, rows, cols], 2049 for labels [N].

The checksum is of the IDX bytes themselves, after decompression: a redistribution that recompresses
the official files (Debian's `dataset-fashion-mnist` drops the gzip header's file name) or unpacks
them (torchvision's `raw/` folder) holds the same data and is read as the official release.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from alab.errors import AlabError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def checksum_error(what: str, expected: str, got: str, fix: str, *, whose: str = "file") -> AlabError:
    """The one-line refusal for bytes whose SHA-256 is not the official one (`whose`: what was hashed)."""
    return AlabError(
        f"{what} is truncated or altered: sha256 {got[:12]}... where the official {whose} has "
        f"{expected[:12]}...; {fix}"
    )


def idx_path(directory: Path, name: str) -> Path | None:
    """Where IDX file `name` (e.g. `train-images-idx3-ubyte`) is in `directory`, None if nowhere.

    The uncompressed `name` when present, else `name.gz`: torchvision's `raw/` folder holds both,
    and the uncompressed one is read without the cost of inflating it.
    """
    for path in (directory / name, directory / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def read_idx_bytes(path: Path) -> bytes:
    """The IDX bytes of `path`: decompressed if its name ends in .gz, else the file as it is."""
    raw = path.read_bytes()
    return gunzip(raw, f"{path.name} in {path.parent}") if path.suffix == ".gz" else raw


def read_idx(path: Path, sha256: str, expected_magic: int, fix: str) -> np.ndarray:
    """The uint8 array in IDX file `path`, refused (AlabError naming it) unless its IDX bytes' SHA-256 is `sha256`.

    Decompressed once, hashed once, then parsed in place (`parse_idx` returns a view).
    """
    what = f"{path.name} in {path.parent}"
    data = read_idx_bytes(path)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise checksum_error(what, sha256, got, fix, whose="IDX data")
    return parse_idx(data, expected_magic, what)


def gunzip(raw: bytes, what: str) -> bytes:
    """The decompressed bytes of gzip data `raw`, refused in one line if the stream is cut short or corrupt."""
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise AlabError(
            f"{what}: not a complete gzip file ({err}); the file is truncated or corrupt"
        ) from None


def parse_idx(data: bytes, expected_magic: int, what: str) -> np.ndarray:
    """The uint8 array held by IDX bytes `data` (read-only view), refused unless magic and size are right."""
    if len(data) < 4:
        raise AlabError(f"{what}: {len(data)} bytes is too short for an IDX file; the file is truncated")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise AlabError(
            f"{what}: IDX magic number {magic}, expected {expected_magic}; this is not the right file"
        )
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise AlabError(f"{what}: the IDX header is cut short; the file is truncated")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=data[3], offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise AlabError(
            f"{what}: {len(data)} bytes where its IDX header {dims} promises {expected}; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
