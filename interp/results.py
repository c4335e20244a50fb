"""Base class for analysis results: small dataclasses of named-axis tensors.

Every result is a ``@dataclass`` subclassing :class:`Result`. ``to_json()`` turns it into plain
JSON-serialisable Python (tensors become nested lists, rounded to ``float_digits``); ``save_json``
writes it atomically. Subclasses add ``plot() -> plotly.graph_objects.Figure`` and, where a
ranking makes sense, ``top(n)``.

The base class gives every result, with no code in the subclass:

* ``from_json(d)`` / :func:`load_result` — the inverse of ``to_json`` (fields decoded from their
  type annotations: jaxtyping tensors, nested results, dataclasses, tuples, int-keyed dicts;
  JSON ``null`` inside a float tensor becomes NaN);
* ``==`` / :meth:`Result.equals` — field-by-field equality, tensors compared with
  ``torch.allclose(rtol=1e-5, atol=1e-6, equal_nan=True)`` (JSON keeps 6 decimals), so
  ``type(r).from_json(r.to_json()) == r``;
* a concise ``__repr__`` (the model, the BOS policy, scalars, tensor shapes, top entries; never the
  tensors) and ``_repr_html_`` (summary table, top entries and the main figure) for notebooks;
* ``to_frame()`` — a tidy :class:`pandas.DataFrame` (pandas is the optional extra
  ``posinterp[frames]``): by default one row per entry of the result's main tensor with one column
  per named axis (from the jaxtyping annotation); results override it where another table is
  more natural.
"""

from __future__ import annotations

import dataclasses
import html as _html
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Result", "to_jsonable", "head_label", "atomic_write_text", "load_result", "result_types",
           "tensor_frame"]


def head_label(layer: int, head: int) -> str:
    """The project-wide head label, ``L{layer}H{head}`` (0-indexed)."""
    return f"L{layer}H{head}"


def to_jsonable(obj: Any, float_digits: int | None = 6, *, lenient: bool = False) -> Any:
    """Convert tensors, arrays, numpy scalars, dataclasses, paths and dtypes into JSON values.

    The one JSON conversion of the project (results, reports, probes, circuits). Floats are
    rounded to ``float_digits`` (``None``: kept exact); non-finite floats become ``None`` (JSON has
    no NaN/Inf); a :class:`Result` becomes its ``to_json()``; mappings become dicts with string
    keys, sequences and sets become lists.

    ``lenient=True`` (report data and metadata: anything a section returns) also uses the
    ``to_json()`` of any object that has one (before its dataclass fields), writes dtypes without
    the ``torch.`` prefix and turns any other unknown object into ``str(obj)``; without it an
    unknown object is returned unchanged (``json.dumps`` then names it).
    """
    return _to_jsonable(obj, float_digits, lenient)


def _fix_float(x, float_digits):
    if not math.isfinite(x):
        return None
    return round(x, float_digits) if float_digits is not None else x


def _to_jsonable(obj, float_digits, lenient):
    # module-level, unannotated, no nested defs: runtime type checkers (the test suite's jaxtyping
    # import hook) would otherwise wrap a fresh closure on every recursive call (20 s for a SinkResult)
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, Result):
        return _to_jsonable(obj.to_json(), float_digits, lenient) if lenient else obj.to_json()
    if lenient and not isinstance(obj, type) and callable(getattr(obj, "to_json", None)):
        return _to_jsonable(obj.to_json(), float_digits, lenient)
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        if obj.dtype in (torch.bfloat16, torch.float16):
            obj = obj.float()
        obj = obj.numpy()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "O":
            return _to_jsonable(obj.tolist(), float_digits, lenient)
        if obj.dtype.kind == "f":
            flat = [_fix_float(v, float_digits) for v in obj.reshape(-1).tolist()]
            return np.array(flat, dtype=object).reshape(obj.shape).tolist() if obj.ndim else flat[0]
        return obj.tolist()
    if isinstance(obj, (np.floating, float)):
        return _fix_float(float(obj), float_digits)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj) if lenient else obj
    if isinstance(obj, Mapping):
        return {str(k): _to_jsonable(v, float_digits, lenient) for k, v in obj.items()}
    if isinstance(obj, (Sequence, set, frozenset)) and not isinstance(obj, (bytes, bytearray)):
        return [_to_jsonable(v, float_digits, lenient) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_jsonable(getattr(obj, f.name), float_digits, lenient) for f in dataclasses.fields(obj)}
    if isinstance(obj, torch.dtype):
        return str(obj).replace("torch.", "") if lenient else str(obj)
    if isinstance(obj, (Path, torch.device)):
        return str(obj)
    if isinstance(obj, np.generic):
        return _to_jsonable(obj.item(), float_digits, lenient)
    return str(obj) if lenient else obj


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a flushed and fsynced temporary file in the same directory
    and ``os.replace``: a reader sees the old file or the complete new one, never a half-written
    one, and the data is on disk when the call returns.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; a result is a normal readable file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


