"""`alab label import DIR FILE`: a person's answers from a file, journaled for the run's open round.

Refused while another process writes the run (its single-writer lock). All or nothing: every answer is checked (an item of the open round still pending, a known class, no
item twice) before one fsynced append to labels.csv; a refused file changes nothing. The label `none`
says the item is none of the classes (kept out of training, never asked again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alab.errors import AlabError
from alab.loop import load_run_config, open_round
from alab.oracles import NONE_OF_THESE, Label
from alab.oracles.files import read_answers
from alab.storage import DirectoryLock, LabelsJournal


@dataclass(frozen=True)
class ImportResult:
    round: int
    imported: int
    pending: list[int]  # the open round's items still without a label


def import_labels(run_dir: Path, answers_file: Path) -> ImportResult:
    """Journal the answers in `answers_file` (queries.csv filled in, or a Label Studio JSON export)."""
    run_dir = Path(run_dir)
    load_run_config(run_dir)  # a directory that holds no run is refused before a lock file is made in it
    with DirectoryLock(run_dir):  # refused while a run writes the journal
        parts, round_, queries = open_round(run_dir)
        journal = LabelsJournal(run_dir / "labels.csv")
        classes = parts.dataset.classes
        pending = {q.index for q in queries} - journal.labeled.keys()
        answers, source = read_answers(answers_file)
        labels: list[Label] = []
        seen: dict[int, str] = {}
        for where, index, name in answers:
            if index in seen:
                raise AlabError(f"{where}: pool item {index} is answered twice (also at {seen[index]}); nothing imported")
            seen[index] = where
            if index in journal.labeled:
                raise AlabError(f"{where}: pool item {index} is already labeled; nothing imported")
            if index not in pending:
                raise AlabError(f"{where}: pool item {index} is not among round {round_}'s queries; nothing imported")
            if name == NONE_OF_THESE:  # none of the classes: journaled, kept out of training, never asked again
                labels.append(Label(index, NONE_OF_THESE, source))
                continue
            if name not in classes:
                raise AlabError(f"{where}: label {name!r} is not a class ({', '.join(classes)}, or {NONE_OF_THESE!r} for none of these); nothing imported")
            labels.append(Label(index, classes.index(name), source))
        journal.append(labels, round_)
        return ImportResult(round_, len(labels), sorted(pending - seen.keys()))
