"""Oracle adapters, registered by name in `ORACLES`."""

from alab.oracles import simulated  # noqa: F401  (registers "simulated")
from alab.oracles.base import ORACLES, UNDO, Label, LabelingPaused, Oracle, OracleContext, Query

__all__ = ["ORACLES", "UNDO", "Label", "LabelingPaused", "Oracle", "OracleContext", "Query"]
