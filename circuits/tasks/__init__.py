"""Tasks shipped as data + schema + metric (see :class:`Task`)."""

from __future__ import annotations

from circuits.tasks._base import Task

__all__ = ["Task"]
