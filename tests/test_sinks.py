"""Sink importance, drains, peaks, massive activations, active/dormant heads and the repeated-token
check — against brute force over cached activations, HF eager attentions on SmolLM2, closed forms
and the planted Bigram-Backcopy sink of the toy zoo."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from interp import scan, sinks  # noqa: E402

from helpers import PROMPTS, _tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_llama(tmp_path_factory.mktemp("tiny-llama-sinks"), seed=1)


def _cache(model, prompt, names):
    toks = model.to_tokens(prompt)
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith(("hook_pattern", "hook_v", "hook_resid_post", "hook_out")))
    return toks, cache


def test_alpha_bruteforce_every_key(tiny):
    r = sinks.sink_analysis(tiny, PROMPTS, batch_size=2)
    assert r.alpha.shape == (2, 2, 4, 12)
    for i, p in enumerate(PROMPTS):
        toks, cache = _cache(tiny, p, None)
        T = toks.shape[1]
        for l in range(2):
            A = cache[f"blocks.{l}.attn.hook_pattern"][0]
            ref = torch.stack([A[:, k:, k].sum(-1) / (T - k) for k in range(T)], dim=-1)
            assert torch.allclose(r.alpha[i, l, :, :T], ref, atol=1e-6)
        assert torch.isnan(r.alpha[i, :, :, T:]).all()
    # Sink_k^eps: share of heads with alpha > eps (strict), mean over prompts with key k
    for k in (0, 3):
        for eps in (0.05, 0.2):
            share = [(r.alpha[i, :, :, k] > eps).float().mean() for i in range(2)]
            assert r.sink_rate(k, eps) == pytest.approx(float(sum(share) / 2))
    assert torch.allclose(r.alpha_mean, torch.nanmean(r.alpha, 0), equal_nan=True)


def test_sink_rate_closed_form_strict():
    a = torch.full((2, 1, 4, 3), 0.3)
    a[0, 0, :2, 0] = 0.31  # half the heads of prompt 0 above eps
    a[1, :, :, 2] = float("nan")  # prompt 1 shorter than 3
    assert sinks.sink_rate(a, 0, 0.3) == pytest.approx(0.25)  # (0.5 + 0)/2, 0.3 is not > 0.3
    assert sinks.sink_rate(a, 2, 0.2) == pytest.approx(1.0)  # only prompt 0 counts
    with pytest.raises(ValueError, match="eps"):
        sinks.sink_rate(a, 0, 1.2)
    with pytest.raises(ValueError, match="key position"):
        sinks.sink_rate(a, 5, 0.3)


@pytest.mark.slow
def test_drains_peaks_massive_bruteforce(tiny):
    """‖v_j W_O^h‖ via the HF o_proj of a one-head input (GQA: KV head h // group), residual
    norms and the massive-activation rule recomputed from a full cache."""
    thr, ratio = 0.02, 3.0
    r = sinks.sink_analysis(tiny, [PROMPTS[0]], massive_threshold=thr, massive_ratio=ratio, top_k=3)
    toks, cache = _cache(tiny, PROMPTS[0], None)
    T = toks.shape[1]
    hf = tiny.original_model
    H, dh, group = 4, 8, 2
    for l in range(2):
        v = cache[f"blocks.{l}.attn.hook_v"][0]  # [pos kv d]
        o = hf.model.layers[l].self_attn.o_proj
        for h in range(H):
            z = torch.zeros(T, H * dh)
            z[:, h * dh:(h + 1) * dh] = v[:, h // group]
            ref = o(z).norm(dim=-1)
            assert torch.allclose(r.value_norm[l, h], ref, atol=1e-5)
        x = cache[f"blocks.{l}.hook_resid_post"][0]
        n = x.norm(dim=-1)
        assert torch.allclose(r.resid_norm[l], n, atol=1e-5)
        assert float(r.resid_peak_ratio[l]) == pytest.approx(float(n[0] / n[1:].max()), rel=1e-5)
        a = x.abs()
        med = a.median()
        assert r.massive.n_flagged[l] == int(((a > thr) & (a > ratio * med)).sum())
        assert abs(float(r.massive.top_values[l, 0])) == pytest.approx(float(a.max()), rel=1e-6)
        t, d = divmod(int(a.flatten().argmax()), a.shape[1])
        assert (r.massive.top_positions[l][0], r.massive.top_dims[l][0]) == (t, d)
    assert r.drain_ratio.shape == (2, 4)
    expect = r.value_norm[:, :, 0] / r.value_norm[:, :, 1:].mean(-1)
    assert torch.allclose(r.drain_ratio, expect, atol=1e-6)
    s = json.dumps(r.to_json())
    assert '"prepend_bos": true' in s and "MassiveActivationsResult" in s
    for fig in (r.plot(), r.plot_sink_curve(), r.plot_drains(), r.plot_resid_peaks(), r.massive.plot()):
        assert fig.layout.title.text
    assert r.plot().data[0].y[0] == "L0"


def test_discovery_categories():
    toks = [["<bos>", "w1", "w2", ".", "w3", "\\n", "w4", "w5", "w6", "w7"]]
    a = torch.zeros(1, 1, 2, 10)
    a[0, 0, :, 0] = 0.9  # both heads sink on position 0
    a[0, 0, 0, 3] = 0.9  # one head on the first delimiter
    a[0, 0, :, 5] = 0.5  # both on the newline
    r = sinks.SinkResult(model="fake", prepend_bos=True, eps=0.3, sink_position=0, n_kv_heads=2,
                         alpha=a, alpha_mean=a[0], str_tokens=toks)
    d = r.discover(min_queries=2)
    assert d.categories["position 0"]["mean_share"] == 1.0
    assert d.categories["first delimiter"]["mean_share"] == 0.5
    assert d.categories["newline"]["mean_share"] == 1.0
    assert d.categories["first token after BOS"]["mean_share"] == 0.0
    assert d.top(2)[0]["token"] in ("<bos>", "\\n")
    # the last key (fewer than min_queries queries) is skipped
    assert all(p["position"] <= 8 for p in d.positions)


def _per_head_reference(model, prompts, layer, head, method):
    """Loss change of one head, ablated alone in its own unbatched run (reference)."""
    from interp._attnstats import as_batch
    from interp._active_dormant import _token_loss

    out = []
    for p in prompts:
        b = as_batch(model, [p], prepend_bos=True)
        toks = b.tokens
        if method == "zero":
            def fn(z, hook):
                z = z.clone()
                z[:, :, head] = 0
                return z
            name = f"blocks.{layer}.attn.hook_z"
        else:
            def fn(pat, hook):
                pat = pat.clone()
                pat[:, head] = 0
                pat[:, head, :, 0] = 1
                return pat
            name = f"blocks.{layer}.attn.hook_pattern"
        with torch.no_grad():
            clean = _token_loss(model(toks), toks, b.lengths)
            abl = _token_loss(model.run_with_hooks(toks, fwd_hooks=[(name, fn)]), toks, b.lengths)
        out.append(float(abl - clean))
    return sum(out) / len(out)


@pytest.mark.parametrize("method", ["zero", "sink"])
@pytest.mark.slow
def test_active_dormant_matches_single_head_ablation(tiny, method):
    doms = {"a": PROMPTS, "b": ["w3 w3 w3 w4 w5 . w6 w7"]}
    r = sinks.active_dormant(tiny, doms, method=method, batch_size=2)
    assert r.delta_loss.shape == (2, 2, 4) and r.prepend_bos is True
    for (l, h) in [(0, 1), (1, 3)]:
        ref = _per_head_reference(tiny, doms["a"], l, h, method)
        assert float(r.delta_loss[0, l, h]) == pytest.approx(ref, abs=1e-5)
    assert json.dumps(r.to_json())
    assert r.plot().layout.title.text and len(r.top(3)) == 3
    only = sinks.active_dormant(tiny, doms, layers=[1])
    assert torch.isnan(only.delta_loss[:, 0]).all() and not torch.isnan(only.delta_loss[:, 1]).any()


def test_switching_logic():
    dl = torch.tensor([[[0.001, 0.5, -0.2]], [[0.3, 0.0001, 0.3]]])  # [domain layer head]
    sa = torch.tensor([[[0.8, 0.1, 0.9]], [[0.2, 0.9, 0.9]]])
    r = sinks.ActiveDormantResult(model="fake", prepend_bos=True, method="zero", domains=["prose", "code"],
                                  base_loss=[1.0, 2.0], delta_loss=dl, sink_attention=sa,
                                  active_threshold=0.02, dormant_threshold=0.005, eps=0.3)
    sw = {s["head"]: s for s in r.switching()}
    assert sw["L0H0"]["dormant_on"] == ["prose"] and sw["L0H0"]["active_on"] == ["code"]
    assert sw["L0H1"]["dormant_on"] == ["code"] and sw["L0H1"]["active_on"] == ["prose"]
    assert "L0H2" not in sw  # ablation lowering the loss by 0.2 is not dormancy


def test_bad_input(tiny):
    with pytest.raises(ValueError, match="eps"):
        sinks.sink_analysis(tiny, PROMPTS, eps=1.0)
    with pytest.raises(ValueError, match="massive"):
        sinks.sink_analysis(tiny, PROMPTS, massive_ratio=0.5)
    with pytest.raises(ValueError, match="at least 7"):
        sinks.sink_analysis(tiny, ["w1 w2"], sink_position=5)
    with pytest.raises(ValueError, match="two prompt domains"):
        sinks.active_dormant(tiny, {"a": PROMPTS})
    with pytest.raises(ValueError, match="layers"):
        sinks.active_dormant(tiny, {"a": PROMPTS, "b": PROMPTS}, layers=[7])
    with pytest.raises(ValueError, match="method"):
        sinks.active_dormant(tiny, {"a": PROMPTS, "b": PROMPTS}, method="mean")
    with pytest.raises(ValueError, match="length"):
        sinks.repeated_token_sink(tiny, "w1", length=1)

    class NoPatterns:
        cfg = tiny.cfg
        hook_dict: dict = {}

    with pytest.raises(ValueError, match="no attention patterns"):
        sinks.sink_analysis(NoPatterns(), PROMPTS)


def test_repeated_token_closed_form_nope(random_toy):
    """NoPE + one repeated token: every position is identical, attention is uniform, so
    α₀ = (1/T) Σ_{t<T} 1/(t+1) for every head and the sink vanishes (Gu et al. 2025)."""
    m = random_toy("toy-nope")
    T = 24
    r = sinks.repeated_token_sink(m, "t5", length=T, prepend_bos=False)
    expect = sum(1 / (t + 1) for t in range(T)) / T
    assert torch.allclose(r.alpha[:, :, 0], torch.full_like(r.alpha[:, :, 0], expect), atol=1e-5)
    assert r.sink_rate == 0.0 and r.prepend_bos is False and r.token == "t5"
    assert r.plot().layout.title.text


# ---------------------------------------------------------------------------- SmolLM2


def _alpha_vs_hf_eager(model, prompts):
    """Max |α₀(ours) − α₀(HF eager output_attentions)| over heads, per prompt; ours batched+padded."""
    from transformers import AutoModelForCausalLM

    from interp import tokenize

    r = sinks.sink_analysis(model, prompts, drains=False, peaks=False, massive=False)
    # an independent HF copy (the bridge wraps original_model's attention modules)
    hf = AutoModelForCausalLM.from_pretrained(model.interp_info.path, attn_implementation="eager",
                                              dtype=torch.float32).eval()
    errs = []
    for i, p in enumerate(prompts):
        tb = tokenize(model, [p], prepend_bos=True)
        with torch.no_grad():
            out = hf(tb.tokens, output_attentions=True)
        att = torch.stack(out.attentions)[:, 0]  # [layer head q k]
        ref = att[..., :, 0].mean(-1)  # α₀ = mean_t A[t, 0]
        got = r.alpha[i, :, :, 0]
        assert got.shape == ref.shape == (model.cfg.n_layers, model.cfg.n_heads)
        errs.append(float((got - ref).abs().max()))
    return r, errs


ALPHA_PROMPTS = ["The cat sat on the mat because it was warm.", "def f(x):\n    return x + 1"]


@pytest.mark.real_model
def test_smollm2_first_token_alpha_matches_hf_eager(smollm2):
    """Every head's α₀ equals the value from HF eager ``output_attentions`` within 1e-4 (GQA model,
    two prompts of different lengths so the batched run is padded)."""
    r, errs = _alpha_vs_hf_eager(smollm2, ALPHA_PROMPTS)
    print(f"\nSmolLM2: max |alpha_0 - HF eager| per prompt = {errs}")
    assert r.n_kv_heads == 3 and r.prepend_bos is True
    assert max(errs) < 1e-4


@pytest.mark.gemma
def test_gemma_alpha_and_scan(gemma):
    """Gemma-3-270M (4 query / 1 KV head, sliding-window layers): α₀ vs HF eager and a scan."""
    r, errs = _alpha_vs_hf_eager(gemma, ALPHA_PROMPTS)
    print(f"\nGemma-3-270M: max |alpha_0 - HF eager| per prompt = {errs}")
    assert r.n_kv_heads == 1 and max(errs) < 1e-4
    s = scan.scan(gemma, ALPHA_PROMPTS, max_offset=3, batch_size=2)
    assert s.heads.scores.shape == (18, 4, 5) and s.sinks.value_norm.shape[:2] == (18, 4)


@pytest.mark.real_model
def test_smollm2_repeated_token_sink_reported(smollm2):
    """Repeated-token check on SmolLM2 (T = 64 copies of ' the'), with and without BOS."""
    no_bos = sinks.repeated_token_sink(smollm2, " the", length=64, prepend_bos=False)
    bos = sinks.repeated_token_sink(smollm2, " the", length=64, prepend_bos=True)
    print(f"\nSmolLM2 repeated ' the' x64: Sink_0^0.3 = {no_bos.sink_rate:.4f} without BOS, "
          f"{bos.sink_rate:.4f} with BOS")
    for r in (no_bos, bos):
        assert 0.0 <= r.sink_rate <= 1.0 and r.alpha.shape == (30, 9, r.alpha.shape[-1])
        assert math.isfinite(float(r.alpha[:, :, 0].mean()))
    assert bos.alpha.shape[-1] == 65 and no_bos.alpha.shape[-1] == 64
    assert json.dumps(no_bos.to_json())


@pytest.mark.slow
def test_scan_single_pass_equals_separate_calls(tiny):
    from interp import heads

    s = scan.scan(tiny, PROMPTS, max_offset=3, batch_size=1)
    h = heads.positional_heads(tiny, PROMPTS, max_offset=3, random_control=False, induction_control=False)
    r = sinks.sink_analysis(tiny, PROMPTS)
    assert torch.allclose(s.heads.scores, h.scores, atol=1e-6)
    assert torch.allclose(s.heads.offset, h.offset, atol=1e-6, equal_nan=True)
    assert torch.allclose(s.sinks.alpha, r.alpha, atol=1e-6, equal_nan=True)
    assert torch.allclose(s.sinks.value_norm, r.value_norm, atol=1e-5)
    assert [c.label for c in s.heads.classes] == [c.label for c in h.classes]
    assert set(s.plot()) == {"previous_token", "classes", "sink"}
    assert json.dumps(s.to_json())
    with pytest.raises(ValueError, match="at least 9"):
        scan.scan(tiny, ["w1 w2 w3"])


# ------------------------------------------------------------------------ planted toy sink


def _backcopy_domains(n: int = 24):
    """Back-copy sequences (triggers present) and pure-bigram sequences (triggers never sampled)."""
    from interp.zoo import TOY_MODELS, make_batch
    from interp.zoo.tasks import decode, make_bigram

    p = TOY_MODELS["toy-backcopy"].task_params
    bg = make_bigram(p["n_vocab"], n_triggers=p["n_triggers"], concentration=p["concentration"],
                     seed=p["bigram_seed"])
    trig = make_batch("toy-backcopy", n, seed=11)
    g = torch.Generator().manual_seed(12)
    P = bg.P.clone()
    P[:, bg.triggers] = 0
    P = P / P.sum(-1, keepdim=True)
    pi = bg.pi.clone()
    pi[bg.triggers] = 0
    rows = []
    for _ in range(n):
        x = [int(torch.multinomial(pi / pi.sum(), 1, generator=g))]
        for _t in range(int(p["length"]) - 1):
            x.append(int(torch.multinomial(P[x[-1]], 1, generator=g)))
        rows.append(" ".join(f"t{i}" for i in x))
    return {"backcopy": [decode(r) for r in trig.tokens], "bigram": rows}


@pytest.mark.slow
def test_toy_backcopy_sink_drain_and_active_dormant(toy_model):
    from interp import zoo

    man = zoo.manifest("toy-backcopy")
    m = toy_model("toy-backcopy")
    head = man["heads"][0]
    lab, l, h = head["label"], head["layer"], head["head"]
    doms = _backcopy_domains()
    r = sinks.sink_analysis(m, doms["bigram"])
    # the planted head sinks on BOS and BOS is a value-state drain (small ‖v W_O‖)
    assert float(r.alpha_mean[l, h, 0]) > 0.3
    assert lab in [x for x, _ in r.top(3)]
    vn = head["value_output_norm"]
    assert float(r.drain_ratio[l, h]) < 1.0 and vn["bos"] < vn["content_mean"]
    d = r.discover()
    assert d.categories["position 0"]["mean_share"] > d.categories["other"]["mean_share"]
    # active on back-copy text, dormant on pure bigram text
    ad = sinks.active_dormant(m, doms, active_threshold=0.05, dormant_threshold=0.05)
    sw = {s["head"]: s for s in ad.switching()}
    assert lab in sw, (ad.delta_loss, ad.sink_attention)
    assert sw[lab]["active_on"] == ["backcopy"] and sw[lab]["dormant_on"] == ["bigram"]
