"""A comparison: a grid of runs (strategies x seeds x backends x data sets), each an ordinary run directory.

A recipe is a run recipe (top-level run keys and a `[backend]` table, shared by every cell) plus a
`[compare]` table naming the grid:

    dataset = "digits"
    rounds = 20
    [backend]
    min_steps = 300
    [compare]
    strategies = ["bald", "random"]
    seeds = 3                    # or a list: [0, 1, 2]
    backends = ["mc_dropout"]    # optional; default: the [backend] table's
    datasets = ["digits"]        # optional; default: the run's `dataset`
    targets = [0.85, 0.90]       # accuracies for "labels needed to reach" (not used for regression)
    workers = 2                  # cells run at once
    [compare.paper]              # optional reference numbers, printed beside ours (alab.reproduction)
    source = "Gal et al. 2017, Table 1"
    unit = "acquired"            # total | acquired | total_minus_batch
    statistic = "mean_curve"     # mean_curve | median
    labels_to_reach = { "0.90" = { bald = { value = 145, low = 110, high = 150 } } }

Cells live in `<out>/cells/<name>/`. A comparison that stops is resumed by running it again: a
finished cell is kept, a stopped one continues through `resume_run`, a cell never started starts.
Cells run on an `Executor`: local worker processes by default, or Ray tasks on a cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import tomli_w
from tqdm.auto import tqdm

from alab.config import BackendConfig, RunConfig, config_from_dict, from_mapping, load_toml
from alab.errors import AlabError
from alab.reproduction import parse_paper

Echo = Callable[[str], None]


@dataclass(frozen=True)
class CompareTable:
    """The `[compare]` table of a recipe: the grid, the targets, and reference numbers from a paper."""

    strategies: list[str] = field(default_factory=lambda: ["bald", "random"])
    seeds: int | list[int] = 3
    backends: list[str] | None = None
    datasets: list[str] | None = None
    targets: list[float] = field(default_factory=lambda: [0.9])
    workers: int = 2
    paper: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.strategies or len(set(self.strategies)) != len(self.strategies):
            raise AlabError(f"compare.strategies must name one or more distinct strategies, got {self.strategies!r}")
        if isinstance(self.seeds, int) and self.seeds < 1:
            raise AlabError(f"compare.seeds must be at least 1 (or a list of seeds), got {self.seeds}")
        if isinstance(self.seeds, list) and (not self.seeds or not all(isinstance(s, int) and s >= 0 for s in self.seeds)):
            raise AlabError(f"compare.seeds must be a count or a list of non-negative integers, got {self.seeds!r}")
        if self.workers < 1:
            raise AlabError(f"compare.workers must be at least 1, got {self.workers}")
        if not all(isinstance(t, (int, float)) and 0 < t <= 1 for t in self.targets):
            raise AlabError(f"compare.targets are accuracies in (0, 1], got {self.targets!r}")
        for key in ("backends", "datasets"):
            names = getattr(self, key)
            if names is not None and (not names or not all(isinstance(n, str) for n in names)):
                raise AlabError(f"compare.{key} must be a non-empty list of names, got {names!r}")
        if self.paper is not None:
            parse_paper(self.paper)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    name: str  # its directory under <out>/cells/
    config: RunConfig


@dataclass(frozen=True)
class Comparison:
    """A resolved comparison: the shared run settings, the grid, and where it lives."""

    base: RunConfig
    table: CompareTable
    out: Path

    def cells(self) -> list[Cell]:
        """The grid, data set-major, then backend, strategy, seed; names carry only the varied axes."""
        datasets = self.table.datasets or [self.base.dataset]
        backends = self.table.backends or [self.base.backend.name]
        cells = []
        for dataset in datasets:
            for backend in backends:
                for strategy in self.table.strategies:
                    for seed in self.table.seed_list:
                        parts = [_slug(dataset)] if self.table.datasets else []
                        parts += [backend] if self.table.backends else []
                        config = dataclasses.replace(
                            self.base, strategy=strategy, seed=seed, dataset=dataset,
                            backend=BackendConfig(backend, self.base.backend.params),
                        )  # fmt: skip
                        cells.append(Cell("-".join([*parts, strategy, f"s{seed}"]), config))
        return cells

    def to_toml(self) -> str:
        """The resolved recipe, written as `<out>/compare.toml`: enough to rerun it, and read by the report."""
        table = {k: v for k, v in dataclasses.asdict(self.table).items() if v is not None}
        data = self.base.to_dict()
        data.pop("seed", None)
        data.pop("strategy", None)
        return tomli_w.dumps({**data, "compare": table})


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def apply_setting(data: dict[str, Any], setting: str) -> None:
    """`--set backend.min_steps=200`: a dotted key and a TOML value (a bare word is a string) into `data`."""
    key, sep, text = setting.partition("=")
    if not sep or not key.strip():
        raise AlabError(f"--set takes KEY=VALUE (e.g. backend.min_steps=200), got {setting!r}")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    *tables, last = key.strip().split(".")
    for name in tables:
        table = data.setdefault(name, {})
        if isinstance(table, str):  # `oracle = "simulated"` written as a name alone
            table = data[name] = {"name": table}
        if not isinstance(table, dict):
            raise AlabError(f"--set {key}: {name} is not a table")
        data = table
    data[last] = value


def load_comparison(
    recipe: str | Path | None, overrides: dict[str, Any] | None = None, out: Path | None = None, settings: Sequence[str] = ()
) -> Comparison:
    """A Comparison from a recipe (or none), then `settings` (`KEY=VALUE`), then overrides by name.

    Override keys: strategies, seeds, datasets, backends, targets, workers (the `[compare]` table),
    `backend` (a name) and any run key. None values are ignored.
    """
    data = load_toml(recipe) if recipe is not None else {}
    for setting in settings:
        apply_setting(data, setting)
    table_data = data.pop("compare", {})
    if not isinstance(table_data, dict):
        raise AlabError("compare must be a table: [compare] with strategies = [...] and seeds = N")
    table_data = dict(table_data)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in CompareTable.__dataclass_fields__:
            table_data[key] = value
        elif key == "backend":  # one backend: replaces the recipe's, and its `backends` axis
            backend = data.get("backend", {})
            data["backend"] = {**backend, "name": value} if isinstance(backend, dict) else value
            table_data.pop("backends", None)
        else:
            data[key] = value
            if key == "dataset":
                table_data.pop("datasets", None)
    for key in ("strategy", "seed"):
        if key in data:
            raise AlabError(f"a comparison recipe sets strategies and seeds in [compare], not `{key}`; remove `{key} = ...`")
    base = config_from_dict(data)
    table = from_mapping(CompareTable, table_data, "compare")
    if out is None:
        stem = Path(recipe).stem if recipe is not None else "-".join(table.strategies) + f"-{_slug(base.dataset)}"
        out = Path("results") / stem
    return Comparison(base, table, Path(out))


# --- running the cells ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CellResult:
    """What a worker reports for one cell: its status and what it cost in this attempt."""

    name: str
    status: str  # finished | waiting | failed | stopped
    wall_seconds: float
    cpu_seconds: float  # this process's CPU time (all its threads) while running the cell
    error: str = ""


_stop_requested = False  # in a worker process: a SIGINT arrived; start no more cells
_cell_running = False


def _on_sigint(signum: int, frame: Any) -> None:
    """A worker's SIGINT: stop the cell it runs (KeyboardInterrupt -> status "stopped"), start no other."""
    global _stop_requested
    _stop_requested = True
    if _cell_running:
        raise KeyboardInterrupt


