"""The simulated oracle: labels come from the data set itself (benchmarks and paper reproductions)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from alab.errors import AlabError
from alab.oracles.base import Label, OracleContext, Query, no_options, register_oracle


class SimulatedOracle:
    """Answers every request at once with the data set's own label."""

    def __init__(self, y_pool_N: Tensor) -> None:
        self.y_pool_N = y_pool_N
        self._pending: list[int] = []

    def request(self, items: Sequence[Query]) -> None:
        self._pending.extend(item.index for item in items)

    def collect(self, *, timeout: float | None = None) -> list[Label]:
        # .item(): an int class, or a float regression target
        labels = [Label(index, self.y_pool_N[index].item(), "simulated") for index in self._pending]
        self._pending = []
        return labels

    def acknowledge(self, labels: Sequence[Label]) -> None:
        pass  # nobody to tell

    def close(self) -> None:
        self._pending = []


def check_simulated(context: OracleContext) -> None:
    no_options("simulated")(context)
    if context.dataset.task == "classification" and bool((context.dataset.y_pool < 0).any()):  # -1: unlabeled
        raise AlabError(f"{context.dataset.name} has unlabeled pool items; the simulated oracle cannot answer, use --oracle web, terminal or files")


@register_oracle("simulated", "labels from the data set itself (benchmarks, paper reproductions)", check_simulated)
def make_simulated(context: OracleContext) -> SimulatedOracle:
    check_simulated(context)
    return SimulatedOracle(context.dataset.y_pool)
