"""What a run learns, chosen by its data set: classification (class labels) or regression (float targets).

A `Task` is what the loop needs to know about the kind of label and nothing else: which acquisition
registry names a strategy's scores, whether joint strategies can select, how the initial set is drawn,
what a valid label is, how labels become training targets, how the pool is scored and the test set
measured, and the curve's columns.
The loop itself stays the same for both; backends see it only as a `task` keyword (the network's
head and loss, `alab.models.Network`).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from alab.acquisition.base import EmbeddingStrategy, JointStrategy, Selection, Strategy, TargetStrategy
from alab.acquisition.regression import REGRESSION_ACQUISITIONS, decompose, gaussian_params
from alab.acquisition.scores import ACQUISITIONS, predictive_log_probs
from alab.acquisition.strategies import STRATEGIES
from alab.backends.base import SampledNetworks
from alab.data import Dataset, balanced_initial
from alab.errors import AlabError
from alab.metrics import evaluate, reliability_bins
from alab.metrics.stopping import STOP_COLUMNS, stop_statistics
from alab.metrics.trust import RETENTION_FRACTIONS, UNCERTAINTIES, aurc, decompose as decompose_uncertainty, ood_detection, ood_scores, retention_curve
from alab.regression_metrics import evaluate_regression
from alab.registry import Registry
from alab.oracles.base import NONE_OF_THESE
from alab.scoring import candidate_log_probs, chunks, predict, score_pool

Acquisition = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class TrustSets:
    """The items a classification run's K networks predict each round beyond the pool (`Classification.trust`).

    Fixed for the whole run: `test_T` a subset of the test set and `ood_O` of the out-of-distribution
    set (both drawn by a fixed seed, the same for every run of a comparison), `stop_S` the stop set,
    pool items drawn by the run's seed (their labels are never read).
    """

    test_T: Tensor
    stop_S: Tensor
    ood_O: Tensor | None


def draw_trust_sets(dataset: Dataset, trust_items: int, stop_items: int, generator: torch.Generator) -> TrustSets:
    """`TrustSets` of `trust_items` test (and OOD) items and `stop_items` pool items (0: all of them), sorted."""

    def some(n: int, k: int, gen: torch.Generator) -> Tensor:
        return torch.arange(n) if k == 0 or k >= n else torch.randperm(n, generator=gen)[:k].sort().values

    fixed = torch.Generator().manual_seed(0)
    test_T = some(len(dataset.y_test), trust_items, fixed)
    ood_O = None if dataset.x_ood is None else some(len(dataset.x_ood), trust_items, fixed)
    return TrustSets(test_T, some(len(dataset.y_pool), stop_items, generator), ood_O)


OUTSIDE_QUANTILE = 0.99  # a query is marked as possibly outside the classes when its epistemic uncertainty is
# above this quantile of the test subset's (1% of in-distribution inputs are marked), or without a test
# set of the labeled items' (`Classification.trust`)


@dataclass(frozen=True)
class Scored:
    """The candidates' acquisition scores (None: the strategy needs none), the pool's summary columns, time."""

    scores_N: Tensor | None
    summary: dict[str, float]
    seconds: float
    top: Selection | None = None  # a streamed top-k of the scores, when the task keeps one


class Task(Protocol):
    name: str
    curve_columns: tuple[str, ...]
    acquisitions: Registry[Acquisition]
    joint: bool  # a JointStrategy can select: the networks give class log-probabilities [K, M, C]

    def backend_kwargs(self) -> dict[str, Any]: ...

    def initial(self, n: int, generator: torch.Generator) -> Tensor: ...

    def label_error(self, label: int | float) -> str | None: ...

    def targets(self, labels: Sequence[int | float]) -> Tensor: ...

    def score(
        self, networks: SampledNetworks, x: Tensor, indices_N: Tensor, acquisition: Acquisition | None, chunk_size: int,
        *, top_k: int | None = None, device: torch.device | None = None, autocast: torch.dtype | None = None,
    ) -> Scored: ...  # fmt: skip

    def evaluate(self, networks: SampledNetworks, chunk_size: int) -> tuple[dict[str, float], dict[str, Any]]: ...

    def views(self, networks: SampledNetworks, x_B: Tensor, chunk_size: int, outside_bar: float) -> list[dict[str, Any]]: ...

    def uncertainty(self, networks: SampledNetworks, x_B: Tensor, chunk_size: int) -> dict[str, Tensor]: ...

    def describe(self, row: dict[str, Any]) -> str: ...


@dataclass(frozen=True)
class Classification:
    """Class labels 0..C-1: log-probabilities [K, N, C], accuracy/NLL/Brier/ECE, BALD and entropy of the pool."""

    dataset: Dataset
    name: str = "classification"
    curve_columns: tuple[str, ...] = (
        "round", "n_labeled", "accuracy", "nll", "brier", "ece",
        "train_seconds", "score_seconds", "mean_bald", "mean_entropy",
        *(f"aurc_{u}" for u in UNCERTAINTIES), *(f"test_{u}" for u in UNCERTAINTIES), *(f"pool_{u}" for u in UNCERTAINTIES),
        *STOP_COLUMNS, *(f"ood_{m}_{s}" for m in ("auroc", "fpr95") for s in ("max_prob", "entropy", "bald")),
        "outside_bar", "ood_outside", "n_none",
    )  # fmt: skip
    acquisitions: Registry[Acquisition] = ACQUISITIONS
    joint: bool = True

    def backend_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.dataset.classes)}

    def initial(self, n: int, generator: torch.Generator) -> Tensor:
        return balanced_initial(self.dataset.y_pool, n, generator)

    def label_error(self, label: int | float | str) -> str | None:
        C = len(self.dataset.classes)
        ok = label == NONE_OF_THESE or (isinstance(label, int) and 0 <= label < C)
        return None if ok else f"classes are 0..{C - 1} (or {NONE_OF_THESE!r}: none of these)"

    def targets(self, labels: Sequence[int | float]) -> Tensor:
        return torch.tensor(labels, dtype=torch.long)

    def score(
        self, networks: SampledNetworks, x: Tensor, indices_N: Tensor, acquisition: Acquisition | None, chunk_size: int,
        *, top_k: int | None = None, device: torch.device | None = None, autocast: torch.dtype | None = None,
    ) -> Scored:  # fmt: skip
        pool = score_pool(networks, x, indices_N, acquisition, chunk_size=chunk_size, top_k=top_k, device=device, autocast=autocast)
        summary = {"mean_bald": pool.mean_bald, "mean_entropy": pool.mean_entropy}
        return Scored(pool.scores_N, summary, pool.seconds, pool.top)

    def evaluate(self, networks: SampledNetworks, chunk_size: int) -> tuple[dict[str, float], dict[str, Any]]:
        """Test metrics, and the reliability diagram's 15 bins behind the ECE (`alab.metrics.reliability_bins`)."""
        if not len(self.dataset.y_test):  # no labeled test set (a user's own images): NaN, never a made-up number
            return dict.fromkeys(("accuracy", "nll", "brier", "ece"), math.nan), {}
        log_probs_N_C = predict(networks, self.dataset.x_test, chunk_size=chunk_size)
        return evaluate(log_probs_N_C, self.dataset.y_test), {"reliability": reliability_bins(log_probs_N_C, self.dataset.y_test)}

    def trust(
        self, networks: SampledNetworks, sets: TrustSets, predictions_before_S: Tensor | None, x_labeled: Tensor, chunk_size: int
    ) -> tuple[dict[str, float], dict[str, Any], Tensor]:
        """One round's trust columns, its retention curves, and the stop set's predicted classes [S].

        The round's K networks (those that score the pool) predict the test subset, the stop set and
        the OOD subset. Columns: AURC and mean uncertainty by total, aleatoric and epistemic
        (`alab.metrics.trust`) on the test subset, mean uncertainties over the stop set (`pool_*`),
        the stop statistics (`alab.metrics.stopping`), and the AUROC and FPR95 of max-probability,
        entropy and BALD for telling the OOD subset from the test subset (NaN without one); the bar
        above which a query is marked as possibly outside the classes (`outside_bar`: the
        OUTSIDE_QUANTILE of the test subset's epistemic uncertainty, or of `x_labeled`'s without a
        test set), and the share of the OOD subset above it (`ood_outside`).
        """
        d = self.dataset

        def log_probs(x: Tensor, indices: Tensor) -> Tensor:
            return candidate_log_probs(networks, x, indices, chunk_size=chunk_size).double().cpu()

        columns: dict[str, float] = {}
        detail: dict[str, Any] = {}
        test_K_T_C = log_probs(d.x_test, sets.test_T) if len(sets.test_T) else None
        parts = decompose_uncertainty(test_K_T_C) if test_K_T_C is not None else None
        if parts is not None:
            reference_R = parts["epistemic"]
        elif len(x_labeled):
            reference_R = decompose_uncertainty(log_probs(x_labeled, torch.arange(len(x_labeled))))["epistemic"]
        else:
            reference_R = None  # nothing to compare with yet
        outside_bar = math.inf if reference_R is None else float(torch.quantile(reference_R, OUTSIDE_QUANTILE))
        columns["outside_bar"] = outside_bar
        if parts is not None:
            correct_T = predict_classes(test_K_T_C) == d.y_test[sets.test_T]
            detail["retention"] = {"items": len(sets.test_T), "fractions": list(RETENTION_FRACTIONS)}
            for u in UNCERTAINTIES:
                columns[f"aurc_{u}"] = aurc(correct_T, parts[u])
                columns[f"test_{u}"] = float(parts[u].mean())
                detail["retention"][u] = retention_curve(correct_T, parts[u])
        stop_K_S_C = log_probs(d.x_pool, sets.stop_S)
        for u, values_S in decompose_uncertainty(stop_K_S_C).items():
            columns[f"pool_{u}"] = float(values_S.mean())
        probs_S_C = stop_K_S_C.exp().mean(dim=0)
        before = None if predictions_before_S is None else predictions_before_S.numpy()
        columns.update(stop_statistics(probs_S_C.numpy(), before))
        if sets.ood_O is not None and d.x_ood is not None and test_K_T_C is not None:
            in_scores, out_scores = ood_scores(test_K_T_C), ood_scores(log_probs(d.x_ood, sets.ood_O))
            columns["ood_outside"] = float((out_scores["bald"] > outside_bar).double().mean())
            for name in in_scores:
                for metric, value in ood_detection(in_scores[name], out_scores[name]).items():
                    columns[f"ood_{metric}_{name}"] = value
        return columns, detail, probs_S_C.argmax(dim=1)

    def views(self, networks: SampledNetworks, x_B: Tensor, chunk_size: int, outside_bar: float) -> list[dict[str, Any]]:
        """Each query's class probabilities, its epistemic uncertainty (BALD, nats), and `outside`: above the bar."""
        log_probs_K_B_C = candidate_log_probs(networks, x_B, torch.arange(len(x_B)), chunk_size=chunk_size).double().cpu()
        epistemic_B = decompose_uncertainty(log_probs_K_B_C)["epistemic"]
        probs_B_C = predictive_log_probs(log_probs_K_B_C).exp().float()
        return [
            {"probs": probs_C.tolist(), "epistemic": float(e), "outside": bool(float(e) > outside_bar)}
            for probs_C, e in zip(probs_B_C, epistemic_B)
        ]

    def uncertainty(self, networks: SampledNetworks, x_B: Tensor, chunk_size: int) -> dict[str, Tensor]:
        """Each item's total = aleatoric + epistemic uncertainty: entropy = expected entropy + BALD, nats [B]."""
        return decompose_uncertainty(candidate_log_probs(networks, x_B, torch.arange(len(x_B)), chunk_size=chunk_size).double().cpu())

    def describe(self, row: dict[str, Any]) -> str:
        return (
            f"acc {float(row['accuracy']):.3f}  nll {float(row['nll']):.3f}  ece {float(row['ece']):.3f}  "
            f"bald {float(row['mean_bald']):.3f}"
        )


