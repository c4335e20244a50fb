"""PatchableModel: exactness vs the bridge, and edge patching vs independent hook-based patching."""

from __future__ import annotations

import pytest
import torch

from circuits._forward import Activations, PatchableModel

ATOL = 1e-4


def _toks(model, n=3, p=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    V = model.original_model.config.vocab_size
    t = torch.randint(3, V, (n, p), generator=g)
    t[:, 0] = model.tokenizer.bos_token_id
    return t


def _full_keep(pm, b, p, value=True):
    return torch.full((b, p, len(pm.senders), len(pm.receivers)), value, dtype=torch.bool)


@pytest.mark.parametrize("name", ["toy-induction", "toy-nope", "toy-backcopy", "toy-offset-abs"])
def test_exact_vs_bridge_toys(random_toy, name):
    m = random_toy(name)
    pm = PatchableModel(m)
    toks = _toks(m, 3, 12)
    mask = torch.ones_like(toks)
    mask[1, 7:] = 0
    with torch.no_grad():
        ref = m(toks, attention_mask=mask)
    out = pm.run(toks, mask)
    assert ((ref - out).abs() * mask[..., None]).max() < 1e-5


def test_graph_vocabulary_gqa(random_toy):
    pm = PatchableModel(random_toy("toy-induction"))  # 2 layers, GQA/MQA (fewer KV than q heads)
    H, G = pm.n_heads, pm.n_kv_heads
    assert G < H
    layer = lambda l: [f"L{l}H{h}" for h in range(H)] + [f"M{l}"]  # noqa: E731
    assert pm.senders == ["embed"] + layer(0) + layer(1)
    assert pm.receivers[: H + 2 * G + 1] == ([f"L0H{h}.q" for h in range(H)]
                                             + [f"L0KV{g}.k" for g in range(G)]
                                             + [f"L0KV{g}.v" for g in range(G)] + ["M0"])
    assert len(pm.receivers) == 2 * (H + 2 * G + 1) + 1 and pm.receivers[-1] == "logits"
    v = pm.valid
    si, ri = pm.sender_index, pm.receiver_index
    assert v[si["embed"]].all()
    assert not v[si["L0H1"], ri["L0H1.q"]] and not v[si["L0H1"], ri["L0KV0.k"]]
    assert v[si["L0H1"], ri["M0"]] and v[si["L0H1"], ri[f"L1KV{G - 1}.v"]]
    assert not v[si["M0"], ri["M0"]] and v[si["M0"], ri["L1H0.q"]]
    assert not v[si["M1"], ri["M1"]] and v[si["M1"], ri["logits"]]
    # upstream counts agree with the valid mask
    for r, name in enumerate(pm.receivers):
        assert int(v[:, r].sum()) == (len(pm.senders) if name == "logits" else
                                      pm.n_upstream(int(name[1:].split("H")[0].split("K")[0]),
                                                    "mlp" if name.startswith("M") else "attn"))


def test_all_edges_ablated_gives_counterfactual(random_toy):
    m = random_toy("toy-nope")
    pm = PatchableModel(m)
    clean, corrupt = _toks(m, 2, 9, seed=1), _toks(m, 2, 9, seed=2)
    acts = pm.activations(corrupt)
    ref = pm.run(corrupt)
    out = pm.run(clean, ablated=acts, keep=_full_keep(pm, 2, 9, False))
    assert (out - ref).abs().max() < 1e-5
    kc = torch.zeros(2, pm.n_layers, pm.n_heads, 3, 9, 9, dtype=torch.bool)
    out2 = pm.run(clean, ablated=acts, keep=_full_keep(pm, 2, 9, False), keep_cross=kc)
    assert (out2 - ref).abs().max() < 1e-5
    # nothing ablated: clean logits, whatever `ablated` holds
    out3 = pm.run(clean, ablated=acts, keep=_full_keep(pm, 2, 9, True),
                  keep_cross=torch.ones_like(kc))
    assert (out3 - pm.run(clean)).abs().max() < 1e-5


def _hook_patch(model, toks, hooks):
    with torch.no_grad():
        return model.run_with_hooks(toks, fwd_hooks=hooks)


@pytest.mark.parametrize("name", ["toy-induction", "toy-backcopy"])
def test_node_and_crossing_patch_vs_hooks(random_toy, name):
    """Independent reference: TransformerLens hooks on the bridge."""
    m = random_toy(name)
    pm = PatchableModel(m)
    b, p = 2, 8
    clean, corrupt = _toks(m, b, p, seed=3), _toks(m, b, p, seed=4)
    acts = pm.activations(corrupt)
    cache = {}

    def save(name):
        def f(t, hook):
            cache[name] = t.detach().clone()
        return f

    with torch.no_grad():
        m.run_with_hooks(corrupt, fwd_hooks=[(f"blocks.{l}.attn.hook_{x}", save(f"{l}{x}"))
                                             for l in range(pm.n_layers) for x in "qkvz"])
    l, h, pos = pm.n_layers - 1, pm.n_heads - 1, 5
    g = h // (pm.n_heads // pm.n_kv_heads)

    # 1) node: head L{l}H{h} output at `pos` (all outgoing edges) <-> hook_z patch
    def patch_z(t, hook):
        t = t.clone()
        t[:, pos, h] = cache[f"{l}z"][:, pos, h]
        return t

    ref = _hook_patch(m, clean, [(f"blocks.{l}.attn.hook_z", patch_z)])
    keep = _full_keep(pm, b, p)
    keep[:, pos, pm.sender_index[f"L{l}H{h}"], :] = False
    out = pm.run(clean, ablated=acts, keep=keep)
    assert (out - ref).abs().max() < 1e-5
    assert (out - pm.run(clean)).abs().max() > 1e-4  # the patch did something

    # 2) crossing v: v_{pos} into every query, every head of KV group g <-> hook_v patch
    def patch_v(t, hook):
        t = t.clone()
        t[:, pos, g] = cache[f"{l}v"][:, pos, g]
        return t

    ref = _hook_patch(m, clean, [(f"blocks.{l}.attn.hook_v", patch_v)])
    kc = torch.ones(b, pm.n_layers, pm.n_heads, 3, p, p, dtype=torch.bool)
    rep = pm.n_heads // pm.n_kv_heads
    kc[:, l, g * rep:(g + 1) * rep, 2, :, pos] = False
    out = pm.run(clean, ablated=acts, keep_cross=kc)
    assert (out - ref).abs().max() < 1e-5

    # 3) crossing k: k_{pos} (pre-rotary patch = rotated patch at the same position)
    def patch_k(t, hook):
        t = t.clone()
        t[:, pos, g] = cache[f"{l}k"][:, pos, g]
        return t

    ref = _hook_patch(m, clean, [(f"blocks.{l}.attn.hook_k", patch_k)])
    kc = torch.ones(b, pm.n_layers, pm.n_heads, 3, p, p, dtype=torch.bool)
    kc[:, l, g * rep:(g + 1) * rep, 1, :, pos] = False
    out = pm.run(clean, ablated=acts, keep_cross=kc)
    assert (out - ref).abs().max() < 1e-5

    # 4) crossing q: q_pos of head h in all its scores
    def patch_q(t, hook):
        t = t.clone()
        t[:, pos, h] = cache[f"{l}q"][:, pos, h]
        return t

    ref = _hook_patch(m, clean, [(f"blocks.{l}.attn.hook_q", patch_q)])
    kc = torch.ones(b, pm.n_layers, pm.n_heads, 3, p, p, dtype=torch.bool)
    kc[:, l, h, 0, pos, :] = False
    out = pm.run(clean, ablated=acts, keep_cross=kc)
    assert (out - ref).abs().max() < 1e-5


def test_single_edge_into_logits_vs_hooks(random_toy):
    """Edge L0H1@pos → logits only: equals adding (z*−z)W_O to ln_final's input."""
    m = random_toy("toy-nope")
    pm = PatchableModel(m)
    b, p, pos, h = 2, 8, 4, 1
    clean, corrupt = _toks(m, b, p, seed=5), _toks(m, b, p, seed=6)
    acts_c, acts_x = pm.activations(clean), pm.activations(corrupt)
    s = pm.sender_index[f"L0H{h}"]
    diff = acts_x.senders[:, pos, s] - acts_c.senders[:, pos, s]

    def add(t, hook):
        t = t.clone()
        t[:, pos] += diff
        return t

    ref = _hook_patch(m, clean, [("ln_final.hook_in", add)])
    keep = _full_keep(pm, b, p)
    keep[:, pos, s, pm.receiver_index["logits"]] = False
    out = pm.run(clean, ablated=acts_x, keep=keep)
    assert (out - ref).abs().max() < 1e-5
    # and it differs from ablating the whole node (which also changes layer-1 inputs)
    keep2 = _full_keep(pm, b, p)
    keep2[:, pos, s, :] = False
    assert (pm.run(clean, ablated=acts_x, keep=keep2) - out).abs().max() > 1e-5


def test_mean_zero_align(random_toy):
    m = random_toy("toy-induction")
    pm = PatchableModel(m)
    t = _toks(m, 3, 6)
    mask = torch.ones_like(t)
    mask[2, 4:] = 0
    a = pm.activations(t, mask)
    mu = a.mean()
    assert mu.senders.shape[0] == 1
    torch.testing.assert_close(mu.senders[0, 5], a.senders[:2, 5].mean(0))
    torch.testing.assert_close(mu.q[0, :, 1], a.q[:, :, 1].mean(0))
    assert a.zeros_like().senders.abs().sum() == 0
    pmap = torch.tensor([[0, 1, 1, 2, 3, 5]] * 3)
    al = a.align(pmap)
    torch.testing.assert_close(al.senders[:, 2], a.senders[:, 1])
    torch.testing.assert_close(al.v[:, :, 5], a.v[:, :, 5])
    torch.testing.assert_close(al.pattern[:, :, :, 3, 2], a.pattern[:, :, :, 2, 1])
    assert isinstance(al, Activations)


def test_gemma_refused_clearly():
    class Cfg:
        model_type = "gemma3_text"

    class HF:
        config = Cfg()

    class Bridge:
        original_model = HF()

    with pytest.raises(NotImplementedError, match="Gemma"):
        PatchableModel(Bridge())


@pytest.mark.real_model
def test_exact_vs_bridge_smollm2_padding(smollm2):
    from interp import tokenize

    pm = PatchableModel(smollm2)
    prompts = ["When Mary and John went to the store, John gave a drink to", "Hello world"]
    rb = tokenize(smollm2, prompts, prepend_bos=True, padding_side="right")
    with torch.no_grad():
        ref = smollm2(rb.tokens, attention_mask=rb.attention_mask)
    out = pm.run(rb.tokens, rb.attention_mask)
    m = rb.attention_mask.bool()
    assert (ref - out).abs()[m].max() < ATOL
    # left padding gives the unpadded numbers (position ids from the mask)
    lb = tokenize(smollm2, prompts, prepend_bos=True, padding_side="left")
    outl = pm.run(lb.tokens, lb.attention_mask)
    single = pm.run(lb.tokens[1:, lb.columns(1)])
    assert (outl[1, lb.columns(1)] - single[0]).abs().max() < ATOL
    assert (outl[0] - out[0]).abs().max() < ATOL
