"""Section ``neurons``: positional MLP neurons (``interp.neurons``; Voita et al. 2024).

I(act; pos) = (1/T) Σ_pos [fr(pos) log(fr(pos)/fr) + (1−fr(pos)) log((1−fr(pos))/(1−fr))], a neuron
is positional when I > 0.05; "fires" is the sign of the nonlinearity's input (``mlp.hook_pre``),
which fits SiLU/GELU/gated MLPs (documented in ``interp.neurons``).

Design: the section samples only prompts that have at least the token budget ``T`` and cuts each
to exactly ``T`` tokens, so every position is averaged over the same ``n`` prompts. ``I`` is then
exactly the mutual information between a uniform position and the firing, and its small-sample
bias is Miller–Madow's ``(T − 1)/(2nT)`` (``interp.neurons.small_sample_bias``). With prompts of
mixed lengths the last positions are covered by a few long prompts only; those positions weigh
as much as the first in the average, so their sampling noise and bias (``1/(2 n_pos)``, not
``(T − 1)/(2 N_tok)``) moved neurons across the 0.05 threshold and made the count depend on which
long prompts were drawn (BENCHMARKS.md, "Default report budget"). The draw also takes the same
number of prompts from every domain: most of the count is neurons that fire on BOS and rarely
elsewhere (I ≈ −log(fr)/T from the BOS position alone), so it follows the firing rates, which
follow the domain mix — halves of 64 prompts with 11 and 21 code prompts counted 3,741 and 5,762.

Uncertainty: the count of positional neurons is a thresholded, bias-corrected statistic of all
prompts together, so its interval comes from stratified Poisson-bootstrap replicates of the
prompts (weights rescaled within each domain) counted in the same forward pass (normal interval
count ± 1.96·sd over replicates), and its stability from the count on each of two disjoint
random halves, split within each domain. The count with the BOS position left out (positions
≥ 1) is reported next to it, with its own interval.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

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
    texts = draw(ctx, "neurons", full_length=True, by_domain=True)
    n = len(texts)
    doms = ctx.cache.get("data.neurons.domains") or ["all"] * n
    halves, boot = stratified_replicates(doms, N_BOOT, seed=ctx.seed)
    first = 1 if ctx.prepend_bos else 0
    res = positional_neurons(ctx.model, texts, prepend_bos=ctx.prepend_bos, batch_size=8,
                             replicate_weights=torch.cat([halves, boot]), replicate_from=(first,))
    counts = res.count_per_layer()
    rep = torch.tensor(res.params.pop("bootstrap_counts"), dtype=torch.float64)  # [2 + boot, layer]
    rep_from = torch.tensor(res.params.pop("bootstrap_counts_from")[first], dtype=torch.float64)
    half_counts, boot_counts = rep[:2], rep[2:]

    def count_estimate(total: float, reps: Tensor, what: str) -> Estimate:
        sd = float(reps[2:].sum(1).std())
        return Estimate(total, total - 1.96 * sd, total + 1.96 * sd, n,
                        halves=(float(reps[0].sum()), float(reps[1].sum())), n_boot=N_BOOT,
                        rel_tol=0.10, abs_tol=0.02 * max(1.0, total),
                        meta={"interval": f"count ± 1.96 sd over {N_BOOT} Poisson-bootstrap replicates",
                              "positions": what})

    total = float(sum(counts))
    est = count_estimate(total, rep, f"0..{res.firing_rate.shape[-1] - 1} (Voita et al.'s definition)")
    no_bos = int((res.info_from(first) > res.threshold).sum())
    est_from = count_estimate(float(no_bos), rep_from,
                              f"{first}..{res.firing_rate.shape[-1] - 1} (the BOS position left out)")
    # halves have half the prompts: compare them with each other, not with the full count
    ests = [("positional neurons (all layers)", est)]
    if first:
        ests.append(("positional neurons without the BOS position", est_from))
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
             *([say("the number of neurons positional among real tokens (I over positions ≥ 1, the BOS "
                    "position left out)", est_from, fmt=".0f"),
                f"{total - no_bos:.0f} of the {total:.0f} are positional only through the BOS position: every "
                "prompt has the same token there, so a neuron that fires on BOS and rarely elsewhere (rate fr) "
                f"gets I ≈ −log(fr)/T from that one position, above 0.05 when fr < exp(−0.05·T)."] if first else []),
             f"{len(counts)} layers, {n} prompts of {_span(res.params['lengths'])} tokens (every position "
             f"averaged over the same prompts when all have the same length); the small-sample bias of I, "
             f"{bias:.4f} nats, is subtracted before thresholding."]
    data = res.to_json()
    data["ci"] = {"positional_neurons": est.to_json()}
    if first:
        data["ci"]["positional_neurons_without_bos"] = est_from.to_json()
    data["per_layer_interval"] = per_layer
    data["replicate_counts"] = {"halves": half_counts.tolist(), "bootstrap": boot_counts.tolist()}
    data["data"] = describe(ctx, "neurons", texts)
    return SectionOutput(data=data, figures=[res.plot(), res.plot_curves()], tables=tables, notes=notes,
                         hooks=[f"blocks.{l}.mlp.hook_pre" for l in range(ctx.model.cfg.n_layers)])


def _span(lengths: list[int]) -> str:
    lo, hi = min(lengths), max(lengths)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def stratified_replicates(strata: list[str], n_boot: int, *,
                          seed: int) -> tuple[Float[Tensor, "2 prompt"], Float[Tensor, "replicate prompt"]]:
    """Per-prompt weights: two disjoint random halves within every stratum (domain), and
    ``n_boot`` Poisson(1) bootstrap replicates rescaled within every stratum to its size (a
    stratified bootstrap: each replicate keeps the domain mix of the sample, as the draw does).
    Returns ``halves [2, n]`` (0/1) and ``boot [n_boot, n]``."""
    n = len(strata)
    g = torch.Generator().manual_seed(seed + 11)
    halves = torch.zeros(2, n)
    boot = torch.poisson(torch.ones(n_boot, n), generator=torch.Generator().manual_seed(seed))
    for d in sorted(set(strata)):
        idx = torch.tensor([i for i, s in enumerate(strata) if s == d])
        perm = idx[torch.randperm(len(idx), generator=g)]
        halves[0, perm[: len(idx) // 2]] = 1
        halves[1, perm[len(idx) // 2:]] = 1
        tot = boot[:, idx].sum(1, keepdim=True)
        boot[:, idx] = torch.where(tot > 0, boot[:, idx] * len(idx) / tot.clamp(min=1e-9), torch.ones_like(boot[:, idx]))
    return halves, boot
