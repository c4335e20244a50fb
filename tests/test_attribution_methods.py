"""AtP*, clean-corrupted and exact patching (circuits.attribute(method=...)) against their own
published definitions, computed independently (the model's own patched forward, EAP run the
other way round, one-edge exact patching), on tiny float64 models."""

from __future__ import annotations

import copy

import pytest
import torch

from circuits import attribute
from circuits.attribution import exact_edge_score, one_edge_keep, patchable
from circuits.metrics import MetricBatch, logit_diff


def _tiny_llama(random_toy):
    """Random toy-induction architecture (2 layers, RoPE, GQA 2 q / 1 KV), float64 copy."""
    return patchable(copy.deepcopy(random_toy("toy-induction").original_model).double())


def _tiny_gemma():
    from test_forward import _tiny_gemma as tg

    return patchable(tg().double())


def _data(V, n=3, p=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, V, (n, p), generator=g)
    clean[:, 0] = 2 if V < 100 else 1
    corrupt = clean.clone()
    corrupt[:, 2:5] = torch.randint(3, V, (n, 3), generator=g)
    met = logit_diff(torch.randint(3, V, (n,), generator=g), torch.randint(3, V, (n,), generator=g))
    return clean, corrupt, met


def _model(which, random_toy):
    return _tiny_llama(random_toy) if which == "llama-gqa" else _tiny_gemma()


def _atp_reference(pm, clean, corrupt, met, edge):
    """AtP* by definition, from the model's own forward: run with the one edge patched (the
    receiver's q or k recomputed exactly, every softmax of that layer exact), take the change of
    the edge's layer's head values z, and dot it with the clean run's ∂M/∂z."""
    n, p = clean.shape
    mask = torch.ones(n, p, dtype=torch.long)
    x = pm.activations(corrupt)
    with torch.no_grad():
        zc = pm.forward(clean, mask, record=True)["activations"].z
        zp = pm.forward(clean, mask, ablated=x, record=True, **one_edge_keep(pm, edge, n, p))["activations"].z
    emb = pm.embed(clean, pm.position_ids(mask)).detach().requires_grad_(True)
    with torch.enable_grad():
        out = pm.forward(None, mask, embeds=emb, grad_nodes=True)
        m = met(out["logits"], MetricBatch.from_mask(mask)).mean()
        gz = torch.autograd.grad(m, out["z"])
    layer = int(edge.receiver[1:].split("KV")[0].split("H")[0])
    return float(((zp[:, layer] - zc[:, layer]) * gz[layer]).sum())


@pytest.mark.parametrize("which", ["llama-gqa", "gemma"])
def test_atp_star_is_its_definition(random_toy, which):
    """AtP* (Kramár et al. 2024) QK fix: a same-position edge into a query or key receiver scores
    Δz · ∂M/∂z with Δz from exact softmax recomputation of the patched query/key (checked against
    the model's own patched forward: norm, RoPE, q/k-norm, GQA/MQA, sliding window); every other
    edge (value/MLP/logits receivers, crossing edges) is EAP's."""
    pm = _model(which, random_toy)
    V = pm.hf.config.vocab_size
    clean, corrupt, met = _data(V)
    atp = attribute(pm, clean, corrupt, met, method="atp*")
    eap = attribute(pm, clean, corrupt, met, method="eap")
    qk = [pm.receiver_index[r] for r in pm.receivers if r.endswith((".q", ".k"))]
    other = [i for i in range(len(pm.receivers)) if i not in qk]
    torch.testing.assert_close(atp.same_pos[:, :, other], eap.same_pos[:, :, other])
    torch.testing.assert_close(atp.cross, eap.cross)
    edges = atp.top_edges(None, kinds=["same"], receiver_kinds=["q", "k"])
    edges = [e for e in edges if abs(e.score) > 0]
    gen = torch.Generator().manual_seed(0)
    pick = edges[:6] + [edges[i] for i in torch.randperm(len(edges), generator=gen)[:6]]
    assert {e.receiver.split(".")[-1] for e in pick} == {"q", "k"}
    for e in pick:
        ref = _atp_reference(pm, clean, corrupt, met, e)
        assert e.score == pytest.approx(ref, rel=1e-6, abs=1e-10), (e, ref)
    # and it is not EAP on those edges (the softmax is not linearised)
    r = [pm.receiver_index[e.receiver] for e in pick]
    assert not torch.allclose(atp.same_pos[:, :, qk], eap.same_pos[:, :, qk])
    assert r


