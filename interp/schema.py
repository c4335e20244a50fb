"""Dataset schemas: named spans that give prompts of different lengths a shared position structure.

A *schema* (Haklay et al., "Position-aware Automatic Circuit Discovery", ACL 2025; see
arXiv:2502.04577) is an ordered list of spans that covers every token of every
prompt. Span ``s`` of example ``x`` is a half-open token range ``[start, end)`` in the prompt's own
token coordinates (BOS included when prepended). The abstract position of a span stands for all of
its tokens; e.g. a span score is ``g_S = (1/|D|) Σ_x Σ_{t ∈ s(x)} g_x(t)``.

Two ways to build one:

* :meth:`Schema.from_template` — ``"When {IO} and {S1} went to the {PLACE}, {S2} gave a drink to"``:
  every slot and every piece of literal text between slots is a span, in order. Literal spans are
  named after their text (stripped; ``"When"``, ``"and"``, ``"went to the"``, ``","``, ...), or by
  ``literal_names``. A prompt is matched against the template with a regular expression (slots are
  non-empty, shortest match first; a slot used twice must hold the same text both times).
* :meth:`Schema.from_char_spans` — explicit ``(start, end)`` character ranges per prompt.

**Character → token rule.** Characters map to tokens through the tokenizer's offset mapping
(SmolLM2's and Gemma's tokenizers are fast tokenizers with offsets). A token belongs to the span
that contains its *first non-whitespace character* (its first character if it is all whitespace).
So the byte-level token ``" Mary"`` (characters ``" Mary"``) belongs to the slot holding ``"Mary"``,
not to the literal ``" and "`` before it. BOS (when prepended) is always its own span ``"BOS"``,
the first one. A span that receives no token (e.g. a literal ``" "`` whose space merged into the
next word's token), a token that falls in no span, or overlapping spans make that example *fail*:
:meth:`Schema.apply` reports every failing example with its reason and raises by default —
nothing is dropped silently.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import re
import string
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal, Mapping, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InterpError
from interp.results import Result
from interp.types import Model

__all__ = ["Schema", "SchemaSpans", "SchemaFailure", "SchemaError", "BOS_SPAN"]

BOS_SPAN = "BOS"


class SchemaError(InterpError, ValueError):
    """A schema that does not fit one or more prompts (the message lists each one and why)."""


@dataclass(frozen=True)
class SchemaFailure:
    """One example that does not fit the schema."""

    index: int
    prompt: str
    reason: str

    def __str__(self) -> str:
        p = self.prompt if len(self.prompt) <= 80 else self.prompt[:77] + "..."
        return f"example {self.index} ({p!r}): {self.reason}"


# ----------------------------------------------------------------------------------------------
# The schema
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    kind: Literal["slot", "literal"]
    text: str  # slot name or literal text
    name: str  # span name


def _literal_name(text: str) -> str:
    name = " ".join(text.split())
    return name if name else "ws"


def _dedupe(names: list[str], reserved: set[str]) -> list[str]:
    out: list[str] = []
    seen = set(reserved)
    for n in names:
        cand, k = n, 2
        while cand in seen:
            cand = f"{n}.{k}"
            k += 1
        seen.add(cand)
        out.append(cand)
    return out


@dataclass(frozen=True)
class Schema:
    """An ordered list of named spans (see the module docstring for the rules).

    Build with :meth:`from_template`, :meth:`from_char_spans` or :meth:`single`; map prompts to
    token spans with :meth:`apply`.
    """

    names: tuple[str, ...]
    kind: Literal["template", "char_spans"]
    template: str | None = None
    parts: tuple[_Part, ...] = ()
    slot_patterns: tuple[tuple[str, str], ...] = ()
    char_spans: tuple[tuple[tuple[int, int], ...], ...] | None = None
    prompts: tuple[str, ...] | None = None

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def from_template(
        cls,
        template: str,
        *,
        literal_names: Sequence[str] | None = None,
        slot_patterns: Mapping[str, str] | None = None,
    ) -> "Schema":
        """Schema whose spans are the template's slots and the literal text between them.

        Args:
            template: text with ``{SLOT}`` placeholders (``{{``/``}}`` for literal braces).
            literal_names: names for the literal spans, in order (default: their stripped text).
            slot_patterns: optional regular expression per slot (default ``.+?``, non-empty).

        Example::

            Schema.from_template("When {IO} and {S1} went to the {PLACE}, {S2} gave a drink to")
            # spans: When, IO, and, S1, went to the, PLACE, ",", S2, gave a drink to
        """
        if not isinstance(template, str) or not template:
            raise SchemaError("The template is empty: give a string such as 'When {IO} and {S1} ...'.")
        raw: list[tuple[str, str]] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as e:
            raise SchemaError(f"Cannot parse template {template!r}: {e}. Write literal braces as '{{{{' and '}}}}'.") from e
        for literal, fname, spec, conv in parsed:
            if literal:
                raw.append(("literal", literal))
            if fname is not None:
                if fname == "" or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", fname):
                    raise SchemaError(f"Template slot {{{fname}}} is not a valid name: use identifiers like {{IO}}.")
                if spec or conv:
                    raise SchemaError(f"Template slot {{{fname}}} has a format spec or conversion; use a plain {{{fname}}}.")
                if raw and raw[-1][0] == "slot":
                    raise SchemaError(
                        f"Slots {{{raw[-1][1]}}} and {{{fname}}} are adjacent: the boundary between them is "
                        "ambiguous. Put literal text between them or merge them into one slot.")
                raw.append(("slot", fname))
        slots = [t for k, t in raw if k == "slot"]
        patterns = dict(slot_patterns or {})
        unknown = set(patterns) - set(slots)
        if unknown:
            raise SchemaError(f"slot_patterns names slots not in the template: {sorted(unknown)}; slots are {slots}.")
        n_lit = sum(k == "literal" for k, _ in raw)
        if literal_names is not None:
            literal_names = list(literal_names)
            if len(literal_names) != n_lit:
                raise SchemaError(f"literal_names has {len(literal_names)} names but the template has {n_lit} literal spans.")
        lit_iter = iter(literal_names) if literal_names is not None else None
        base: list[str] = []
        for k, t in raw:
            if k == "slot":
                base.append(t)
            else:
                base.append(next(lit_iter) if lit_iter is not None else _literal_name(t))
        # slots keep their names (a repeated slot gets a suffix); literals yield to slots
        names = _dedupe(base, {BOS_SPAN})
        parts = tuple(_Part(k, t, n) for (k, t), n in zip(raw, names))
        return cls(names=tuple(names), kind="template", template=template, parts=parts,
                   slot_patterns=tuple(sorted(patterns.items())))

    @classmethod
    def single(cls, name: str = "prompt") -> "Schema":
        """The one-span schema (plus BOS): the non-positional baseline."""
        return cls.from_template("{" + name + "}")

    @classmethod
    def from_char_spans(
        cls,
        names: Sequence[str],
        char_spans: Sequence[Sequence[tuple[int, int]] | Mapping[str, tuple[int, int]]],
        *,
        prompts: Sequence[str] | None = None,
    ) -> "Schema":
        """Schema from explicit character spans, one entry per prompt.

        Args:
            names: span names in order (``"BOS"`` is reserved).
            char_spans: per prompt, a ``(start, end)`` character range per span — a list in
                ``names`` order or a dict ``name -> (start, end)``. Ranges are half-open, in
                order, non-overlapping; characters between ranges are allowed as long as no
                token's first non-space character falls there.
            prompts: the prompts the spans were written for; when given, :meth:`apply` checks
                that it receives the same prompts.
        """
        names = tuple(names)
        if not names:
            raise SchemaError("from_char_spans needs at least one span name.")
        if len(set(names)) != len(names):
            raise SchemaError(f"Span names must be unique, got {list(names)}.")
        if BOS_SPAN in names:
            raise SchemaError(f"{BOS_SPAN!r} is reserved for the BOS token's own span; rename that span.")
        rows: list[tuple[tuple[int, int], ...]] = []
        for i, row in enumerate(char_spans):
            if isinstance(row, Mapping):
                missing = [n for n in names if n not in row]
                extra = [n for n in row if n not in names]
                if missing or extra:
                    raise SchemaError(f"char_spans[{i}] must give exactly the spans {list(names)}; "
                                      f"missing {missing}, unknown {extra}.")
                row = [row[n] for n in names]
            row = [tuple(int(v) for v in r) for r in row]
            if len(row) != len(names) or any(len(r) != 2 for r in row):
                raise SchemaError(f"char_spans[{i}] must hold {len(names)} (start, end) pairs, got {row}.")
            rows.append(tuple(row))  # type: ignore[arg-type]
        if not rows:
            raise SchemaError("char_spans is empty: give the spans of at least one prompt.")
        if prompts is not None:
            prompts = tuple(prompts)
            if len(prompts) != len(rows):
                raise SchemaError(f"{len(prompts)} prompts but {len(rows)} rows of char_spans: give one row per prompt.")
        return cls(names=names, kind="char_spans", char_spans=tuple(rows), prompts=prompts)

    # -- template helpers ----------------------------------------------------------------------

    @property
    def slots(self) -> tuple[str, ...]:
        """Distinct slot names of a template schema, in order of first use."""
        return tuple(dict.fromkeys(p.text for p in self.parts if p.kind == "slot"))

    def render(self, **values: str) -> str:
        """Fill the template's slots: ``schema.render(IO="Mary", S1="John", ...)``."""
        if self.kind != "template":
            raise SchemaError("render() needs a template schema (built with Schema.from_template).")
        missing = [s for s in self.slots if s not in values]
        extra = [k for k in values if k not in self.slots]
        if missing or extra:
            raise SchemaError(f"render() needs exactly the slots {list(self.slots)}; missing {missing}, unknown {extra}.")
        return "".join(values[p.text] if p.kind == "slot" else p.text for p in self.parts)

    def render_all(self, rows: Sequence[Mapping[str, str]]) -> list[str]:
        """``[render(**row) for row in rows]``."""
        return [self.render(**dict(r)) for r in rows]

    def _regex(self, n_parts: int | None = None) -> re.Pattern[str]:
        pats = dict(self.slot_patterns)
        first: dict[str, int] = {}
        out = []
        for i, p in enumerate(self.parts[:n_parts]):
            if p.kind == "literal":
                out.append(f"(?P<g{i}>{re.escape(p.text)})")
            elif p.text in first:
                out.append(f"(?P<g{i}>(?P=g{first[p.text]}))")
            else:
                first[p.text] = i
                out.append(f"(?P<g{i}>{pats.get(p.text, '.+?')})")
        return re.compile("".join(out), re.DOTALL)

    def _match(self, prompt: str) -> list[tuple[int, int]] | str:
        """Character spans of ``prompt`` under the template, or the reason it does not match."""
        m = self._regex().fullmatch(prompt)
        if m is not None:
            return [m.span(f"g{i}") for i in range(len(self.parts))]
        # find how far the template matches, to say where it breaks
        for k in range(len(self.parts) - 1, 0, -1):
            mk = self._regex(k).match(prompt)
            if mk is not None:
                nxt = self.parts[k]
                want = f"slot {{{nxt.text}}}" if nxt.kind == "slot" else f"literal {nxt.text!r}"
                got = prompt[mk.end(): mk.end() + 30]
                return (f"does not match the template: matches up to span {self.parts[k - 1].name!r} "
                        f"(character {mk.end()}), then expected {want} but found {got!r}")
        p0 = self.parts[0]
        want = f"literal {p0.text!r}" if p0.kind == "literal" else f"slot {{{p0.text}}}"
        return f"does not match the template: it does not start with {want}"

    # -- application -----------------------------------------------------------------------------

    def char_spans_for(self, prompts: Sequence[str]) -> list[list[tuple[int, int]] | str]:
        """Per prompt, the character span of each schema span, or the reason it fails."""
        out: list[list[tuple[int, int]] | str] = []
        if self.kind == "template":
            return [self._match(p) for p in prompts]
        assert self.char_spans is not None
        if len(prompts) != len(self.char_spans):
            raise SchemaError(f"The schema holds character spans for {len(self.char_spans)} prompts but "
                              f"{len(prompts)} were given: apply it to the prompts it was built for.")
        for i, (p, row) in enumerate(zip(prompts, self.char_spans)):
            if self.prompts is not None and p != self.prompts[i]:
                out.append(f"is not the prompt the character spans were written for ({self.prompts[i]!r})")
                continue
            bad = None
            prev_end = 0
            for name, (s, e) in zip(self.names, row):
                if not (0 <= s <= e <= len(p)):
                    bad = f"span {name!r} = ({s}, {e}) lies outside the prompt's {len(p)} characters"
                    break
                if s < prev_end:
                    bad = f"span {name!r} = ({s}, {e}) overlaps or precedes the span before it (ends at {prev_end})"
                    break
                prev_end = e
            out.append(bad if bad is not None else list(row))
        return out

    def apply(
        self,
        prompts: Any,
        model: Model = None,
        *,
        tokenizer: Any = None,
        prepend_bos: bool = True,
        strict: bool = True,
    ) -> "SchemaSpans":
        """Map every prompt to token spans.

        Args:
            prompts: a list of strings, or a :class:`interp.tokens.TokenBatch` (then its tokens,
                offsets and BOS policy are used and no model is needed).
            model: a TransformerBridge (for its tokenizer); or pass ``tokenizer=``.
            prepend_bos: BOS policy when tokenising strings (BOS becomes span ``"BOS"``).
            strict: raise :class:`SchemaError` listing every failing example (default). With
                ``strict=False`` the result carries ``ok=False`` and ``failures``; call
                :meth:`SchemaSpans.raise_for_failures` to raise later.

        Returns:
            :class:`SchemaSpans`: ``spans[example][span] = (start, end)`` token ranges.
        """
        from interp.tokens import TokenBatch, tokenize

        if isinstance(prompts, TokenBatch):
            batch = prompts
        else:
            if isinstance(prompts, str):
                prompts = [prompts]
            if model is None and tokenizer is None:
                raise SchemaError("Schema.apply needs the model (or tokenizer=) to tokenise the prompts, "
                                  "or a TokenBatch from interp.tokenize.")
            host = model if model is not None else SimpleNamespace(tokenizer=tokenizer, cfg=SimpleNamespace())
            batch = tokenize(host, list(prompts), prepend_bos=prepend_bos)
        texts = list(batch.prompts)
        chars = self.char_spans_for(texts)
        names = ((BOS_SPAN,) if batch.prepend_bos else ()) + self.names
        spans: list[list[tuple[int, int]] | None] = []
        failures: list[SchemaFailure] = []
        for i, (text, cs) in enumerate(zip(texts, chars)):
            if isinstance(cs, str):
                failures.append(SchemaFailure(i, text, cs))
                spans.append(None)
                continue
            res = _token_spans(text, batch.offsets[i], cs, self.names, batch.prepend_bos, batch.str_tokens[i])
            if isinstance(res, str):
                failures.append(SchemaFailure(i, text, res))
                spans.append(None)
            else:
                spans.append(res)
        out = SchemaSpans(
            names=list(names), spans=spans, lengths=list(batch.lengths), prepend_bos=batch.prepend_bos,
            prompts=texts, str_tokens=[list(s) for s in batch.str_tokens], failures=failures,
            schema=self.to_json(),
        )
        if strict:
            out.raise_for_failures()
        return out

    # -- serialisation ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON description (round-trips through :meth:`from_json`)."""
        return {
            "type": "Schema", "kind": self.kind, "names": list(self.names), "template": self.template,
            "parts": [dataclasses.asdict(p) for p in self.parts],
            "slot_patterns": dict(self.slot_patterns),
            "char_spans": [[list(s) for s in row] for row in self.char_spans] if self.char_spans is not None else None,
            "prompts": list(self.prompts) if self.prompts is not None else None,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Schema":
        return cls(
            names=tuple(d["names"]), kind=d["kind"], template=d.get("template"),
            parts=tuple(_Part(**p) for p in d.get("parts", ())),
            slot_patterns=tuple(sorted(dict(d.get("slot_patterns") or {}).items())),
            char_spans=(tuple(tuple(tuple(s) for s in row) for row in d["char_spans"])
                        if d.get("char_spans") is not None else None),
            prompts=tuple(d["prompts"]) if d.get("prompts") is not None else None,
        )

    def fingerprint(self) -> str:
        """SHA-256 of the JSON description (used in capture manifests)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def __repr__(self) -> str:
        if self.kind == "template":
            return f"Schema.from_template({self.template!r})  # spans: {list(self.names)}"
        return f"Schema.from_char_spans({list(self.names)}, <{len(self.char_spans or ())} prompts>)"


def _key_char(text: str, start: int, end: int) -> int:
    """The character deciding a token's span: its first non-whitespace character."""
    for c in range(start, end):
        if not text[c].isspace():
            return c
    return start


def _token_spans(
    text: str,
    offsets: Sequence[tuple[int, int]],
    char_spans: Sequence[tuple[int, int]],
    names: Sequence[str],
    prepend_bos: bool,
    str_tokens: Sequence[str],
) -> list[tuple[int, int]] | str:
    """Token spans ``[(start, end)]`` (BOS span first when prepended), or a failure reason."""
    first = 1 if prepend_bos else 0
    starts = [s for s, _ in char_spans]
    span_of: list[int] = []
    for t in range(first, len(offsets)):
        s, e = offsets[t]
        k = _key_char(text, s, e)
        j = bisect.bisect_right(starts, k) - 1  # the last span starting at or before k
        if j < 0 or not (char_spans[j][0] <= k < char_spans[j][1]):
            return (f"token {t} ({str_tokens[t]!r}, characters {s}-{e}) falls in no span "
                    f"(its first non-space character {k} is outside every span)")
        if span_of and j < span_of[-1]:
            return f"token {t} ({str_tokens[t]!r}) goes back to span {names[j]!r}: spans are not in order"
        span_of.append(j)
    out: list[tuple[int, int]] = [(0, 1)] if prepend_bos else []
    for j, name in enumerate(names):
        toks = [first + i for i, sj in enumerate(span_of) if sj == j]
        if not toks:
            s, e = char_spans[j]
            return (f"span {name!r} (characters {s}-{e}: {text[s:e]!r}) gets no token: under the rule 'a token "
                    "belongs to the span holding its first non-space character' its text is merged into a "
                    "neighbouring span's token. Merge it with a neighbour or change the template.")
        out.append((toks[0], toks[-1] + 1))
    return out


# ----------------------------------------------------------------------------------------------
# Result of Schema.apply
# ----------------------------------------------------------------------------------------------

Reduce = Literal["mean", "sum", "first", "last"]


@dataclass
class SchemaSpans(Result):
    """Token spans of every example under a schema (the result of :meth:`Schema.apply`).

    Attributes:
        names: span names (``"BOS"`` first when BOS is prepended).
        spans: ``spans[example][span] = (start, end)``, half-open token ranges in the example's
            own coordinates (BOS at 0 when prepended); ``None`` for an example that failed.
        lengths: tokens per example (BOS included).
        prepend_bos: the BOS policy.
        prompts, str_tokens: the inputs and their tokens.
        failures: every example that does not fit, with the reason.
        schema: the schema's JSON description.
    """

    names: list[str]
    spans: list[list[tuple[int, int]] | None]
    lengths: list[int]
    prepend_bos: bool
    prompts: list[str]
    str_tokens: list[list[str]]
    failures: list[SchemaFailure] = field(default_factory=list)
    schema: dict[str, Any] = field(default_factory=dict)

    # -- validation ----------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        """True when every example fits the schema."""
        return not self.failures

    @property
    def valid(self) -> list[int]:
        """Indices of the examples that fit."""
        return [i for i, s in enumerate(self.spans) if s is not None]

    def report(self) -> str:
        """Human-readable validation report."""
        if self.ok:
            return f"all {len(self.spans)} examples fit the schema ({len(self.names)} spans: {self.names})"
        lines = [f"{len(self.failures)} of {len(self.spans)} examples do not fit the schema:"]
        lines += [f"  - {f}" for f in self.failures]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`SchemaError` naming every failing example (no-op when all fit)."""
        if not self.ok:
            raise SchemaError(self.report() + "\nFix the prompts or the schema, or drop these examples "
                              "explicitly (e.g. spans.subset(spans.valid)).")

    def _need_ok(self) -> None:
        if not self.ok:
            raise SchemaError("Some examples do not fit the schema, so their spans are unknown:\n"
                              + self.report() + "\nUse spans.subset(spans.valid) to keep only those that fit.")

    def subset(self, indices: Sequence[int]) -> "SchemaSpans":
        """The spans of the given examples only (e.g. ``spans.subset(spans.valid)``)."""
        idx = list(indices)
        keep = set(idx)
        remap = {old: new for new, old in enumerate(idx)}
        return SchemaSpans(
            names=list(self.names), spans=[self.spans[i] for i in idx], lengths=[self.lengths[i] for i in idx],
            prepend_bos=self.prepend_bos, prompts=[self.prompts[i] for i in idx],
            str_tokens=[self.str_tokens[i] for i in idx],
            failures=[dataclasses.replace(f, index=remap[f.index]) for f in self.failures if f.index in keep],
            schema=self.schema)

    # -- accessors -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.spans)

    @property
    def n_spans(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Position of span ``name`` in :attr:`names`."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"No span named {name!r}; spans are {self.names}.") from None

    def span(self, example: int, name: str | int) -> tuple[int, int]:
        """``(start, end)`` token range of one span of one example."""
        self._need_ok()
        j = self.index(name) if isinstance(name, str) else name
        return self.spans[example][j]  # type: ignore[index]

    def span_lengths(self) -> Int[Tensor, "example span"]:
        """Number of tokens of every span of every example."""
        self._need_ok()
        return torch.tensor([[e - s for s, e in row] for row in self.spans], dtype=torch.long)  # type: ignore[union-attr]

    def token_span_ids(self, example: int) -> Int[Tensor, " pos"]:
        """Span id of every token of one example (own coordinates)."""
        row = self.spans[example]
        if row is None:
            raise SchemaError(f"Example {example} does not fit the schema: {self._reason(example)}")
        ids = torch.full((self.lengths[example],), -1, dtype=torch.long)
        for j, (s, e) in enumerate(row):
            ids[s:e] = j
        return ids

    def _reason(self, example: int) -> str:
        return next((f.reason for f in self.failures if f.index == example), "unknown")

    def span_index(self, padding_side: Literal["left", "right"] = "right", width: int | None = None) -> Int[Tensor, "batch pos"]:
        """Map from padded token position to span id (−1 on padding), matching ``interp.tokenize``'s layout."""
        self._need_ok()
        w = max(self.lengths) if width is None else width
        if w < max(self.lengths):
            raise ValueError(f"width={w} is shorter than the longest example ({max(self.lengths)} tokens).")
        out = torch.full((len(self.spans), w), -1, dtype=torch.long)
        for i in range(len(self.spans)):
            ids = self.token_span_ids(i)
            s = w - len(ids) if padding_side == "left" else 0
            out[i, s: s + len(ids)] = ids
        return out

    def span_tokens(self, example: int, name: str | int) -> list[str]:
        """The tokens (as strings) of one span of one example."""
        s, e = self.span(example, name)
        return self.str_tokens[example][s:e]

    def plot(self, max_examples: int = 8):
        """Tokens of the first examples coloured by span (hover shows token and span)."""
        import plotly.graph_objects as go

        self._need_ok()
        n = min(max_examples, len(self.spans))
        w = max(self.lengths[:n])
        z, text, hover = [], [], []
        for i in range(n):
            ids = self.token_span_ids(i).tolist()
            z.append(ids + [None] * (w - len(ids)))
            text.append(self.str_tokens[i] + [""] * (w - len(ids)))
            hover.append([f"{t!r} → {self.names[j]}" for t, j in zip(self.str_tokens[i], ids)] + [""] * (w - len(ids)))
        fig = go.Figure(go.Heatmap(z=z, text=text, texttemplate="%{text}", customdata=hover,
                                   hovertemplate="example %{y}, position %{x}<br>%{customdata}<extra></extra>",
                                   colorscale="Viridis", showscale=False))
        fig.update_layout(title=f"Schema spans ({self.n_spans} spans: {', '.join(self.names)})",
                          xaxis_title="token position (own coordinates)", yaxis_title="example",
                          yaxis_autorange="reversed", height=120 + 40 * n)
        return fig

    def to_frame(self) -> Any:
        """One row per (example, span): ``example``, ``span``, ``start``, ``end`` (half-open token
        range), ``text`` (the span's tokens joined); failed examples have no rows."""
        from interp.results import require_pandas

        rows = []
        for b, row in enumerate(self.spans):
            if row is None:
                continue
            for name, (s, e) in zip(self.names, row):
                rows.append(dict(example=b, span=name, start=int(s), end=int(e),
                                 text="".join(self.str_tokens[b][s:e]) if b < len(self.str_tokens) else ""))
        df = require_pandas().DataFrame(rows, columns=["example", "span", "start", "end", "text"])
        df["prepend_bos"] = self.prepend_bos
        return df

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        d["ok"] = self.ok
        d["failures"] = [dataclasses.asdict(f) for f in self.failures]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SchemaSpans":
        return cls(
            names=list(d["names"]),
            spans=[[tuple(s) for s in row] if row is not None else None for row in d["spans"]],
            lengths=list(d["lengths"]), prepend_bos=bool(d["prepend_bos"]), prompts=list(d["prompts"]),
            str_tokens=[list(s) for s in d["str_tokens"]],
            failures=[SchemaFailure(**f) for f in d.get("failures", [])], schema=dict(d.get("schema") or {}))