def _init_worker(driver_pid: int) -> None:
    """A worker stops its cell on SIGINT, and ends itself if the comparison's process is gone (even by SIGKILL).

    The workers' parent is the forkserver, which outlives a killed driver: without the watch, they
    would run their cells on, unseen, and hold the cells' locks. Ending mid-cell is a crash, which a
    run survives (its journal and files are crash-safe): the next `alab compare` resumes the cell.
    """
    signal.signal(signal.SIGINT, _on_sigint)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(driver_pid, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, name="driver-watch", daemon=True).start()


def run_cell(config: RunConfig, run_dir: Path, threads: int, *, lockstep: bool = False) -> CellResult:
    """Start or resume one cell in this process, its lines going to `<run_dir>/log.txt`.

    Torch threads are set per cell (the executor shares the machine's cores among its workers).
    Wall and CPU seconds accumulate over attempts in `<run_dir>/timing.json`. `lockstep`: one of
    several cells in this process, a thread each (`alab.lockstep.run_lockstep`): its lines go to its
    log through the thread's stream, and its CPU time is its thread's plus its share of the stacked fits.
    """
    import json

    import torch

    from alab import lockstep as lockstep_
    from alab.loop import resume_run, run_status, start_run

    global _cell_running
    if _stop_requested:
        return CellResult(run_dir.name, "stopped", 0.0, 0.0)
    if not lockstep:
        torch.set_num_threads(max(1, threads))
    cpu_clock = lockstep_.cell_cpu_seconds if lockstep else time.process_time
    run_dir.mkdir(parents=True, exist_ok=True)
    wall0, cpu0 = time.perf_counter(), cpu_clock()
    status, error = "failed", ""
    saved = sys.stdout, sys.stderr
    with open(run_dir / "log.txt", "a", buffering=1) as log:
        if lockstep:
            lockstep_.local.log = log
        else:
            sys.stdout = sys.stderr = log  # the loop's progress bars see no terminal and stay quiet
            _cell_running = True
        try:
            echo = lambda line: print(line, file=log)  # noqa: E731
            if (run_dir / "run.json").exists():
                resume_run(run_dir, echo=echo)
            else:
                start_run(config, run_dir, echo=echo)
            status = run_status(run_dir).get("status", "failed")
        except KeyboardInterrupt:
            status = "stopped"
        except Exception as err:  # noqa: BLE001 -- one cell's failure is reported, the grid goes on
            error = f"{type(err).__name__}: {err}"
            print(error, file=log)
        finally:
            if lockstep:
                lockstep_.local.log = None
            else:
                _cell_running = False
                sys.stdout, sys.stderr = saved
    wall, cpu = time.perf_counter() - wall0, cpu_clock() - cpu0
    timing_path = run_dir / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {"wall_seconds": 0.0, "cpu_seconds": 0.0}
    timing = {
        "wall_seconds": timing["wall_seconds"] + wall, "cpu_seconds": timing["cpu_seconds"] + cpu, "threads": threads,
        "executor": "lockstep" if lockstep else "process",
    }  # fmt: skip
    timing_path.write_text(json.dumps(timing, indent=2) + "\n")
    return CellResult(run_dir.name, status, wall, cpu, error)


