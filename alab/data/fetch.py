"""Download a data set's official files into its data directory, each verified before it takes its name."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from alab.data.dataset import resolve_data_dir
from alab.data.idx import checksum_error, read_idx_bytes
from alab.data.mnist import FILES, IDX_SOURCES
from alab.errors import AlabError

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0


def fetch_dataset(
    name: str, data_dir: str | Path | None = None, *, url: str | None = None, progress: bool = True
) -> Path:
    """Download `name`'s four IDX files into its data directory (`resolve_data_dir`); return it.

    `url` overrides the base URL of the mirror. A .gz file already there whose IDX data are the official
    ones is kept (the official file, or a faithful recompression such as Debian's: what a load accepts);
    each download must be the official .gz file itself, goes to a temporary file in the same folder
    and is renamed only once verified.
    """
    if name not in IDX_SOURCES:
        raise AlabError(
            f"nothing to fetch for {name!r}; fetchable data sets: {', '.join(sorted(IDX_SOURCES))}"
        )
    source = IDX_SOURCES[name]
    directory = resolve_data_dir(name, data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    base = (url or source.url).rstrip("/") + "/"
    for file in FILES:
        target = directory / file
        if target.is_file() and _holds_official_data(target, source.idx_sha256[file]):
            continue
        _download(base + file, target, source.sha256[file], progress)
    return directory


def _holds_official_data(path: Path, idx_sha256: str) -> bool:
    """Whether the IDX bytes of `path` (decompressed) have the official SHA-256; a broken file does not."""
    try:
        return hashlib.sha256(read_idx_bytes(path)).hexdigest() == idx_sha256
    except AlabError:
        return False


def _download(url: str, target: Path, sha256: str, progress: bool) -> None:
    """Stream `url` into a temporary file beside `target`; verify it, then rename it into place."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _stream(url, out, progress, target.name)
        if got != sha256:
            raise checksum_error(f"the download of {url}", sha256, got, "it was deleted; check --url")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, out: BinaryIO, progress: bool, label: str) -> str:
    """Copy `url` into `out` with a progress bar on stderr; return the SHA-256 of what came."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            # response.length is None when the server sends no Content-Length
            bar = tqdm(total=response.length, unit="B", unit_scale=True, desc=label, disable=not progress)
            with bar:
                while chunk := response.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as err:
        raise AlabError(f"could not download {url}: HTTP {err.code} {err.reason}; check --url") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = " ".join(str(getattr(err, "reason", None) or err).split())
        raise AlabError(f"could not download {url}: {reason}; check the network or --url") from None
    return digest.hexdigest()
