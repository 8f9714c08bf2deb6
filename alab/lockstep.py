"""Lockstep grids: the cells of a comparison in one process, their fits trained as one stacked model.

In round r every cell of a fresh grid holds `initial + r * query_size` labels, so the cells that
share data set, backend, model and protocol (everything but strategy and seed) fit networks of the
same shape on labeled sets of the same size. The lockstep executor gives each such group's cells a
thread each in one worker process, running the ordinary loop (`alab.compare.run_cell`: its own run
directory, journal, checkpoint, curve and log). Only the fit is shared: a cell's backend hands its
fit to the group (`FitGroup`, through `alab.backends.mc_dropout.TRAINER`), which waits until every
cell still running has asked, then trains the networks of each same-shaped set of requests as one
stack (`train_stacked`). Scoring, evaluation, selection and labels stay per cell, in its thread.

What is bit-identical: a cell's fit in a stack of M equals the same fit in a stack of any other
cells, or alone in a stack of 1 (each network's products are separate batched products on one
thread, Adam is elementwise and not fused, every draw comes from the cell's own generators in the
solo order; tests/test_lockstep.py). So a lockstep grid
stopped or killed at any moment and run again resumes every cell to the curve it would have had,
however the resumed cells group. What is not: the stacked and the solo fit (`train_classifier`,
the process executor, `alab resume` of one cell) compute the last layer's weight gradient in
another summation order (last-digit differences from the first step, then other fits and picks);
`benchmarks/grid_speed.py` measures how far the grid's summary moves.

What stacks: MC dropout classifiers without convolutions or early stopping (`stackable`). Every
other cell (other backends, CNNs, regression, early stopping) runs one a process, exactly as the
local executor runs it (`split`). Groups are dealt out over `workers` processes, each with its share
of the cores for scoring and evaluation; the stacks train on one thread. Measured on 2 CPU cores
(benchmarks/grid_speed.py): digits-quick 1.46x faster than a process a cell.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

LOCKSTEP_BACKENDS = ("mc_dropout",)


_stackable_groups: dict[str, bool] = {}  # group key -> whether its fits stack (this process: the driver)


def _key(config: Any) -> str:
    return repr(dataclasses.replace(config, strategy="", seed=0, schedule=()))


def note_backend(config: Any, backend: Any) -> None:
    """Record whether `config`'s group can stack, from its backend already built (`alab.compare.validate`)."""
    from alab.backends.mc_dropout import MCDropoutBackend, stackable

    if isinstance(backend, MCDropoutBackend):
        _stackable_groups[_key(config)] = stackable(backend._build(torch.Generator()), backend.params, backend.validation)


def group_key(config: Any) -> str | None:
    """The cells that may train together share this key (their config but strategy and seed); None: they cannot stack.

    Whether a group can stack is read from its backend (`note_backend`), built here if `validate` has
    not: an MC dropout classifier without convolutions and without early stopping (`stackable`).
    """
    from alab.loop import build_parts

    if config.backend.name not in LOCKSTEP_BACKENDS:
        return None
    key = _key(config)
    if key not in _stackable_groups:
        note_backend(config, build_parts(dataclasses.replace(config, strategy="random", schedule=())).backend)
    return key if _stackable_groups[key] else None


@dataclass
class FitRequest:
    network: Any
    x: Tensor
    y: Tensor
    params: Any
    generator: torch.Generator
    done: bool = False
    error: BaseException | None = None
    cpu_share: float = 0.0  # this fit's share of the process CPU time its stack took


class FitGroup:
    """Where the cells of one lockstep process meet at each fit.

    A cell's thread calls `fit` and blocks; when every cell still running has asked (`leave` takes a
    finished one out), the last to ask trains them all (`train_requests`) and wakes the others.
    `stop` makes every waiting fit, and every later one, raise KeyboardInterrupt: the cell's loop
    records "stopped" as after a Ctrl-C.
    """

    def __init__(self, cells: int) -> None:
        self.condition = threading.Condition()
        self.live = cells
        self.pending: list[FitRequest] = []
        self.stopped = False

    def fit(self, network: Any, x: Tensor, y: Tensor, params: Any, generator: torch.Generator, *,
            validation: tuple[Tensor, Tensor] | None = None) -> None:  # fmt: skip
        """`train_classifier`'s call, trained with the group's other fits; `validation` is not read (a
        group that stops early does not stack, `group_key`)."""
        request = FitRequest(network, x, y, params, generator)
        with self.condition:
            if self.stopped:
                raise KeyboardInterrupt
            self.pending.append(request)
            self._train_when_all_asked()
            while not request.done and not self.stopped:
                self.condition.wait()
        if not request.done:
            raise KeyboardInterrupt
        if request.error is not None:
            raise request.error
        local.shares += request.cpu_share

    def leave(self) -> None:
        """A cell's thread ends (finished, waiting, stopped or failed): the others no longer wait for it."""
        with self.condition:
            self.live -= 1
            self._train_when_all_asked()

    def stop(self) -> None:
        with self.condition:
            self.stopped = True
            self.condition.notify_all()

    def _train_when_all_asked(self) -> None:
        if not self.pending or len(self.pending) < self.live:
            return
        requests, self.pending = self.pending, []
        cpu0 = time.process_time()
        try:
            train_requests(requests)
        except BaseException as err:  # noqa: BLE001 -- each cell's loop reports it as its own failure
            for request in requests:
                request.error = err
        spent = time.process_time() - cpu0
        local.stack_cpu += spent  # counted in this thread's own time: shared out instead
        for request in requests:
            request.cpu_share, request.done = spent / len(requests), True
        self.condition.notify_all()