@dataclass(frozen=True)
class CellTask:
    config: RunConfig
    run_dir: Path


class Executor(Protocol):
    """Runs cells somewhere and yields their results as they finish (in any order)."""

    def run(self, tasks: Sequence[CellTask]) -> Iterator[CellResult]: ...


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalExecutor:
    """Worker processes on this machine (spawn/forkserver: no forked torch state), cores shared out.

    `lockstep`: the cells that can train together run as lockstep batches, a batch per worker
    (`alab.lockstep`); the others one cell a worker, as without it.
    """

    def __init__(self, workers: int, *, lockstep: bool = True) -> None:
        self.workers = workers
        self.lockstep = lockstep

    def run(self, tasks: Sequence[CellTask]) -> Iterator[CellResult]:
        from alab.lockstep import LockstepBatch, run_lockstep, split

        batches = split(tasks, self.workers) if self.lockstep else [[t] for t in tasks]
        workers = min(self.workers, len(batches)) or 1
        threads = max(1, cpu_cores() // workers)
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_init_worker, initargs=(os.getpid(),))
        try:
            pending = {
                pool.submit(run_lockstep, batch, threads) if isinstance(batch, LockstepBatch) else pool.submit(run_cell, batch[0].config, batch[0].run_dir, threads)
                for batch in batches
            }  # fmt: skip
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    yield from result if isinstance(result, list) else [result]
        except (KeyboardInterrupt, GeneratorExit):
            # A Ctrl-C in a terminal reaches the workers too; a SIGINT sent to this process alone does
            # not, so pass it on: the running cells record "stopped", queued ones do not start. The
            # stop may land while the caller handles a result rather than here (GeneratorExit: the
            # caller's exception closes this generator); else `shutdown(wait=True)` below would run the
            # cells already handed to the workers to their end, holding the comparison's lock.
            processes = list((getattr(pool, "_processes", None) or {}).values())  # private, but no public handle
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGINT)
            for process in processes:
                process.join()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Each cell a Ray task on an existing cluster (`address`), or a local Ray; a GPU per cell where there are GPUs.

    Run directories must be on a file system the cluster's machines share. Workers import the same
    alab as the driver (its source folder goes first on their PYTHONPATH); on machines without that
    folder, install alab there.
    """

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address = address
        self.workers = workers

    def run(self, tasks: Sequence[CellTask]) -> Iterator[CellResult]:
        try:
            import ray
        except ImportError:
            raise AlabError("the ray executor needs Ray: pip install ray (or pip install -e '.[ray]' in the alab clone)") from None
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise AlabError(f"cannot reach a Ray cluster at {self.address or 'a new local Ray'}: {err}") from None
        resources = ray.cluster_resources()
        gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        cpus = max(1, int(resources.get("CPU", 1)) // max(1, min(self.workers or len(tasks), len(tasks))))
        source = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        remote = ray.remote(run_cell).options(
            num_cpus=cpus, num_gpus=gpus, max_retries=0, runtime_env={"env_vars": {"PYTHONPATH": path}}
        )
        pending = [remote.remote(t.config, t.run_dir.resolve(), cpus) for t in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])


# --- the comparison -------------------------------------------------------------------------------


def _cell_state(cell: Cell, run_dir: Path) -> str:
    """'new', 'finished' or 'resume'; AlabError if the cell's directory holds a different run."""
    from alab.loop import load_run_config, run_status

    if not (run_dir / "run.json").exists():
        return "new"
    stored = load_run_config(run_dir)
    wanted = cell.config
    # The stored backend params include the backend's defaults; ours are the recipe's (a subset).
    same_backend = stored.backend.name == wanted.backend.name and all(
        stored.backend.params.get(k) == v for k, v in wanted.backend.params.items()
    )
    # Where the data files are, and on which device, do not change what the cell computes.
    comparable = dataclasses.replace(stored, backend=wanted.backend, data_dir=wanted.data_dir, device=wanted.device)
    if not same_backend or comparable != wanted:
        raise AlabError(
            f"{run_dir} was started with other settings than this comparison's; "
            f"choose another --out (or delete that directory to rerun the cell)"
        )
    return "finished" if run_status(run_dir).get("status") == "finished" else "resume"


