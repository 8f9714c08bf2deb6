"""Files that survive a crash: atomic replacement, and the append-only labels journal.

Every file but the journal is written whole to a temporary file, fsynced, then renamed over the old
one, so a reader sees the old version or the new one, never half. The journal is appended one
batch of whole lines per write, flushed and fsynced before the label is acknowledged; a torn last
line (a crash inside the write) is dropped when it is read back.

The journal is append-only, so an undo is a row too: `index, label, round, undo` withdraws the
item's label, allowed only while that label's round is open (the loop appends labels of round r
only before it retrains on round r). Reading the journal replays the rows in order.

One process writes a run directory at a time: `DirectoryLock` holds an exclusive `flock` on
`<dir>/.lock` for the life of the writer. The kernel releases it when the process dies, SIGKILL
included, so a crash never leaves a stale lock; a second writer is refused in one line naming the
holder's pid and command. Readers (`alab report`) take no lock: every file they read is replaced atomically.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from alab.errors import AlabError
from alab.oracles.base import NONE_OF_THESE, UNDO, Label


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


LOCK_NAME = ".lock"


def _lock_holder(fd: int) -> str:
    """Who holds the flock on the file open at `fd`: "pid N: COMMAND" from /proc/locks (Linux), else "pid unknown"."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "pid unknown"
    pids = [fields[4] for fields in (line.split() for line in locks) if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key]
    if not pids:
        return "pid unknown"
    try:
        argv = Path(f"/proc/{pids[0]}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")[:-1]
    except OSError:
        return f"pid {pids[0]}"
    names = [Path(arg).name for arg in argv]  # python -m alab ARGS, or python .../bin/alab ARGS
    if "alab" not in names:  # a comparison's worker process: its command line says nothing useful
        return f"pid {pids[0]}"
    command = shlex.join(["alab", *argv[names.index("alab") + 1 :]])
    return f"pid {pids[0]}: {command}"


class DirectoryLock:
    """The single-writer lock of a run or comparison directory: an exclusive `flock` on `<dir>/.lock`.

    The file is created empty and never written or deleted (unlinking a lock file that another process
    has open lets two processes each lock their own inode), so a refused command changes no file.
    The holder named in the refusal comes from the kernel's lock table (`/proc/locks`).
    """

    def __init__(self, directory: Path, what: str = "run directory") -> None:
        self.directory = Path(directory)
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> DirectoryLock:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise AlabError(
                f"{self.directory} is being written by another alab process ({holder}); one process writes a "
                f"{self.what} at a time: wait for that one to finish, or stop it, then try again"
            ) from None
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def _number(text: str) -> int | float | str:
    """A label as written: an int (a class) if it reads as one, NONE_OF_THESE, else a float (a regression target)."""
    if text == NONE_OF_THESE:
        return text
    try:
        return int(text)
    except ValueError:
        return float(text)


@dataclass(frozen=True)
class JournalEntry:
    """One row of `labels.csv`."""

    index: int
    label: int | float | str  # a class index, NONE_OF_THESE, or a regression target
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