_REGISTRY: dict[str, type] = {}
_REPR_LIMIT = 1000


def result_types() -> dict[str, type]:
    """Every :class:`Result` subclass defined so far, by class name (the ``"type"`` of its JSON).

    Importing a module defines its results; :func:`load_result` imports the analysis modules
    first, so every built-in result type is known there."""
    return dict(_REGISTRY)


def _import_all_results() -> None:
    import importlib

    for mod in ("interp.sinks", "interp.heads", "interp.scan", "interp.neurons", "interp._active_dormant", "interp.schema",
                "interp.rope.ablation", "interp.rope.usage", "interp.rope.precision", "interp.rope.bounds",
                "probes.results", "circuits.graph", "circuits.circuit", "circuits.faithfulness",
                "circuits.curves", "circuits.stores", "circuits.stability", "interp.atlas.result"):
        try:
            importlib.import_module(mod)
        except ImportError:  # pragma: no cover - optional parts of the package
            pass


def load_result(data: dict[str, Any] | str | os.PathLike[str]) -> "Result":
    """Rebuild any result from what its ``to_json()`` wrote (a dict, a JSON string or a file path):
    the ``"type"`` key picks the class, then ``cls.from_json`` decodes it."""
    d = _read_json_arg(data)
    name = d.get("type") if isinstance(d, dict) else None
    name = name.split(".")[-1] if isinstance(name, str) else name  # "probes.SweepResult"
    if name not in _REGISTRY:
        _import_all_results()
    if name not in _REGISTRY:
        raise ValueError(f"unknown result type {name!r} in JSON; known: {sorted(_REGISTRY)} "
                         "(pass the output of a result's to_json())")
    return _REGISTRY[name].from_json(d)


def _read_json_arg(data: Any) -> Any:
    if isinstance(data, (str, os.PathLike)):
        text = str(data)
        if isinstance(data, str) and text.lstrip().startswith("{"):
            return json.loads(text)
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (pass a dict, a JSON string or a JSON file)")
        return json.loads(path.read_text(encoding="utf-8"))
    return data


# ---------------------------------------------------------------------------------- decoding
def _is_tensor_type(tp: Any) -> bool:
    if tp is torch.Tensor:
        return True
    return getattr(tp, "array_type", None) is torch.Tensor


def _tensor_dtype(tp: Any, value: Any) -> torch.dtype:
    kind = getattr(getattr(tp, "dtype", None), "__name__", "")
    if kind == "Bool":
        return torch.bool
    if kind in ("Int", "Integer", "UInt", "Shaped") and kind != "Shaped":
        return torch.long
    return torch.float32


def _decode_tensor(tp: Any, value: Any) -> torch.Tensor:
    dt = _tensor_dtype(tp, value)
    if dt == torch.bool:
        return torch.as_tensor(np.asarray(value, dtype=bool))
    if dt == torch.long:
        return torch.as_tensor(np.asarray(value, dtype=np.int64))
    return torch.as_tensor(np.asarray(value, dtype=np.float32))  # None (JSON for NaN) -> nan