def validate(comparison: Comparison) -> None:
    """Check every name and number before anything is written: each data set and backend once.

    Every strategy must suit every data set's task (`alab.tasks.check_task_support`), and the data
    sets share one task: a report ranks by one metric (`alab.report.Headline`), accuracy or RMSE.
    """
    from alab.backends import BACKENDS
    from alab.lockstep import note_backend
    from alab.loop import build_parts
    from alab.acquisition.auto import AUTO, strategy_names
    from alab.acquisition.strategies import STRATEGIES
    from alab.tasks import check_task_support

    for strategy in comparison.table.strategies:
        if strategy != AUTO:
            STRATEGIES.get(strategy)  # a wrong name is refused before any data set is read
    checked: set[tuple[str, str]] = set()
    tasks: dict[str, str] = {}  # data set -> its task
    for cell in comparison.cells():
        key = (cell.config.dataset, cell.config.backend.name)
        if key not in checked:
            parts = build_parts(cell.config)
            note_backend(cell.config, parts.backend)  # whether the lockstep executor can stack its cells
            task = parts.task
            for name in (name for strategy in comparison.table.strategies for name in strategy_names(strategy, task.name)):
                check_task_support(task, name, cell.config.backend.name, BACKENDS.get(cell.config.backend.name), cell.config.oracle.name)
            tasks[cell.config.dataset] = task.name
            checked.add(key)
    if len(set(tasks.values())) > 1:
        kinds = ", ".join(f"{dataset} ({task})" for dataset, task in tasks.items())
        raise AlabError(f"compare.datasets mixes classification and regression: {kinds}; compare each kind in its own comparison")


EXECUTORS = ("lockstep", "local", "ray")


def make_executor(name: str, workers: int, address: str | None = None) -> Executor:
    """lockstep (the default): cells that can train together as one stacked model (`alab.lockstep`), the
    others a worker process a cell; local: a worker process every cell; ray: Ray tasks.

    Lockstep is the default because it is never the slower (benchmarks/grid_speed.py, 2 CPU cores:
    digits-quick 1.46x faster; a Gal CNN grid runs its cells as local does, CNNs do not stack).
    """
    if name not in EXECUTORS:
        raise AlabError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
    if name == "ray":
        return RayExecutor(address, workers)
    if address is not None:
        raise AlabError("--address is for --executor ray")
    return LocalExecutor(workers, lockstep=name == "lockstep")


def run_comparison(comparison: Comparison, executor: Executor | None = None, *, echo: Echo = print) -> list[CellResult]:
    """Run (or resume) every cell of the grid, then write the comparison's report.

    Finished cells are kept as they are; one line per cell as it finishes, a bar over the grid.
    """
    from alab.report import write_comparison_report
    from alab.storage import DirectoryLock, atomic_write_text

    validate(comparison)
    cells = comparison.cells()
    states = {cell.name: _cell_state(cell, comparison.out / "cells" / cell.name) for cell in cells}
    comparison.out.mkdir(parents=True, exist_ok=True)
    with DirectoryLock(comparison.out, "comparison directory"):  # each cell's run takes its own lock too
        atomic_write_text(comparison.out / "compare.toml", comparison.to_toml())
        todo = [CellTask(c.config, comparison.out / "cells" / c.name) for c in cells if states[c.name] != "finished"]
        kept = len(cells) - len(todo)
        if kept:
            echo(f"{kept} of {len(cells)} cells already finished; kept")
        executor = executor or LocalExecutor(comparison.table.workers)
        results = []
        with tqdm(total=len(cells), initial=kept, desc="cells", unit="cell", disable=None, file=sys.stderr) as bar:
            for result in executor.run(todo) if todo else iter(()):
                results.append(result)
                line = f"{result.name}: {result.status} ({result.wall_seconds:.0f} s wall, {result.cpu_seconds:.0f} s CPU)"
                bar.write(line + (f" {result.error}" if result.error else ""), file=sys.stderr)
                bar.update()
        write_comparison_report(comparison.out)
    failed = [r for r in results if r.status != "finished"]
    if failed:
        echo(f"{len(failed)} cells did not finish ({', '.join(r.name for r in failed)}); run the same command to resume them")
    return results
