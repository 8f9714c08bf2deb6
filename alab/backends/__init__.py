"""Bayesian backends, one module each, registered by name in `BACKENDS`."""

from alab.backends import mc_dropout  # noqa: F401  (registers "mc_dropout")
from alab.backends.base import BACKENDS, Backend, SampledNetworks, predict_log_probs

__all__ = ["BACKENDS", "Backend", "SampledNetworks", "predict_log_probs"]
