"""`auto`: the strategy alab recommends, a schedule of two rules (docs/auto.md has the measurements behind it).

    round's labeled set           rule        why
    fewer than 5 per class        typiclust   at a few labels per class, typical items beat uncertain ones
                                              (Hacohen, Dekel & Weinshall 2022): a model fitted on so few
                                              labels has uncertainty not yet worth acting on
    from then on                  batchbald   the batch's joint mutual information with the weights
                                              (Kirsch et al. 2019): top-k BALD's batches are redundant,
                                              and on the stress sets BatchBALD beat both top-k BALD and
                                              PowerBALD, which fell to random's level on the noisy and
                                              ambiguous pools (docs/auto.md)

`auto` is a schedule, as a run's `[[schedule]]` tables are, so each round's curve row names the rule
that chose it (`selected_by`). It is for classification: its first rule needs the number of classes.
"""

from __future__ import annotations

from alab.config import ScheduleStep
from alab.errors import AlabError

AUTO = "auto"
COLD_PER_CLASS = 5
COLD_STRATEGY = "typiclust"
WARM_STRATEGY = "batchbald"
SUMMARY = f"the recommended schedule: {COLD_STRATEGY} below {COLD_PER_CLASS} labels per class, then {WARM_STRATEGY} (docs/auto.md)"


def strategy_names(name: str) -> list[str]:
    """The registered strategies a name stands for: auto's two rules, else the name itself."""
    return [COLD_STRATEGY, WARM_STRATEGY] if name == AUTO else [name]


def run_schedule(strategy: str, schedule: tuple[ScheduleStep, ...], n_classes: int) -> tuple[tuple[ScheduleStep, ...], str]:
    """(steps, strategy after them) of a run: auto's, or the run's own `[[schedule]]` and strategy."""
    if strategy != AUTO:
        return schedule, strategy
    if schedule:
        raise AlabError("strategy = auto is a schedule of its own; remove the [[schedule]] tables or name another strategy")
    if n_classes < 2:
        raise AlabError("strategy auto is for classification (its first rule needs the classes); for regression choose epistemic_variance")
    return (ScheduleStep(until=COLD_PER_CLASS * n_classes, strategy=COLD_STRATEGY),), WARM_STRATEGY
