"""Planted circuits of the trained zoo models rank at the top of the attribution."""

from __future__ import annotations

import pytest
import torch

from circuits import attribute
from circuits.attribution import exact_edge_score
from circuits.metrics import logit_diff


def _zoo(name):
    """The shipped zoo model and its manifest (the weights ship in the package: no skip)."""
    from interp import load_model
    from interp.zoo import manifest

    return load_model(name), manifest(name)


@pytest.mark.parametrize("name", ["toy-offset-rope", "toy-offset-abs"])
@pytest.mark.parametrize("method", ["eap", "eap-ig"])
@pytest.mark.slow
def test_offset_head_circuit_ranks_top(name, method):
    """Changing token j only matters through head → logits at j+3, its value edge from j, and
    the embedding → value input at j: exactly the planted circuit, with positions."""
    from interp.zoo import tasks as T

    model, man = _zoo(name)
    head = man["heads"][0]
    lab, off = head["label"], int(man["task"]["params"]["offset"])
    g = head["head"] // (man["model"]["n_heads"] // man["model"]["n_kv_heads"])
    b = T.offset_batch(6, n_vocab=man["task"]["params"]["n_vocab"], length=12, offset=off, seed=3)
    clean = b.tokens
    j = 4
    corrupt = clean.clone()
    corrupt[:, j] = (clean[:, j] - T.N_SPECIAL + 7) % man["task"]["params"]["n_vocab"] + T.N_SPECIAL
    met = logit_diff(clean[:, j], corrupt[:, j], position=torch.full((6,), j + off))
    gr = attribute(model, clean, corrupt, met, method=method)
    top = {(e.kind, e.sender, e.receiver, e.pos.split(":")[0], e.kpos.split(":")[0])
           for e in gr.top_edges(3)}
    t = str(j + off)
    want = {("v", lab, lab, t, str(j)), ("same", "embed", f"L0KV{g}.v", str(j), str(j)),
            ("same", lab, "logits", t, t)}
    assert top == want, gr.top_edges(5)
    # the planted value edge carries (almost) the whole effect under exact patching too
    e = gr.top_edges(None, kinds=["v"])[0]
    exact = exact_edge_score(model, clean, corrupt, met, e)
    full = float(met(model.original_model(corrupt).logits, _mb(corrupt)).mean()
                 - met(model.original_model(clean).logits, _mb(clean)).mean())
    assert exact == pytest.approx(full, rel=0.2)


def _mb(tokens):
    from circuits.metrics import MetricBatch

    return MetricBatch.from_mask(torch.ones_like(tokens))


def test_induction_previous_token_head_feeds_induction_keys():
    """toy-induction on its own data (noise, A, A with |A| = 10): the previous-token head
    (layer 0) → the induction head's KV-group key input is the top edge into any layer-1 key
    receiver, at first-copy positions (K-composition); the induction head's crossing key edges
    run from the first copy to the second."""
    from circuits.metrics import logprob
    from interp.zoo import tasks as T

    model, man = _zoo("toy-induction")
    roles = {h["role"]: h for h in man["heads"]}
    prev, ind = roles["previous_token"], roles["induction"]
    kv = ind["kv_head"]
    ell = 10
    b = T.induction_batch(6, n_vocab=64, length=40, min_segment=ell, max_segment=ell, seed=5)
    s2 = int(b.extra["second_start"][0])
    first = range(s2 - ell, s2)
    clean = b.tokens
    corrupt = clean.clone()
    corrupt[:, s2 - ell: s2] = (clean[:, s2 - ell: s2] - T.N_SPECIAL + 31) % 64 + T.N_SPECIAL
    met = logprob(b.targets.clamp(min=0), b.eval_mask)
    gr = attribute(model, clean, corrupt, met, method="eap-ig", ig_steps=5)
    k_edges = gr.top_edges(3, kinds=["same"], receiver_kinds=["k"], layers=[1])
    # the key input also carries the token itself (embed → k), the planted edge is next to it
    assert (prev["label"], f"L1KV{kv}.k") in {(e.sender, e.receiver) for e in k_edges}, k_edges
    assert all(int(e.pos.split(":")[0]) in first for e in k_edges), k_edges
    heads_only = [e for e in gr.top_edges(None, kinds=["same"], receiver_kinds=["k"], layers=[1])
                  if e.sender != "embed"]
    assert (heads_only[0].sender, heads_only[0].receiver) == (prev["label"], f"L1KV{kv}.k")
    # summed over positions, the previous-token head dominates every other layer-0 head
    r = gr.receivers.index(f"L1KV{kv}.k")
    per_head = {s: float(gr.same_pos[:, gr.senders.index(s), r].abs().sum())
                for s in gr.senders if s.startswith("L0H")}
    assert max(per_head, key=per_head.get) == prev["label"], per_head
    ck = gr.top_edges(3, kinds=["k"], layers=[1])
    assert all(e.sender == ind["label"] for e in ck), ck
    assert all(int(e.kpos.split(":")[0]) in first and int(e.pos.split(":")[0]) >= s2 for e in ck), ck