def test_clean_corrupted_is_mean_of_eap_at_both_points(random_toy):
    """MIB's clean-corrupted: δ · ½(∇M|clean + ∇M|corrupt). EAP run the other way round
    (clean ↔ corrupt) scores (z − z*) · ∇M|corrupt, so same-position edges must equal
    ½(EAP(clean→corrupt) − EAP(corrupt→clean))."""
    pm = _tiny_llama(random_toy)
    clean, corrupt, met = _data(pm.hf.config.vocab_size)
    cc = attribute(pm, clean, corrupt, met, method="clean-corrupted")
    fwd = attribute(pm, clean, corrupt, met, method="eap")
    bwd = attribute(pm, corrupt, clean, met, method="eap")
    want = 0.5 * (fwd.same_pos - bwd.same_pos)
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(cc.same_pos, want, rtol=1e-5, atol=1e-8)  # norm VJP in float32
    assert cc.meta["method"] == "clean-corrupted" and cc.meta["ig_steps"] == 2


def test_exact_method_is_one_edge_patching(random_toy):
    """method='exact' scores every edge by exact patching (batched copies): equal to patching
    each edge alone (exact_edge_score) at position granularity; a non-positional edge equals
    patching all its concrete edges at once."""
    pm = _tiny_llama(random_toy)
    clean, corrupt, met = _data(pm.hf.config.vocab_size, n=2, p=5)
    g = attribute(pm, clean, corrupt, met, method="exact")
    assert g.meta["method"] == "exact"
    edges = g.top_edges(None)
    gen = torch.Generator().manual_seed(1)
    pick = edges[:6] + [edges[i] for i in torch.randperm(len(edges), generator=gen)[:8]]
    assert {e.kind for e in pick} & {"q", "k", "v"} and "same" in {e.kind for e in pick}
    for e in pick:
        assert e.score == pytest.approx(exact_edge_score(pm, clean, corrupt, met, e), rel=1e-9, abs=1e-12)
    # non-positional: one abstract edge = every position at once
    gn = attribute(pm, clean, corrupt, met, method="exact", granularity="none")
    top = gn.top_edges(1, kinds=["same"])[0]
    n, p = clean.shape
    keep = torch.ones(n, p, len(pm.senders), len(pm.receivers), dtype=torch.bool)
    keep[:, :, pm.sender_index[top.sender], pm.receiver_index[top.receiver]] = False
    mb = MetricBatch.from_mask(torch.ones(n, p, dtype=torch.long))
    want = float(met(pm.run(clean, ablated=pm.activations(corrupt), keep=keep), mb).mean()
                 - met(pm.run(clean), mb).mean())
    assert top.score == pytest.approx(want, rel=1e-9)
    # too many edges: a clear error
    with pytest.raises(ValueError, match="exact_max_edges"):
        attribute(pm, clean, corrupt, met, method="exact", exact_max_edges=10)


def test_unknown_method_error(random_toy):
    pm = _tiny_llama(random_toy)
    clean, corrupt, met = _data(pm.hf.config.vocab_size)
    with pytest.raises(ValueError, match="atp"):
        attribute(pm, clean, corrupt, met, method="atp")


