"""What the chapters use: the book's support code, kept apart from the core of :mod:`fishertut`.

The core (estimators, families, engines, reports, validation, parameter groups and pooling) never imports this
package. Each module says which chapters use it:

* :mod:`~fishertut.lab.data`: MNIST as tensors;
* :mod:`~fishertut.lab.gpt`: the tiny decoder-only transformer (the language-model benchmark, the tests and the
  character-level model of chapter :doc:`/book/language_model`);
* :mod:`~fishertut.lab.models`: the MLP builder, the one trained "theory network", the default device;
* :mod:`~fishertut.lab.training`: a seeded Adam training loop with a loss and a penalty argument;
* :mod:`~fishertut.lab.montecarlo`: every single-pair term per class, cheap Monte-Carlo repetitions, the standard
  error of a variance;
* :mod:`~fishertut.lab.bounds`: the spectral bounds in several variants;
* :mod:`~fishertut.lab.casestudy`: the MNIST case study (computation);
* :mod:`~fishertut.lab.natural_gradient`: diagonal natural-gradient descent on toy problems;
* :mod:`~fishertut.lab.downstream`: EWC penalty, diagonal Laplace predictive and their metrics (chapter
  :doc:`/book/downstream`);
* :mod:`~fishertut.lab.laplace`: the diagonal Laplace posterior's logit variances, probit predictive and evidence,
  :mod:`~fishertut.lab.stacked`: many small networks trained at once, :mod:`~fishertut.lab.statistics`: t intervals
  and AUROC (chapter :doc:`/book/downstream`);
* :mod:`~fishertut.lab.text`, :mod:`~fishertut.lab.merging`: the documentation corpus that ships with Python,
  Fisher merging and saliency pruning (chapter :doc:`/book/language_model`), with :mod:`~fishertut.lab.tokens`
  (every per-class score of a sequence) and :mod:`~fishertut.lab.lmstudy` (the recipes of LM code, their bias,
  variance and budgets);
* :mod:`~fishertut.lab.plotting`: the house style and all the book's figure helpers;
* :mod:`~fishertut.lab.symbolic`: the SymPy derivations of the two families (the theory chapters);
* :mod:`~fishertut.lab.tables`: tables formatted for people (every chapter that shows a table).

Submodules load on first use (``ft.lab.plotting`` imports matplotlib only when touched).
"""

from __future__ import annotations

import importlib

_SUBMODULES = (
    "bounds",
    "casestudy",
    "data",
    "downstream",
    "gpt",
    "laplace",
    "lmstudy",
    "merging",
    "models",
    "montecarlo",
    "natural_gradient",
    "plotting",
    "stacked",
    "statistics",
    "symbolic",
    "tables",
    "text",
    "tokens",
    "training",
)

__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> object:
    """Import the submodules (``ft.lab.data``, ``ft.lab.models``, ...) on first use."""
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fishertut.lab' has no attribute {name!r}")
