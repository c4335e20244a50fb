"""PatchableModel: exactness vs the bridge, and edge patching vs independent hook-based patching."""

from __future__ import annotations

import pytest
import torch

from circuits._forward import Activations, PatchableModel
from helpers import GLOBAL, LOCAL, _tiny_gemma

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
@pytest.mark.slow
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


def test_unknown_family_refused_clearly():
    class Cfg:
        model_type = "mamba"

    class HF:
        config = Cfg()

    class Bridge:
        original_model = HF()

    with pytest.raises(NotImplementedError, match="'mamba'.*Adding a model family"):
        PatchableModel(Bridge())


# ---------------------------------------------------------------------------------- Gemma 3
def _tiny_toks(b=3, p=11, seed=0):
    t = torch.randint(3, 61, (b, p), generator=torch.Generator().manual_seed(seed))
    t[:, 0] = 2
    return t


@pytest.mark.parametrize("caps,bias", [((None, None), False), ((2.0, 0.2), False), ((None, None), True)])
def test_gemma_tiny_exact_vs_hf_with_sliding_window(caps, bias):
    """Independent reference: HF eager Gemma3ForCausalLM, padded batch, prompts 4x the window.
    With softcaps set: final logits are capped; HF's Gemma 3 attention ignores its attention cap
    (never passed to the attention function), and so does PatchableModel. With attention biases,
    b_O sits inside post_attention_layernorm (its share is a non-ablated term of the run)."""
    hf = _tiny_gemma(attn_cap=caps[0], final_cap=caps[1], bias=bias)
    pm = PatchableModel(hf)
    assert pm.arch == "gemma3" and (pm.n_heads, pm.n_kv_heads, pm.d_head) == (4, 1, 16)
    assert [W.window for W in pm.layers] == [3, None, 3]
    assert pm.rope_theta == {LOCAL: 10.0, GLOBAL: 1000.0} and pm.scale == 24 ** -0.5
    toks = _tiny_toks()
    mask = torch.ones_like(toks)
    mask[1, 6:] = 0
    with torch.no_grad():
        ref = hf(toks, attention_mask=mask).logits
    out = pm.run(toks, mask)
    assert ((ref - out).abs() * mask[..., None]).max() < 1e-5
    # the test can fail: without the sliding window (or with one RoPE table) the logits differ
    for W in pm.layers:
        W.window = None
    assert ((pm.run(toks, mask) - ref).abs() * mask[..., None]).max() > 1e-3
    pm2 = PatchableModel(hf)
    for W in pm2.layers:
        W.rope_key = GLOBAL
    assert ((pm2.run(toks, mask) - ref).abs() * mask[..., None]).max() > 1e-3


def _capture(mods, pre=False):
    """Forward (pre-)hooks saving each module's output (input) in a dict keyed by position."""
    saved, handles = {}, []
    for i, mod in enumerate(mods):
        def f(_m, args, out=None, i=i):
            saved[i] = (args[0] if pre else out).detach().clone()
        handles.append(mod.register_forward_pre_hook(f) if pre else mod.register_forward_hook(f))
    return saved, handles