@pytest.mark.slow
def test_atp_star_vs_exact_patching_on_trained_toy_induction():
    """Measured as in test_attribution_planted.test_trained_toys_scores_vs_exact_patching (graded
    corruption, per-position logit difference; nodes = every sender × position, edges = 25 top +
    35 random edges of EAP-IG, each patched exactly).

    The QK fix repairs the saturated K-composition edge (previous-token head → induction key):
    AtP* node scores rank exact patching at 0.71 where EAP gets 0.41. It does not reach 0.8: the
    remaining error is after the head's value mix (final norm + metric, linear in AtP*) and in
    paths through a *downstream* saturated softmax (embed → previous-token head's value →
    induction key), which AtP* linearises like EAP — its edges (0.61) are no better than EAP's
    (0.68). The QK fix on EAP-IG's interpolated gradients ("atp*-ig") reaches 0.93 / 0.89.

    The published method does not reach 0.8 on this model: the QK-fixed edges are exact in the
    softmax but overshoot after it (L0H0 → L1KV0.k at the first copy: AtP* −1.84, exact −0.94;
    the crossing key edge of the induction head: −1.82 vs −0.92), value and logit edges are
    under-estimated by ~2× (linear through the final norm), and embed → L0KV0.v (exact −0.8 …
    −1.1) gets −0.07 … −0.09 (its path runs through the induction head's saturated softmax
    downstream, which AtP* linearises). GradDrop (magnitudes, so compared with |exact|) gives
    nodes 0.75 / edges 0.61; MIB's EAP-IG-activations 0.69 / 0.75."""
    from test_attribution_planted import _graded, _sp

    from circuits import exact_node_scores
    from circuits._exact import exact_edge_scores
    from circuits.metrics import token_logit_diff

    model, clean, corrupt, tc, wrong, w = _graded("toy-induction")
    met = token_logit_diff(tc, wrong, w)
    ex = exact_node_scores(model, clean, corrupt, met)
    graphs = {m: attribute(model, clean, corrupt, met, method=m)
              for m in ("eap", "eap-ig", "atp*", "atp*-ig", "eap-ig-activations")}
    gd = attribute(model, clean, corrupt, met, method="atp*", graddrop=True)
    edges = graphs["eap-ig"].top_edges(None)
    gen = torch.Generator().manual_seed(0)
    pick = edges[:25] + [edges[i] for i in torch.randperm(len(edges), generator=gen)[:35]]
    exact = exact_edge_scores(model, clean, corrupt, met, pick)
    key = [(e.kind, e.sender, e.receiver, e.pos, e.kpos) for e in pick]
    out = {}
    for m, gr in graphs.items():
        look = {(e.kind, e.sender, e.receiver, e.pos, e.kpos): e.score for e in gr.top_edges(None)}
        out[f"node {m}"] = _sp(ex, gr.node_scores())
        out[f"edge {m}"] = _sp(exact, torch.tensor([look[k] for k in key]))
    look = {(e.kind, e.sender, e.receiver, e.pos, e.kpos): e.score for e in gd.top_edges(None)}
    out["|node| atp*+gd"] = _sp(ex.abs(), gd.node_scores())
    out["|edge| atp*+gd"] = _sp(exact.abs(), torch.tensor([look[k] for k in key]))
    print("\ntoy-induction: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
    assert out["node eap-ig-activations"] >= out["node eap"] + 0.2, out  # measured 0.692
    assert out["node atp*"] >= out["node eap"] + 0.2, out  # measured 0.705 vs 0.412
    assert out["node atp*-ig"] >= 0.8 and out["edge atp*-ig"] >= 0.8, out  # 0.932 / 0.894


# ----------------------------------------------------------------------------------------------
# EAP-IG-activations and GradDrop, against brute force with plain autograd on the HF modules
# ----------------------------------------------------------------------------------------------
def _hf_run(hf, tokens, *, replace=None, detach_layer=None, mlp_leaf=None):
    """One HF forward with forward hooks: ``replace`` {("embed"|"attn"|"mlp", l): constant}
    writes a constant leaf (requires_grad) in place of that module's output; ``detach_layer``
    detaches layer l's attention and MLP outputs; ``mlp_leaf=j`` makes the input of layer j's
    MLP norm a leaf (its gradient is the MLP receiver's). Returns logits, the outputs that carry
    gradients (embed, o_proj and mlp outputs per layer, the MLP leaf) and the o_proj inputs z."""
    mods = hf.model
    keep, handles = {}, []

    def out_hook(key, mod):
        def fn(_m, _inp, out):
            if replace is not None and key in replace:
                out = replace[key].clone().requires_grad_(True)
            elif key[0] != "embed" and key[1] == detach_layer:
                out = out.detach().requires_grad_(True)
            elif out.requires_grad:
                out.retain_grad()
            keep[key] = out
            return out
        handles.append(mod.register_forward_hook(fn))

    def z_hook(l):
        def fn(_m, args):
            keep[("z", l)] = args[0].detach()
            if args[0].requires_grad:
                args[0].retain_grad()
                keep[("zg", l)] = args[0]
        handles.append(mods.layers[l].self_attn.o_proj.register_forward_pre_hook(fn))

    out_hook(("embed", -1), mods.embed_tokens)
    for l, layer in enumerate(mods.layers):
        out_hook(("attn", l), layer.self_attn.o_proj)
        out_hook(("mlp", l), layer.mlp)
        z_hook(l)
    if mlp_leaf is not None:
        def leaf(_m, args):
            x = args[0].detach().requires_grad_(True)
            keep["mlp_in"] = x
            return (x,)
        handles.append(mods.layers[mlp_leaf].post_attention_layernorm.register_forward_pre_hook(leaf))
    try:
        with torch.enable_grad():
            logits = hf(tokens).logits
    finally:
        for h in handles:
            h.remove()
    return logits, keep


def _per_head(hf, z, l):
    """Per-head outputs z_h W_O[h] ``[b p H d]`` from the o_proj input ``[b p H·e]``."""
    W = hf.model.layers[l].self_attn.o_proj.weight  # [d, H·e]
    H = hf.config.num_attention_heads
    e = W.shape[1] // H
    return torch.einsum("bphe,dhe->bphd", z.view(*z.shape[:2], H, e), W.view(-1, H, e))


def _sender_outputs(hf, keep):
    """``{sender: [b p d]}`` in the graph's naming (embed, L{l}H{h}, M{l})."""
    out = {"embed": keep[("embed", -1)].detach()}
    for l in range(hf.config.num_hidden_layers):
        ph = _per_head(hf, keep[("z", l)], l)
        for h in range(ph.shape[2]):
            out[f"L{l}H{h}"] = ph[:, :, h]
        out[f"M{l}"] = keep[("mlp", l)].detach()
    return out


def _grad_of(keep, key):
    t = keep[key]
    return torch.zeros_like(t) if t.grad is None else t.grad


@pytest.mark.slow
def test_eap_ig_activations_is_mibs_definition(random_toy):
    """MIB's EAP-IG-activations (Mueller et al. 2025, arXiv 2504.13151; Hanna et al.'s reference
    code): for every component c (input, attention layer, MLP layer) and α = k/m, k = 1 … m, the
    clean run with c's output replaced by the constant z*_c + α(z_c − z*_c); the gradients are
    averaged over all (2L+1)·m runs. Node scores (the sum of a sender's outgoing edges, i.e.
    δ_u · ∂M/∂out_u) are checked against that Riemann sum computed with plain autograd and
    forward hooks on the HF modules (GQA toy, float64), at position and non-positional
    granularity."""
    pm = _tiny_llama(random_toy)
    hf = pm.hf
    clean, corrupt, met = _data(pm.hf.config.vocab_size)
    n, p = clean.shape
    m = 3
    mb = MetricBatch.from_mask(torch.ones(n, p, dtype=torch.long))
    with torch.no_grad():
        _, kc = _hf_run(hf, clean)
        _, kx = _hf_run(hf, corrupt)
    zc = {k: v.detach() for k, v in kc.items()}
    zx = {k: v.detach() for k, v in kx.items()}
    sc, sx = _sender_outputs(hf, kc), _sender_outputs(hf, kx)
    L = hf.config.num_hidden_layers
    comps = [("embed", -1)] + [(kind, l) for l in range(L) for kind in ("attn", "mlp")]
    gsum = {s: torch.zeros_like(v) for s, v in sc.items()}
    gz = [torch.zeros_like(zc[("z", l)]) for l in range(L)]
    for c in comps:
        for k in range(1, m + 1):
            a = k / m
            lg, keep = _hf_run(hf, clean, replace={c: zx[c] + a * (zc[c] - zx[c])})
            met(lg, mb).sum().backward()
            for s in gsum:
                key = ("embed", -1) if s == "embed" else (("mlp", int(s[1:])) if s.startswith("M")
                                                          else ("attn", int(s[1:].split("H")[0])))
                gsum[s] += _grad_of(keep, key)
            for l in range(L):
                if ("zg", l) in keep and keep[("zg", l)].grad is not None:
                    gz[l] += keep[("zg", l)].grad
            hf.zero_grad(set_to_none=True)
    runs = len(comps) * m
    want = torch.stack([((sx[s] - sc[s]) * gsum[s] / runs).sum(-1).mean(0) for s in pm.senders], 1)
    g = attribute(pm, clean, corrupt, met, method="eap-ig-activations", ig_steps=m)
    assert g.meta["method"] == "eap-ig-activations" and g.meta["ig_steps"] == m
    got = g.node_scores().double()  # the position store keeps float32
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)
    gn = attribute(pm, clean, corrupt, met, method="eap-ig-activations", ig_steps=m, granularity="none")
    torch.testing.assert_close(gn.node_scores()[0], want.sum(0), rtol=1e-5, atol=1e-9)  # norm VJP in float32
    # crossing value edges: A_tt' (v*_t' − v_t') · (mean over the runs of ∂M/∂z_t)
    H, G = hf.config.num_attention_heads, hf.config.num_key_value_heads
    ac, ax = pm.activations(clean), pm.activations(corrupt)
    for l in range(L):
        gzl = (gz[l] / runs).view(n, p, H, -1)
        for h in range(H):
            dv = ax.v[:, l, :, h // (H // G)] - ac.v[:, l, :, h // (H // G)]  # [b k e]
            want_v = (ac.pattern[:, l, h] * torch.einsum("bqe,bke->bqk", gzl[:, :, h], dv)).mean(0)
            torch.testing.assert_close(g.cross[l, h, 2].double(), want_v, rtol=1e-5, atol=1e-9)
    assert g.cross[:, :, 2].abs().max() > 1e-4
    # not EAP-IG (inputs) and not EAP
    for other in ("eap", "eap-ig"):
        o = attribute(pm, clean, corrupt, met, method=other, ig_steps=m).node_scores()
        assert (o - got).abs().max() > 1e-4, other


@pytest.mark.slow
def test_graddrop_is_its_definition(random_toy):
    """AtP*'s GradDrop (Kramár et al. 2024, arXiv 2403.00745):
    c_GD(e) = 1/(L−1) Σ_ℓ |c_ℓ(e)|, c_ℓ the AtP* score with the gradient through layer ℓ's
    outputs zeroed, |.| per example. Edges into MLP and logits receivers are checked against
    plain autograd with the layer's outputs detached by forward hooks on the HF modules; edges
    into query/key receivers against the QK-fix definition with the dropped gradient at z."""
    pm = _tiny_llama(random_toy)
    hf = pm.hf
    clean, corrupt, met = _data(pm.hf.config.vocab_size)
    n, p = clean.shape
    L = hf.config.num_hidden_layers
    mb = MetricBatch.from_mask(torch.ones(n, p, dtype=torch.long))
    gd = attribute(pm, clean, corrupt, met, method="atp*", graddrop=True)
    gd_none = attribute(pm, clean, corrupt, met, method="atp*", graddrop=True, granularity="none")
    atp = attribute(pm, clean, corrupt, met, method="atp*")
    assert gd.meta["graddrop"] and float(gd.same_pos.min()) >= 0 and float(gd.cross.min()) >= 0
    with torch.no_grad():
        _, kc = _hf_run(hf, clean)
        _, kx = _hf_run(hf, corrupt)
    sc, sx = _sender_outputs(hf, kc), _sender_outputs(hf, kx)
    # MLP receiver of layer j and the logits receiver, every upstream sender and position
    for j in range(L + 1):
        per_l = []
        for drop in range(L):
            lg, keep = _hf_run(hf, clean, detach_layer=drop, mlp_leaf=j if j < L else None)
            if j < L:  # (unused when layer j itself is dropped: gradient 0)
                gr = torch.autograd.grad(met(lg, mb).sum(), keep["mlp_in"], allow_unused=True)[0]
                gr = torch.zeros_like(keep["mlp_in"]) if gr is None else gr
            else:  # logits receiver: the gradient at the final norm's input
                gr = torch.autograd.grad(met(lg, mb).sum(), keep[("mlp", L - 1)])[0]
            per_l.append(gr)
        rcv = f"M{j}" if j < L else "logits"
        r = pm.receiver_index[rcv]
        for s in pm.senders:
            si = pm.sender_index[s]
            if not bool(pm.valid[si, r]):
                continue
            d = sx[s] - sc[s]
            want = sum(((d * gl).sum(-1)).abs() for gl in per_l).mean(0) / (L - 1)  # [p]
            torch.testing.assert_close(gd.same_pos[:, si, r].double(), want, rtol=1e-5, atol=1e-9)
            # non-positional: |.| of each example's sum over positions
            want_n = sum(((d * gl).sum((1, 2))).abs() for gl in per_l).mean(0) / (L - 1)
            torch.testing.assert_close(gd_none.same_pos[0, si, r].double(), want_n, rtol=1e-5, atol=1e-9)
    # query/key receivers: 1/(L−1) Σ_ℓ |Δz · ∂M/∂z (gradient with layer ℓ dropped)|
    emb = pm.embed(clean, pm.position_ids(torch.ones(n, p, dtype=torch.long)))
    mask = torch.ones(n, p, dtype=torch.long)
    x = pm.activations(corrupt)
    edges = [e for e in atp.top_edges(8, kinds=["same"], receiver_kinds=["q", "k"])]
    assert {e.receiver.split(".")[-1] for e in edges} == {"q", "k"}
    with torch.no_grad():
        zc = pm.forward(clean, mask, record=True)["activations"].z
    gz = []
    for drop in range(L):
        e_ = emb.detach().requires_grad_(True)
        with torch.enable_grad():
            out = pm.forward(None, mask, embeds=e_, grad_nodes=True, stop_grad_layer=drop)
            gz.append([t if t is not None else torch.zeros_like(o) for t, o in zip(
                torch.autograd.grad(met(out["logits"], mb).sum(), out["z"], allow_unused=True), out["z"])])
    for e in edges:
        layer = int(e.receiver[1:].split("KV")[0].split("H")[0])
        with torch.no_grad():
            zp = pm.forward(clean, mask, ablated=x, record=True,
                            **one_edge_keep(pm, e, n, p))["activations"].z
        want = sum(float(((zp[:, layer] - zc[:, layer]) * g[layer]).sum((1, 2, 3)).abs().sum())
                   for g in gz) / n / (L - 1)
        got = float(gd.same_pos[gd.positions.index(e.pos), pm.sender_index[e.sender],
                                pm.receiver_index[e.receiver]])
        assert got == pytest.approx(want, rel=1e-5, abs=1e-9), e
    with pytest.raises(ValueError, match="graddrop"):
        attribute(pm, clean, corrupt, met, method="eap", graddrop=True)
