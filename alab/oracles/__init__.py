"""Oracle adapters, registered by name in `ORACLES`."""

from alab.oracles import files, labelstudio, simulated, terminal, web  # noqa: F401  (importing registers them)
from alab.oracles.base import (
    NONE_OF_THESE, ORACLES, UNDO, Label, LabelingPaused, Oracle, OracleContext, Query, check_oracle,
)  # fmt: skip

__all__ = ["check_oracle", "NONE_OF_THESE", "ORACLES", "UNDO", "Label", "LabelingPaused", "Oracle", "OracleContext", "Query"]
