"""The activation engine (interp.capture.stream): own coordinates, padding modes, store replay,
and every analysis's forward passes going through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import interp
import interp.capture._engine as engine
from interp.capture import CaptureError, StreamBatch, stream
from helpers import PROMPTS, _tiny_llama

ROOT = Path(__file__).resolve().parents[1]
MORE = PROMPTS + ["w3 w3 w3", "w9 w8 w7 w6 w5 w4 w3 w2 w1 w9 w8 w7 w6 w5"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_llama(tmp_path_factory.mktemp("tiny_engine"))


def _one(model, prompt, name):
    """Reference: the prompt alone (no padding), through HF-independent TransformerLens caching."""
    toks = interp.tokenize(model, [prompt], prepend_bos=True).tokens
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n == name)
    return cache[name][0]


def _collect(model, prompts, name, **kw):
    got: dict[int, torch.Tensor] = {}

    def reducer(sb: StreamBatch):
        def f(x, hook):
            for b, (i, n) in enumerate(zip(sb.indices, sb.lengths)):
                got[i] = (x[b][:, :n, :n] if x.ndim == 4 and "pattern" in name else x[b, :n]).clone()
                assert bool(sb.valid[b, :n].all()) and not bool(sb.valid[b, n:].any())
        return [(name, f)]

    stream(model, prompts, reducer, **kw)
    return got


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("name", ["blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern"])
def test_own_coordinates_match_single_prompt_runs(tiny, side, name):
    got = _collect(tiny, MORE, name, batch_size=3, padding_side=side)
    assert sorted(got) == list(range(len(MORE)))
    for i, p in enumerate(MORE):
        ref = _one(tiny, p, name)
        torch.testing.assert_close(got[i], ref, rtol=1e-5, atol=1e-5)


def test_repeat_last_padding_by_length_matches_single_runs(tiny):
    seqs = [interp.tokenize(tiny, [p], prepend_bos=True).tokens[0] for p in MORE]
    got = _collect(tiny, seqs, "blocks.1.hook_resid_post", batch_size=2, pad="repeat_last", order="length")
    for i, p in enumerate(MORE):
        torch.testing.assert_close(got[i], _one(tiny, p, "blocks.1.hook_resid_post"), rtol=1e-5, atol=1e-5)


def test_stop_early_and_logits(tiny):
    seen = []
    stream(tiny, MORE, lambda sb: [("blocks.0.hook_resid_post", lambda x, hook: seen.append(x.shape[0]))],
           batch_size=2, stop_early=True)
    assert seen == [2, 2]
    logits = []
    stream(tiny, MORE[:2], lambda sb: [], batch_size=2, on_logits=lambda sb, lg: logits.append((sb.lengths, lg)))
    (lengths, lg), = logits
    for b, p in enumerate(MORE[:2]):
        ref = tiny(interp.tokenize(tiny, [p], prepend_bos=True).tokens)[0]
        torch.testing.assert_close(lg[b, :lengths[b]], ref, rtol=1e-4, atol=1e-4)


def test_engine_errors(tiny):
    with pytest.raises(KeyError, match="Unknown hook"):
        stream(tiny, MORE, lambda sb: [("blocks.0.hook_nope", lambda x, hook: None)], batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        stream(tiny, MORE, lambda sb: [], batch_size=0)
    with pytest.raises(CaptureError, match="token id sequences"):
        stream(tiny, MORE, lambda sb: [], batch_size=2, pad="repeat_last")
    with pytest.raises(CaptureError, match="left padding"):
        stream(tiny, MORE, lambda sb: [("blocks.0.hook_resid_post", lambda x, hook: x)], batch_size=3,
               padding_side="left")


@pytest.mark.slow
def test_store_replay_gives_the_live_numbers(tiny):
    """neurons from an ActivationStore: the reducer fed from stored activations is bit-identical."""
    from interp.neurons import positional_neurons

    w = torch.tensor([[1.0, 0.0, 2.0, 1.0], [0.0, 1.0, 1.0, 1.0]])
    live = positional_neurons(tiny, MORE, batch_size=2, replicate_weights=w)
    store = interp.capture(tiny, MORE, "blocks.*.mlp.hook_pre", batch_size=2)
    stored = positional_neurons(store, batch_size=2, replicate_weights=w)
    assert torch.equal(live.info, stored.info)
    assert torch.equal(live.firing_rate.nan_to_num(-1), stored.firing_rate.nan_to_num(-1))
    assert live.params["bootstrap_counts"] == stored.params["bootstrap_counts"]
    with pytest.raises(ValueError, match="no 'blocks.0.mlp.hook_post'"):
        positional_neurons(store, rule="quantile")
    with pytest.raises(ValueError, match="prompts=None"):
        positional_neurons(store, MORE)


def _equal_width(model):
    tb = interp.tokenize(model, MORE, prepend_bos=True)
    return tb.tokens[:, :min(tb.lengths)]


def _last_token_logprob(logits, batch):
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, batch.last].log_softmax(-1)[:, 3]


def _task(model):
    """An atlas task on MORE + 4 copies of one prompt: one padded and one unpadded mini-batch of 16."""
    from interp.atlas._data import AtlasTask

    prompts = (MORE * 3)[:16] + [MORE[0]] * 4
    tb = interp.tokenize(model, prompts, prepend_bos=True, padding_side="right")
    return AtlasTask("t", tb, None, _last_token_logprob, None, "zero", "head", "x")


def test_moved_reads_match_direct_forward_passes(tiny):
    """The zoo measurements, the atlas task metric and the long-context read give, through the
    engine, exactly what a direct ``run_with_hooks`` / ``run_with_cache`` gives."""
    from circuits.metrics import MetricBatch

    import interp.atlas._build as atlas_build
    import interp.atlas._causal as C
    import interp.zoo.measure as zoo_m
    from interp.reports.sections.longctx import measure_prompt

    toks = _equal_width(tiny)
    hooks = zoo_m.ablate_heads_hooks([(0, 1), (1, 0)])
    with torch.no_grad():
        ref = tiny.run_with_hooks(toks, fwd_hooks=hooks)
        _, cache = tiny.run_with_cache(toks)
    assert torch.equal(zoo_m.logits_with(tiny, toks, hooks), ref)
    pats = zoo_m.patterns(tiny, toks)
    for l in range(tiny.cfg.n_layers):
        assert torch.equal(pats[l], cache[f"blocks.{l}.attn.hook_pattern"])
    # long-context read: attention to token 0 and max |resid_post| per position
    got = measure_prompt(tiny, toks[:1], 0.3)
    for l in range(tiny.cfg.n_layers):
        assert torch.equal(got["a0"][l], cache[f"blocks.{l}.attn.hook_pattern"][0, :, :, 0])
        assert torch.equal(got["amax"][l], cache[f"blocks.{l}.hook_resid_post"][0].abs().amax(-1))
    # atlas task metric: mini-batches of 16 trimmed to their widest prompt, mask always passed
    t = _task(tiny)
    for hk in ([], [C.zero_head_hook(1, 0)], [C.sink_removal_hook(1, 1, 0)]):
        vals = []
        tb = t.clean
        for s in range(0, len(tb.lengths), 16):
            sl = slice(s, min(len(tb.lengths), s + 16))
            w = max(tb.lengths[sl])
            mask = tb.attention_mask[sl, :w]
            with torch.no_grad():
                lg = tiny.run_with_hooks(tb.tokens[sl, :w], fwd_hooks=hk, attention_mask=mask)
            vals.append(_last_token_logprob(lg.float(), MetricBatch.from_mask(mask, torch.arange(sl.start, sl.stop))))
        assert atlas_build._metric_mean(tiny, t, hk) == float(torch.cat(vals).mean())


# ----------------------------------------------------------------------------------------------
# every analysis's activations come through the engine
# ----------------------------------------------------------------------------------------------

#: modules whose forward passes must all go through interp.capture.stream
ANALYSES = ["interp/capture/_run.py", "interp/_attnstats.py", "interp/sinks.py", "interp/heads.py",
            "interp/scan.py", "interp/neurons.py", "interp/_active_dormant.py", "interp/rope/usage.py",
            "interp/rope/ablation.py", "interp/rope/precision.py", "interp/rope/_common.py",
            "interp/atlas/_causal.py", "interp/reports/sections/capture.py", "probes/data.py",
            "interp/zoo/measure.py", "interp/zoo/_manifest.py", "interp/atlas/_build.py",
            "interp/reports/sections/longctx.py"]
FORWARD_CALLS = {"run_with_cache", "run_with_hooks", "hooks", "forward"}


def test_no_forward_pass_outside_the_engine_in_analysis_sources():
    """Static check: the analysis modules never call the model themselves (only ``stream``)."""
    bad = []
    for rel in ANALYSES:
        tree = ast.parse((ROOT / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FORWARD_CALLS:
                if isinstance(node.func.value, ast.Name) and node.func.value.id in ("model", "m", "self"):
                    bad.append(f"{rel}:{node.lineno} {node.func.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("model", "m"):
                bad.append(f"{rel}:{node.lineno} model(...)")
    assert not bad, f"forward passes outside interp.capture.stream: {bad}"


@pytest.mark.slow
def test_every_analysis_runs_through_the_engine(tiny, monkeypatch):
    """Dynamic check: a forward pass outside ``stream`` fails; each analysis makes >= 1 inside."""
    import probes
    from interp import heads, neurons, sinks
    from interp.rope import band_ablation, frequency_usage, shift_invariance
    from interp.scan import scan

    import interp.atlas._build as atlas_build
    import interp.zoo._manifest as zoo_manifest
    import interp.zoo.measure as zoo_m
    from interp.reports.sections.longctx import measure_prompt

    toks = _equal_width(tiny)
    inside = {"n": 0}
    original = type(tiny).run_with_hooks

    def guarded(self, *a, **k):
        assert engine._DEPTH > 0, "forward pass outside interp.capture.stream"
        inside["n"] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(type(tiny), "run_with_hooks", guarded)
    monkeypatch.setattr(type(tiny), "run_with_cache", lambda self, *a, **k: pytest.fail("run_with_cache outside the engine"))
    runs = {
        "capture": lambda: interp.capture(tiny, MORE, "blocks.*.hook_resid_post", batch_size=2),
        "sinks": lambda: sinks.sink_analysis(tiny, MORE, batch_size=2),
        "heads": lambda: heads.positional_heads(tiny, MORE, batch_size=2, max_offset=2),
        "scan": lambda: scan(tiny, MORE, batch_size=2, max_offset=2),
        "attention_patterns": lambda: heads.attention_patterns(tiny, MORE[0], ["L0H1"]),
        "neurons": lambda: neurons.positional_neurons(tiny, MORE, batch_size=2),
        "rope usage": lambda: frequency_usage(tiny, MORE, batch_size=2),
        "rope ablation": lambda: band_ablation(tiny, MORE, batch_size=2, max_offset=2),
        "rope shift": lambda: shift_invariance(tiny, MORE[:2], batch_size=2),
        "probes": lambda: probes.collect(tiny, MORE, batch_size=2),
        "zoo logits": lambda: zoo_m.logits_with(tiny, toks, zoo_m.ablate_heads_hooks([(0, 1)])),
        "zoo patterns": lambda: zoo_m.patterns(tiny, toks),
        "zoo value norms": lambda: zoo_m.value_output_norms(tiny, toks, 1),
        "zoo manifest cache": lambda: zoo_manifest._cache_with_hooks(tiny, toks, ["blocks.0.hook_resid_post"], []),
        "atlas task metric": lambda: atlas_build._metric_mean(tiny, _task(tiny), []),
        "longctx": lambda: measure_prompt(tiny, toks[:1], 0.3),
    }
    import warnings

    for name, run in runs.items():
        before = inside["n"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run()
        assert inside["n"] > before, f"{name} made no forward pass through the engine"



# ---------------------------------------------------------------------------------------------
# Analyses fed from an ActivationStore: bit-identical to the live run on the same prompts
# ---------------------------------------------------------------------------------------------

PATTERN_RESID = ["blocks.*.attn.hook_pattern", "blocks.*.hook_resid_post"]


def _assert_same_result(live, stored, *, drop=("source", "controls_skipped")):
    """Every tensor field torch.equal (NaN where NaN), every other field and the JSON equal, apart
    from the store's provenance (``params["source"]`` / ``source``) and the skipped controls."""
    import dataclasses

    for f in dataclasses.fields(live):
        a, b = getattr(live, f.name), getattr(stored, f.name)
        if f.name == "params":
            a = {k: v for k, v in a.items() if k not in drop}
            b = {k: v for k, v in b.items() if k not in drop}
        if f.name in drop:
            continue
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape, f.name
            assert torch.equal(a.isnan(), b.isnan()) if a.is_floating_point() else True, f.name
            assert torch.equal(a.nan_to_num(-7.0) if a.is_floating_point() else a,
                               b.nan_to_num(-7.0) if b.is_floating_point() else b), f.name
        elif dataclasses.is_dataclass(a):
            _assert_same_result(a, b, drop=drop)
        else:
            assert a == b, f.name

    def strip(j):
        j = dict(j)
        for k in drop:
            j.pop(k, None)
        if isinstance(j.get("params"), dict):
            j["params"] = {k: v for k, v in j["params"].items() if k not in drop}
        for k, v in j.items():
            if isinstance(v, dict) and "params" in v:
                j[k] = strip(v)
        return j

    assert strip(live.to_json()) == strip(stored.to_json())


