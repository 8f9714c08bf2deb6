from __future__ import annotations

from pathlib import Path

import pytest

from alab.errors import AlabError
from alab.oracles import Label
from alab.storage import LabelsJournal, atomic_write_text


def test_journal_appends_and_reads_back(tmp_path: Path) -> None:
    journal = LabelsJournal(tmp_path / "labels.csv")
    journal.append([Label(5, 1, "simulated"), Label(2, 0, "simulated")], 0)
    journal.append([Label(9, 3, "web")], 1)
    again = LabelsJournal(tmp_path / "labels.csv")
    assert [(e.index, e.label, e.round, e.source) for e in again.entries] == [
        (5, 1, 0, "simulated"), (2, 0, 0, "simulated"), (9, 3, 1, "web"),
    ]  # fmt: skip
    assert (tmp_path / "labels.csv").read_text().splitlines()[0] == "index,label,round,source"


def test_a_torn_last_line_is_dropped_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    LabelsJournal(path).append([Label(5, 1, "simulated")], 0)
    with open(path, "a") as f:
        f.write("7,2,0,simu")  # a crash in the middle of a write
    journal = LabelsJournal(path)
    assert [e.index for e in journal.entries] == [5]
    assert path.read_text().endswith("simulated\n")
    journal.append([Label(7, 2, "simulated")], 0)
    assert [e.index for e in LabelsJournal(path).entries] == [5, 7]


def test_a_second_label_for_an_item_is_refused_and_nothing_written(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    journal = LabelsJournal(path)
    journal.append([Label(5, 1, "simulated")], 0)
    before = path.read_bytes()
    with pytest.raises(AlabError, match="already labeled"):
        journal.append([Label(6, 1, "simulated"), Label(5, 2, "simulated")], 0)
    with pytest.raises(AlabError, match="already labeled"):
        journal.append([Label(8, 1, "simulated"), Label(8, 2, "simulated")], 0)
    assert path.read_bytes() == before


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
