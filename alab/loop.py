"""The active learning controller: initial set, rounds, retrain, score, select, ask, evaluate, record.

A run is a deterministic function of its configuration and the labels in its journal. Each step
draws its randomness from a generator derived from (seed, round, purpose), so a run resumed after a
crash, from its last checkpoint and its journal, reproduces the curve of an uninterrupted run.

Round r: fit on the labels of rounds <= r (checkpoint) -> score the pool and the test set, select
the next query (checkpoint) -> curve row r -> ask the oracle; each label is journaled on arrival
with round r + 1, and acknowledged to the oracle only then. Round R (the last) evaluates and stops.

The model is fit on the journal's labels (a person's answers), never on the data set's own. A
person may withdraw a label while its round is open (an undo row in the journal). An oracle whose
labels come from outside (files) pauses the run: status "waiting", resumed by `alab resume`.
Without a test set (a user's own images), the curve's metrics are NaN: nothing honest to report.

A backend that reports on its own fit (an optional `diagnostics()`: HMC's acceptance, R-hat and ESS)
has the report written after each fit, before the checkpoint, to <run>/<backend name>.json.

What differs between classification and regression (labels, targets, scoring, metrics, the curve's
columns) lives in the run's `Task` (`alab.tasks`), chosen by the data set.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import json
import math
import platform
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

import alab
from alab.acquisition.auto import AUTO, run_schedule
from alab.acquisition.base import Strategy, TargetStrategy
from alab.acquisition.strategies import STRATEGIES
from alab.backends import BACKENDS, Backend
from alab.backends.base import Embeds
from alab.config import AUTOCAST_DTYPES, BackendConfig, RunConfig, ScheduleStep, config_from_dict, load_toml
from alab.data import Dataset, load_dataset
from alab.diagnosis import PICK_COLUMNS, pick_columns
from alab.errors import AlabError
from alab.metrics.stopping import parse_stop
from alab.oracles import NONE_OF_THESE, ORACLES, UNDO, Label, LabelingPaused, Oracle, OracleContext, Query, check_oracle
from alab.report import write_run_report
from alab.selecting import check_backend_support, round_scorer, select_batch, streamed_top_k, target_inputs
from alab.storage import DirectoryLock, LabelsJournal, atomic_torch_save, atomic_write_text
from alab.tasks import Task, TrustSets, check_task_support, draw_trust_sets, task_for

# run.json's status: running (a process writes it), waiting (for labels from outside: `alab label import`),
# stopped (Ctrl-C), failed (an error; the message is in run.json), finished
STATUSES = ("running", "waiting", "stopped", "failed", "finished")
# curve.csv: the task's columns (alab.tasks), then every run's: the strategy that chose the round's
# query (a schedule's, or the run's), the seconds its selection took beyond scoring the pool, and
# what it picked beside a random batch (alab.diagnosis) (empty in the last round, which selects nothing)
SELECTION_COLUMNS = ("selected_by", "select_seconds", *PICK_COLUMNS)

Echo = Callable[[str], None]


def round_generator(seed: int, round_: int, purpose: str) -> torch.Generator:
    """A CPU generator for one step of one round, independent of every other step's."""
    state = np.random.SeedSequence([seed, round_, zlib.crc32(purpose.encode())]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AlabError(f"device {name!r} asked for, but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


@dataclass
class Parts:
    """Everything a run needs, built and validated before anything is written to disk."""

    config: RunConfig
    dataset: Dataset
    device: torch.device
    backend: Backend
    task: Task
    schedule: tuple[ScheduleStep, ...]  # the run's steps: its [[schedule]] tables, or auto's (`alab.acquisition.auto`)
    final: str  # the strategy after the steps: the run's, or auto's rule
    targets: Tensor | None = None  # EPIG's target inputs when the run names them (None: drawn from the pool)
    trust: TrustSets | None = None  # classification: the test subset, stop set and OOD subset predicted each round

    def strategy_at(self, n_labeled: int) -> tuple[str, Strategy]:
        """(name, strategy) that selects in a round with `n_labeled` labels: the first schedule step it is below, else the final one."""
        name = next((step.strategy for step in self.schedule if n_labeled < step.until), self.final)
        return name, STRATEGIES.get(name)


def build_parts(config: RunConfig) -> Parts:
    """Check every name and number against the data; raise AlabError before any file is written."""
    if config.strategy != AUTO:
        STRATEGIES.get(config.strategy)  # a wrong name is refused before the data set is read
    ORACLES.get(config.oracle.name)
    factory = BACKENDS.get(config.backend.name)
    device = resolve_device(config.device)
    dataset = load_dataset(
        config.dataset, data_dir=config.data_dir, seed=config.seed, validation=config.validation, classes=config.classes,
        target=config.target, pool_size=config.pool_size, input_scaling=config.input_scaling, target_classes=config.target_classes,
        ood=config.ood, ood_classes=config.ood_classes, text=config.text, features=config.features,
    )  # fmt: skip
    task = task_for(dataset)
    schedule, final = run_schedule(config.strategy, config.schedule, len(dataset.classes))
    names = [final, *(step.strategy for step in schedule)]  # the run's (or auto's), then its schedule's
    strategies = {name: STRATEGIES.get(name) for name in names}
    check_oracle(config.oracle.name, OracleContext(dataset, None, dataset.classes, config.oracle.params, config.rounds))
    for name in names:
        check_task_support(task, name, config.backend.name, factory, config.oracle.name)
    n_pool = len(dataset.y_pool)
    if config.initial > n_pool:
        raise AlabError(f"initial set of {config.initial} is larger than the pool ({n_pool} items); lower --initial")
    if config.final_labels > n_pool:
        raise AlabError(
            f"{config.rounds} rounds of {config.query_size} after {config.initial} initial labels need "
            f"{config.final_labels} items, but the pool has {n_pool}; lower --rounds or --query-size"
        )
    kwargs = task.backend_kwargs()
    if dataset.x_val is not None and "validation" in inspect.signature(factory).parameters:  # for early stopping
        kwargs["validation"] = (dataset.x_val, task.targets(dataset.y_val.tolist()))
    backend = factory(config.backend.params, input_shape=dataset.input_shape, device=device, **kwargs)
    if config.evaluation == "deterministic" and not hasattr(backend, "mean_network"):
        raise AlabError(f"evaluation = deterministic needs one mean network, which backend {config.backend.name!r} does not have; use evaluation = mc")
    for name, strategy in strategies.items():
        check_backend_support(backend, config.backend.name, name, strategy)
    uses_targets = any(isinstance(strategy, TargetStrategy) for strategy in strategies.values())
    targets = target_inputs(config, dataset) if uses_targets else None
    params = getattr(backend, "params", None)
    if dataclasses.is_dataclass(params):  # write the backend's defaults into config.toml too
        config = dataclasses.replace(config, backend=BackendConfig(config.backend.name, dataclasses.asdict(params)))
    trust = None
    if task.name == "classification":
        trust = draw_trust_sets(dataset, config.trust_items, config.stop_items, round_generator(config.seed, 0, "stop set"))
    return Parts(config, dataset, device, backend, task, schedule, final, targets, trust)


def default_run_dir(config: RunConfig, root: Path = Path("results")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{stamp}-{config.strategy}-{config.dataset.replace(':', '_').replace('/', '_')}-s{config.seed}"


def start_run(config: RunConfig, out: Path | None = None, *, echo: Echo = print) -> Path:
    """Validate, create the run directory, and run to the end, holding the directory's single-writer lock."""
    parts = build_parts(config)
    run_dir = Path(out) if out is not None else default_run_dir(config)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    with DirectoryLock(run_dir):
        if (run_dir / "run.json").exists():
            raise AlabError(f"{run_dir} already holds a run; continue it with `alab resume {run_dir}` or choose another --out")
        atomic_write_text(run_dir / "config.toml", parts.config.to_toml())
        _write_status(run_dir, parts, "running", started=_now())
        try:
            return _execute(parts, run_dir, echo)
        except AlabError:
            # Refused before its first label (the labeling page's port is taken, ...): nothing worth
            # resuming, so leave no directory behind. A run with labels is kept for `alab resume`.
            journal = run_dir / "labels.csv"
            if created and (not journal.exists() or not LabelsJournal(journal).entries):
                shutil.rmtree(run_dir)
            raise


def load_run_config(run_dir: Path) -> RunConfig:
    if not (run_dir / "config.toml").exists():
        raise AlabError(f"{run_dir} is not a run directory (no config.toml); start one with `alab run`")
    return config_from_dict(load_toml(run_dir / "config.toml"))


def resume_run(run_dir: Path, *, echo: Echo = print) -> Path:
    """Continue a stopped run from its last finished step; a finished run is left as it is."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    with DirectoryLock(run_dir):
        status = _read_status(run_dir)
        if status.get("status") == "finished":
            echo(f"{run_dir} is already finished; nothing to resume")
            return run_dir
        parts = build_parts(config)
        if status.get("dataset_checksum") not in (None, parts.dataset.checksum):
            raise AlabError(f"the data set {config.dataset} has changed since this run started (checksum differs)")
        _write_status(run_dir, parts, "running", started=status.get("started", _now()))
        return _execute(parts, run_dir, echo)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_status(run_dir: Path) -> dict[str, Any]:
    """`run.json` as a dict; {} before it is first written; AlabError if it is not a JSON object.

    Written atomically, so only an edit or a copy can damage it, and a damaged one must not pass
    silently: resume would skip the check that the data set is unchanged.
    """
    path = run_dir / "run.json"
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AlabError(f"{path} is damaged (not valid JSON: {err}); restore it, or delete it to resume without the data-set check") from None
    if not isinstance(status, dict):
        raise AlabError(f"{path} is damaged (a JSON {type(status).__name__}, not an object); restore it, or delete it to resume without the data-set check")
    return status


def _write_status(run_dir: Path, parts: Parts, status: str, **extra: Any) -> None:
    assert status in STATUSES, status
    info = {**_read_status(run_dir), **extra}
    if status != "waiting":
        info.pop("waiting_for", None)
    info.update(
        status=status,
        updated=_now(),
        alab_version=alab.__version__,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        device=str(parts.device),
        seed=parts.config.seed,
        strategy=parts.config.strategy,
        backend=parts.config.backend.name,
        dataset=parts.config.dataset,
        dataset_checksum=parts.dataset.checksum,
    )
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2) + "\n")


def read_curve(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_curve(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def run_status(run_dir: Path) -> dict[str, Any]:
    """The run's `run.json` (status, and `waiting_for` when it waits for labels), {} if none."""
    return _read_status(Path(run_dir))


def _ask(
    oracle: Oracle, journal: LabelsJournal, queries: Sequence[Query], round_: int, task: Task, echo: Echo
) -> None:
    """Request the queries not yet labeled; journal each label (or undo) as it arrives, then acknowledge it.

    Returns when every query has a standing label: the round is closed, its labels final.
    """
    asked = {q.index for q in queries}
    pending = asked - journal.labeled.keys()
    if not pending:
        return
    if len(pending) < len(asked):
        echo(f"round {round_}: {len(pending)} of {len(asked)} items still to label: {sorted(pending)}")
    oracle.request([q for q in queries if q.index in pending])
    while pending:
        labels: list[Label] = oracle.collect(timeout=None)
        for label in labels:
            if label.index not in asked:
                raise AlabError(f"oracle answered pool item {label.index}, which was not asked for")
            error = task.label_error(label.label) if label.source != UNDO else None
            if error is not None:
                raise AlabError(f"oracle gave label {label.label} for item {label.index}; {error}")
        journal.append(labels, round_)  # refuses a second label, or an undo outside this round
        oracle.acknowledge(labels)
        pending = asked - journal.labeled.keys()


def _execute(parts: Parts, run_dir: Path, echo: Echo) -> Path:
    try:
        stopped_by = _rounds(parts, run_dir, echo)
    except LabelingPaused as pause:
        _write_status(run_dir, parts, "waiting", waiting_for=str(pause))
        echo(str(pause))
        return run_dir
    except KeyboardInterrupt:
        _write_status(run_dir, parts, "stopped")
        raise
    except BaseException as err:
        _write_status(run_dir, parts, "failed", error=f"{type(err).__name__}: {err}")
        raise
    write_run_report(run_dir, stopped_by=stopped_by)  # before "finished": a crash in it is resumed, its files rewritten
    _write_status(run_dir, parts, "finished", finished=_now(), **({"stopped_by": stopped_by} if stopped_by else {}))
    return run_dir


def _rounds(parts: Parts, run_dir: Path, echo: Echo) -> str | None:
    """Every round from the last checkpoint on; the reason when a stopping rule ended the run early (`config.stop`)."""
    config, dataset, backend, task = parts.config, parts.dataset, parts.backend, parts.task
    journal = LabelsJournal(run_dir / "labels.csv")
    curve = read_curve(run_dir / "curve.csv")
    checkpoint_path = run_dir / "checkpoint.pt"
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path.exists() else {}
    if checkpoint:
        backend.load_state_dict(checkpoint["backend"])

    context = OracleContext(dataset, run_dir, dataset.classes, config.oracle.params, config.rounds, echo)
    oracle = ORACLES.get(config.oracle.name)(context)
    try:
        _ask(oracle, journal, initial_queries(parts), 0, task, echo)

        for r in tqdm(range(config.rounds + 1), desc="rounds", disable=None, initial=0):
            if r < checkpoint.get("round", -1) and len(curve) > r:
                continue  # finished before a stop: its labels are journaled, its model superseded by the checkpoint's
            entries = sorted((e for e in journal.labeled.values() if e.round <= r), key=lambda e: e.index)
            labeled = torch.tensor([e.index for e in entries], dtype=torch.long)  # never asked again
            trained = [e for e in entries if e.label != NONE_OF_THESE]  # "none of these" answers stay out of training
            trained_T = torch.tensor([e.index for e in trained], dtype=torch.long)
            if checkpoint.get("round") != r:
                y_labeled = task.targets([e.label for e in trained])
                t0 = time.perf_counter()
                backend.fit(dataset.x_pool[trained_T], y_labeled, generator=round_generator(config.seed, r, "fit"))
                train_seconds = time.perf_counter() - t0
                state = backend.state_dict()
                _refuse_divergence(state, r, run_dir)  # before the checkpoint: the last good one stays
                if hasattr(backend, "diagnostics"):
                    _replace_rounds(run_dir / f"{config.backend.name}.json", r, backend.diagnostics())
                checkpoint = {"round": r, "backend": state, "train_seconds": train_seconds, "queries": None}
                atomic_torch_save(checkpoint_path, checkpoint)

            done = len(curve) > r and (r == config.rounds or checkpoint["queries"] is not None)
            if not done:
                row, queries = _score_and_select(parts, r, labeled, trained_T, checkpoint["train_seconds"], run_dir)
                if queries is not None:
                    checkpoint = {**checkpoint, "queries": queries}
                    atomic_torch_save(checkpoint_path, checkpoint)
                curve = [*curve[:r], row]
                _write_curve(run_dir / "curve.csv", curve, (*task.curve_columns, *SELECTION_COLUMNS))
                echo(_summary(config, task, curve[r]))
            if r == config.rounds:
                break
            reason = _stop_reason(config, curve)
            if reason is not None:
                echo(reason)
                return reason
            _ask(oracle, journal, round_queries(parts, checkpoint), r + 1, task, echo)
    finally:
        oracle.close()
    return None


def _stop_reason(config: RunConfig, curve: Sequence[dict[str, Any]]) -> str | None:
    """Why the run stops after the last curve row, if its stopping rule (`config.stop`) is met; else None.

    Read from the curve alone, so a resumed run stops where the uninterrupted one did.
    """
    if config.stop is None:
        return None
    rule, threshold = parse_stop(config.stop)
    values = [float(row.get(rule.column) or "nan") for row in curve]
    if not rule.met(values, threshold):
        return None
    return (
        f"stopped by {rule.name} (threshold {threshold:g}) after round {len(curve) - 1} with "
        f"{int(curve[-1]['n_labeled'])} labels: {rule.summary}"
    )


def _replace_rounds(path: Path, round_: int, entry: dict[str, Any]) -> None:
    """Append round r's entry to a JSON list of rounds (<run>/<backend>.json, trust.json), replacing rounds from r on.

    So a round redone after a crash (the same seed, the same fit) is written once.
    """
    rounds = [e for e in json.loads(path.read_text(encoding="utf-8")) if e["round"] < round_] if path.exists() else []
    atomic_write_text(path, json.dumps([*rounds, {"round": round_, **entry}], indent=2) + "\n")


def non_finite_tensors(state: Any, prefix: str = "") -> list[str]:
    """Names of the floating tensors in a (nested) state dict that hold NaN or an infinity."""
    if isinstance(state, torch.Tensor):
        return [prefix] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, dict):
        return [name for key, value in state.items() for name in non_finite_tensors(value, f"{prefix}.{key}".lstrip("."))]
    if isinstance(state, (list, tuple)):
        return [name for i, value in enumerate(state) for name in non_finite_tensors(value, f"{prefix}.{i}".lstrip("."))]
    return []


def _refuse_divergence(state: dict[str, Any], round_: int, run_dir: Path) -> None:
    """AlabError if training diverged: a non-finite loss leaves NaN or inf in the weights (Adam spreads it).

    Checked once per fit on the fitted state, so it holds for every backend at no per-step cost.
    """
    bad = non_finite_tensors(state)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise AlabError(
            f"training diverged in round {round_} (NaN or inf in {bad[0]}{more}); the run stopped before saving this fit: "
            f"lower backend.lr in {run_dir / 'config.toml'}, then `alab resume {run_dir}`"
        )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """`checkpoint.pt` (or stop_predictions.pt) with every tensor on the CPU: a run checkpointed on a GPU resumes on a machine without one.

    Backends move the weights to the run's device in `load_state_dict`.
    """
    return torch.load(path, weights_only=True, map_location="cpu")


def initial_queries(parts: Parts) -> list[Query]:
    """The initial set (round 0), drawn by the seed: balanced by the data set's labels where it has them."""
    dataset, seed = parts.dataset, parts.config.seed
    initial = parts.task.initial(parts.config.initial, round_generator(seed, 0, "initial"))
    return [pool_query(dataset, int(i), {}, 0) for i in initial]


def round_queries(parts: Parts, checkpoint: dict[str, Any]) -> list[Query]:
    """The queries selected after the checkpoint's round r: their labels make round r + 1."""
    r = checkpoint["round"]
    return [pool_query(parts.dataset, q["index"], q["view"], r + 1) for q in checkpoint["queries"]]


def pool_query(dataset: Dataset, index: int, view: dict[str, Any], round_: int) -> Query:
    """The query of pool item `index`: what a person sees of it (its text, else its shown input), the model's view."""
    if dataset.text_pool is not None:
        return Query(index, None, view, round=round_, text=dataset.text_pool[index])
    shown = dataset.x_shown_pool if dataset.x_shown_pool is not None else dataset.x_pool
    return Query(index, shown[index], view, round=round_)


def open_round(run_dir: Path) -> tuple[Parts, int, list[Query]]:
    """(parts, round, queries) of the round a stopped run waits on; AlabError if it waits on none.

    For `alab label import`: the labels it accepts are exactly the open round's pending queries.
    """
    config = load_run_config(run_dir)
    if _read_status(run_dir).get("status") == "finished":
        raise AlabError(f"{run_dir} is finished; it takes no more labels")
    parts = build_parts(config)
    checkpoint_path = run_dir / "checkpoint.pt"
    if not checkpoint_path.exists():
        return parts, 0, initial_queries(parts)
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.get("queries") is None:
        raise AlabError(f"{run_dir} has chosen no queries yet; continue it with `alab resume {run_dir}`")
    return parts, checkpoint["round"] + 1, round_queries(parts, checkpoint)


def _score_and_select(
    parts: Parts, r: int, labeled: torch.Tensor, trained: torch.Tensor, train_seconds: float, run_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """Score the pool, evaluate on the test set, and (before the last round) choose the next query.

    The query is plain data (pool index and the model's view: class probabilities or predicted mean
    and uncertainties, acquisition score) so that the checkpoint loads with `weights_only=True`.
    The round's strategy is the schedule's for its number of labels, else the run's (`Parts.strategy_at`).
    """
    config, dataset, backend, task = parts.config, parts.dataset, parts.backend, parts.task
    selecting = r < config.rounds
    name, strategy = parts.strategy_at(len(labeled))
    unlabeled_mask = torch.ones(len(dataset.y_pool), dtype=torch.bool)
    unlabeled_mask[labeled] = False
    candidates_N = unlabeled_mask.nonzero().squeeze(1)
    if 0 < config.pool_subsample < len(candidates_N):
        pick = torch.randperm(len(candidates_N), generator=round_generator(config.seed, r, "subsample"))
        candidates_N = candidates_N[pick[: config.pool_subsample].sort().values]

    networks = backend.sample_networks(config.samples, generator=round_generator(config.seed, r, "score"))
    start = time.perf_counter()
    targets = _targets(parts, r) if selecting and isinstance(strategy, TargetStrategy) else None
    acquisition = round_scorer(strategy, task, networks, targets, config.chunk_size) if selecting else None
    target_seconds = time.perf_counter() - start
    autocast = AUTOCAST_DTYPES[config.autocast]
    # Streamed selection: keep only the running top-k the strategy needs (its batch, or its candidates).
    pool = task.score(
        networks, dataset.x_pool, candidates_N, acquisition, config.chunk_size,
        top_k=streamed_top_k(strategy, config.query_size) if selecting else None, device=parts.device,
        autocast=None if autocast is None else getattr(torch, autocast),
    )  # fmt: skip
    if config.evaluation == "deterministic":
        eval_networks = backend.mean_network()  # type: ignore[attr-defined]
    else:
        eval_networks = backend.sample_networks(config.samples, generator=round_generator(config.seed, r, "eval"))
    metrics, evaluation = task.evaluate(eval_networks, config.chunk_size)
    row = {
        "round": r,
        "n_labeled": len(labeled),
        **metrics,
        "train_seconds": round(train_seconds, 3),
        "score_seconds": round(pool.seconds, 3),
        **pool.summary,
        **_trust(parts, r, networks, dataset.x_pool[trained], evaluation, run_dir, n_none=len(labeled) - len(trained)),
    }
    if not selecting:
        return row, None
    start = time.perf_counter()
    selection = select_batch(
        strategy, pool, config.query_size, networks=networks, backend=backend, dataset=dataset, candidates_N=candidates_N,
        labeled_L=labeled, chunk_size=config.chunk_size, generator=round_generator(config.seed, r, "select"),
    )  # fmt: skip
    row.update(selected_by=name, select_seconds=round(target_seconds + time.perf_counter() - start, 3))
    chosen_B = candidates_N[selection.indices]
    random_B = candidates_N[torch.randperm(len(candidates_N), generator=round_generator(config.seed, r, "diagnosis"))[: len(chosen_B)]]
    embed = backend.embed if isinstance(backend, Embeds) else (lambda x: x.flatten(1))
    uncertainty = lambda x: task.uncertainty(networks, x, config.chunk_size)  # noqa: E731
    row.update(pick_columns(uncertainty, embed, dataset.x_pool[chosen_B], dataset.x_pool[random_B]))
    views = task.views(networks, dataset.x_pool[chosen_B], config.chunk_size, float(row.get("outside_bar", math.inf)))
    queries = [
        {"index": int(i), "view": {**views[b], "score": float(selection.scores[b])}} for b, i in enumerate(chosen_B)
    ]
    return row, queries


def _trust(
    parts: Parts, r: int, networks: Any, x_labeled: Tensor, evaluation: dict[str, Any], run_dir: Path, *, n_none: int
) -> dict[str, float]:
    """Round r's trust columns (`Classification.trust`) and the count of "none of these" answers;
    its retention curves and reliability bins go to trust.json.

    The stop set's predicted classes of every round are kept in stop_predictions.pt: round r's kappa
    compares them with round r - 1's, also after a resume.
    """
    if parts.trust is None:
        return {}
    path = run_dir / "stop_predictions.pt"
    saved = {k: v for k, v in load_checkpoint(path).items() if k < r} if path.exists() else {}
    columns, retention, predictions_S = parts.task.trust(  # type: ignore[attr-defined]
        networks, parts.trust, saved.get(r - 1), x_labeled, parts.config.chunk_size
    )
    atomic_torch_save(path, {**saved, r: predictions_S.to(torch.int16)})
    _replace_rounds(run_dir / "trust.json", r, {**retention, **evaluation})
    return {**columns, "n_none": n_none}


def _targets(parts: Parts, r: int) -> torch.Tensor:
    """Round r's EPIG target inputs: `epig_targets` of the run's target set, or of the pool, drawn by the seed."""
    x = parts.targets if parts.targets is not None else parts.dataset.x_pool
    pick_M = torch.randperm(len(x), generator=round_generator(parts.config.seed, r, "targets"))[: parts.config.epig_targets]
    return x[pick_M.sort().values]


def _summary(config: RunConfig, task: Task, row: dict[str, Any]) -> str:
    return (
        f"round {int(row['round']):>3}/{config.rounds}  labels {int(row['n_labeled']):>5}  {task.describe(row)}  "
        f"train {float(row['train_seconds']):.1f}s  score {float(row['score_seconds']):.1f}s"
    )


def echo_to_stderr(line: str) -> None:
    tqdm.write(line, file=sys.stderr)
