"""Section ``model``: what the model is (layers, heads, GQA, positional encoding, RoPE, BOS)."""

from __future__ import annotations

from typing import Any

from interp.reports._core import ReportContext, SectionOutput, Table, section
from interp.reports._meta import jsonable


def _rope_rows(spec: Any) -> tuple[list[list[Any]], Any]:
    """Rows describing the RoPE spec per layer type, and a wavelength figure."""
    import plotly.graph_objects as go

    rope = spec.rope
    rows: list[list[Any]] = []
    fig = go.Figure()
    for lt in rope.distinct_layer_types:
        layers = rope.layers_of_type(lt)
        l0 = layers[0]
        wl = rope.wavelengths(l0)
        slow = int((rope.rotations_within(spec.n_ctx, l0) < 1).sum())
        rows.append([lt, f"{len(layers)} layers ({layers[0]}..{layers[-1]})" if len(layers) > 1 else f"layer {l0}",
                     rope.base(l0), rope.rotary_dim, rope.pairing, rope.n_chunks,
                     f"{float(wl.min()):.3g} … {float(wl.max()):.3g}", slow])
        fig.add_trace(go.Scatter(x=list(range(rope.n_chunks)), y=wl.tolist(), mode="lines+markers",
                                 name=f"{lt} (base {rope.base(l0):g})"))
    # a trace, not add_hline: shapes on a log axis take log10 coordinates
    fig.add_trace(go.Scatter(x=[0, rope.n_chunks - 1], y=[spec.n_ctx, spec.n_ctx], mode="lines",
                             line={"dash": "dot", "color": "grey"}, name=f"context length {spec.n_ctx}"))
    fig.update_layout(title="RoPE wavelength 2π/θ_k per rotary chunk (from the HF config)",
                      xaxis_title="rotary chunk k (0 = highest frequency)", yaxis_title="wavelength (tokens)",
                      yaxis_type="log", height=420)
    return rows, fig


@section("model", "Model summary",
         "Architecture read from interp.model_spec (layers, query and KV heads, head dim, positional "
         "encoding, RoPE bases per layer from the Hugging Face config, BOS token).", order=10)
def run(ctx: ReportContext) -> SectionOutput:
    model = ctx.model
    notes: list[str] = []
    tables: list[Table] = []
    figures: list[Any] = []
    from interp.spec import model_spec

    spec = model_spec(model)
    spec_dict = {"source": "interp.model_spec (architecture facts from interp.families)", **jsonable(spec)}
    if spec.rope is not None:
        rows, fig = _rope_rows(spec)
        tables.append(Table("rotary position embedding per layer type",
                            ["layer type", "layers", "base", "rotary dim", "pairing", "chunks",
                             "wavelengths (tokens)", "chunks < 1 rotation in context"], rows))
        figures.append(fig)
    n_params = sum(p.numel() for p in model.parameters())
    spec_dict["n_parameters"] = n_params
    spec_dict["prepend_bos (report policy)"] = ctx.prepend_bos
    rows = [[k, v] for k, v in spec_dict.items() if not isinstance(v, (list, dict))]
    tables.insert(0, Table("model specification", ["field", "value"], rows))
    return SectionOutput(data=spec_dict, tables=tables, figures=figures, notes=notes)
