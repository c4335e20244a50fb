"""Shared pieces of interp.capture: constants, errors, hook-name resolution."""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Any, Literal, Sequence

from interp.errors import InterpError
from interp.types import Model

__all__ = ["resolve_hooks", "CaptureError", "UnknownHookError", "ManifestMismatchError", "IncompleteStoreError"]

Reduce = Literal["mean", "sum", "first", "last"]
PaddingSide = Literal["left", "right"]
MANIFEST = "manifest.json"
FORMAT = "interp.ActivationStore"
FORMAT_VERSION = 1
_ATTN_SUFFIXES = ("hook_pattern", "hook_attn_scores")


class CaptureError(InterpError, ValueError):
    """Bad input to :func:`capture` (the message names the problem and the fix)."""


class UnknownHookError(InterpError, KeyError):
    """A hook name or pattern that matches no hook of the model (near matches suggested)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ManifestMismatchError(CaptureError):
    """The output directory holds a store captured with different settings."""


class IncompleteStoreError(CaptureError):
    """A store whose capture has not finished (resume it by running the same capture again)."""


# ----------------------------------------------------------------------------------------------
# Hooks
# ----------------------------------------------------------------------------------------------


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def resolve_hooks(model: Model, hooks: str | Sequence[str]) -> list[str]:
    """Expand TransformerLens hook names and glob patterns (``"blocks.*.hook_resid_post"``).

    Exact names keep the given order; a pattern's matches are sorted naturally (layer 2 before
    layer 10). Duplicates are dropped.

    Raises:
        UnknownHookError: a name or pattern that matches nothing, with the nearest hook names.
    """
    if isinstance(hooks, str):
        hooks = [hooks]
    hooks = list(hooks)
    if not hooks:
        raise CaptureError("No hooks given: pass names or patterns such as 'blocks.*.hook_resid_post'.")
    available = list(model.hook_dict.keys())
    avail_set = set(available)
    out: list[str] = []
    for h in hooks:
        if not isinstance(h, str) or not h:
            raise CaptureError(f"Hook names must be non-empty strings, got {h!r}.")
        if any(c in h for c in "*?["):
            matches = sorted((n for n in available if fnmatch.fnmatchcase(n, h)), key=_natural_key)
            if not matches:
                near = difflib.get_close_matches(h.replace("*", "0"), available, n=5, cutoff=0.5)
                raise UnknownHookError(f"Hook pattern {h!r} matches no hook of this model. "
                                       f"Near matches: {near}. List all with sorted(model.hook_dict).")
        else:
            if h not in avail_set:
                near = difflib.get_close_matches(h, available, n=5, cutoff=0.5)
                raise UnknownHookError(f"Unknown hook {h!r}. Did you mean one of {near}? "
                                       "List all with sorted(model.hook_dict); globs like 'blocks.*.hook_resid_post' work too.")
            matches = [h]
        out.extend(m for m in matches if m not in out)
    return out


def _layout(hook: str) -> Literal["pos", "attn"]:
    """``attn``: ``[batch head q k]`` (patterns, scores); ``pos``: ``[batch pos ...]``."""
    return "attn" if hook.endswith(_ATTN_SUFFIXES) else "pos"
