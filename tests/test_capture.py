"""Tests for interp.capture: per-position capture, reference equality with HF eager attention,
on-disk shards with resume, and the error messages."""

from __future__ import annotations

import json

import pytest
import torch

import interp.capture._run as cap
from interp.capture import (
    ActivationStore, CaptureError, IncompleteStoreError, ManifestMismatchError, UnknownHookError, capture,
    resolve_hooks,
)
from interp.schema import Schema, SchemaError

PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The cat sat",
    "Hello",
    "1 2 3 4 5 6 7 8 9 10 11 12",
    "A long time ago in a galaxy far, far away",
    "x",
    "def f(x):\n    return x + 1",
    "Paris is the capital of",
]
IOI = "When {IO} and {S1} went to the {PLACE}, {S2} gave a drink to"
IOI_PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "When Alexandra and Bob went to the big park, Bob gave a drink to",
    "When Tom and Sue went to the bar, Sue gave a drink to",
]


@pytest.fixture(scope="module")
def hf_eager(smollm2):
    """An independent HF model with eager attention, loaded from the same converted weights."""
    from transformers import AutoModelForCausalLM

    path = smollm2.interp_info.path
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    return m.eval()


@pytest.fixture(scope="module")
def hf_reference(smollm2, hf_eager):
    """Per prompt, unpadded: (attentions per layer [head q k], hidden states per layer [pos d])."""
    from interp.tokens import bos_token_id

    bos = bos_token_id(smollm2)
    out = {}
    for prepend in (True, False):
        for p in PROMPTS:
            ids = smollm2.tokenizer(p, add_special_tokens=False)["input_ids"]
            ids = ([bos] if prepend else []) + list(ids)
            with torch.no_grad():
                r = hf_eager(torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
            out[prepend, p] = ([a[0] for a in r.attentions], [h[0] for h in r.hidden_states], ids)
    return out


# ----------------------------------------------------------------------------------------------
# correctness against Hugging Face eager attention
# ----------------------------------------------------------------------------------------------


@pytest.mark.real_model
@pytest.mark.parametrize("batch_size,padding_side", [(1, "right"), (8, "right"), (8, "left")])
@pytest.mark.parametrize("prepend_bos", [True, False])
def test_patterns_equal_hf_eager(smollm2, hf_reference, batch_size, padding_side, prepend_bos):
    """Every layer's and head's pattern equals HF eager output_attentions of the unpadded prompt."""
    n_layers = smollm2.cfg.n_layers
    prompts = PROMPTS if batch_size > 1 else PROMPTS[:3]  # batch size 1: 3 prompts keep it short
    store = capture(smollm2, prompts, ["blocks.*.attn.hook_pattern", "blocks.*.hook_resid_post"],
                    batch_size=batch_size, prepend_bos=prepend_bos, padding_side=padding_side)
    assert store.prepend_bos == prepend_bos and store.padding_side == padding_side
    worst = 0.0
    worst_resid = 0.0
    for i, p in enumerate(prompts):
        attns, hidden, ids = hf_reference[prepend_bos, p]
        assert store.tokens(i).tolist() == ids
        assert store.lengths[i] == len(ids)
        for l in range(n_layers):
            a = store.get(f"blocks.{l}.attn.hook_pattern", i)
            assert a.shape == (smollm2.cfg.n_heads, len(ids), len(ids))
            worst = max(worst, (a - attns[l]).abs().max().item())
            if l < n_layers - 1:  # HF's last hidden state has the final norm applied
                r = store.get(f"blocks.{l}.hook_resid_post", i)
                rel = ((r - hidden[l + 1]).abs().max() / hidden[l + 1].abs().max()).item()
                worst_resid = max(worst_resid, rel)
    assert worst < 1e-4, f"max |pattern - HF eager| = {worst}"
    assert worst_resid < 1e-4, f"max relative |resid - HF hidden| = {worst_resid}"


@pytest.mark.real_model
def test_reference_check_can_fail(smollm2, hf_reference):
    """Left padding without the attention mask lets real tokens attend to padding: the patterns then
    differ from the reference by far more than the tolerance (so the check above can fail)."""
    from interp import tokenize

    b = tokenize(smollm2, PROMPTS[:2], prepend_bos=True, padding_side="left")
    with torch.no_grad():
        _, c = smollm2.run_with_cache(b.tokens, names_filter="blocks.3.attn.hook_pattern")
    a = c["blocks.3.attn.hook_pattern"][1][:, b.columns(1), b.columns(1)]
    ref = hf_reference[True, PROMPTS[1]][0][3]
    assert (a - ref).abs().max() > 1e-2


# ----------------------------------------------------------------------------------------------
# hooks and errors
# ----------------------------------------------------------------------------------------------


def test_resolve_hooks(smollm2):
    hs = resolve_hooks(smollm2, "blocks.*.hook_resid_post")
    assert hs == [f"blocks.{l}.hook_resid_post" for l in range(smollm2.cfg.n_layers)]
    assert resolve_hooks(smollm2, ["hook_embed", "blocks.0.attn.hook_pattern", "hook_embed"]) == [
        "hook_embed", "blocks.0.attn.hook_pattern"]
    with pytest.raises(UnknownHookError, match="blocks.3.hook_resid_post"):
        resolve_hooks(smollm2, "blocks.3.hook_resid_psot")
    with pytest.raises(UnknownHookError, match="matches no hook"):
        resolve_hooks(smollm2, "blocks.*.hook_nothing")


def test_input_errors(smollm2, tmp_path):
    with pytest.raises(CaptureError, match="empty"):
        capture(smollm2, [], "hook_embed")
    with pytest.raises(CaptureError, match="Prompt 1 is the empty string"):
        capture(smollm2, ["a", ""], "hook_embed")
    n_ctx = smollm2.cfg.n_ctx
    with pytest.raises(CaptureError, match=f"Prompt 1 has .* n_ctx={n_ctx}"):
        capture(smollm2, ["a", "a " * (n_ctx + 10)], "hook_embed")
    with pytest.raises(UnknownHookError, match="Did you mean"):
        capture(smollm2, ["a"], "blocks.0.hook_resid_pst")
    with pytest.raises(SchemaError, match="example 1"):
        capture(smollm2, [IOI_PROMPTS[0], "Hello there"], "hook_embed", schema=Schema.from_template(IOI))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("hi")
    with pytest.raises(ManifestMismatchError, match="no activation-store manifest"):
        capture(smollm2, ["a"], "hook_embed", out=tmp_path / "junk")


# ----------------------------------------------------------------------------------------------
# store access
# ----------------------------------------------------------------------------------------------

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern"]


@pytest.fixture(scope="module")
def mem_store(smollm2):
    return capture(smollm2, IOI_PROMPTS, HOOKS, schema=Schema.from_template(IOI), batch_size=2)


def test_store_access(smollm2, mem_store, hf_reference):
    s = mem_store
    assert s.n_examples == 3 and s.hooks == HOOKS and s.complete
    h = "blocks.1.hook_resid_post"
    x0 = s.get(h, 0)
    assert x0.shape == (s.lengths[0], smollm2.cfg.d_model)
    assert torch.equal(s[h, 0, -1], x0[-1])
    last = s.at(h, -1)
    assert last.shape == (3, smollm2.cfg.d_model)
    assert all(torch.equal(last[i], s.get(h, i)[-1]) for i in range(3))
    flat, ex, pos = s.flat(h)
    assert flat.shape[0] == sum(s.lengths) and torch.equal(flat[ex == 1][pos[ex == 1] == 2], s.get(h, 1)[2:3])
    pad, mask = s.padded(h, padding_side="left")
    assert pad.shape == (3, max(s.lengths), smollm2.cfg.d_model) and mask.sum().item() == sum(s.lengths)
    st = s.stack("blocks.*.hook_resid_post", 2)
    assert st.shape == (2, s.lengths[2], smollm2.cfg.d_model)
    # the pass stopped after block 1 (nothing later requested): values still equal HF's
    ref = hf_reference[True, PROMPTS[0]][1][2]
    assert ((s.get(h, 0) - ref).abs().max() / ref.abs().max()).item() < 1e-4
    a = s.get("blocks.1.attn.hook_pattern", 1)
    assert torch.allclose(a.sum(-1), torch.ones(a.shape[:2]), atol=1e-5)
    with pytest.raises(UnknownHookError):
        s.get("blocks.7.hook_resid_post", 0)
    with pytest.raises(IndexError):
        s.get(h, 3)
    json.dumps(s.to_json())
    assert "norm" in s.plot().layout.title.text


def test_by_span_matches_manual(smollm2, mem_store):
    s = mem_store
    spans = Schema.from_template(IOI).apply(IOI_PROMPTS, smollm2)
    assert s.span_names == spans.names and s.spans == spans.spans
    h = "blocks.1.hook_resid_post"
    io = spans.index("IO")
    for red, fn in [("mean", lambda x: x.mean(0)), ("sum", lambda x: x.sum(0)),
                    ("first", lambda x: x[0]), ("last", lambda x: x[-1])]:
        r = s.by_span(h, red)
        assert r.shape == (3, len(spans.names), smollm2.cfg.d_model)
        for i in range(3):
            a, b = spans.spans[i][io]
            assert torch.allclose(r[i, io], fn(s.get(h, i)[a:b]), atol=1e-5)
    # attention: mean over the query span of the attention mass (sum) on the key span
    ap = s.by_span("blocks.1.attn.hook_pattern", "mean", key_reduce="sum")
    assert ap.shape == (3, smollm2.cfg.n_heads, len(spans.names), len(spans.names))
    assert torch.allclose(ap.sum(-1), torch.ones(ap.shape[:3]), atol=1e-4)  # rows still sum to 1
    a = s.get("blocks.1.attn.hook_pattern", 1)
    (q0, q1), (k0, k1) = spans.spans[1][spans.index("S2")], spans.spans[1][spans.index("IO")]
    assert torch.allclose(ap[1, :, spans.index("S2"), io], a[:, q0:q1, k0:k1].sum(-1).mean(-1), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# on disk: shards, manifest, resume
# ----------------------------------------------------------------------------------------------


def test_disk_store_equals_memory_and_resumes(smollm2, mem_store, tmp_path, monkeypatch):
    out = tmp_path / "store"
    real_write = cap._write_shard
    calls = {"n": 0}

    def flaky(file, tensors, start, end):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        real_write(file, tensors, start, end)

    monkeypatch.setattr(cap, "_write_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        capture(smollm2, IOI_PROMPTS, HOOKS, schema=Schema.from_template(IOI), batch_size=1, out=out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] is False
    assert sorted(p.name for p in out.glob("shard_*.safetensors")) == ["shard_000000.safetensors"]
    with pytest.raises(IncompleteStoreError, match="resume"):
        ActivationStore.load(out)
    partial = ActivationStore.load(out, allow_incomplete=True)
    assert torch.allclose(partial.get(HOOKS[0], 0), mem_store.get(HOOKS[0], 0), atol=1e-5)
    with pytest.raises(IncompleteStoreError):
        partial.get(HOOKS[0], 2)

    calls["n"] = 10  # no more interruptions; count the shards the resume writes
    # (a different batch_size on resume keeps the stored shard plan)
    store = capture(smollm2, IOI_PROMPTS, HOOKS, schema=Schema.from_template(IOI), batch_size=2, out=out)
    assert calls["n"] == 12  # only shards 1 and 2 were computed again
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] is True and man["prepend_bos"] is True and man["hooks"] == HOOKS
    for k in ("model", "versions", "dtype", "padding_side", "prompt_hashes", "schema", "lengths"):
        assert k in man
    assert man["model"]["name"] == "smollm2-135m" and len(man["prompt_hashes"]) == 3
    assert not list(out.glob("*.tmp"))
    # the store on disk (reopened lazily) holds exactly the in-memory activations
    again = ActivationStore.load(out)
    for st in (store, again):
        assert st.complete and st.path == out
        for h in HOOKS:
            for i in range(3):
                assert torch.allclose(st.get(h, i), mem_store.get(h, i), atol=1e-5)
        assert torch.allclose(st.by_span(HOOKS[1]), mem_store.by_span(HOOKS[1]), atol=1e-5)
    # a complete store is returned as is, without recomputation
    capture(smollm2, IOI_PROMPTS, HOOKS, schema=Schema.from_template(IOI), batch_size=1, out=out)
    assert calls["n"] == 12


def test_out_dir_with_different_manifest(smollm2, tmp_path):
    out = tmp_path / "s"
    capture(smollm2, ["a b", "c"], "hook_embed", out=out)
    with pytest.raises(ManifestMismatchError, match="different settings.*hooks"):
        capture(smollm2, ["a b", "c"], "blocks.0.hook_resid_post", out=out)
    with pytest.raises(ManifestMismatchError, match="prompt_hashes"):
        capture(smollm2, ["a b", "d"], "hook_embed", out=out)
    st = capture(smollm2, ["a b", "d"], "hook_embed", out=out, overwrite=True, dtype=torch.float16)
    assert st.get("hook_embed", 1).dtype == torch.float16 and st.meta["dtype"] == "float16"


def test_capture_name_is_callable_after_package_import(smollm2):
    import interp
    import interp.capture  # binds the package as interp.capture

    st = interp.capture(smollm2, ["a b"], "hook_embed")
    assert isinstance(st, ActivationStore) and st.get("hook_embed", 0).shape[0] == 3
