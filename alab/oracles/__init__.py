"""Oracle adapters, registered by name in `ORACLES`."""

from alab.oracles import files, simulated, terminal, web  # noqa: F401  (importing registers them)
from alab.oracles.base import ORACLES, UNDO, Label, LabelingPaused, Oracle, OracleContext, Query, check_oracle

__all__ = ["check_oracle", "ORACLES", "UNDO", "Label", "LabelingPaused", "Oracle", "OracleContext", "Query"]
