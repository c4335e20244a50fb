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


# ----------------------------------------------------------------------------------------------
# every analysis's activations come through the engine
# ----------------------------------------------------------------------------------------------

#: modules whose forward passes must all go through interp.capture.stream
ANALYSES = ["interp/capture/_run.py", "interp/_attnstats.py", "interp/sinks.py", "interp/heads.py",
            "interp/scan.py", "interp/neurons.py", "interp/_active_dormant.py", "interp/rope/usage.py",
            "interp/rope/ablation.py", "interp/rope/precision.py", "interp/rope/_common.py",
            "interp/atlas/_causal.py", "interp/reports/sections/capture.py", "probes/data.py"]
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
    }
    import warnings

    for name, run in runs.items():
        before = inside["n"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run()
        assert inside["n"] > before, f"{name} made no forward pass through the engine"

