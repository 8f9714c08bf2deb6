"""The Oracle protocol: the only way the loop learns a pool item's label.

Labels may arrive asynchronously, partially and out of order (a person labels at their own pace);
`collect` returns what is there and never loses one. The loop journals every label before it asks
for more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor

from alab.registry import Registry


@dataclass(frozen=True)
class Query:
    """A pool item to label: its pool index, what to show (the input), and the model's view of it."""

    index: int
    payload: Tensor | None = None
    view: dict[str, Any] = field(default_factory=dict)  # e.g. {"probs": [...], "score": 0.4}


@dataclass(frozen=True)
class Label:
    """A label for pool item `index`, and who gave it."""

    index: int
    label: int
    source: str


class Oracle(Protocol):
    def request(self, items: Sequence[Query]) -> None: ...

    def collect(self, *, timeout: float | None) -> list[Label]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class OracleContext:
    """What an oracle may need to start: the data set, the run directory, the class names."""

    dataset: Any  # alab.data.Dataset
    run_dir: Any  # pathlib.Path
    classes: tuple[str, ...]


OracleFactory = Callable[[OracleContext], Oracle]
ORACLES: Registry[OracleFactory] = Registry("oracle")
