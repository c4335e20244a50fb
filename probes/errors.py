"""Exceptions raised by :mod:`probes` (``ValueError`` subclasses, and ``interp.errors.InterpError``)."""

from __future__ import annotations

from interp.errors import InterpError

__all__ = ["ProbeInputError", "LabelAlignmentError"]


class ProbeInputError(InterpError, ValueError):
    """Bad probe input: NaN features, a single class, wrong shapes, misaligned labels."""


class LabelAlignmentError(ProbeInputError):
    """Labels/targets do not line up with the captured activation rows (prompt, position)."""