@dataclass(frozen=True)
class Regression:
    """Float targets: outputs [K, N, 2] (mean, raw variance), RMSE/NLL/coverage, epistemic and aleatoric variance.

    Models train on standardized targets z = (y - m) / s, with the pool's m and s (`Dataset.target_mean`,
    `target_std`); predictions come back as mu * s + m and s2 * s^2, so every metric, view and
    curve column is in the original units (variances in units squared).
    """

    dataset: Dataset
    name: str = "regression"
    curve_columns: tuple[str, ...] = (
        "round", "n_labeled", "rmse", "nll", "coverage_50", "coverage_90", "coverage_95",
        "train_seconds", "score_seconds", "mean_epistemic", "mean_aleatoric",
    )  # fmt: skip
    acquisitions: Registry[Acquisition] = REGRESSION_ACQUISITIONS
    joint: bool = False  # outputs are [K, N, 2] Gaussians, not class log-probabilities

    def backend_kwargs(self) -> dict[str, Any]:
        return {"num_classes": 0, "task": "regression"}

    def initial(self, n: int, generator: torch.Generator) -> Tensor:
        """n pool items uniformly at random (no classes to balance), sorted."""
        return torch.randperm(len(self.dataset.y_pool), generator=generator)[:n].sort().values

    def label_error(self, label: int | float | str) -> str | None:
        ok = isinstance(label, (int, float)) and math.isfinite(label)
        return None if ok else "a target is a finite number"

    def targets(self, labels: Sequence[int | float]) -> Tensor:
        y_N = torch.tensor(labels, dtype=torch.float64)
        return ((y_N - self.dataset.target_mean) / self.dataset.target_std).float()

    def original_units(self, outputs_K_N_2: Tensor) -> tuple[Tensor, Tensor]:
        """(mu_K_N, s2_K_N) in the targets' original units, from standardized outputs."""
        mu_K_N, s2_K_N = gaussian_params(outputs_K_N_2.double())
        s = self.dataset.target_std
        return mu_K_N * s + self.dataset.target_mean, s2_K_N * s**2

    def score(
        self, networks: SampledNetworks, x: Tensor, indices_N: Tensor, acquisition: Acquisition | None, chunk_size: int,
        *, top_k: int | None = None, device: torch.device | None = None, autocast: torch.dtype | None = None,
    ) -> Scored:  # fmt: skip
        """All candidates' scores (top_k is not streamed here: the strategy selects from them).

        `autocast`: the networks' matrix products in that dtype (as in `score_pool`); outputs are float32.
        """
        start = time.perf_counter()
        scores: list[Tensor] = []
        aleatoric_sum = epistemic_sum = 0.0
        with torch.inference_mode():
            for chunk in tqdm(list(chunks(indices_N, chunk_size)), desc="score", leave=False, disable=None):
                device_type = (device or torch.device("cpu")).type
                with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
                    outputs_K_B_2 = networks(x[chunk]).float()
                aleatoric_B, epistemic_B = decompose(outputs_K_B_2.double())
                aleatoric_sum += float(aleatoric_B.sum())
                epistemic_sum += float(epistemic_B.sum())
                if acquisition is not None:
                    scores.append(acquisition(outputs_K_B_2).float().cpu())
        n, s2 = max(len(indices_N), 1), self.dataset.target_std**2
        summary = {"mean_epistemic": epistemic_sum * s2 / n, "mean_aleatoric": aleatoric_sum * s2 / n}
        return Scored(torch.cat(scores) if acquisition is not None else None, summary, time.perf_counter() - start)

    def _outputs(self, networks: SampledNetworks, x: Tensor, chunk_size: int) -> Tensor:
        with torch.inference_mode():
            return torch.cat([networks(x[chunk]).cpu() for chunk in chunks(torch.arange(len(x)), chunk_size)], dim=1)

    def evaluate(self, networks: SampledNetworks, chunk_size: int) -> tuple[dict[str, float], dict[str, Any]]:
        if not len(self.dataset.y_test):
            return dict.fromkeys(("rmse", "nll", "coverage_50", "coverage_90", "coverage_95"), math.nan), {}
        mu_K_N, s2_K_N = self.original_units(self._outputs(networks, self.dataset.x_test, chunk_size))
        return evaluate_regression(mu_K_N, s2_K_N, self.dataset.y_test), {}

    def _moments(self, networks: SampledNetworks, x_B: Tensor, chunk_size: int) -> tuple[Tensor, Tensor, Tensor]:
        """Each item's predicted mean, aleatoric E_k[sigma_k^2] and epistemic Var_k[mu_k] variance, original units [B]."""
        mu_K_B, s2_K_B = self.original_units(self._outputs(networks, x_B, chunk_size))
        return mu_K_B.mean(dim=0), s2_K_B.mean(dim=0), mu_K_B.var(dim=0, correction=0)

    def uncertainty(self, networks: SampledNetworks, x_B: Tensor, chunk_size: int) -> dict[str, Tensor]:
        """Each item's predictive variance, total = aleatoric + epistemic, units^2 [B]."""
        _, aleatoric_B, epistemic_B = self._moments(networks, x_B, chunk_size)
        return {"total": aleatoric_B + epistemic_B, "aleatoric": aleatoric_B, "epistemic": epistemic_B}

    def views(self, networks: SampledNetworks, x_B: Tensor, chunk_size: int, outside_bar: float) -> list[dict[str, Any]]:
        mean_B, aleatoric_B, epistemic_B = self._moments(networks, x_B, chunk_size)
        return [
            {"mean": float(m), "epistemic_sd": math.sqrt(float(e)), "aleatoric_sd": math.sqrt(float(a))}
            for m, e, a in zip(mean_B, epistemic_B, aleatoric_B)
        ]

    def describe(self, row: dict[str, Any]) -> str:
        return (
            f"rmse {float(row['rmse']):.4g}  nll {float(row['nll']):.3f}  cov90 {float(row['coverage_90']):.2f}  "
            f"epistemic {float(row['mean_epistemic']):.3g}  aleatoric {float(row['mean_aleatoric']):.3g}"
        )


