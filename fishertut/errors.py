"""Exceptions of fishertut.

See chapter :doc:`/book/estimators` (section "What each costs") for which models take which engine.
"""

__all__ = ["UnsupportedModelError"]


class UnsupportedModelError(ValueError):
    """The model has a module or structure the requested computation path cannot handle."""
