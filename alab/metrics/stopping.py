"""When to stop labeling: statistics of the model's predictions on a stop set, and the rules read from them. No I/O.

Each round the loop predicts a fixed stop set (pool items drawn once by the seed; their labels are
never read) and writes four statistics to curve.csv:

    stop_kappa                 Cohen's kappa between this round's and the previous round's predicted
                               classes on the stop set (empty in round 0)
    stop_overall_uncertainty   mean normalized predictive entropy H[p(y|x)] / ln C over the stop set
    stop_max_uncertainty       its maximum over the stop set
    stop_expected_accuracy     the model's own estimate of its accuracy there: mean of max_c p(c|x)

A rule reads one statistic along the curve and says at which round it would stop (`stop_round`).
Defaults: `kappa` and `overall_uncertainty` follow small-text's (webis-de/small-text,
small_text/stopping_criteria/kappa.py and uncertainty.py at commit 9ffa298c: window 3, kappa 0.99;
normalized entropy 0.05); `max_uncertainty` and `accuracy_change` thresholds are ours, stated here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import cohen_kappa_score

from alab.errors import AlabError


def cohen_kappa(predictions_a_S: np.ndarray, predictions_b_S: np.ndarray, num_classes: int) -> float:
    """Cohen's kappa between two sets of predicted classes: (p_o - p_e) / (1 - p_e); 1.0 where they agree on every item.

    p_o is the share of items where they agree, p_e the agreement expected from their class
    frequencies. Cohen (1960); as a stopping signal, Bloodgood & Vijay-Shanker (2009), "A Method
    for Stopping Active Learning Based on Stabilizing Predictions and the Need for User-Adjustable
    Stopping" (CoNLL). Identical predictions give 1.0 even when p_e = 1 (small-text does the same).
    """
    a, b = np.asarray(predictions_a_S), np.asarray(predictions_b_S)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise AlabError(f"kappa compares two non-empty sets of predictions of one shape; got {list(a.shape)} and {list(b.shape)}")
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b, labels=np.arange(num_classes)))


@dataclass(frozen=True)
class StopRule:
    """One stopping rule: the curve column it reads, its default threshold, and how it decides."""

    name: str
    column: str
    threshold: float
    summary: str
    window: int = 1  # rounds the rule looks back over (1: this round alone)

    def met(self, values: Sequence[float], threshold: float) -> bool:
        """Whether the rule stops after the last of `values` (the column, round 0 onward)."""
        recent = [float(v) for v in values[-self.window :]]
        if len(recent) < self.window or any(math.isnan(v) for v in recent):
            return False
        if self.name == "kappa":
            return float(np.mean(recent)) >= threshold
        if self.name == "accuracy_change":
            changes = np.abs(np.diff([float(v) for v in values[-self.window - 1 :]]))
            return len(changes) == self.window and float(changes.max()) < threshold
        return recent[-1] < threshold


STOP_RULES: dict[str, StopRule] = {
    rule.name: rule
    for rule in (
        StopRule("kappa", "stop_kappa", 0.99, "predictions have stabilized: mean kappa of the last 3 rounds' "
                 "successive stop-set predictions >= threshold (Bloodgood & Vijay-Shanker 2009)", window=3),
        StopRule("overall_uncertainty", "stop_overall_uncertainty", 0.05, "mean normalized predictive entropy "
                 "over the stop set < threshold (Zhu, Wang & Hovy 2008)"),
        StopRule("max_uncertainty", "stop_max_uncertainty", 0.5, "the most uncertain stop-set item's normalized "
                 "entropy < threshold (Zhu, Wang & Hovy 2008, max-confidence)"),
        StopRule("accuracy_change", "stop_expected_accuracy", 0.005, "the model's expected accuracy on the stop set "
                 "(mean max-probability) changed by less than threshold in each of the last 3 rounds", window=3),
    )
}  # fmt: skip
STOP_COLUMNS = ("stop_kappa", "stop_overall_uncertainty", "stop_max_uncertainty", "stop_expected_accuracy")


def parse_stop(text: str) -> tuple[StopRule, float]:
    """`RULE[:threshold]` -> (rule, threshold); AlabError naming the rules for anything else."""
    name, colon, value = text.partition(":")
    rule = STOP_RULES.get(name.strip())
    if rule is None:
        raise AlabError(f"unknown stopping rule {name!r}; rules: {', '.join(STOP_RULES)} (as RULE or RULE:threshold)")
    if not colon:
        return rule, rule.threshold
    try:
        threshold = float(value)
    except ValueError:
        raise AlabError(f"stop = {text!r}: the threshold after ':' must be a number, e.g. {rule.name}:{rule.threshold}") from None
    if not math.isfinite(threshold):
        raise AlabError(f"stop = {text!r}: the threshold must be a finite number")
    return rule, threshold


def stop_round(rule: StopRule, values: Sequence[float], threshold: float | None = None) -> int | None:
    """The first round (index into `values`) after which `rule` stops, None if it never does."""
    threshold = rule.threshold if threshold is None else threshold
    return next((r for r in range(len(values)) if rule.met(values[: r + 1], threshold)), None)


def stop_statistics(probs_S_C: np.ndarray, predictions_before_S: np.ndarray | None) -> dict[str, float]:
    """The four stop-set statistics of one round (module docstring) from its predictive probabilities [S, C]."""
    S, C = probs_S_C.shape
    safe_S_C = np.where(probs_S_C > 0, probs_S_C, 1.0)
    normalized_entropy_S = -(probs_S_C * np.log(safe_S_C)).sum(axis=1) / math.log(C)
    predictions_S = probs_S_C.argmax(axis=1)
    kappa = math.nan if predictions_before_S is None else cohen_kappa(predictions_S, predictions_before_S, C)
    return {
        "stop_kappa": kappa,
        "stop_overall_uncertainty": float(normalized_entropy_S.mean()),
        "stop_max_uncertainty": float(normalized_entropy_S.max()),
        "stop_expected_accuracy": float(probs_S_C.max(axis=1).mean()),
    }
