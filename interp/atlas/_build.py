"""``interp.atlas(model, task)``: the five analyses on one prompt set, joined head by head.

Per head (one :func:`interp.heads.positional_heads`, :func:`interp.sinks.sink_analysis` and
:func:`interp.rope.frequency_usage` pass over the task's clean prompts):

* role scores and class (previous-token, offset-k, induction, duplicate, first-token; Olsson et
  al. 2022, arXiv:2209.11895) with the random-token control;
* ``α₀`` (attention to the first position, Gu et al. 2025, arXiv:2410.10781), value-drain ratio,
  and per query domain the role and active/dormant status (Guo et al. 2024, arXiv:2410.13835:
  a head is *dormant* on a domain when zero-ablating it changes the loss there by less than
  ``dormant_threshold`` nats);
* rotary frequency profile ‖q⁽ᵏ⁾‖, ‖k⁽ᵏ⁾‖ (Barbero et al. 2025, arXiv:2410.06205), the share of
  Σ_k‖q⁽ᵏ⁾‖‖k⁽ᵏ⁾‖ in the highest quarter, and for positional heads the chunk decomposition of
  the logit margin ``c(t, t−Δ) − mean_{s≠t−Δ} c(t, s)`` of its offset Δ: the head is
  *positional by high frequency* when the highest quarter of chunks carries ≥ ``hf_share`` of it;
* in the circuit (EAP/EAP-IG, Haklay et al. 2025, arXiv:2502.04577; selected greedily from the
  logits to the smallest size with faithfulness ≥ ``target_f``): node score and edges. Every
  edge from a head into a later q/k/v input is labelled Q/K/V-composition (Elhage et al. 2021);
  every crossing (q/k/v) edge gets the chunk decomposition of the head's margin at its
  query/key pairs and whether the key is a sink or a massive-activation token.

Causal checks: a head whose output weights are exactly zero is *inert* (no role); a
positional-by-high-frequency head has its highest (and, as control, lowest) quarter of chunks
unrotated for it alone, and its positional score and the circuit's faithfulness
f = (M(C) − M(∅))/(M(N) − M(∅)) are measured under that ablation next to the prediction
``f_before − edge_share · band_margin_share`` (edge_share: the head's share of the circuit's
|edge scores|); a sink head has its sink attention removed and the change of the metric (and of
the per-domain loss) is reported.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import torch
from torch import Tensor

from interp._attnstats import as_batch, check_attention_model
from interp.provenance import model_name
from interp.atlas import _causal as C
from interp.atlas._data import AtlasTask, build_task
from interp.atlas.result import Atlas, CausalCheck
from interp.results import head_label
from interp.types import Model

POSITIONAL = ("previous-token", "self")
GRID = (8, 16, 32, 64, 128, 256, 512)


def _offset_of(label: str) -> int | None:
    if label == "previous-token":
        return 1
    if label == "self":
        return 0
    if label.startswith("offset-"):
        return int(label.split("-")[1])
    return None


def _parse_node(name: str) -> tuple[int, int] | None:
    """``L{l}H{h}`` or ``L{l}H{h}.q`` → (l, h); anything else → None."""
    if not name.startswith("L") or "KV" in name:
        return None
    head = name.split(".")[0]
    try:
        l, h = head[1:].split("H")
        return int(l), int(h)
    except ValueError:
        return None


def _composition(sender: str, receiver: str, kind: str) -> str:
    src = "embedding" if sender == "embed" else ("MLP" if sender.startswith("M") else "head")
    if receiver == "logits":
        return f"{src} → logits (direct)"
    if kind in ("q", "k", "v") and src == "head":
        return f"{kind.upper()}-composition"
    if kind in ("q", "k", "v"):
        return f"{src} → {kind} input"
    return f"{src} → MLP input"


def _select(graph: Any, ev: Any, target_f: float, n_edges: int | None) -> tuple[Any, Any, list[tuple[int, float]]]:
    import circuits

    if n_edges is not None:
        c = circuits.select(graph, n_edges=n_edges)
        return c, ev(c), [(n_edges, ev(c).f)]
    tried: list[tuple[int, float]] = []
    best = None
    for k in GRID:
        c = circuits.select(graph, n_edges=k)
        f = ev(c)
        tried.append((k, float(f.f)))
        best = (c, f)
        if f.f >= target_f:
            break
    assert best is not None
    return best[0], best[1], tried


def _pairs_for(pi: Tensor, lengths: list[int], qp: int, kp: int) -> list[Tensor]:
    out = []
    for b, n in enumerate(lengths):
        row = pi[b, :n]
        m = (row[:, None] == qp) & (row[None, :] == kp)
        out.append(m & torch.ones(n, n, dtype=torch.bool).tril())
    return out


def atlas(
    model: Model,
    task: Any = None,
    *,
    circuit: Any = None,
    graph: Any = None,
    n: int | None = None,
    pairs: str | None = None,
    n_edges: int | None = None,
    target_f: float = 0.8,
    fraction: float = 0.25,
    hf_share: float = 0.5,
    eps: float = 0.3,
    dormant_threshold: float = 0.02,
    tolerance: float = 0.3,
    probes: bool = True,
    checks: bool = True,
    max_checks: int = 4,
    max_cross_edges: int = 40,
    seed: int = 0,
    prepend_bos: bool = True,
    batch_size: int = 8,
    verbose: bool = False,
) -> Atlas:
    """Explain every head of ``model`` on one prompt set and join it with a circuit.

    Args:
        model: a TransformerBridge (Llama-style, GPT-2 or Gemma 3 for the circuit part).
        task: ``"ioi"``, ``"greater-than"``, ``"induction"``, ``"toy"`` (a zoo model's own task;
            the default on zoo models, ``"ioi"`` otherwise) or a :class:`circuits.tasks.Task`.
        circuit: a :class:`circuits.Circuit` of this model on this task (skips selection);
            graph: its :class:`circuits.AttributionGraph` (skips attribution).
        n: examples of a built-in task (IOI default 32); pairs: JSONL pairs file instead of a task.
        n_edges: circuit size; default: the smallest of 8, 16, … 512 edges with f ≥ ``target_f``.
        fraction: the band of chunks (highest/lowest quarter by default).
        hf_share: a positional head whose highest band carries ≥ this share of its offset
            margin is "positional by high frequency".
        eps: sink threshold on α₀; dormant_threshold: |Δloss| (nats) below which a head is
            dormant on a domain.
        tolerance: |measured − predicted| counted as agreement in the causal checks.
        probes: add the per-layer position-probe column (``probes.probe_sweep``).
        checks: run the causal checks (at most ``max_checks`` of each kind, circuit heads by
            |node score| first).
        max_cross_edges: crossing edges decomposed by chunk (largest |score| first).
        verbose: print each stage's time to stderr (the result keeps them in ``seconds``).

    Returns:
        :class:`Atlas`.
    """
    import circuits
    from circuits.attribution import patchable
    from circuits.faithfulness import FaithfulnessEvaluator
    from interp.heads import positional_heads
    from interp.sinks import sink_analysis
    from interp.spec import model_spec

    check_attention_model(model)
    for nm, v in (("fraction", fraction), ("hf_share", hf_share), ("target_f", target_f)):
        if not 0.0 < v <= 1.0:
            raise ValueError(f"{nm} must be in (0, 1], got {v}")
    times: dict[str, float] = {}
    t0 = time.perf_counter()

    def tick(what: str) -> None:
        nonlocal t0
        times[what] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        if verbose:
            print(f"atlas: {what} {times[what]:.1f} s", file=sys.stderr, flush=True)

    name = model_name(model)
    spec = model_spec(model)
    L, H = spec.n_layers, spec.n_heads
    t: AtlasTask = build_task(model, task, model_name=name, n=n, pairs=pairs, seed=seed, prepend_bos=prepend_bos)
    batch = as_batch(model, t.clean, prepend_bos=prepend_bos, min_len=2)
    lengths = list(batch.lengths)
    tick("task")

    # ---- circuit --------------------------------------------------------------------------
    ev = FaithfulnessEvaluator(model, t.clean, t.corrupt, t.metric, ablation=t.ablation, schema=t.schema,
                               n_boot=200, seed=seed, batch_size=min(16, len(lengths)))
    tried: list[tuple[int, float]] = []
    if circuit is None:
        if graph is None:
            graph = circuits.attribute(model, t.clean, t.corrupt, t.metric, method=t.method, ablation=t.ablation,
                                       granularity=t.granularity, schema=t.schema, batch_size=8)
        tick("attribution")
        circuit, faith, tried = _select(graph, ev, target_f, n_edges)
    else:
        faith = ev(circuit)
    tick("selection")
    pm = ev.pm
    pi = ev.position_index(circuit)  # [batch pos] abstract position of each token
    positions = [str(p) for p in circuit.positions]
    edges_all = circuit.edges()
    total_abs = sum(abs(e["score"]) for e in edges_all) or 1.0

    node = torch.zeros(L, H)
    if graph is not None:
        ns = graph.node_scores().sum(0)
        for i, s in enumerate(graph.senders):
            lh = _parse_node(s)
            if lh is not None:
                node[lh] = float(ns[i])

    # ---- per-head analyses on the clean prompts --------------------------------------------
    ph = positional_heads(model, batch, max_offset=min(8, min(lengths) - 1), prepend_bos=prepend_bos,
                          batch_size=batch_size, seed=seed)
    tick("heads")
    sres = sink_analysis(model, batch, eps=eps, prepend_bos=prepend_bos, batch_size=batch_size)
    tick("sinks")
    rope = spec.rope
    fu = None
    if rope is not None:
        from interp.rope import frequency_usage

        fu = frequency_usage(model, batch, prepend_bos=prepend_bos, batch_size=batch_size)
        high_share = fu.band_share(fraction, highest=True)
    else:
        high_share = torch.full((L, H), float("nan"))
    tick("rope")
    inert = torch.tensor([[bool(pm.layers[l].W_O[h].abs().max() == 0) for h in range(H)] for l in range(L)])
    alpha0 = sres.alpha_mean[:, :, 0].clone()
    drain = sres.drain_ratio if sres.drain_ratio is not None else torch.full((L, H), float("nan"))
    massive_at: set[tuple[int, int]] = set()
    if sres.massive is not None:
        M = sres.massive
        for l in range(M.top_values.shape[0]):
            for i in range(M.top_values.shape[1]):
                if float(M.top_values[l, i]) > M.abs_threshold and float(M.top_ratio[l, i]) > M.ratio:
                    massive_at.add((int(M.top_prompts[l][i]), int(M.top_positions[l][i])))

    # ---- circuit membership and edge cards -------------------------------------------------
    cards: dict[str, dict[str, Any]] = {}
    classes = {c.name: c for c in ph.classes}
    for l in range(L):
        for h in range(H):
            hn = head_label(l, h)
            c = classes[hn]
            cards[hn] = dict(layer=l, head=h, pattern_label=c.label, roles=list(c.roles), positional=c.positional,
                             scores={k: float(v) for k, v in c.evidence.items()}, tags=[], edges=[], checks=[],
                             alpha0=float(alpha0[l, h]), drain_ratio=float(drain[l, h]),
                             high_share=float(high_share[l, h]), node_score=float(node[l, h]),
                             alpha_curve=[None if not math.isfinite(float(x)) else float(x)
                                          for x in sres.alpha_mean[l, h]],
                             q_norm=None if fu is None else fu.q_norm[l, h].tolist(),
                             k_norm=None if fu is None else fu.k_norm[l, h // spec.group_size].tolist(),
                             inert=bool(inert[l, h]))
    edge_cards: list[dict[str, Any]] = []
    share_of: dict[str, float] = {hn: 0.0 for hn in cards}
    cross_done = 0
    # rotated q/k of every layer that will be decomposed, captured in one pass
    touched = {head_label(*lh) for e in edges_all for nm in (e["sender"], e["receiver"])
               if (lh := _parse_node(nm)) is not None}
    need = {int(_parse_node(e["receiver"])[0]) for e in [e for e in edges_all if e["type"] == "cross"][:max_cross_edges]}  # type: ignore[index]
    need |= {c.layer for c in ph.classes if _offset_of(c.label) is not None and (L * H <= 16 or c.name in touched)}
    qk_cache: dict[int, Any] = {}
    if rope is not None and need:
        qk_cache = C.capture_qk(model, batch, sorted(need), batch_size=batch_size)
    for e in edges_all:
        heads_touched = set()
        for nm in (e["sender"], e["receiver"]):
            lh = _parse_node(nm)
            if lh is not None:
                heads_touched.add(head_label(*lh))
        if not heads_touched:
            continue
        card: dict[str, Any] = {k: e[k] for k in e}
        if e["type"] == "same_pos":
            card["composition"] = _composition(e["sender"], e["receiver"], e["kind"])
        else:
            l, h = _parse_node(e["receiver"])  # type: ignore[misc]
            card["composition"] = f"{e['kind']} input of {e['receiver']}: query {e['qpos']} ← key {e['kpos']}"
            qp, kp = positions.index(str(e["qpos"])), positions.index(str(e["kpos"]))
            prs = _pairs_for(pi, lengths, qp, kp)
            keys = [(b, s) for b, m in enumerate(prs) for s in m.any(0).nonzero().flatten().tolist()]
            a_keys = [float(torch.nanmean(sres.alpha[b, l, :, s])) for b, s in keys]
            card["key_sink_alpha"] = float(sum(a_keys) / len(a_keys)) if a_keys else float("nan")
            card["key_is_sink"] = bool(keys) and (all(s == 0 for _, s in keys) or card["key_sink_alpha"] > eps)
            card["key_massive"] = any((b, s) in massive_at for b, s in keys)
            if rope is not None and cross_done < max_cross_edges:
                if l not in qk_cache:
                    qk_cache[l] = C.capture_qk(model, batch, [l], batch_size=batch_size)[l]
                q, k = qk_cache[l]
                mg = C.margin_by_chunk(q, k, h, rope, spec.attn_scale, prs)
                card["margin_by_chunk"] = mg.tolist()
                card["margin"] = float(mg.sum())
                shares = C.quarter_shares(mg, rope.n_chunks)
                card["band_shares"] = shares
                fin = {b: v for b, v in shares.items() if math.isfinite(v)}
                card["band"] = max(fin, key=lambda b: fin[b]) if fin else None
                cross_done += 1
        idx = len(edge_cards)
        edge_cards.append(card)
        for hn in heads_touched:
            cards[hn]["edges"].append(idx)
            share_of[hn] += abs(e["score"]) / total_abs
    tick("edges")

    # ---- labels, tags, domains ---------------------------------------------------------------
    order = sorted(cards, key=lambda hn: -abs(cards[hn]["node_score"]))
    for hn, cd in cards.items():
        cd["edge_share"] = share_of[hn]
        if cd["edges"]:
            cd["tags"].append("in-circuit")
        if cd["inert"]:
            cd["label"] = "inert"
            cd["tags"].append("inert")
            cd["note"] = ("output weights W_O are exactly zero: causally inert; the attention-pattern label "
                          f"{cd['pattern_label']!r} describes a pattern that writes nothing")
            continue
        lab = cd["pattern_label"]
        if cd["alpha0"] > eps:
            cd["tags"].append("sink")
        if cd["drain_ratio"] < 1 and "sink" in cd["tags"]:
            cd["tags"].append("drain")
        if cd["positional"]:
            cd["tags"].append("positional")
        if lab == "first-token":
            lab = "sink" if cd["alpha0"] > eps else "first-token"
        elif lab == "other":
            lab = "sink" if cd["alpha0"] > eps else "content"
        cd["label"] = lab

    # positional heads: margin decomposition of their offset
    pos_heads = [hn for hn in order if not cards[hn]["inert"] and _offset_of(cards[hn]["pattern_label"]) is not None
                 and cards[hn]["positional"] is not False]
    if L * H > 16:  # real models: the circuit's positional heads only
        pos_heads = [hn for hn in pos_heads if cards[hn]["edges"]]
    if rope is not None:
        for hn in pos_heads:
            cd = cards[hn]
            l, h, d = cd["layer"], cd["head"], _offset_of(cd["pattern_label"])
            assert d is not None
            if l not in qk_cache:
                qk_cache[l] = C.capture_qk(model, batch, [l], batch_size=batch_size)[l]
            q, k = qk_cache[l]
            lo = d + (1 if prepend_bos else 0)
            prs = []
            for n_ in lengths:
                m = torch.zeros(n_, n_, dtype=torch.bool)
                tt = torch.arange(lo, n_)
                m[tt, tt - d] = True
                prs.append(m)
            mg = C.margin_by_chunk(q, k, h, rope, spec.attn_scale, prs)
            sh = C.quarter_shares(mg, rope.n_chunks)
            cd["offset"] = d
            cd["margin_by_chunk"] = mg.tolist()
            cd["band_margin_shares"] = sh
            cd["high_margin_share"] = sh["q1"]
            if math.isfinite(sh["q1"]) and sh["q1"] >= hf_share:
                cd["tags"].append("positional-high-frequency")
    tick("margins")

    if t.domains:
        _domains(model, t, cards, L, H, eps=eps, threshold=float(ph.params.get("threshold", 0.4)),
                 dormant_threshold=dormant_threshold, prepend_bos=prepend_bos)
        tick("domains")

    # ---- causal checks ---------------------------------------------------------------------
    check_list: list[dict[str, Any]] = []
    if checks:
        hf = [hn for hn in order if "positional-high-frequency" in cards[hn]["tags"]][:max_checks]
        if hf and rope is not None:
            from interp.rope import select_chunks

            bands = {"highest": select_chunks(rope, highest=fraction), "lowest": select_chunks(rope, lowest=fraction)}
            for hn in hf:
                cd = cards[hn]
                l, h, d = cd["layer"], cd["head"], cd["offset"]
                before = C.offset_score(C.head_patterns(model, batch, [(l, h)], batch_size=batch_size)[(l, h)], d)
                margin = float(sum(cd["margin_by_chunk"]))
                for bname, band in bands.items():
                    after = C.offset_score(C.head_patterns(model, batch, [(l, h)], batch_size=batch_size,
                                                           extra=C.unrotate_hooks(spec, l, h, band))[(l, h)], d)
                    with C.patched_unrotation(pm, spec, l, h, band):
                        ev_b = FaithfulnessEvaluator(pm, t.clean, t.corrupt, t.metric, ablation=t.ablation,
                                                     schema=t.schema, n_boot=0, seed=seed,
                                                     batch_size=min(16, len(lengths)))
                        m_c = ev_b(circuit).m_circuit
                    den = faith.m_full - faith.m_empty
                    fa = (m_c - faith.m_empty) / den if den != 0 else float("nan")
                    bshare = cd["band_margin_shares"]["q1" if bname == "highest" else "q4"]
                    a_pred = _predicted_attention(before, margin, bshare)
                    keep = a_pred / before if before > 0 else 1.0
                    pred_f = faith.f * (1.0 - cd["edge_share"] * (1.0 - keep))
                    measured = {"positional_score_before": before, "positional_score_after": after,
                                "faithfulness_before": float(faith.f), "faithfulness_after": float(fa),
                                "faithfulness_drop": float(faith.f - fa)}
                    predicted = {"positional_score_after": a_pred, "faithfulness_after": pred_f,
                                 "faithfulness_drop": float(faith.f - pred_f)}
                    chk = CausalCheck(
                        head=hn, kind="band_ablation", band=f"{bname} {fraction:g} of chunks",
                        heads=[head_label(l, x) for x in C.group_heads(spec, h)], measured=measured,
                        predicted=predicted, tolerance=tolerance,
                        agrees={k: abs(measured[k] - v) <= tolerance for k, v in predicted.items()},
                        note=(f"offset Δ={d}; the band carries {bshare:.2f} of the head's logit margin "
                              f"{margin:.2f}; the head carries {cd['edge_share']:.2f} of the circuit's |edge "
                              "scores|. Prediction: attention A' = 1/(1 + K·exp(−m(1−share))) with K fitted to "
                              "the measured A at the full margin m, and f' = f·(1 − edge_share·(1 − A'/A)). "
                              "Measured f' = (M'(C) − M(∅))/(M(N) − M(∅)): the circuit run (ablated "
                              "activations included) in the model with the band removed, normalised by the "
                              "intact model's full and empty runs."))
                    cd["checks"].append(len(check_list))
                    check_list.append(chk.to_json())
        sinks = [hn for hn in order if "sink" in cards[hn]["tags"] and not cards[hn]["inert"]
                 and (cards[hn]["edges"] or L * H <= 16)][:max_checks]
        if sinks:
            base = _metric_mean(model, t, [])
            for hn in sinks:
                cd = cards[hn]
                l, h = cd["layer"], cd["head"]
                hook = C.sink_removal_hook(l, h, 0)
                m_after = _metric_mean(model, t, [hook])
                measured = {"metric_before": base, "metric_after": m_after, "metric_change": m_after - base}
                predicted: dict[str, float] = {}
                note = "attention to position 0 removed for this head, rows renormalised"
                if t.domains:
                    toks = batch.tokens
                    b0 = C.domain_losses(model, toks, t.domains)
                    b1 = C.domain_losses(model, toks, t.domains, [hook])
                    for dn in t.domains:
                        measured[f"loss_change[{dn}]"] = b1[dn] - b0[dn]
                    for dn, st in cd.get("domains", {}).items():
                        if st["status"] == "dormant":
                            predicted[f"loss_change[{dn}]"] = 0.0
                    note += ("; predicted: a head dormant on a domain (zero-ablation |Δloss| < "
                             f"{dormant_threshold}) would change nothing there if its sink attention "
                             "were only parking — a measured change shows the sink keeps it dormant")
                chk = CausalCheck(head=hn, kind="sink_removal", band="position 0",
                                  heads=[hn], measured=measured, predicted=predicted, tolerance=tolerance,
                                  agrees={k: abs(measured[k] - v) <= tolerance for k, v in predicted.items()},
                                  note=note)
                cd["checks"].append(len(check_list))
                check_list.append(chk.to_json())
        tick("checks")

    # ---- example attention patterns for the cards --------------------------------------------
    show = [(cards[hn]["layer"], cards[hn]["head"]) for hn in cards if cards[hn]["edges"] or L * H <= 16]
    if show:
        one = as_batch(model, _first(t.clean), prepend_bos=prepend_bos)
        pats = C.head_patterns(model, one, show, batch_size=1)
        toks = [str(s) for s in t.clean.str_tokens[0][: lengths[0]]]
        for (l, h), ps in pats.items():
            cards[head_label(l, h)]["pattern"] = {"tokens": toks, "attention": [[round(float(x), 4) for x in r]
                                                                                for r in ps[0]]}
    tick("patterns")

    probe_rows: list[dict[str, Any]] = []
    if probes:
        probe_rows = _probe_column(model, batch, prepend_bos, seed)
        tick("probes")

    return Atlas(
        model=name, prepend_bos=prepend_bos,
        task=dict(name=t.name, n=len(lengths), metric=getattr(t.metric, "name", str(t.metric)), ablation=t.ablation,
                  granularity=t.granularity, method=t.method, domains=list(t.domains or []),
                  sizes_tried=[list(x) for x in tried], meta=t.meta),
        heads=cards, edges=edge_cards, checks=check_list, probes=probe_rows, score_names=list(ph.score_names),
        role_scores=ph.scores, alpha0=alpha0, drain=drain.float(), high_share=high_share.float(), node_score=node,
        faithfulness=float(faith.f), circuit=circuit.to_json(), positions=positions,
        params=dict(fraction=fraction, hf_share=hf_share, eps=eps, dormant_threshold=dormant_threshold,
                    tolerance=tolerance, target_f=target_f, n_edges=circuit.n_edges, seed=seed,
                    induction_control=ph.params.get("induction_control"),
                    induction_seg_len=ph.params.get("induction_seg_len")),
        seconds=times)


def _predicted_attention(a: float, margin: float, share: float) -> float:
    """Attention to the offset key when the logit margin shrinks from ``margin`` to
    ``margin·(1 − share)``, in a softmax with ``K`` equivalent competitors fitted to the measured
    attention ``a``: ``A(m) = 1/(1 + K e^{−m})``."""
    if not (0 < a < 1) or not math.isfinite(margin) or not math.isfinite(share):
        return a
    logk = math.log(1 / a - 1) + margin
    x = logk - margin * (1 - share)
    return 1.0 / (1.0 + math.exp(min(x, 700.0)))


def _first(tb: Any) -> Any:
    return _slice_tb(tb, tb.lengths[0])


def _slice_tb(tb: Any, n: int) -> Any:
    from interp.tokens import TokenBatch

    return TokenBatch(tokens=tb.tokens[:1, :n].clone(), attention_mask=tb.attention_mask[:1, :n].clone(),
                      position_ids=tb.position_ids[:1, :n].clone(), lengths=[n], offsets=[tb.offsets[0][:n]],
                      prompts=[tb.prompts[0]], str_tokens=[list(tb.str_tokens[0][:n])], prepend_bos=tb.prepend_bos,
                      padding_side="right")


def _metric_mean(model: Any, t: AtlasTask, hooks: list[Any]) -> float:
    """Mean task metric on the clean prompts with ``hooks`` (right padded; the metric reads its
    own positions): mini-batches of 16 through :func:`interp.capture.stream`, each trimmed to its
    widest prompt, the attention mask always passed (``always_mask``)."""
    from circuits.metrics import MetricBatch, as_metric

    from interp.capture import StreamBatch, stream

    met = as_metric(t.metric)
    tb = t.clean
    if getattr(tb, "padding_side", "right") != "right":
        raise ValueError("the task metric reads right-padded clean prompts")
    vals: list[Tensor] = []

    def on_logits(sb: StreamBatch, lg: Tensor) -> None:
        mask = tb.attention_mask[sb.offset:sb.offset + len(sb), :sb.width]
        idx = torch.arange(sb.offset, sb.offset + len(sb), device=lg.device)
        vals.append(met(lg.float(), MetricBatch.from_mask(mask.to(lg.device), idx, None)).detach().cpu())

    stream(model, tb, lambda sb: list(hooks), batch_size=16, on_logits=on_logits, always_mask=True)
    return float(torch.cat(vals).mean())


def _domains(model: Any, t: AtlasTask, cards: dict[str, dict[str, Any]], L: int, H: int, *, eps: float,
             threshold: float, dormant_threshold: float, prepend_bos: bool) -> None:
    """Per query domain: attention to position 0 and to t−1, the zero-ablation loss change, the
    role (sink / previous-token / other) and status (active / dormant)."""
    toks = t.clean.tokens
    assert t.domains is not None
    batch = as_batch(model, t.clean, prepend_bos=prepend_bos)
    heads = [(l, h) for l in range(L) for h in range(H)]
    pats = C.head_patterns(model, batch, heads)
    base = C.domain_losses(model, toks, t.domains)
    for (l, h) in heads:
        hn = head_label(l, h)
        if cards[hn]["inert"]:
            continue
        abl = C.domain_losses(model, toks, t.domains, [C.zero_head_hook(l, h)])
        out = {}
        for dn, m in t.domains.items():
            a0, prev, cnt = 0.0, 0.0, 0
            for b, p in enumerate(pats[(l, h)]):
                qs = m[b, : p.shape[0]].nonzero().flatten()
                qs = qs[qs >= 1]
                if qs.numel():
                    a0 += float(p[qs, 0].sum())
                    prev += float(p[qs, qs - 1].sum())
                    cnt += int(qs.numel())
            a0, prev = a0 / max(cnt, 1), prev / max(cnt, 1)
            dl = abl[dn] - base[dn]
            role = ("previous-token" if prev >= threshold and prev >= a0 else "sink" if a0 > eps else "other")
            status = "active" if dl >= dormant_threshold else "dormant" if abs(dl) < dormant_threshold else "inhibiting"
            out[dn] = dict(role=role, status=status, alpha0=a0, previous_token=prev, delta_loss=dl, n_queries=cnt)
        cards[hn]["domains"] = out
        cards[hn]["domain_label"] = " / ".join(f"{v['role']} on {k} ({v['status']})" for k, v in out.items())
        if {"active", "dormant"} <= {v["status"] for v in out.values()}:
            cards[hn]["tags"].append("active-dormant")


def _probe_column(model: Any, batch: Any, prepend_bos: bool, seed: int) -> list[dict[str, Any]]:
    """Per layer: linear probe R² for the absolute position with the control-task score and the
    selectivity (Hewitt & Liang 2019); ``decodable`` when the selectivity's lower CI bound > 0."""
    import probes

    seqs = [batch.tokens[b, :n].detach().cpu() for b, n in enumerate(batch.lengths)]
    data = probes.collect(model, seqs, prepend_bos=prepend_bos)
    target = probes.absolute_position(data)
    folds = max(2, min(5, len(seqs)))
    res = probes.probe_sweep(data, target, folds=folds, controls=("control_task",), seed=seed)
    rows = []
    prim = res.primary
    ctl = res.controls.get("control_task", {}).get(prim)
    sel_ci = res.ci.get("selectivity")
    for i, hk in enumerate(res.hooks):
        score = float(res.scores[prim][i].mean())
        row = dict(hook=hk, layer=res.layers[i], metric=prim, score=score,
                   control=None if ctl is None else float(ctl[i].mean()),
                   selectivity=None if res.selectivity is None else float(res.selectivity[i].mean()))
        row["decodable"] = bool(sel_ci is not None and float(sel_ci[i, 0]) > 0) if sel_ci is not None \
            else bool(score > 0.5)
        rows.append(row)
    return rows