def predict_classes(log_probs_K_N_C: Tensor) -> Tensor:
    """The posterior predictive's most probable class [N] (ties: the lowest class)."""
    return predictive_log_probs(log_probs_K_N_C).argmax(dim=1)


def task_for(dataset: Dataset) -> Task:
    """The task a data set asks for (`Dataset.task`)."""
    return Regression(dataset) if dataset.task == "regression" else Classification(dataset)


def unsupported(task: Task, strategy: Strategy) -> str | None:
    """What in `strategy` this task cannot give it (None: the task can run it), for every kind of strategy.

    A strategy scores the pool with its `acquisition` (None: it needs no scores), which must be in
    the task's registry: that is all a top-k or a stochastic rule needs. A joint strategy
    (`JointStrategy`: BatchBALD) also needs its candidates' class log-probabilities [K, M, C], and a
    target strategy (`TargetStrategy`: EPIG) its targets', which only a task with `joint` has; so
    does an embedding rule that reads class probabilities or the classes (`classification`).
    """
    if strategy.acquisition is not None and strategy.acquisition not in task.acquisitions:
        return f"scores with {strategy.acquisition!r}"
    if isinstance(strategy, JointStrategy) and not task.joint:
        return "selects its batch jointly from the candidates' class log-probabilities"
    if isinstance(strategy, TargetStrategy) and not task.joint:
        return "scores with the class log-probabilities of target inputs"
    if isinstance(strategy, EmbeddingStrategy) and strategy.classification and not task.joint:
        return "needs class probabilities (or the number of classes)"
    return None


def check_task_support(task: Task, strategy_name: str, backend_name: str, factory: Callable[..., Any], oracle: str) -> None:
    """One-line AlabErrors for a strategy, backend or oracle that this task cannot use."""
    reason = unsupported(task, STRATEGIES.get(strategy_name))
    if reason is not None:
        usable = [name for name in STRATEGIES.names() if unsupported(task, STRATEGIES.get(name)) is None]
        raise AlabError(
            f"strategy {strategy_name!r} {reason}, which a {task.name} data set does not support; "
            f"choose one of: {', '.join(usable)}"
        )
    if "task" in task.backend_kwargs() and "task" not in inspect.signature(factory).parameters:
        raise AlabError(f"backend {backend_name!r} does not support {task.name} yet; use --backend mc_dropout")
    if task.name == "regression" and oracle != "simulated":
        raise AlabError(f"oracle {oracle!r} asks people for class labels; a regression run takes --oracle simulated")