def _check_source(result_params_or_source, store):
    src = result_params_or_source
    assert src["kind"] == "ActivationStore" and src == store.provenance()
    assert src["model"] == store.model["name"] and src["prepend_bos"] == store.prepend_bos


@pytest.mark.parametrize("side", ["right", "left"])
def test_sinks_heads_scan_from_a_store_equal_the_live_run(tiny, side, tmp_path):
    from interp.heads import positional_heads
    from interp.scan import scan
    from interp.sinks import sink_analysis

    # the disk store also checks that the token strings come back from the manifest
    store = interp.capture(tiny, MORE, PATTERN_RESID, batch_size=2, padding_side=side,
                           out=tmp_path / "s" if side == "right" else None)
    live = sink_analysis(tiny, MORE, batch_size=2, drains=False)
    stored = sink_analysis(store, batch_size=2)
    assert stored.value_norm is None and stored.massive is not None
    _assert_same_result(live, stored)
    _check_source(stored.params["source"], store)
    assert "source" not in live.params

    live_h = positional_heads(tiny, MORE, batch_size=2, max_offset=2, random_control=False, induction_control=False)
    stored_h = positional_heads(store, batch_size=2, max_offset=2)
    assert stored_h.params["controls_skipped"] == ["random_control", "induction_control"]
    assert stored_h.random_scores is None and stored_h.repeated_scores is None
    _assert_same_result(live_h, stored_h)
    _check_source(stored_h.params["source"], store)

    live_s = scan(tiny, MORE, batch_size=2, max_offset=2, drains=False)
    stored_s = scan(store, batch_size=2, max_offset=2)
    _assert_same_result(live_s.heads, stored_s.heads)
    _assert_same_result(live_s.sinks, stored_s.sinks)
    _check_source(stored_s.sinks.params["source"], store)


