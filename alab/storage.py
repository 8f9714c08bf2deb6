"""Files that survive a crash: atomic replacement, and the append-only labels journal.

Every file but the journal is written whole to a temporary file, fsynced, then renamed over the old
one, so a reader sees the old version or the new one, never half. The journal is appended one
batch of whole lines per write, flushed and fsynced before the label is acknowledged; a torn last
line (a crash inside the write) is dropped when it is read back.

The journal is append-only, so an undo is a row too: `index, label, round, undo` withdraws the
item's label, allowed only while that label's round is open (the loop appends labels of round r
only before it retrains on round r). Reading the journal replays the rows in order.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from alab.errors import AlabError
from alab.oracles.base import UNDO, Label


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    """Where `atomic_write_bytes` writes `path`'s new content before renaming it over `path`."""
    return path.with_name(f".{path.name}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temporary file, fsync, rename, fsync the directory."""
    path = Path(path)
    tmp = temporary_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: Path, obj: object) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _number(text: str) -> int | float:
    """A label as written: an int (a class) if it reads as one, else a float (a regression target; repr round-trips)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


@dataclass(frozen=True)
class JournalEntry:
    """One row of `labels.csv`."""

    index: int
    label: int | float  # a class index, or a regression target
    round: int
    source: str


class LabelsJournal:
    """`labels.csv`: index, label, round, source; appended, flushed and fsynced as labels arrive.

    `entries` are the rows as written (undo rows included); `labeled` maps each labeled pool item to
    its standing entry, after undos.
    """

    header = "index,label,round,source\n"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            atomic_write_text(self.path, self.header)
        self.entries: list[JournalEntry] = self._read_and_repair()
        self.labeled: dict[int, JournalEntry] = {}
        for entry in self.entries:
            self._apply(entry, self.labeled)

    def _read_and_repair(self) -> list[JournalEntry]:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if complete != data:  # a crash tore the last line: it was never acknowledged, drop it
            with open(self.path, "r+b") as f:
                f.truncate(len(complete))
                os.fsync(f.fileno())
        rows = list(csv.reader(io.StringIO(complete.decode("utf-8"))))
        if not rows or ",".join(rows[0]) + "\n" != self.header:
            raise AlabError(f"{self.path} is not a labels journal (expected header {self.header.strip()!r})")
        try:
            return [JournalEntry(int(i), _number(y), int(r), s) for i, y, r, s in rows[1:]]
        except ValueError:
            raise AlabError(f"{self.path} has a malformed row; fix or remove it, then resume") from None

    def _apply(self, entry: JournalEntry, labeled: dict[int, JournalEntry]) -> None:
        """Replay one row onto `labeled`; refuse a second label, or an undo of a closed round's label."""
        standing = labeled.get(entry.index)
        if entry.source != UNDO:
            if standing is not None:
                raise AlabError(f"pool item {entry.index} is already labeled; a second label is refused (undo it first)")
            labeled[entry.index] = entry
        elif standing is None:
            raise AlabError(f"pool item {entry.index} has no label to undo")
        elif standing.round != entry.round:
            raise AlabError(
                f"pool item {entry.index} was labeled in round {standing.round}, which is closed; only the open round's labels can be undone"
            )
        else:
            del labeled[entry.index]

    def append(self, labels: Iterable[Label], round_: int) -> list[JournalEntry]:
        """Write `labels` (one write, fsynced) and return their entries; all or nothing.

        Refuses (before writing anything) a second label for an item, and an undo of a label that is
        not in round `round_`.
        """
        new = [JournalEntry(label.index, label.label, round_, label.source) for label in labels]
        labeled = dict(self.labeled)
        for entry in new:
            self._apply(entry, labeled)
        if not new:
            return []
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows((e.index, e.label, e.round, e.source) for e in new)
        data = text.getvalue().encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.entries.extend(new)
        self.labeled = labeled
        return new
