"""alab: a Bayesian active learning workbench."""

__version__ = "0.1.0"
