"""The `alab` command line: parse, build a config, call, print. A user's mistake is one line, exit 2."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from alab.errors import AlabError

app = typer.Typer(
    help="alab: Bayesian active learning workbench.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Data sets: list them (no subcommand), or fetch one.", invoke_without_command=True)
app.add_typer(datasets_app, name="datasets")
label_app = typer.Typer(help="Labels given outside a run: import answers from a file.", no_args_is_help=True)
app.add_typer(label_app, name="label")

F = TypeVar("F", bound=Callable[..., Any])
_debug = False


def user_errors(command: F) -> F:
    """Print an AlabError as one line on stderr and exit 2 (a traceback only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AlabError as err:
            if _debug:
                raise
            typer.echo(f"alab: error: {err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("alab: stopped; continue with `alab resume DIR`", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@app.callback()
def main_options(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    global _debug
    _debug = debug
    # `kill PID` stops a run or a comparison as Ctrl-C does: status "stopped", a comparison's cells stopped too.
    signal.signal(signal.SIGTERM, _interrupt)


@app.command()
@user_errors
def run(
    strategy: Annotated[str | None, typer.Option(help="Acquisition strategy (see `alab strategies`; default auto, the recommended one).")] = None,
    backend: Annotated[str | None, typer.Option(help="Bayesian backend (see `alab backends`).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set (see `alab datasets`).")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Folder holding the data set's files.")] = None,
    initial: Annotated[int | None, typer.Option(help="Initial labeled set size (balanced across classes).")] = None,
    query_size: Annotated[int | None, typer.Option(help="Labels acquired per round.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Acquisition rounds.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed: same seed and config, same curve (on CPU).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    oracle: Annotated[str | None, typer.Option(help="Who labels: simulated, web, terminal, files or labelstudio (see `alab oracles`).")] = None,
    classes: Annotated[str | None, typer.Option(help="Class names a,b,c for a data set without its own (folder:PATH).")] = None,
    target: Annotated[str | None, typer.Option(help="Column to predict of a table (csv:PATH): regression on numbers, classification on class names (also with --text).")] = None,
    text: Annotated[str | None, typer.Option(help="Column of texts of a table (csv:PATH): a text classification run on TF-IDF features.")] = None,
    features: Annotated[str | None, typer.Option(help="Your own features for the model: PATH.npy or PATH.parquet, one row per item in the data set's order.")] = None,
    samples: Annotated[int | None, typer.Option(help="K posterior samples for scoring and evaluation.")] = None,
    pool_subsample: Annotated[int | None, typer.Option(help="Score a random subset of this many pool items per round (0: all).")] = None,
    stop: Annotated[str | None, typer.Option(help="End the run when a stopping rule is met: RULE[:threshold], rules kappa, overall_uncertainty, max_uncertainty, accuracy_change.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default results/<time>-<strategy>-<dataset>-s<seed>).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with the run's settings; flags override it.")] = None,
) -> None:
    """Run active learning: retrain, score the pool, ask for labels, record the learning curve."""
    from alab.config import load_config
    from alab.loop import echo_to_stderr, start_run

    overrides = dict(
        strategy=strategy, backend=backend, dataset=dataset, data_dir=data_dir, initial=initial,
        query_size=query_size, rounds=rounds, seed=seed, device=device, oracle=oracle, samples=samples,
        pool_subsample=pool_subsample, classes=None if classes is None else classes.split(","), target=target,
        text=text, features=features, stop=stop,
    )  # fmt: skip
    run_config = load_config(config, overrides)
    _report_end(start_run(run_config, out, echo=echo_to_stderr))


def _report_end(run_dir: Path) -> None:
    from alab.loop import run_status

    status = run_status(run_dir).get("status")
    typer.echo(f"waiting for labels: {run_dir}" if status == "waiting" else f"finished: {run_dir}")


@app.command()
@user_errors
def resume(run_dir: Annotated[Path, typer.Argument(help="A run directory written by `alab run`.")]) -> None:
    """Continue a stopped run from its last finished step."""
    from alab.loop import echo_to_stderr, resume_run

    if not run_dir.is_dir():
        raise AlabError(f"{run_dir} is not a directory; give the run directory that `alab run` printed")
    _report_end(resume_run(run_dir, echo=echo_to_stderr))


@label_app.command("import")
@user_errors
def label_import(
    run_dir: Annotated[Path, typer.Argument(help="A run directory waiting for labels.")],
    answers: Annotated[Path, typer.Argument(help="queries.csv with its label column filled, or a Label Studio JSON export.")],
) -> None:
    """Journal a file of answers for the run's open round (all of it, or nothing if any row is wrong)."""
    from alab.label_import import import_labels

    result = import_labels(run_dir, answers)
    left = f"{len(result.pending)} still pending" if result.pending else "none pending"
    typer.echo(f"imported {result.imported} labels for round {result.round} ({left}); continue with `alab resume {run_dir}`")


@app.command()
@user_errors
def compare(
    recipe: Annotated[Path | None, typer.Argument(help="A comparison recipe (TOML with a [compare] table), e.g. strategies/digits-quick.toml.")] = None,
    strategies: Annotated[str | None, typer.Option(help="Strategies a,b,c (overrides the recipe's).")] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds 0..N-1 per strategy.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set, or several a,b (one grid axis).")] = None,
    backend: Annotated[str | None, typer.Option(help="Backend, or several a,b (one grid axis).")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Folder holding the data set's files.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Acquisition rounds per cell.")] = None,
    pool_subsample: Annotated[int | None, typer.Option(help="Score a random subset of this many pool items per round.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    workers: Annotated[int | None, typer.Option(help="Cells run at once (torch threads are shared out among them).")] = None,
    executor: Annotated[str, typer.Option(help="lockstep (cells that can train together as one stacked model: MC dropout MLPs, the others a process each; see alab.lockstep), local (a worker process a cell) or ray (a Ray cluster).")] = "lockstep",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (--executor ray); default: a local Ray.")] = None,
    out: Annotated[Path | None, typer.Option(help="Comparison directory (default results/<recipe name>).")] = None,
    config: Annotated[Path | None, typer.Option(help="Base TOML for the flag form (run keys, [backend], [compare]).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override any recipe key: KEY=VALUE (TOML value), e.g. backend.min_steps=200; repeatable.")] = None,
) -> None:
    """Compare strategies: a grid of runs (strategies x seeds x backends x data sets), then plots and tables.

    Run it again to resume: finished cells are kept, stopped ones continue.
    """
    from alab.compare import load_comparison, make_executor, run_comparison

    if recipe is not None and config is not None:
        raise AlabError("give a recipe or --config, not both")
    split = lambda text: None if text is None else [s.strip() for s in text.split(",") if s.strip()]  # noqa: E731
    overrides: dict[str, Any] = dict(
        strategies=split(strategies), seeds=seeds, data_dir=data_dir, rounds=rounds,
        pool_subsample=pool_subsample, device=device, workers=workers,
    )  # fmt: skip
    for key, names in (("dataset", split(dataset)), ("backend", split(backend))):
        if names is not None and len(names) == 1:
            overrides[key] = names[0]
        elif names:
            overrides[key + "s"] = names
    comparison = load_comparison(recipe if recipe is not None else config, overrides, out, settings=set_ or [])
    try:
        run_comparison(comparison, make_executor(executor, comparison.table.workers, address), echo=_echo_err)
    except KeyboardInterrupt:
        typer.echo("alab: stopped; run the same `alab compare` command to resume", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"report: {comparison.out / 'report.md'}")


@app.command()
@user_errors
def report(path: Annotated[Path, typer.Argument(help="A comparison directory (alab compare) or a run directory (alab run).")]) -> None:
    """Rebuild the plots and tables of a comparison or of a single run."""
    from alab.report import write_report

    if not path.is_dir():
        raise AlabError(f"{path} is not a directory; give a run or comparison directory")
    kind = write_report(path)
    files = "report.md, summary.csv, curves.csv, learning_curves.png/.svg" if kind == "comparison" else "curve.png, summary.csv"
    typer.echo(f"{kind} report in {path}: {files}")


def _echo_err(line: str) -> None:
    typer.echo(line, err=True)


def _print_registry(registry: Any) -> None:
    width = max(len(name) for name in registry.names())
    for name in registry.names():
        typer.echo(f"{name:<{width}}  {registry.summary(name)}")


@app.command()
def strategies() -> None:
    """List the acquisition strategies, one line each."""
    from alab.acquisition import auto
    from alab.acquisition.strategies import STRATEGIES

    _print_registry(STRATEGIES)
    width = max(len(name) for name in STRATEGIES.names())
    typer.echo(f"{auto.AUTO:<{width}}  {auto.SUMMARY}")


@app.command()
def backends() -> None:
    """List the Bayesian backends, one line each."""
    from alab.backends import BACKENDS

    _print_registry(BACKENDS)


@app.command()
def oracles() -> None:
    """List the oracles (who labels), one line each."""
    from alab.oracles import ORACLES

    _print_registry(ORACLES)


@datasets_app.callback()
def datasets(ctx: typer.Context) -> None:
    """List the data sets, one line each."""
    if ctx.invoked_subcommand is None:
        from alab.data import DATASETS

        _print_registry(DATASETS)


@datasets_app.command("fetch")
@user_errors
def datasets_fetch(
    name: Annotated[str, typer.Argument(help="Data set to download (mnist, fashion-mnist).")],
    data_dir: Annotated[str | None, typer.Option(help="Where to put the files (default $ALAB_DATA/<name>, else datasets/<name>).")] = None,
    url: Annotated[str | None, typer.Option(help="Base URL of a mirror holding the original files.")] = None,
) -> None:
    """Download a data set's original files, verifying their SHA-256."""
    from alab.data import fetch_dataset

    path = fetch_dataset(name, data_dir, url=url)
    typer.echo(f"{name}: verified files in {path}")


def main() -> None:
    """Console entry point."""
    app(prog_name="alab")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
