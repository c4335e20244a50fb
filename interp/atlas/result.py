"""The :class:`Atlas` result: one card per head, one card per circuit edge, the causal checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor

from interp.results import Result

__all__ = ["Atlas", "CausalCheck"]


@dataclass
class CausalCheck(Result):
    """One intervention on one head, measured next to what the atlas predicts.

    ``kind``: ``"band_ablation"`` (unrotate a band of rotary chunks for the head alone; under GQA
    the key side is shared, so ``heads`` lists every query head of the KV group that was
    touched) or ``"sink_removal"`` (the head's attention to the sink position set to 0 and the
    row renormalised). ``measured``/``predicted``: ``{quantity: value}``; ``tolerance``: the
    largest |measured − predicted| counted as agreement; ``agrees``: per predicted quantity.
    """

    head: str
    kind: str
    band: str
    heads: list[str]
    measured: dict[str, float]
    predicted: dict[str, float]
    tolerance: float
    agrees: dict[str, bool]
    note: str = ""

    def to_frame(self) -> Any:
        """One row per measured quantity: ``quantity``, ``measured``, ``predicted`` (NaN when the
        atlas makes no prediction), ``agrees``, plus the head, kind and band."""
        from interp.results import require_pandas

        rows = [{"head": self.head, "kind": self.kind, "band": self.band, "quantity": k,
                 "measured": v, "predicted": self.predicted.get(k, float("nan")),
                 "agrees": self.agrees.get(k), "tolerance": self.tolerance} for k, v in self.measured.items()]
        return require_pandas().DataFrame(rows)

    def plot(self) -> go.Figure:
        keys = list(self.measured)
        fig = go.Figure()
        fig.add_bar(x=keys, y=[self.measured[k] for k in keys], name="measured")
        pk = [k for k in keys if k in self.predicted]
        if pk:
            fig.add_bar(x=pk, y=[self.predicted[k] for k in pk], name="predicted",
                        error_y=dict(type="constant", value=self.tolerance))
        fig.update_layout(title=f"{self.head}: {self.kind} ({self.band})", barmode="group")
        return fig


@dataclass
class Atlas(Result):
    """Every head of a model explained on one prompt set, joined with a circuit.

    Attributes:
        model, prepend_bos: the model and the BOS policy of every analysis.
        task: name, number of examples, metric, ablation, granularity, method, domains.
        heads: one card per head (``"L{l}H{h}"`` → dict): ``label`` (the role; ``"inert"`` for a
            head whose output weights are exactly zero), ``pattern_label`` (what
            :func:`interp.heads.positional_heads` says from the attention pattern alone),
            ``tags`` (``positional``, ``positional-high-frequency``, ``sink``, ``drain``,
            ``inert``, ``in-circuit``), ``scores`` (role scores and controls), ``alpha0``
            (attention to the sink position), ``alpha_curve`` (mean attention to each key
            position), ``drain_ratio``, ``q_norm``/``k_norm`` (frequency profile),
            ``high_share`` (share of Σ‖q⁽ᵏ⁾‖‖k⁽ᵏ⁾‖ in the highest quarter of chunks),
            ``margin_by_chunk``/``high_margin_share`` (positional heads: chunk decomposition of
            the attention-logit margin of its offset), ``node_score``, ``edges`` (indices into
            :attr:`edges`), ``domains`` (per-domain role and active/dormant status), ``checks``
            (indices into :attr:`checks`), ``pattern`` (attention on one example).
        edges: one card per circuit edge that touches a head: sender, receiver, positions,
            kind, score, ``composition`` (Q/K/V-composition, direct, …), for crossing edges the
            chunk decomposition of the head's logit margin at those query/key pairs
            (``band_shares``, ``band``), ``key_is_sink``, ``key_massive``.
        checks: :class:`CausalCheck` as dicts.
        probes: per layer, position-probe score, control score, selectivity, decodable.
        role_scores: ``[layer head score]`` (``score_names``); alpha0, drain, high_share,
            node_score: ``[layer head]``.
        circuit: the circuit (``circuits.Circuit.to_json()``), ``faithfulness``: its f.
    """

    model: str
    prepend_bos: bool
    task: dict[str, Any]
    heads: dict[str, dict[str, Any]]
    edges: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    probes: list[dict[str, Any]]
    score_names: list[str]
    role_scores: Float[Tensor, "layer head score"]
    alpha0: Float[Tensor, "layer head"]
    drain: Float[Tensor, "layer head"]
    high_share: Float[Tensor, "layer head"]
    node_score: Float[Tensor, "layer head"]
    faithfulness: float
    circuit: dict[str, Any] | None = field(default=None, metadata={"json": True})
    positions: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ access
    def card(self, head: str) -> dict[str, Any]:
        """The card of ``"L{l}H{h}"`` (KeyError naming the valid range otherwise)."""
        if head not in self.heads:
            raise KeyError(f"no head {head!r}; heads are L0H0 … {list(self.heads)[-1]}")
        return self.heads[head]

    def label(self, head: str) -> str:
        return str(self.card(head)["label"])

    def circuit_heads(self) -> list[str]:
        """Heads with at least one edge in the circuit, in layer order."""
        return [h for h, c in self.heads.items() if "in-circuit" in c["tags"]]

    def edges_of(self, head: str) -> list[dict[str, Any]]:
        return [self.edges[i] for i in self.card(head)["edges"]]

    def checks_of(self, head: str) -> list[dict[str, Any]]:
        return [self.checks[i] for i in self.card(head)["checks"]]

    def top(self, n: int = 10) -> list[tuple[str, str, float]]:
        """Heads of the circuit by |node score|: ``(head, label, score)``."""
        rows = [(h, c["label"], float(c["node_score"])) for h, c in self.heads.items()]
        rows.sort(key=lambda r: -abs(r[2]) if math.isfinite(r[2]) else 0.0)
        return rows[:n]

    def summary(self) -> list[list[Any]]:
        """One row per circuit head: head, label, tags, node score, α₀, high-freq share."""
        out = []
        for h in self.circuit_heads() or list(self.heads):
            c = self.heads[h]
            out.append([h, c["label"], ", ".join(t for t in c["tags"] if t != "in-circuit"),
                        c["node_score"], c["alpha0"], c["high_share"]])
        return out

    # ------------------------------------------------------------------ views
    def plot(self) -> go.Figure:
        """The circuit graph: layers × positions/spans, heads as nodes coloured by role, edges as
        lines; hovering a node shows its card summary."""
        from interp.atlas._view import graph_figure

        return graph_figure(self)

    def to_html(self) -> str:
        """One offline HTML page: the graph and a card per head (click or hover a node)."""
        from interp.atlas._view import render_html

        return render_html(self)

    def save_html(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(self.to_html(), encoding="utf-8")
        tmp.replace(p)
        return p
