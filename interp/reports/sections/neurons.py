"""Section ``neurons``: positional MLP neurons (``interp.neurons``; Voita et al. 2024).

I(act; pos) = (1/T) Σ_pos [fr(pos) log(fr(pos)/fr) + (1−fr(pos)) log((1−fr(pos))/(1−fr))], a neuron
is positional when I > 0.05; "fires" is the sign of the nonlinearity's input (``mlp.hook_pre``),
which fits SiLU/GELU/gated MLPs (documented in ``interp.neurons``).

Uncertainty: the count of positional neurons is a thresholded, bias-corrected statistic of all
prompts together, so its interval comes from Poisson-bootstrap replicates of the prompts counted
in the same forward pass (normal interval count ± 1.96·sd over replicates), and its stability
from the count on each of two random halves of the prompts (each half has half the tokens, so
its Miller–Madow correction is larger: the halves bracket, they do not equal, the full count).
"""

from __future__ import annotations

import torch

from interp.reports._registry import ReportContext, SectionOutput, Table, section

N_BOOT = 24


@section("neurons", "Positional neurons",
         "Mutual information I(act; pos) between each MLP neuron's firing and the token position "
         "(Voita et al. 2024, threshold 0.05), positional neurons per layer with bootstrap intervals, and "
         "their firing-rate curves.",
         requires=("interp.neurons",), order=45)
def run(ctx: ReportContext) -> SectionOutput:
    from interp.neurons import positional_neurons
    from interp.reports.sections._data import describe, draw
    from interp.reports.sections._util import CI_COLUMNS, ci_rows
    from interp.stats import Estimate
    from interp.stats import describe as say

    top = int(ctx.options.get("top", 10))
    texts = draw(ctx, "neurons")
    n = len(texts)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(ctx.seed + 11))
    halves = torch.zeros(2, n)
    halves[0, perm[: n // 2]] = 1
    halves[1, perm[n // 2:]] = 1
    boot = torch.poisson(torch.ones(N_BOOT, n), generator=torch.Generator().manual_seed(ctx.seed))
    res = positional_neurons(ctx.model, texts, prepend_bos=ctx.prepend_bos, batch_size=8,
                             replicate_weights=torch.cat([halves, boot]))
    counts = res.count_per_layer()
    rep = torch.tensor(res.params.pop("bootstrap_counts"), dtype=torch.float64)  # [2 + boot, layer]
    half_counts, boot_counts = rep[:2], rep[2:]
    total = float(sum(counts))
    sd = float(boot_counts.sum(1).std())
    est = Estimate(total, total - 1.96 * sd, total + 1.96 * sd, n,
                   halves=(float(half_counts[0].sum()), float(half_counts[1].sum())), n_boot=N_BOOT,
                   rel_tol=0.10, abs_tol=0.02 * max(1.0, total),
                   meta={"interval": f"count ± 1.96 sd over {N_BOOT} Poisson-bootstrap replicates"})
    # halves have half the tokens: compare them with each other, not with the full count
    ests = [("positional neurons (all layers)", est)]
    lsd = boot_counts.std(0)
    per_layer = [[l, c, f"[{c - 1.96 * float(lsd[l]):.0f}, {c + 1.96 * float(lsd[l]):.0f}]",
                  f"{int(half_counts[0, l])} / {int(half_counts[1, l])}"] for l, c in enumerate(counts)]
    tables = [Table("positional-neuron count with its interval (bootstrap over prompts)", CI_COLUMNS,
                    ci_rows(ests, fmt=".0f")),
              Table("most positional neurons", ["neuron", "I(act; pos) (nats)"], [[nm, v] for nm, v in res.top(top)]),
              Table("positional neurons per layer (I > threshold)", ["layer", "count", "95% interval",
                                                                  "split halves"], per_layer)]
    bias = float(getattr(res, "bias", 0.0))
    notes = [say("the number of positional neurons", est, fmt=".0f"),
             f"{len(counts)} layers, {n} prompts of ≤ {max(res.params['lengths'])} tokens; the Miller–Madow "
             f"small-sample bias of I is about {bias:.3f} nats and is subtracted before thresholding."]
    data = res.to_json()
    data["ci"] = {"positional_neurons": est.to_json()}
    data["per_layer_interval"] = per_layer
    data["replicate_counts"] = {"halves": half_counts.tolist(), "bootstrap": boot_counts.tolist()}
    data["data"] = describe(ctx, "neurons", texts)
    return SectionOutput(data=data, figures=[res.plot(), res.plot_curves()], tables=tables, notes=notes,
                         hooks=[f"blocks.{l}.mlp.hook_pre" for l in range(ctx.model.cfg.n_layers)])