def train_requests(requests: Sequence[FitRequest]) -> None:
    """Train every request, those on labeled sets of one size as one stack.

    A batch's cells share their whole config but strategy and seed, and `split` admits only groups
    that stack (`group_key`); their sizes differ only where cells resumed at different rounds.
    """
    from alab.backends.mc_dropout import train_stacked

    stacks: dict[tuple[int, ...], list[FitRequest]] = defaultdict(list)
    for request in requests:
        stacks[tuple(request.x.shape)].append(request)
    for stack in stacks.values():
        train_stacked(
            [r.network for r in stack], [r.x for r in stack], [r.y for r in stack], stack[0].params, [r.generator for r in stack]
        )  # fmt: skip


class _ThreadLocal(threading.local):
    stack_cpu = 0.0  # process CPU seconds of the stacked fits this thread trained (for all its group's cells)
    shares = 0.0  # this cell's shares of the stacked fits' CPU seconds
    log: Any = None  # the cell's log.txt, where its thread's lines go (`_ThreadStreams`)


local = _ThreadLocal()


def cell_cpu_seconds() -> float:
    """The CPU time of this thread's cell: its thread's own, outside the stacks it trained, plus its shares of every stack."""
    return time.thread_time() - local.stack_cpu + local.shares


class _ThreadStreams:
    """sys.stdout / sys.stderr of a lockstep process: each thread's writes go to its cell's log."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback

    def write(self, text: str) -> int:
        return (local.log or self.fallback).write(text)

    def flush(self) -> None:
        (local.log or self.fallback).flush()

    def isatty(self) -> bool:
        return False


def run_lockstep(tasks: Sequence[Any], threads: int) -> list[Any]:
    """Run (or resume) `tasks` (CellTask) in this process, a thread each, their fits trained together.

    Returns each cell's CellResult. A SIGINT (the worker's handler raises KeyboardInterrupt here)
    stops every cell at its next fit, or at once if it waits for one.
    """
    import sys

    from alab import compare
    from alab.backends import mc_dropout

    if compare._stop_requested:
        return [compare.CellResult(t.run_dir.name, "stopped", 0.0, 0.0) for t in tasks]
    torch.set_num_threads(max(1, threads))
    group = FitGroup(len(tasks))
    results: dict[int, Any] = {}

    ended = [threading.Event() for _ in tasks]

    def cell(i: int, task: Any) -> None:
        mc_dropout.TRAINER.set(group.fit)
        try:
            results[i] = compare.run_cell(task.config, task.run_dir, threads, lockstep=True)
        finally:
            group.leave()
            ended[i].set()

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ThreadStreams(sys.stdout), _ThreadStreams(sys.stderr)
    compare._cell_running = True
    try:
        for i, task in enumerate(tasks):
            threading.Thread(target=cell, args=(i, task), name=f"cell-{task.run_dir.name}").start()
        for event in ended:
            while not event.wait(0.2):  # short waits: the main thread must be free to take a SIGINT
                pass
    except KeyboardInterrupt:
        # Waited for on events, not Thread.join: a join that a KeyboardInterrupt interrupts can leave its
        # thread marked as ended (Python 3.11), and the cells would be abandoned mid-round.
        group.stop()
        for event in ended:
            event.wait()
    finally:
        compare._cell_running = False
        sys.stdout, sys.stderr = saved
    return [results.get(i) or compare.CellResult(t.run_dir.name, "stopped", 0.0, 0.0) for i, t in enumerate(tasks)]


def split(tasks: Sequence[Any], workers: int) -> list[list[Any]]:
    """The lockstep batches of a grid: cells grouped by `group_key`, each group dealt out over `workers`
    processes (`run_lockstep`); a cell that cannot stack is a batch of its own, run as the process
    executor runs it (`alab.compare.run_cell`)."""
    groups: dict[str, list[Any]] = defaultdict(list)
    batches: list[list[Any]] = []
    for task in tasks:
        key = group_key(task.config)
        if key is None:
            batches.append([task])
        else:
            groups[key].append(task)
    for members in groups.values():
        parts = min(workers, len(members))
        batches += [LockstepBatch(members[i::parts]) for i in range(parts)]
    return sorted(batches, key=len, reverse=True)


class LockstepBatch(list):
    """Cells that train together in one process (`run_lockstep`); a plain list is one cell run alone."""