def _decode(tp: Any, value: Any) -> Any:
    """Decode a JSON value into an instance of the annotation ``tp`` (best effort, recursive)."""
    if value is None:
        if tp is float:
            return float("nan")
        return None
    if tp is Any or tp is None:
        if isinstance(value, dict) and value.get("type") in _REGISTRY:
            return _REGISTRY[value["type"]].from_json(value)
        return value
    if _is_tensor_type(tp):
        return _decode_tensor(tp, value)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        for a in non_none:  # tensors and results first, then containers, then scalars
            if _is_tensor_type(a) and isinstance(value, list):
                return _decode_tensor(a, value)
            if isinstance(a, type) and issubclass(a, Result) and isinstance(value, dict):
                return a.from_json(value)
        for a in non_none:
            try:
                return _decode(a, value)
            except (TypeError, ValueError):
                continue
        return value
    if isinstance(tp, type) and issubclass(tp, Result):
        return tp.from_json(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _decode(hints.get(f.name, Any), value[f.name])
                     for f in dataclasses.fields(tp) if f.init and f.name in value})
    if origin is list:
        (a,) = args or (Any,)
        return [_decode(a, v) for v in value]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        if args:
            return tuple(_decode(a, v) for a, v in zip(args, value))
        return tuple(value)
    if origin is dict:
        ka, va = args or (Any, Any)
        return {_decode_key(ka, k): _decode(va, v) for k, v in value.items()}
    if tp is float:
        return float(value)
    if tp is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{value} is not an int")
        return int(value)
    if tp is bool:
        return bool(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{value!r} is not a str")
        return value
    if tp is torch.dtype and isinstance(value, str):
        return getattr(torch, value.replace("torch.", ""))
    return value


def _decode_key(tp: Any, k: str) -> Any:
    if tp is int:
        return int(k)
    if tp is float:
        return float(k)
    return k


# ---------------------------------------------------------------------------------- equality
def values_equal(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """Field equality used by :meth:`Result.equals`: tensors by shape and ``allclose`` (NaN == NaN),
    results by their own ``equals``, containers element-wise, floats within ``rtol``/``atol``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if tuple(a.shape) != tuple(b.shape):
            return False
        if (a.dtype == torch.bool) != (b.dtype == torch.bool):
            return False
        if a.dtype == torch.bool:
            return bool(torch.equal(a.cpu(), b.cpu()))
        return bool(torch.allclose(a.detach().cpu().double(), b.detach().cpu().double(), rtol=rtol, atol=atol,
                                   equal_nan=True))
    if isinstance(a, Result) or isinstance(b, Result):
        return type(a) is type(b) and a.equals(b, rtol=rtol, atol=atol)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            values_equal(getattr(a, f.name), getattr(b, f.name), rtol, atol) for f in dataclasses.fields(a))
    if isinstance(a, dict):
        if not isinstance(b, dict):
            return False
        ka, kb = {str(k): k for k in a}, {str(k): k for k in b}
        return ka.keys() == kb.keys() and all(values_equal(a[ka[k]], b[kb[k]], rtol, atol) for k in ka)
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(values_equal(x, y, rtol, atol) for x, y in zip(a, b)))
    if isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating)):
        if a is None or b is None:  # NaN written as null and read back as None
            other = b if a is None else a
            return isinstance(other, (float, np.floating)) and not math.isfinite(float(other))
        try:
            fa, fb = float(a), float(b)
        except (TypeError, ValueError):
            return False
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        if math.isinf(fa) or math.isinf(fb):  # JSON has no inf: it comes back as NaN
            return fa == fb or math.isnan(fb) or math.isnan(fa)
        return abs(fa - fb) <= atol + rtol * abs(fb)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return values_equal(torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b)), rtol, atol)
    return bool(a == b)


# ---------------------------------------------------------------------------------- summaries
def _short(v: Any, width: int = 60) -> str:
    """One short string for a field value: tensors as shapes, containers as sizes."""
    if isinstance(v, torch.Tensor):
        dt = str(v.dtype).replace("torch.", "")
        return f"{dt}{list(v.shape)}"
    if isinstance(v, Result):
        return f"<{type(v).__name__}>"
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, str):
        return repr(v if len(v) <= width else v[: width - 1] + "…")
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v) and len(v) <= 6:
            items = [f"{x:.4g}" if isinstance(x, float) else repr(x) for x in v]
            r = ("[" + ", ".join(items) + "]") if isinstance(v, list) else ("(" + ", ".join(items) + ")")
            if len(r) <= width:
                return r
        return f"{type(v).__name__}[{len(v)}]"
    if isinstance(v, dict):
        keys = list(v)[:4]
        more = ", …" if len(v) > 4 else ""
        r = "{" + ", ".join(str(k) for k in keys) + more + "}"
        return r if len(r) <= width else f"dict[{len(v)}]"
    return type(v).__name__


def _fmt_top(entry: Any) -> str:
    """One top entry as a short string (tuples like ("L3H2", 0.91), dicts, Edge tuples …)."""
    if isinstance(entry, tuple) and hasattr(entry, "_fields"):  # NamedTuple
        d = entry._asdict()
        if "score" in d and "sender" in d:
            where = d.get("pos", "")
            return f"{d['sender']}→{d['receiver']}@{where}={d['score']:.3g}"
        return ", ".join(f"{k}={_short(v, 20)}" for k, v in d.items())
    if isinstance(entry, (tuple, list)) and entry:
        head = entry[0]
        rest = [f"{x:.3g}" if isinstance(x, float) else str(x) for x in entry[1:]]
        return f"{head}=" + "/".join(rest) if rest else str(head)
    if isinstance(entry, dict):
        if "sender" in entry and "score" in entry:
            where = entry.get("position", entry.get("qpos", ""))
            return f"{entry['sender']}→{entry['receiver']}@{where}={float(entry['score']):.3g}"
        items = list(entry.items())[:4]
        return "{" + ", ".join(f"{k}: {_short(v, 16)}" for k, v in items) + "}"
    return _short(entry, 30)


def tensor_frame(tensor: Any, axes: list[str] | str, labels: dict[str, list[Any]] | None = None,
                 value: str = "value", **constants: Any) -> Any:
    """A tidy (long) :class:`pandas.DataFrame` of a tensor: one row per entry, one column per axis
    (integer index, or the label from ``labels[axis]``), the entry in column ``value``, plus
    constant columns (``model=...``). Axis names ``layer`` and ``head`` also add ``"L{l}H{h}"`` in
    column ``head_label``."""
    pd = require_pandas()
    t = tensor.detach().cpu() if isinstance(tensor, torch.Tensor) else torch.as_tensor(np.asarray(tensor))
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    axes = axes.split() if isinstance(axes, str) else list(axes)
    if len(axes) != t.ndim:
        raise ValueError(f"{len(axes)} axis names {axes} for a {t.ndim}-d tensor of shape {list(t.shape)}")
    labels = labels or {}
    cols: dict[str, Any] = {}
    grids = np.meshgrid(*[np.arange(n) for n in t.shape], indexing="ij") if t.ndim else []
    for ax, g in zip(axes, grids):
        idx = g.reshape(-1)
        lab = labels.get(ax)
        cols[ax] = np.asarray(lab, dtype=object)[idx] if lab is not None and len(lab) == t.shape[axes.index(ax)] else idx
    if "layer" in cols and "head" in cols and "layer" not in labels and "head" not in labels:
        cols["head_label"] = [head_label(int(a), int(b)) for a, b in zip(cols["layer"], cols["head"])]
    cols[value] = t.numpy().reshape(-1)
    df = pd.DataFrame(cols)
    for k, v in constants.items():
        df[k] = v
    return df


def require_pandas() -> Any:
    """pandas (the optional `frames` extra), or an ImportError saying how to install it."""
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_frame() needs pandas: pip install 'posinterp[frames]' (or pandas>=2)") from e
    return pd


@dataclasses.dataclass
class Result:
    """Mixin for result dataclasses: JSON export with metadata (see the module docstring for what
    every subclass gets: ``from_json``, ``==``, ``__repr__``, ``_repr_html_``, ``to_frame``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls
        # put the generic methods in the subclass's own namespace so that @dataclass (which only
        # adds __repr__/__eq__ when the class body does not define them) keeps them
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = Result.__repr__  # type: ignore[method-assign]
        if "__eq__" not in cls.__dict__:
            cls.__eq__ = Result.__eq__  # type: ignore[method-assign]

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """All fields as JSON-serialisable values, plus ``"type"``: the class name."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in dataclasses.fields(self):
            if f.metadata.get("json", True):
                out[f.name] = to_jsonable(getattr(self, f.name))
        return out

    def save_json(self, path: str | os.PathLike[str], **dumps_kwargs: Any) -> Path:
        """Write :meth:`to_json` to ``path`` atomically."""
        return atomic_write_text(path, json.dumps(self.to_json(), **dumps_kwargs))

    @classmethod
    def from_json(cls, data: dict[str, Any] | str | os.PathLike[str]) -> Any:
        """Rebuild the result from what :meth:`to_json` wrote (a dict, a JSON string or a path).

        Fields are decoded from their annotations; keys that are not fields (derived summaries
        such as ``sink_rate``) are ignored; a field that ``to_json`` leaves out takes its default.
        """
        d = _read_json_arg(data)
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}.from_json needs a JSON object, got {type(d).__name__}")
        if str(d.get("type", cls.__name__)).split(".")[-1] != cls.__name__:
            raise ValueError(f"JSON of a {d.get('type')!r}, not a {cls.__name__}; use "
                             "interp.results.load_result to dispatch on the type")
        d = cls._json_fields(dict(d))
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        missing = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.name in d:
                kwargs[f.name] = _decode(hints.get(f.name, Any), d[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                missing.append(f.name)
        if missing:
            raise ValueError(f"{cls.__name__} JSON lacks the field(s) {missing}; was it written by "
                             f"{cls.__name__}.to_json()?")
        return cls(**kwargs)

    @classmethod
    def _json_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Hook for :meth:`from_json`: turn a JSON dict into field values (default: as is)."""
        return d

    # ------------------------------------------------------------------ equality
    def equals(self, other: Any, *, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
        """Same type and every compared field equal (tensors: same shape, ``allclose`` with NaN
        == NaN). Fields declared with ``compare=False`` (caches, back-references) are skipped."""
        if type(other) is not type(self):
            return False
        return all(values_equal(getattr(self, f.name), getattr(other, f.name), rtol, atol)
                   for f in dataclasses.fields(self) if f.compare)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.equals(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, tensor-valued

    # ------------------------------------------------------------------ display
    def _recorded(self, key: str) -> Any:
        """A field (``model``, ``prepend_bos`` …) of the result, else of its ``meta`` (or the
        graph metadata kept in it), else of a nested result; ``None`` when not recorded."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if fields.get(key) is not None:
            return fields[key]
        meta = fields.get("meta") if isinstance(fields.get("meta"), dict) else {}
        gm = meta.get("graph_meta") if isinstance(meta.get("graph_meta"), dict) else {}
        for src in (meta, gm):
            if src.get(key) is not None:
                return src[key]
        for v in fields.values():
            if isinstance(v, Result):
                got = v._recorded(key)
                if got is not None:
                    return got
        return None

    def _summary(self) -> dict[str, str]:
        """Field name → short description (model and BOS policy first)."""
        out: dict[str, str] = {}
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        model = self._recorded("model")
        if model is not None:
            out["model"] = _short(model)
        bos = self._recorded("prepend_bos")
        out["prepend_bos"] = _short(bos) if bos is not None else "not recorded"
        for name, v in fields.items():
            if name in ("model", "prepend_bos") or name in out:
                continue
            out[name] = _short(v)
        return out

    def _top_entries(self, n: int = 3) -> list[Any]:
        top = getattr(self, "top", None)
        if not callable(top):
            return []
        try:
            return list(top(n))[:n]
        except Exception:  # a result whose ranking needs data it does not have
            return []

    def __repr__(self) -> str:
        parts = [f"{k}={v}" for k, v in self._summary().items()]
        top = self._top_entries(3)
        if top:
            parts.append("top: " + "; ".join(_fmt_top(e) for e in top))
        text = f"{type(self).__name__}(" + ", ".join(parts) + ")"
        if len(text) > _REPR_LIMIT:
            text = text[: _REPR_LIMIT - 2] + "…)"
        return text

    def _main_figure(self) -> Any:
        plot = getattr(self, "plot", None)
        if not callable(plot):
            return None
        fig = plot()
        if isinstance(fig, dict):
            fig = next(iter(fig.values()), None)
        return fig

    def _repr_html_(self) -> str:
        """Notebook display: a summary table, the top entries and the main figure (plotly, loading
        plotly.js from its CDN)."""
        esc = _html.escape
        rows = "".join(f"<tr><th style='text-align:left'>{esc(k)}</th><td style='text-align:left'>"
                       f"<code>{esc(v)}</code></td></tr>" for k, v in self._summary().items())
        parts = [f"<div class='interp-result'><b>{esc(type(self).__name__)}</b>",
                 f"<table>{rows}</table>"]
        top = self._top_entries(5)
        if top:
            parts.append("<p><b>top</b>: " + "; ".join(esc(_fmt_top(e)) for e in top) + "</p>")
        try:
            fig = self._main_figure()
        except Exception as e:  # the summary must render even when the figure cannot
            parts.append(f"<p><i>no figure: {esc(type(e).__name__)}: {esc(str(e)[:200])}</i></p>")
            fig = None
        if fig is not None and hasattr(fig, "to_html"):
            parts.append(fig.to_html(full_html=False, include_plotlyjs="cdn"))
        parts.append("</div>")
        return "\n".join(parts)

    # ------------------------------------------------------------------ tables
    def to_frame(self) -> Any:
        """A tidy :class:`pandas.DataFrame`. Default: the main tensor (the first tensor field with
        a jaxtyping annotation) in long form, one column per named axis, plus ``model`` and
        ``prepend_bos`` columns when the result records them."""
        hints = typing.get_type_hints(type(self))
        best = None  # the largest float tensor with named axes (ties: the first field)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            tp = hints.get(f.name)
            cands = [tp, *typing.get_args(tp)]
            ann = next((a for a in cands if getattr(a, "dim_str", None)), None)
            if isinstance(v, torch.Tensor) and ann is not None and v.is_floating_point():
                if best is None or v.numel() > best[1].numel():
                    best = (f.name, v, ann)
        if best is None:
            raise NotImplementedError(f"{type(self).__name__} has no tensor to tabulate; override to_frame")
        name, v, ann = best
        axes = [a.strip("*#_ ") or f"dim{i}" for i, a in enumerate(ann.dim_str.split())]
        if len(axes) != v.ndim:
            axes = [f"dim{i}" for i in range(v.ndim)]
        return tensor_frame(v, axes, self._frame_labels(axes), value=name, **self._frame_constants())

    def _frame_labels(self, axes: list[str]) -> dict[str, list[Any]]:
        """Labels of named axes: the list attribute ``{axis}_names`` or ``{axis}s`` when there is one
        (``score`` → ``score_names``, ``condition`` → ``conditions``, ``dtype`` → ``dtypes`` …)."""
        out: dict[str, list[Any]] = {}
        for ax in axes:
            for attr in (f"{ax}_names", f"{ax}s"):
                v = getattr(self, attr, None)
                if isinstance(v, (list, tuple)):
                    out[ax] = list(v)
                    break
        return out

    def _bos_model(self) -> str:
        """``model=…, prepend_bos=…`` from the summary (for hand-written ``__repr__`` s)."""
        s = self._summary()
        return f"model={s.get('model', 'unknown')}, prepend_bos={s['prepend_bos']}"

    def _frame_constants(self) -> dict[str, Any]:
        return {name: self._recorded(name) for name in ("model", "prepend_bos")}
