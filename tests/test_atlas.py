"""Mechanism atlas (interp.atlas) on the zoo's planted mechanisms, its causal checks, its view,
CLI and report section; and the heads induction control inside a toy's task distribution."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def induction_atlas(toy_model):
    import interp

    return interp.atlas(toy_model("toy-induction"), probes=False)


@pytest.fixture(scope="module")
def offset_atlas(toy_model):
    import interp

    return interp.atlas(toy_model("toy-offset-rope"), probes=False)


@pytest.fixture(scope="module")
def backcopy_atlas(toy_model):
    import interp

    return interp.atlas(toy_model("toy-backcopy"), probes=False)


# ------------------------------------------------------------------------------- heads fix
@pytest.mark.slow
def test_positional_heads_finds_the_toy_induction_head(toy_model):
    """The repeated-sequence control of a zoo toy stays inside its training distribution
    (segments of 6–16 tokens after a noise prefix): the induction head is found. With the old
    20-token ``[BOS] r r`` control it was not (measured induction score 0.11)."""
    from interp.heads import positional_heads
    from interp.zoo import make_batch

    m = toy_model("toy-induction")
    texts = make_batch("toy-induction", 8, seed=1).texts()
    r = positional_heads(m, texts)
    assert r.params["induction_control"] == "toy task layout"
    assert r.params["induction_seg_len"] == 16
    assert "induction" in r.heads_with("induction") or "L1H1" in r.heads_with("induction")
    assert "L1H1" in r.heads_with("induction")
    old = positional_heads(m, texts, induction_seg_len=20)
    assert old.params["induction_control"] == "repeated random"
    assert "L1H1" not in old.heads_with("induction")


def test_induction_control_default_unchanged_off_the_zoo():
    """Outside the zoo the default control stays ``[BOS] r r`` with 20 tokens."""
    from types import SimpleNamespace

    from interp.heads import _toy_induction_control

    fake = SimpleNamespace(interp_info=SimpleNamespace(name="smollm2-135m"))
    assert _toy_induction_control(fake, 4, None, prepend_bos=True, seed=0) is None


# ------------------------------------------------------------------------------- toys
def test_induction_toy_roles_and_k_composition(induction_atlas):
    a = induction_atlas
    assert a.label("L0H0") == "previous-token"
    assert a.label("L1H1") == "induction"
    # the pruned heads keep their attention-pattern scores but get no role
    for h in ("L0H1", "L1H0"):
        c = a.card(h)
        assert c["label"] == "inert" and "inert" in c["tags"] and c["inert"]
        assert c["pattern_label"] in ("previous-token", "induction")
        assert c["scores"]["previous_token"] > 0 and not c["edges"]
    # L0H0 → the layer-1 key input at first-copy positions, called K-composition
    lo, hi = a.task["meta"]["first_copy"]
    k_edges = [e for e in a.edges_of("L0H0") if e["type"] == "same_pos" and e["receiver"] == "L1KV0.k"]
    assert k_edges, a.edges_of("L0H0")[:5]
    assert all(e["composition"] == "K-composition" for e in k_edges)
    assert any(lo <= int(e["position"]) < hi for e in k_edges)
    assert set(a.circuit_heads()) == {"L0H0", "L1H1"}
    assert a.faithfulness >= 0.8


def test_induction_toy_crossing_edges_and_json(induction_atlas):
    a = induction_atlas
    cross = [e for e in a.edges if e["type"] == "cross"]
    assert cross and {e["receiver"] for e in cross} <= {"L0H0", "L1H1"}
    lo, hi = a.task["meta"]["first_copy"]
    ind = [e for e in cross if e["receiver"] == "L1H1"]
    assert ind and all(lo <= int(e["kpos"]) <= hi for e in ind)  # keys: first copy (+1: the token to copy)
    assert all(not e["key_is_sink"] for e in ind)
    prev = [e for e in cross if e["receiver"] == "L0H0"]
    w = sum(abs(e["score"]) for e in prev)
    assert sum(abs(e["score"]) for e in prev if int(e["qpos"]) - int(e["kpos"]) == 1) >= 0.8 * w
    with_band = [e for e in cross if "band_shares" in e]
    assert with_band and all(abs(sum(e["band_shares"].values()) - 1) < 1e-4 for e in with_band)
    doc = json.loads(json.dumps(a.to_json(), allow_nan=False))
    assert doc["type"] == "Atlas" and set(doc["heads"]) == {"L0H0", "L0H1", "L1H0", "L1H1"}


def test_offset_rope_high_frequency_band_carries_the_margin(offset_atlas):
    c = offset_atlas.card("L0H1")
    assert c["label"] == "offset-3" and c["offset"] == 3
    assert c["high_margin_share"] >= 0.5
    assert "positional-high-frequency" in c["tags"]


def test_offset_rope_margin_decomposition_is_exact(toy_model):
    """The chunk margins add up to the margin of the model's own attention scores
    (``hook_attn_scores``): key t−3 against the mean of the other visible keys."""
    from interp._attnstats import as_batch
    from interp.atlas import _causal as C
    from interp.spec import model_spec
    from interp.zoo import tasks as T

    m = toy_model("toy-offset-rope")
    spec = model_spec(m)
    b = T.offset_batch(4, n_vocab=32, length=20, offset=3, seed=11)
    batch = as_batch(m, b.texts(), prepend_bos=True)
    q, k = C.capture_qk(m, batch, [0])[0]
    prs = []
    for n in batch.lengths:
        mk = torch.zeros(n, n, dtype=torch.bool)
        t = torch.arange(4, n)
        mk[t, t - 3] = True
        prs.append(mk)
    mg = C.margin_by_chunk(q, k, 1, spec.rope, spec.attn_scale, prs)
    _, cache = m.run_with_cache(b.tokens, names_filter="blocks.0.attn.hook_attn_scores")
    s = cache["blocks.0.attn.hook_attn_scores"][:, 1].float()  # [b t s]
    ref = []
    for i in range(s.shape[0]):
        for t in range(4, s.shape[1]):
            row = s[i, t, : t + 1]
            others = torch.cat([row[: t - 3], row[t - 2:]])
            ref.append(float(row[t - 3] - others.mean()))
    assert float(mg.sum()) == pytest.approx(sum(ref) / len(ref), rel=1e-4, abs=1e-4)


def test_offset_rope_band_ablation_checks(offset_atlas):
    checks = {c["band"].split()[0]: c for c in offset_atlas.checks_of("L0H1") if c["kind"] == "band_ablation"}
    hi, lo = checks["highest"], checks["lowest"]
    assert hi["heads"] == ["L0H1"]  # no GQA: the head alone
    assert hi["measured"]["positional_score_before"] > 0.9
    assert hi["measured"]["positional_score_after"] < 0.2  # the positional score is gone
    assert hi["measured"]["faithfulness_after"] <= 0.1
    assert lo["measured"]["faithfulness_after"] >= 0.9
    assert lo["measured"]["positional_score_after"] > 0.9
    for c in (hi, lo):
        assert set(c["predicted"]) >= {"faithfulness_after", "positional_score_after"}
        assert c["tolerance"] == offset_atlas.params["tolerance"]
        assert set(c["agrees"]) == set(c["predicted"])


def test_band_ablation_same_in_bridge_hooks_and_patchable_forward(toy_model):
    """Two implementations of one intervention: bridge hooks (positional score) and the patched
    functional forward (faithfulness) give the same logits."""
    from circuits.attribution import patchable
    from interp.atlas import _causal as C
    from interp.rope import select_chunks
    from interp.spec import model_spec
    from interp.zoo import tasks as T

    m = toy_model("toy-offset-rope")
    spec = model_spec(m)
    band = select_chunks(spec.rope, highest=0.25)
    toks = T.offset_batch(3, n_vocab=32, length=16, offset=3, seed=2).tokens
    with torch.no_grad():
        ref = m.run_with_hooks(toks, fwd_hooks=C.unrotate_hooks(spec, 0, 1, band), return_type="logits")
        clean = m(toks, return_type="logits")
    pm = patchable(m)
    with C.patched_unrotation(pm, spec, 0, 1, band):
        got = pm.run(toks)
    after = pm.run(toks)
    assert (ref - clean).abs().max() > 1.0  # the ablation does something
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(after, clean, atol=2e-4, rtol=1e-4)  # and is undone


def test_backcopy_active_dormant(backcopy_atlas):
    c = backcopy_atlas.card("L0H0")
    d = c["domains"]
    assert d["non-trigger"]["role"] == "sink" and d["non-trigger"]["status"] == "dormant"
    assert d["trigger"]["role"] == "previous-token" and d["trigger"]["status"] == "active"
    assert "active-dormant" in c["tags"] and "sink" in c["tags"]
    sink = [k for k in backcopy_atlas.checks_of("L0H0") if k["kind"] == "sink_removal"]
    assert sink and "loss_change[non-trigger]" in sink[0]["measured"]


def test_inert_heads_have_exactly_zero_output(toy_model, induction_atlas):
    """Independent of the atlas: zeroing an inert head's z changes no logit."""
    from interp.atlas import _causal as C
    from interp.zoo import make_batch

    m = toy_model("toy-induction")
    toks = make_batch("toy-induction", 2, seed=0).tokens
    with torch.no_grad():
        clean = m(toks, return_type="logits")
        for h in ("L0H1", "L1H0"):
            l, hh = int(h[1]), int(h[3])
            out = m.run_with_hooks(toks, fwd_hooks=[C.zero_head_hook(l, hh)], return_type="logits")
            assert torch.equal(out, clean)
        out = m.run_with_hooks(toks, fwd_hooks=[C.zero_head_hook(1, 1)], return_type="logits")
        assert not torch.equal(out, clean)


