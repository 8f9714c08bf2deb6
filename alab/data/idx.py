"""IDX files (the MNIST format), gzip-compressed, checked against their official SHA-256 before use.

IDX layout: a big-endian 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the items row-major. The MNIST family uses type 0x08
(unsigned byte): magic 2051 for images [N, rows, cols], 2049 for labels [N].
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


def checksum_error(what: str, expected: str, got: str, fix: str) -> AlabError:
    """The one-line refusal for a file whose SHA-256 is not the official one."""
    return AlabError(
        f"{what} is truncated or altered: sha256 {got[:12]}... where the official file has "
        f"{expected[:12]}...; {fix}"
    )


def read_verified(path: Path, sha256: str, fix: str) -> bytes:
    """The bytes of `path`, refused (AlabError) unless their SHA-256 is `sha256`."""
    raw = path.read_bytes()
    got = hashlib.sha256(raw).hexdigest()
    if got != sha256:
        raise checksum_error(f"{path.name} in {path.parent}", sha256, got, fix)
    return raw


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


def parse_idx_gz(raw: bytes, expected_magic: int, what: str) -> np.ndarray:
    """`parse_idx` of the gzip-compressed bytes `raw`."""
    try:
        data = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise AlabError(
            f"{what}: not a complete gzip file ({err}); the file is truncated or corrupt"
        ) from None
    return parse_idx(data, expected_magic, what)