def _graded(name, n=8):
    """Trained toy on its own task, with *graded* corruption: example i replaces i+1 random
    tokens (offset: anywhere in the first 10; induction: in the first copy). Node effects then
    spread over a range of sizes, so a rank correlation with exact patching is well posed
    (corrupting the same tokens in every example makes the large effects near-ties and the
    ranking among them noise)."""
    from interp.zoo import tasks as T

    model, man = _zoo(name)
    V = man["task"]["params"]["n_vocab"]
    g = torch.Generator().manual_seed(0)
    if man["task"]["name"] == "offset":
        b = T.offset_batch(n, n_vocab=V, length=14, offset=man["task"]["params"]["offset"], seed=3)
        where = [1 + torch.randperm(10, generator=g)[: i + 1] for i in range(n)]
    elif man["task"]["name"] == "induction":
        ell = 10
        b = T.induction_batch(n, n_vocab=V, length=40, min_segment=ell, max_segment=ell, seed=5)
        s2 = int(b.extra["second_start"][0])
        where = [s2 - ell + torch.randperm(ell, generator=g)[: i + 1] for i in range(n)]
    else:  # backcopy: scored at the trigger positions (deterministic back-copy targets)
        from interp.zoo import make_batch

        b = make_batch(name, n, seed=3)
        b.eval_mask = b.extra["trigger_mask"]
        where = [1 + torch.randperm(b.tokens.shape[1] - 2, generator=g)[: 2 * (i + 1)]
                 for i in range(n)]
    clean, corrupt = b.tokens, b.tokens.clone()
    for i, idx in enumerate(where):
        corrupt[i, idx] = (clean[i, idx] - T.N_SPECIAL + 7) % V + T.N_SPECIAL
    with torch.no_grad():  # wrong answer: what the counterfactual run predicts
        wrong = model.original_model(corrupt).logits.argmax(-1)
    return model, clean, corrupt, b.targets.clamp(min=0), wrong, b.eval_mask


def _sp(a, b):
    from scipy.stats import spearmanr

    a, b = a.flatten(), b.flatten()
    ok = ~torch.isnan(a) & ((a.abs() + b.abs()) > 0)
    return float(spearmanr(a[ok].numpy(), b[ok].numpy()).statistic)