@pytest.mark.parametrize("side", ["right", "left"])
def test_frequency_usage_from_a_store_equals_the_live_run(tiny, side):
    from interp.rope import frequency_usage

    live = frequency_usage(tiny, MORE, batch_size=2)
    assert live.source is None
    rot = interp.capture(tiny, MORE, ["blocks.*.attn.hook_rot_q", "blocks.*.attn.hook_rot_k"], batch_size=2,
                         padding_side=side)
    stored = frequency_usage(rot, batch_size=2)
    _assert_same_result(live, stored)
    _check_source(stored.source, rot)
    # only the pre-rotation q/k: rotated here with the recorded RopeSpec (chunk norms are rotation
    # invariant; equal to the live norms up to rounding)
    pre = interp.capture(tiny, MORE, ["blocks.*.attn.hook_q", "blocks.*.attn.hook_k"], batch_size=2,
                         padding_side=side)
    other = frequency_usage(pre, batch_size=2)
    torch.testing.assert_close(other.q_norm, live.q_norm, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(other.k_norm, live.k_norm, rtol=1e-6, atol=1e-7)


def test_store_fed_analyses_errors(tiny):
    from interp.heads import positional_heads
    from interp.rope import band_ablation, frequency_usage, logit_decomposition, positional_frequency_heads, shift_invariance
    from interp.scan import scan
    from interp.sinks import sink_analysis

    resid = interp.capture(tiny, MORE, "blocks.*.hook_resid_post", batch_size=2)
    patterns = interp.capture(tiny, MORE, "blocks.*.attn.hook_pattern", batch_size=2)
    # a needed hook was not captured: the error names it and the capture call that adds it
    for f in (sink_analysis, positional_heads, scan):
        with pytest.raises(ValueError, match=r"blocks\.0\.attn\.hook_pattern.*hooks=\['blocks\.\*\.attn\.hook_pattern'\]"):
            f(resid)
    with pytest.raises(ValueError, match=r"hook_resid_post.*peaks=False, massive=False"):
        sink_analysis(patterns)
    r = sink_analysis(patterns, peaks=False, massive=False)
    assert r.resid_norm is None and r.massive is None
    with pytest.raises(ValueError, match=r"hook_rot_q.*capture"):
        frequency_usage(resid)
    # prompts passed with a store
    with pytest.raises(ValueError, match="prompts=None"):
        sink_analysis(patterns, MORE, peaks=False, massive=False)
    with pytest.raises(ValueError, match="prompts=None"):
        positional_heads(patterns, MORE)
    with pytest.raises(ValueError, match="prompts=None"):
        scan(patterns, MORE, peaks=False, massive=False)
    rot = interp.capture(tiny, MORE, ["blocks.*.attn.hook_rot_q", "blocks.*.attn.hook_rot_k"], batch_size=2)
    with pytest.raises(ValueError, match="prompts=None"):
        frequency_usage(rot, MORE)
    # what a store cannot give: weights (drains), forward passes on new inputs (controls)
    with pytest.raises(ValueError, match="W_O"):
        sink_analysis(patterns, drains=True, peaks=False, massive=False)
    with pytest.raises(ValueError, match="random_control"):
        positional_heads(patterns, random_control=True)
    with pytest.raises(ValueError, match="induction_control"):
        scan(patterns, induction_control=True, peaks=False, massive=False)
    with pytest.raises(ValueError, match="decompos"):
        frequency_usage(rot, decompose=True)
    with pytest.raises(ValueError, match="decompos"):
        logit_decomposition(rot)
    # the RoPE analyses that intervene in the forward pass need the model
    for f in (band_ablation, shift_invariance, positional_frequency_heads):
        with pytest.raises(TypeError, match="ActivationStore"):
            f(rot)
    # and so do the analyses that run the model on inputs of their own
    from interp.heads import attention_patterns
    from interp.sinks import active_dormant, repeated_token_sink

    with pytest.raises(TypeError, match="cannot read an ActivationStore"):
        repeated_token_sink(patterns)
    with pytest.raises(TypeError, match="cannot read an ActivationStore"):
        attention_patterns(patterns, "a b c", ["L0H0"])
    with pytest.raises(TypeError, match="cannot read an ActivationStore"):
        active_dormant(patterns)