# ------------------------------------------------------------------------------- view, CLI, report
def test_atlas_module_is_callable_and_plots(induction_atlas):
    import importlib

    import interp

    mod = importlib.import_module("interp.atlas")
    assert callable(interp.atlas) and callable(mod)
    fig = induction_atlas.plot()
    names = {n for tr in fig.data if getattr(tr, "customdata", None) is not None for n in tr.customdata}
    assert names == {"L0H0", "L1H1"}


@pytest.mark.slow
def test_atlas_html_renders_in_chromium(induction_atlas, tmp_path):
    from interp.reports.browser import check_rendering, find_chromium

    p = induction_atlas.save_html(tmp_path / "atlas.html")
    text = p.read_text()
    assert "<script src=" not in text and "L1H1" in text  # plotly.js embedded: opens offline
    if find_chromium() is None:
        pytest.skip("no Chromium installed (apt-get install -y chromium)")
    r = check_rendering(p)
    assert r.js_errors == [] and r.figures == r.rendered >= 5, (r.figures, r.rendered, r.js_errors)
    assert "induction" in r.dom  # the card of the first head was filled in by the script


@pytest.mark.slow
def test_cli_atlas(tmp_path):
    from typer.testing import CliRunner

    from interp import cli

    runner = CliRunner()
    html = tmp_path / "a.html"
    res = runner.invoke(cli.app, ["atlas", "toy-offset-rope", "--no-probes", "--json", "--html", str(html)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    assert doc["heads"]["L0H1"]["label"] == "offset-3" and html.is_file()
    bad = runner.invoke(cli.app, ["atlas", "toy-offset-rope", "--task", "ioi"])
    assert bad.exit_code == 2 and "natural-language" in bad.output
    both = runner.invoke(cli.app, ["atlas", "toy-offset-rope", "--task", "toy", "--pairs", str(html)])
    assert both.exit_code == 2 and "mutually exclusive" in both.output


@pytest.mark.slow
def test_report_section_atlas(toy_model):
    from interp.reports import available_sections, build_report

    assert "atlas" in [s.name for s in available_sections()]
    rep = build_report(toy_model("toy-offset-rope"), model_name="toy-offset-rope", only=["atlas"],
                       options={"probes": False}, progress=False)
    (res,) = rep.results
    assert res.status == "ok", res.reason
    assert res.output.data["heads"]["L0H1"]["label"] == "offset-3"
    assert len(res.output.figures) == 2


# ------------------------------------------------------------------------------- SmolLM2 IOI
@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_ioi_atlas(smollm2, tmp_path):
    import interp
    from interp.reports.browser import check_rendering, find_chromium

    a = interp.atlas(smollm2, "ioi", n=32)
    assert a.task["n"] >= 32
    heads = a.circuit_heads()
    assert heads
    for h in heads:
        c = a.card(h)
        assert c["label"] and c["edges"] and "pattern" in c
    assert len(a.probes) == smollm2.cfg.n_layers + 1
    p = a.save_html(tmp_path / "smol.html")
    if find_chromium() is not None:
        r = check_rendering(p)
        assert r.js_errors == [] and r.figures == r.rendered, (r.figures, r.rendered, r.js_errors)
