"""fishertut: the diagonal of the Fisher information matrix, its two estimators and their variances.

After Soen & Sun, "Trade-Offs of Diagonal Fisher Information Matrix Estimators" (NeurIPS 2024).

>>> import fishertut as ft
>>> fam = ft.Categorical()
>>> F = ft.fisher_diagonal(model, x, fam)                 # doctest: +SKIP
>>> rep = ft.variance_report(model, x, fam)               # doctest: +SKIP
>>> est = ft.estimate(model, x, fam, rtol=0.1, delta=0.05)  # doctest: +SKIP
"""

from .api import estimator_terms, fisher_diagonal, per_input_statistics, variance_report
from .errors import UnsupportedModelError
from .families import Categorical, ExponentialFamily, Gaussian, OutputSpectrum
from .precision import Estimate, PlanEntry, estimate
from .report import Bounds, ConditionalStatistics, EstimatorTerms, FisherDiagonal, VarianceReport

__all__ = [
    "Categorical", "Gaussian", "ExponentialFamily", "OutputSpectrum",
    "fisher_diagonal", "variance_report", "per_input_statistics", "estimator_terms", "estimate",
    "Estimate", "PlanEntry",
    "FisherDiagonal", "VarianceReport", "Bounds", "ConditionalStatistics", "EstimatorTerms",
    "UnsupportedModelError",
]
__version__ = "0.1.0"

_SUBMODULES = ("analysis", "casestudy", "data", "models", "natural_gradient", "plotting", "symbolic", "training")


def __getattr__(name: str) -> object:
    """Import the submodules (``ft.data``, ``ft.models``, ...) on first use, keeping ``import fishertut`` light."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fishertut' has no attribute {name!r}")
