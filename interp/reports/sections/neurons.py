"""Section ``neurons``: positional MLP neurons (``interp.neurons``; Voita et al. 2024).

I(act; pos) = (1/T) Σ_pos [fr(pos) log(fr(pos)/fr) + (1−fr(pos)) log((1−fr(pos))/(1−fr))], a neuron
is positional when I > 0.05; "fires" is the sign of the nonlinearity's input (``mlp.hook_pre``),
which fits SiLU/GELU/gated MLPs (documented in ``interp.neurons``).
"""

from __future__ import annotations

from interp.reports._registry import ReportContext, SectionOutput, Table, section


@section("neurons", "Positional neurons",
         "Mutual information I(act; pos) between each MLP neuron's firing and the token position "
         "(Voita et al. 2024, threshold 0.05), positional neurons per layer and their firing-rate curves.",
         requires=("interp.neurons",), order=45)
def run(ctx: ReportContext) -> SectionOutput:
    from interp.neurons import positional_neurons

    top = int(ctx.options.get("top", 10))
    res = positional_neurons(ctx.model, ctx.texts, prepend_bos=ctx.prepend_bos, batch_size=4)
    counts = res.count_per_layer()
    tables = [Table("most positional neurons", ["neuron", "I(act; pos) (nats)"], [[n, v] for n, v in res.top(top)]),
              Table("positional neurons per layer (I > threshold)", ["layer", "count"],
                    [[l, c] for l, c in enumerate(counts)])]
    bias = float(getattr(res, "bias", 0.0))
    notes = [f"{sum(counts)} positional neurons (bias-corrected I > {res.threshold}) over {len(counts)} layers, "
             f"measured on {len(ctx.texts)} prompts; the Miller–Madow small-sample bias of I is about {bias:.3f} nats "
             "and is subtracted before thresholding (few prompts per position: read I as a ranking)."]
    return SectionOutput(data=res.to_json(), figures=[res.plot(), res.plot_curves()], tables=tables, notes=notes,
                         hooks=[f"blocks.{l}.mlp.hook_pre" for l in range(ctx.model.cfg.n_layers)])
