"""Typed run configuration: dataclasses, TOML loading and validation with one-line errors.

Precedence: defaults < the TOML file (`--config`) < command-line flags. The resolved configuration
is written to the run directory as `config.toml`, enough to rerun (or resume) the run.

    strategy = "bald"
    dataset = "digits"
    initial = 20
    query_size = 10
    rounds = 30
    seed = 0

    [backend]
    name = "mc_dropout"
    epochs = 50

    [oracle]            # or simply: oracle = "simulated"
    name = "web"
    port = 8765         # the oracle's own settings, validated by the oracle

    [[schedule]]        # optional: rounds with fewer than 50 labels select with typiclust,
    until = 50          # later rounds with `strategy` (several steps: `until` increasing)
    strategy = "typiclust"
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from alab.errors import AlabError

T = TypeVar("T")

# `autocast` names -> torch dtype names (None: full float32 precision)
AUTOCAST_DTYPES: dict[str, str | None] = {"off": None, "bfloat16": "bfloat16", "float16": "float16"}


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        return isinstance(value, dict)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple))
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "nothing"
    return getattr(annotation, "__name__", str(annotation))


def from_mapping(cls: type[T], mapping: dict[str, Any], where: str, **fixed: Any) -> T:
    """Build dataclass `cls` from `mapping` (plus `fixed` fields), refusing unknown keys and wrong types."""
    hints = {k: v for k, v in typing.get_type_hints(cls).items() if k not in fixed}
    names = [f.name for f in dataclasses.fields(cls) if f.name not in fixed]  # type: ignore[arg-type]
    for key, value in mapping.items():
        if key not in hints:
            raise AlabError(f"unknown key {where}.{key}; valid keys: {', '.join(names)}")
        if not _type_ok(value, hints[key]):
            raise AlabError(f"{where}.{key} must be {_type_name(hints[key])}, got {value!r}")
    values = {k: (float(v) if hints[k] is float else v) for k, v in mapping.items()}
    return cls(**values, **fixed)


@dataclass(frozen=True)
class BackendConfig:
    """Which backend, and its hyperparameters (validated by the backend itself)."""

    name: str = "mc_dropout"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OracleConfig:
    """Who labels, and the oracle's settings (validated by the oracle itself, e.g. the web page's port)."""

    name: str = "simulated"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleStep:
    """One `[[schedule]]` table: a round whose labeled set has fewer than `until` labels selects with `strategy`."""

    until: int
    strategy: str


EPIG_TARGET_INPUTS = ("pool", "validation", "test")  # or the path of a .npy file of inputs


@dataclass(frozen=True)
class RunConfig:
    """One active learning run: what to label, how, for how long."""

    strategy: str = "auto"  # the recommended strategy (alab.acquisition.auto): BatchBALD, or epistemic variance for regression
    dataset: str = "digits"
    data_dir: str | None = None  # default: $ALAB_DATA/<dataset>, else datasets/<dataset>
    initial: int = 20  # balanced across classes when the data set's labels allow
    query_size: int = 10
    rounds: int = 30
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    oracle: OracleConfig = field(default_factory=OracleConfig)
    samples: int = 20  # K posterior samples for scoring and evaluation
    chunk_size: int = 1024  # pool items per scoring chunk
    autocast: str = "off"  # pool scoring's matrix products in low precision: off | bfloat16 | float16 (a GPU's tensor cores)
    pool_subsample: int = 0  # score a random subset of this many pool items each round (0: all)
    validation: int = 0  # items carved from the training split by the seed (for backend.early_stopping)
    pool_size: int = 0  # the pool: a random pool_size of the rest, drawn by the seed (0: all of it)
    input_scaling: str = "default"  # default | standardize | unit (x / 255), for the IDX image sets
    evaluation: str = "mc"  # test metrics from the K-sample predictive (mc) | the deterministic network (dropout off)
    backend: BackendConfig = field(default_factory=BackendConfig)
    classes: list[str] | None = None  # class names of a data set without its own (folder:PATH)
    target: str | None = None  # the column to predict of a user's table (csv:PATH): a regression run; with text, the class labels
    text: str | None = None  # the text column of a user's table (csv:PATH): a text classification run (alab.data.text)
    features: str | None = None  # PATH.npy or PATH.parquet: the model reads these, one row per item in the data set's order
    target_classes: list[int] | None = None  # the test and validation sets keep only these classes (a shifted target); the pool keeps all
    epig_targets: int = 100  # EPIG: M target inputs drawn each round from ...
    epig_target_inputs: str = "pool"  # ... the pool | validation | test (their inputs, never their labels) | PATH.npy
    schedule: tuple[ScheduleStep, ...] = ()  # [[schedule]] steps: another strategy while the labeled set is small
    ood: str = "none"  # an out-of-distribution set to tell from the test set each round: none | noise | held_out
    ood_classes: list[int] | None = None  # ood = held_out: these classes leave the pool and test set and form it
    trust_items: int = 1000  # test (and OOD) items the round's K networks predict for retention and OOD columns (0: all)
    stop_items: int = 1000  # pool items in the stop set, drawn once by the seed, for the stopping statistics (0: all)
    stop: str | None = None  # RULE[:threshold]: end the run when the rule is met (alab.metrics.stopping)

    def __post_init__(self) -> None:
        positive = ("initial", "query_size", "samples", "chunk_size", "epig_targets")
        for name in positive:
            if getattr(self, name) <= 0:
                raise AlabError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("rounds", "pool_subsample", "validation", "seed", "pool_size", "trust_items", "stop_items"):
            if getattr(self, name) < 0:
                raise AlabError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.evaluation not in ("mc", "deterministic"):
            raise AlabError(f"evaluation must be mc or deterministic, got {self.evaluation!r}")
        if self.autocast not in AUTOCAST_DTYPES:
            raise AlabError(f"autocast must be one of {', '.join(AUTOCAST_DTYPES)}, got {self.autocast!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise AlabError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.classes is not None:
            names = list(self.classes)
            if len(names) < 2 or not all(isinstance(c, str) and c.strip() for c in names) or len(set(names)) != len(names):
                raise AlabError(f"classes must be two or more distinct non-empty names, got {names!r}")
        if 0 < self.pool_subsample < self.query_size:
            raise AlabError(f"pool_subsample ({self.pool_subsample}) must be at least query_size ({self.query_size})")
        if self.epig_target_inputs not in EPIG_TARGET_INPUTS and not self.epig_target_inputs.endswith(".npy"):
            raise AlabError(f"epig_target_inputs must be one of {', '.join(EPIG_TARGET_INPUTS)} or the path of a .npy file of inputs, got {self.epig_target_inputs!r}")
        for name in ("target_classes", "ood_classes"):  # checked before anything hashes or compares them
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (list, tuple)) and all(isinstance(c, int) and not isinstance(c, bool) for c in value)):
                raise AlabError(f"{name} must be a list of class indices like [0, 1, 2], got {value!r}")
        if self.target_classes is not None and (not self.target_classes or len(set(self.target_classes)) != len(self.target_classes)):
            raise AlabError(f"target_classes must be one or more distinct class indices, got {self.target_classes!r}")
        if self.ood not in ("none", "noise", "held_out"):
            raise AlabError(f"ood must be none, noise or held_out, got {self.ood!r}")
        if (self.ood == "held_out") != (self.ood_classes is not None):
            raise AlabError("ood = held_out and ood_classes go together: ood_classes = [5, 6, 7, 8, 9] names the classes held out")
        if self.ood == "held_out" and self.target_classes is not None:
            raise AlabError("ood = held_out renumbers the classes, so target_classes cannot name them; use one or the other")
        if self.stop is not None:
            from alab.metrics.stopping import parse_stop

            parse_stop(self.stop)
        previous = self.initial
        for step in self.schedule:
            if step.until <= previous:
                raise AlabError(
                    f"schedule step until = {step.until} never applies: each step's `until` must exceed the previous one's "
                    f"(and initial = {self.initial}, the labels of the first round); raise it or remove the step"
                )
            previous = step.until

    @property
    def final_labels(self) -> int:
        return self.initial + self.rounds * self.query_size

    def to_dict(self) -> dict[str, Any]:
        tables = ("backend", "oracle")
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in tables}
        out = {k: v for k, v in out.items() if v is not None and k != "schedule"}
        if self.schedule:  # [[schedule]] tables; none written when there is no schedule
            out["schedule"] = [dataclasses.asdict(step) for step in self.schedule]
        out["oracle"] = {"name": self.oracle.name, **self.oracle.params} if self.oracle.params else self.oracle.name
        out["backend"] = {"name": self.backend.name, **self.backend.params}
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def _named_table(data: dict[str, Any], key: str, default: str) -> tuple[str, dict[str, Any]]:
    """(name, settings) of a `[key]` table with a `name`; `key = "name"` alone is allowed for the oracle."""
    table = data.pop(key, {})
    if key == "oracle" and isinstance(table, str):
        return table, {}
    if not isinstance(table, dict):
        raise AlabError(f"{key} must be a table: [{key}] with name = ... and the {key}'s settings")
    table = dict(table)
    name = table.pop("name", default)
    if not isinstance(name, str):
        raise AlabError(f"{key}.name must be str, got {name!r}")
    return name, table


def _schedule(data: dict[str, Any]) -> tuple[ScheduleStep, ...]:
    """The `[[schedule]]` tables of a document: each with `until` (labels) and `strategy` (a name)."""
    steps = data.pop("schedule", [])
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        raise AlabError("schedule must be [[schedule]] tables, each with until = N labels and strategy = NAME")
    for i, step in enumerate(steps):
        missing = [key for key in ("until", "strategy") if key not in step]
        if missing:
            raise AlabError(f"schedule[{i}] needs {' and '.join(missing)}: [[schedule]] until = N labels, strategy = NAME")
    return tuple(from_mapping(ScheduleStep, step, f"schedule[{i}]") for i, step in enumerate(steps))


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from a parsed TOML document (top-level run keys, `[backend]` and `[oracle]` tables, `[[schedule]]`)."""
    data = dict(data)
    backend = BackendConfig(*_named_table(data, "backend", BackendConfig.name))
    oracle = OracleConfig(*_named_table(data, "oracle", OracleConfig.name))
    return from_mapping(RunConfig, data, "config", backend=backend, oracle=oracle, schedule=_schedule(data))


def load_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, turning a missing file or a syntax error into one line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AlabError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise AlabError(f"cannot read config file {path}: {err}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise AlabError(f"{path} is not valid TOML: {err}") from None


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the TOML file at `path` (if any), then `overrides` (None values are ignored)."""
    data = load_toml(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in ("backend", "oracle"):
            table = data.get(key, {})
            data[key] = {**table, "name": value} if isinstance(table, dict) else value
        else:
            data[key] = value
    return config_from_dict(data)
