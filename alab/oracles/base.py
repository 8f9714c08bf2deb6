"""The Oracle protocol: the only way the loop learns a pool item's label.

Labels may arrive asynchronously, partially and out of order (a person labels at their own pace);
`collect` returns what is there and never loses one. The seam between oracle and journal:

1. the loop calls `request(queries)` with the items of the open round not yet labeled;
2. `collect` returns the labels given so far (and undo events, `Label(source=UNDO)`);
3. the loop validates them, appends them to `labels.csv` (flushed, fsynced), and only then calls
   `acknowledge(labels)`; an oracle tells the person "saved" there and nowhere earlier.

So a label acknowledged to a person is on disk, whatever happens next. An oracle whose labels come
from outside the process (files, Label Studio) raises `LabelingPaused` from `collect`: the loop
keeps its state, the run's status becomes "waiting", and `alab resume DIR` continues later.

Undo: `Label(index, label, UNDO)` withdraws the item's label while its round is open (before the
loop retrains); the journal records it as a row with source "undo" and the item is pending again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor

from alab.errors import AlabError
from alab.registry import Registry

UNDO = "undo"  # the `source` of a journal row that withdraws the item's label
# The answer "none of these classes" (an item from outside them): journaled like any label, kept out of
# training, and never asked again (alab.loop); written as the word in labels.csv.
NONE_OF_THESE = "none"


@dataclass(frozen=True)
class Query:
    """A pool item to label: its pool index, what to show (the input), the model's view, its round."""

    index: int
    payload: Tensor | None = None
    view: dict[str, Any] = field(default_factory=dict)  # e.g. {"probs": [...], "score": 0.4}
    round: int = 0  # the journal round its label will carry (0: the initial set)
    text: str | None = None  # what a person reads, for text items (payload None: the features are not for people)


@dataclass(frozen=True)
class Label:
    """A label for pool item `index`, and who gave it (source UNDO: withdraw the item's label).

    A class index (int), NONE_OF_THESE (none of the classes), or a regression target (float).
    """

    index: int
    label: int | float | str
    source: str


class LabelingPaused(Exception):
    """Raised by `collect` when the labels will come later from outside this process.

    The loop saves nothing more, marks the run "waiting" with this message, and exits cleanly.
    """


class Oracle(Protocol):
    def request(self, items: Sequence[Query]) -> None: ...

    def collect(self, *, timeout: float | None) -> list[Label]: ...

    def acknowledge(self, labels: Sequence[Label]) -> None: ...  # called once `labels` are journaled

    def close(self) -> None: ...


def label_name(label: int | float | str, classes: Sequence[str]) -> str:
    """How a person reads a class label: the class's name, or "none of these"."""
    return "none of these" if label == NONE_OF_THESE else classes[int(label)]


def _print(line: str) -> None:
    print(line)


@dataclass(frozen=True)
class OracleContext:
    """What an oracle may need to start: the data set, run directory, class names, its options."""

    dataset: Any  # alab.data.Dataset
    run_dir: Any  # pathlib.Path
    classes: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)  # the `[oracle]` table, less `name`
    rounds: int = 0  # acquisition rounds in the run (for "round r of R")
    echo: Callable[[str], None] = _print  # messages for the person running the loop


OracleFactory = Callable[[OracleContext], Oracle]
OracleCheck = Callable[[OracleContext], None]
ORACLES: Registry[OracleFactory] = Registry("oracle")
_CHECKS: dict[str, OracleCheck] = {}


def no_options(name: str) -> OracleCheck:
    """The check of an oracle that takes no `[oracle]` settings."""

    def check(context: OracleContext) -> None:
        if context.options:
            raise AlabError(f"the {name} oracle takes no options, got oracle.{next(iter(context.options))}; remove it")

    return check


def register_oracle(name: str, summary: str, check: OracleCheck) -> Callable[[OracleFactory], OracleFactory]:
    """Register an oracle factory with its `check`: options and data set validated without starting anything.

    The factory calls the check itself too; the loop calls it (`check_oracle`) before the run
    directory exists, so a bad `[oracle]` table leaves no files behind.
    """

    def decorate(factory: OracleFactory) -> OracleFactory:
        ORACLES.add(name, factory, summary)
        _CHECKS[name] = check
        return factory

    return decorate


def check_oracle(name: str, context: OracleContext) -> None:
    """AlabError if `name` is unknown or its options or the data set do not suit it."""
    ORACLES.get(name)
    _CHECKS.get(name, no_options(name))(context)  # an oracle registered without a check takes no options