def test_gemma_tiny_head_shares_sum_to_block_output():
    """Σ_h share_h = post_attention_layernorm output and M{l} = post_feedforward_layernorm output
    of HF, in the clean and the corrupt run."""
    hf = _tiny_gemma()
    pm = PatchableModel(hf)
    layers = hf.model.layers
    for seed in (1, 2):
        toks = _tiny_toks(2, 9, seed)
        attn, h1 = _capture([blk.post_attention_layernorm for blk in layers])
        mlp, h2 = _capture([blk.post_feedforward_layernorm for blk in layers])
        with torch.no_grad():
            hf(toks)
        for h in h1 + h2:
            h.remove()
        acts = pm.activations(toks)
        emb = hf.model.embed_tokens(toks)
        torch.testing.assert_close(acts.senders[:, :, 0], emb, atol=1e-6, rtol=1e-6)
        for l in range(pm.n_layers):
            ss = pm.sender_slice(l)
            torch.testing.assert_close(acts.senders[:, :, ss.start: ss.stop - 1].sum(2), attn[l],
                                       atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(acts.senders[:, :, ss.stop - 1], mlp[l], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_gemma_tiny_all_edges_ablated_gives_counterfactual(bias):
    hf = _tiny_gemma(bias=bias)
    pm = PatchableModel(hf)
    b, p = 2, 10
    clean, corrupt = _tiny_toks(b, p, 3), _tiny_toks(b, p, 4)
    acts = pm.activations(corrupt)
    ref = pm.run(corrupt)
    with torch.no_grad():
        assert (ref - hf(corrupt).logits).abs().max() < 1e-5
    kc = torch.zeros(b, pm.n_layers, pm.n_heads, 3, p, p, dtype=torch.bool)
    for cross in (None, kc):
        out = pm.run(clean, ablated=acts, keep=_full_keep(pm, b, p, False), keep_cross=cross)
        assert (out - ref).abs().max() < 1e-5
    out = pm.run(clean, ablated=acts, keep=_full_keep(pm, b, p, True), keep_cross=torch.ones_like(kc))
    assert (out - pm.run(clean)).abs().max() < 1e-5


def _hf_logits_with_head_share_swapped(hf, l, h, pos, clean, corrupt):
    """Independent HF reference for patching every edge out of head ``h`` of layer ``l`` at
    ``pos``: HF's clean logits with share*_h − share_h added to the post_attention_layernorm
    output, the shares computed by hand from o_proj's input,
    share_h = (1 + g) ⊙ o_h / rms(o_proj output)."""
    blk = hf.model.layers[l]
    at, g, eps = blk.self_attn, blk.post_attention_layernorm.weight, hf.config.rms_norm_eps
    e = hf.config.head_dim

    def share(toks):
        zin, hz = _capture([at.o_proj], pre=True)
        with torch.no_grad():
            hf(toks)
            hz[0].remove()
            z = zin[0]  # [b p H*e]
            o_h = z[..., h * e:(h + 1) * e] @ at.o_proj.weight[:, h * e:(h + 1) * e].T
            return (1 + g) * o_h * torch.rsqrt(at.o_proj(z).pow(2).mean(-1, keepdim=True) + eps)

    diff = (share(corrupt) - share(clean))[:, pos]

    def add(_m, _args, out):
        out = out.clone()
        out[:, pos] += diff
        return out

    hk = blk.post_attention_layernorm.register_forward_hook(add)
    try:
        with torch.no_grad():
            return hf(clean).logits
    finally:
        hk.remove()


@pytest.mark.parametrize("l,h,pos", [(0, 1, 4), (1, 3, 7), (2, 0, 9)])
def test_gemma_tiny_head_share_patch_vs_hf_hooks(l, h, pos):
    """Ablating every edge out of head h at pos = adding share*_h − share_h to HF's
    post_attention_layernorm output, the shares computed by hand from HF's o_proj input:
    share_h = (1 + g) ⊙ o_h / rms(o_proj output)."""
    hf = _tiny_gemma()
    pm = PatchableModel(hf)
    b, p = 2, 10
    clean, corrupt = _tiny_toks(b, p, 5), _tiny_toks(b, p, 6)
    ref = _hf_logits_with_head_share_swapped(hf, l, h, pos, clean, corrupt)
    s = pm.sender_index[f"L{l}H{h}"]
    keep = _full_keep(pm, b, p)
    keep[:, pos, s, pm.valid[s]] = False  # every edge out of the head, receiver by receiver
    out = pm.run(clean, ablated=pm.activations(corrupt), keep=keep)
    assert (out - ref).abs().max() < 1e-5
    assert (out - pm.run(clean)).abs().max() > 1e-4  # the patch did something


@pytest.mark.parametrize("l,pos", [(0, 3), (2, 8)])
def test_gemma_tiny_receivers_are_residual_inputs(l, pos):
    """All q/k/v receivers of layer l at pos fed from the corrupt run = replacing the input of
    HF's input_layernorm (the residual stream stays clean): q_norm/k_norm/RoPE come after the
    receiver. Same for the MLP receiver (pre_feedforward_layernorm input) and the logits (norm)."""
    hf = _tiny_gemma()
    pm = PatchableModel(hf)
    b, p = 2, 10
    clean, corrupt = _tiny_toks(b, p, 7), _tiny_toks(b, p, 8)
    acts = pm.activations(corrupt)
    blk = hf.model.layers[l]
    rs = pm.receiver_slice(l)
    for mod, recv in ((blk.input_layernorm, slice(rs.start, rs.stop - 1)),
                      (blk.pre_feedforward_layernorm, slice(rs.stop - 1, rs.stop)),
                      (hf.model.norm, slice(len(pm.receivers) - 1, None))):
        xin, hx = _capture([mod], pre=True)
        with torch.no_grad():
            hf(corrupt)
        hx[0].remove()

        def swap(_m, args, saved=xin[0]):
            x = args[0].clone()
            x[:, pos] = saved[:, pos]
            return (x,)

        hk = mod.register_forward_pre_hook(swap)
        with torch.no_grad():
            ref = hf(clean).logits
        hk.remove()
        keep = _full_keep(pm, b, p)
        keep[:, pos, :, recv] = False
        out = pm.run(clean, ablated=acts, keep=keep)
        assert (out - ref).abs().max() < 1e-5
        assert (out - pm.run(clean)).abs().max() > 1e-4


@pytest.mark.parametrize("types", [(LOCAL, GLOBAL), (GLOBAL, LOCAL)])
def test_gemma_tiny_rerotate_per_layer_rope(types):
    """Re-rotating layer-0 q/k by k positions (each layer with its own RoPE base) equals the q/k
    of the same token k positions later (layer-0 q/k depend only on the token and position)."""
    hf = _tiny_gemma(layer_types=types, window=4)
    pm = PatchableModel(hf)
    toks = _tiny_toks(2, 6, 9)
    k = 3
    shifted = torch.cat([toks[:, :1].expand(2, k), toks], dim=1)
    a, a2 = pm.activations(toks), pm.activations(shifted)
    shift = torch.full((2, 6), k)
    for name in ("q", "k"):
        x = getattr(a, name)[:, :1]
        want = getattr(a2, name)[:, :1, k:]
        torch.testing.assert_close(pm.rerotate(x, shift), want, atol=1e-5, rtol=1e-5)
        assert (x - want).abs().max() > 1e-3
    # every layer with its own table: HF's rotary module and apply_rotary_pos_emb per layer type
    from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

    got = pm.rerotate(a.k, shift)
    for l, kind in enumerate(types):
        cos, sin = hf.model.rotary_emb(a.k, shift, kind)
        want, _ = apply_rotary_pos_emb(a.k[:, l], a.k[:, l], cos, sin, unsqueeze_dim=2)
        torch.testing.assert_close(got[:, l], want, atol=1e-6, rtol=1e-6)


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


@pytest.mark.gemma
def test_exact_vs_hf_gemma(gemma):
    """Gemma-3-270M: PatchableModel logits = HF original_model (eager) logits, padded prompts of
    different lengths and one prompt longer than the 512-token sliding window."""
    from interp import tokenize

    hf = gemma.original_model
    cfg = hf.config
    assert cfg._attn_implementation == "eager"
    pm = PatchableModel(gemma)
    assert (pm.n_layers, pm.n_heads, pm.n_kv_heads, pm.d_head) == (18, 4, 1, 256)
    assert pm.rope_theta == {k: v["rope_theta"] for k, v in cfg.rope_parameters.items()}
    assert pm.rope_theta["sliding_attention"] != pm.rope_theta["full_attention"]
    assert [W.window is None for W in pm.layers] == [k == "full_attention" for k in cfg.layer_types]
    prompts = ["When Mary and John went to the store, John gave a drink to", "Hello world",
               "The capital of France is"]
    rb = tokenize(gemma, prompts, prepend_bos=True, padding_side="right")
    with torch.no_grad():
        ref = hf(rb.tokens, attention_mask=rb.attention_mask).logits
    out = pm.run(rb.tokens, rb.attention_mask)
    m = rb.attention_mask.bool()
    assert (ref - out).abs()[m].max() < ATOL  # measured 2.7e-5 (logits up to ~30)
    lb = tokenize(gemma, prompts[:2], prepend_bos=True, padding_side="left")
    outl = pm.run(lb.tokens, lb.attention_mask)
    assert (outl[1, lb.columns(1)] - out[1, : rb.lengths[1]]).abs().max() < ATOL
    # beyond the sliding window: positions >= 512 of sliding layers no longer see BOS
    n = cfg.sliding_window + 8
    toks = torch.randint(10, 20000, (1, n), generator=torch.Generator().manual_seed(0))
    toks[0, 0] = gemma.tokenizer.bos_token_id
    with torch.no_grad():
        ref = hf(toks, logits_to_keep=16).logits
    out = pm.run(toks)[:, -16:]
    assert (ref - out).abs().max() < ATOL  # measured 5.4e-5; without the window: 5.7


@pytest.mark.gemma
def test_gemma_patching_exact(gemma):
    """Gemma-3-270M: all edges ablated = the counterfactual run, none = the clean run, and one
    head's share patched = HF with that share swapped at post_attention_layernorm."""
    from circuits import tasks

    t = tasks.ioi(gemma, 2, seed=0)
    clean, corrupt = t.clean.tokens, t.corrupt.tokens
    b, p = clean.shape
    pm = PatchableModel(gemma)
    acts = pm.activations(corrupt)
    ref = pm.run(corrupt)
    kc = torch.zeros(b, pm.n_layers, pm.n_heads, 3, p, p, dtype=torch.bool)
    out = pm.run(clean, ablated=acts, keep=_full_keep(pm, b, p, False), keep_cross=kc)
    assert (out - ref).abs().max() < ATOL
    base = pm.run(clean)
    out = pm.run(clean, ablated=acts, keep=_full_keep(pm, b, p, True), keep_cross=~kc)
    assert (out - base).abs().max() < ATOL
    # head L5H2 (a global layer) at the last token: its share of the normalised block output
    hf = gemma.original_model
    l, h, pos = 5, 2, p - 1
    ref = _hf_logits_with_head_share_swapped(hf, l, h, pos, clean, corrupt)
    keep = _full_keep(pm, b, p)
    keep[:, pos, pm.sender_index[f"L{l}H{h}"]] = False
    out = pm.run(clean, ablated=acts, keep=keep)
    assert (out - ref).abs().max() < ATOL
    assert (out - base).abs().max() > 1e-3
