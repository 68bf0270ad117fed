"""Exceptions of fishertut."""

__all__ = ["UnsupportedModelError"]


class UnsupportedModelError(ValueError):
    """The model has a module or structure the requested computation path cannot handle."""
