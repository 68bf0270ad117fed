"""fishertut: the diagonal of the Fisher information matrix, its two estimators and their variances.

After Soen & Sun, "Trade-Offs of Diagonal Fisher Information Matrix Estimators" (NeurIPS 2024).

>>> import fishertut as ft
>>> fam = ft.Categorical()
>>> F = ft.fisher_diagonal(model, x, fam)                 # doctest: +SKIP
>>> rep = ft.variance_report(model, x, fam)               # doctest: +SKIP
>>> est = ft.estimate(model, x, fam, rtol=0.1, delta=0.05)  # doctest: +SKIP

The core (this package's modules) holds the estimators and everything they need; :mod:`fishertut.lab` holds
what the book's chapters use (data, trained networks, Monte Carlo, plots) and is never imported by the core.
"""

from .api import estimator_terms, fisher_diagonal, per_input_statistics, variance_report
from .errors import UnsupportedModelError
from .families import Categorical, ExponentialFamily, Gaussian, OutputSpectrum
from .groups import flatten, layer_groups
from .pooling import combine_by_group, layer_summary, recommend_estimator
from .precision import Estimate, PlanEntry, estimate
from .report import Bounds, ConditionalStatistics, EstimatorTerms, FisherDiagonal, VarianceReport

__all__ = [
    "Categorical",
    "Gaussian",
    "ExponentialFamily",
    "OutputSpectrum",
    "fisher_diagonal",
    "variance_report",
    "per_input_statistics",
    "estimator_terms",
    "estimate",
    "Estimate",
    "PlanEntry",
    "FisherDiagonal",
    "VarianceReport",
    "Bounds",
    "ConditionalStatistics",
    "EstimatorTerms",
    "UnsupportedModelError",
    "layer_groups",
    "flatten",
    "layer_summary",
    "recommend_estimator",
    "combine_by_group",
]
__version__ = "0.1.0"

_SUBMODULES = ("lab",)


def __getattr__(name: str) -> object:
    """Import the submodules (``ft.lab``) on first use, keeping ``import fishertut`` light."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fishertut' has no attribute {name!r}")