@pytest.mark.parametrize("name", ["toy-induction", "toy-offset-rope", "toy-offset-abs"])
@pytest.mark.slow
def test_trained_toys_scores_vs_exact_patching(name):
    """Trained zoo models: node scores (every sender × position) and edge scores (25 top + 35
    random edges of all kinds, each patched exactly) against exact patching.

    With the per-position logit difference both EAP and EAP-IG reach Spearman >= 0.7 and EAP-IG
    is at least as close. With log-probabilities the clean run is saturated (log p ≈ 0), EAP's
    gradient nearly vanishes and its ranking is poor, while EAP-IG's interpolated gradients
    recover exact patching (Hanna et al. 2024).

    toy-induction is the exception for EAP: its induction head's attention is saturated (0.97
    on the right key), so the gradient through that softmax — the K-composition path from the
    previous-token head — nearly vanishes and EAP under-ranks it (measured node 0.41, edge
    0.68); EAP-IG stays >= 0.7 (0.95 / 0.89). Measured on the offset toys: EAP 0.97 / 0.97
    (rope) and 0.93 / 0.92 (abs), EAP-IG 0.99 / 0.99 and 0.95 / 0.94 (node / edge)."""
    from circuits import exact_node_scores
    from circuits.metrics import logprob, token_logit_diff

    model, clean, corrupt, tc, wrong, w = _graded(name)
    out = {}
    for mname, met in (("logit_diff", token_logit_diff(tc, wrong, w)), ("logprob", logprob(tc, w))):
        ex = exact_node_scores(model, clean, corrupt, met)
        graphs = {m: attribute(model, clean, corrupt, met, method=m) for m in ("eap", "eap-ig")}
        for m, gr in graphs.items():
            out[f"{mname} node {m}"] = _sp(ex, gr.node_scores())
        if mname == "logit_diff":
            edges = graphs["eap-ig"].top_edges(None)
            gen = torch.Generator().manual_seed(0)
            pick = edges[:25] + [edges[i] for i in torch.randperm(len(edges), generator=gen)[:35]]
            exact = torch.tensor([exact_edge_score(model, clean, corrupt, met, e) for e in pick])
            key = [(e.kind, e.sender, e.receiver, e.pos, e.kpos) for e in pick]
            for m, gr in graphs.items():
                lookup = {(e.kind, e.sender, e.receiver, e.pos, e.kpos): e.score
                          for e in gr.top_edges(None)}
                out[f"{mname} edge {m}"] = _sp(exact, torch.tensor([lookup[k] for k in key]))
    print(f"\n{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
    for what in ("node", "edge"):
        if name != "toy-induction":
            assert out[f"logit_diff {what} eap"] >= 0.7, out
        assert out[f"logit_diff {what} eap-ig"] >= 0.7, out
        assert out[f"logit_diff {what} eap-ig"] >= out[f"logit_diff {what} eap"] - 0.02, out
    assert out["logprob node eap-ig"] >= 0.7 and out["logprob node eap-ig"] >= out["logprob node eap"]


@pytest.mark.parametrize("name", ["toy-induction", "toy-nope"])
@pytest.mark.slow
def test_trained_toy_eap_is_the_derivative_of_exact_patching(name):
    """Where EAP ranks poorly against exact patching (trained toy-induction, toy-nope: see
    test_trained_toys_scores_vs_exact_patching and BENCHMARKS.md), it is still exactly what it
    claims to be: each same-position edge score equals d/dε M(edge fed z + ε(z* − z)) at ε = 0
    (central differences, float64). The gap is the first-order approximation's, not the code's.
    (Crossing edges are not first-order by design — exact inside the softmax, linear after z —
    and are checked against brute force in test_attribution.py.)"""
    from transformers import AutoModelForCausalLM

    from circuits.attribution import patchable
    from circuits.metrics import token_logit_diff
    from helpers import assert_eap_is_patching_derivative

    model, clean, corrupt, tc, wrong, w = _graded(name, n=4)
    hf = AutoModelForCausalLM.from_pretrained(_zoo_dir(name),
                                              attn_implementation="eager").double().eval()
    pm = patchable(hf)
    met = token_logit_diff(tc, wrong, w)
    graph = attribute(pm, clean, corrupt, met, method="eap")
    edges = graph.top_edges(12, kinds=["same"])
    assert {e.receiver.split(".")[-1] for e in edges} & {"q", "k", "v", "logits"}
    assert_eap_is_patching_derivative(pm, clean, corrupt, met, edges, eps=1e-4, rtol=1e-3)


def _zoo_dir(name):
    from interp.zoo import model_dir

    return str(model_dir(name))
