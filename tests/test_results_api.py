"""The Result API every analysis shares (interp.results): JSON round trips, equality, concise
repr, notebook HTML, tidy DataFrames — for every result type."""

from __future__ import annotations

import json

import pytest
import torch

import circuits
import interp.heads as heads_mod
import interp.scan as scan_mod
import interp.neurons as neurons_mod
import interp.rope as R
import interp.sinks as sinks_mod
import probes
from interp.results import Result, load_result, result_types

pd = pytest.importorskip("pandas")


def _all_results(model, prompts, *, graph_model=None, atlas_model=None, gb=3, gt=7) -> dict[str, Result]:
    """One instance of every result type (analyses on ``model``; circuits on ``graph_model``; the
    atlas on ``atlas_model``, a zoo toy, which runs its own task)."""
    from interp import Schema

    out: dict[str, Result] = {}
    sink = sinks_mod.sink_analysis(model, prompts)
    out["SinkResult"] = sink
    out["SinkDiscovery"] = sink.discover()
    out["MassiveActivationsResult"] = sink.massive
    out["RepeatedTokenResult"] = sinks_mod.repeated_token_sink(model, length=8)
    out["PositionalHeadsResult"] = heads_mod.positional_heads(model, prompts, random_control=True)
    out["ScanResult"] = scan_mod.scan(model, prompts)
    out["PositionalNeuronsResult"] = neurons_mod.positional_neurons(model, prompts)
    out["ActiveDormantResult"] = sinks_mod.active_dormant(model, {"a": prompts[:2], "b": prompts[2:4]}, layers=[0])
    usage = R.frequency_usage(model, prompts, decompose=True)
    out["FrequencyUsage"] = usage
    out["LogitDecomposition"] = usage.decomposition
    out["BandAblationResult"] = R.band_ablation(model, prompts[:2], fraction=0.25, max_offset=2)
    out["PositionalFrequencyResult"] = R.positional_frequency_heads(model, prompts[:2], max_offset=2)
    out["ShiftInvarianceResult"] = R.shift_invariance(model, prompts[:2], deltas=(0, 50))
    out["BaseBoundsResult"] = R.base_bounds(model)
    out["SchemaSpans"] = Schema.from_template("{A} 2 {B}").apply(["1 2 3", "4 2 6"], model)
    # probes on synthetic activations (no model needed)
    g = torch.Generator().manual_seed(0)
    n, L = 12, 6
    pos = torch.arange(L).repeat(n)
    x = torch.randn(n * L, 8, generator=g) + pos[:, None].float() * torch.randn(8, generator=g)
    data = probes.ProbeData.from_tensors({"hook_embed": torch.randn(n * L, 8, generator=g),
                                          "blocks.0.hook_resid_post": x},
                                         groups=torch.arange(n).repeat_interleave(L), positions=pos,
                                         prepend_bos=False)
    out["SweepResult"] = probes.probe_sweep(data, probes.absolute_position(data), folds=3, controls=("shuffled",))
    # circuits
    gm = graph_model or model
    clean = torch.randint(1, 30, (gb, gt), generator=g)
    corrupt = torch.randint(1, 30, (gb, gt), generator=g)
    clean[:, 0] = corrupt[:, 0] = gm.tokenizer.bos_token_id

    def metric(logits):
        return logits[:, -1, 3] - logits[:, -1, 5]

    graph = circuits.attribute(gm, clean, corrupt, metric, granularity="position", batch_size=gb)
    out["AttributionGraph"] = graph
    circ = circuits.select(graph, n_edges=20)
    out["Circuit"] = circ
    out["Faithfulness"] = circuits.faithfulness(gm, circ, clean, corrupt, metric, prepend_bos=True, n_boot=50)
    out["FaithfulnessCurve"] = circuits.faithfulness_curve(gm, graph, clean, corrupt, metric, sizes=(0.05, 0.5),
                                                           n_boot=50)
    out["SparseAttributionGraph"] = circuits.attribute(gm, clean, corrupt, metric, granularity="position",
                                                       batch_size=gb, store="topk", k=50)
    out["Stability"] = circuits.resample(gm, clean, corrupt=corrupt, metric=metric, n=3, n_edges=10,
                                         granularity="position")
    import interp.atlas

    atlas = interp.atlas(atlas_model or model, probes=False)
    out["Atlas"] = atlas
    out["CausalCheck"] = load_result(atlas.checks[0])
    return out


@pytest.fixture(scope="module")
def results(toy_model):
    from interp.zoo import make_batch

    model = toy_model("toy-offset-rope")
    prompts = make_batch("toy-offset-rope", 6, seed=1).texts()
    return _all_results(model, prompts)


def test_every_result_type_is_covered(results):
    assert set(results) == set(result_types()), "a Result type has no instance in this test"


NAMES = sorted(result_types()) if result_types() else []


def _names():
    from interp.results import _import_all_results

    _import_all_results()
    return sorted(result_types())


@pytest.mark.parametrize("name", _names())
def test_json_round_trip(results, name):
    r = results[name]
    text = json.dumps(r.to_json(), allow_nan=False)
    back = load_result(json.loads(text))
    assert type(back) is type(r)
    assert back == r
    assert type(r).from_json(json.loads(text)) == r
    from interp.results import values_equal

    again = json.loads(json.dumps(back.to_json(), allow_nan=False))
    assert values_equal(again, json.loads(text), 1e-5, 1e-6)  # to_json(from_json(j)) == j


def test_equality_can_fail(results):
    heads = results["PositionalHeadsResult"]
    other = type(heads).from_json(heads.to_json())
    other.scores[0, 0, 0] += 1e-3
    assert other != heads
    g = results["AttributionGraph"]
    g2 = type(g).from_json(g.to_json())
    assert g2 == g
    g2.same_pos[0, 0, -1] += 1e-2
    assert g2 != g
    assert results["SinkResult"] != results["RepeatedTokenResult"]


@pytest.mark.parametrize("name", _names())
def test_repr_and_html(results, name):
    r = results[name]
    text = repr(r)
    assert len(text) < 1000 and "tensor(" not in text
    assert "prepend_bos" in text or "BOS" in text
    page = r._repr_html_()
    assert page.startswith("<div") and "<table>" in page
    if callable(getattr(r, "plot", None)):
        assert "plotly" in page


def test_sink_result_repr_is_short_not_the_tensor_dump(results):
    """The reason for the concise repr: the dataclass repr printed every tensor (~10 kB)."""
    import dataclasses

    sink = results["SinkResult"]
    fields = ", ".join(f"{f.name}={getattr(sink, f.name)!r}" for f in dataclasses.fields(sink))
    assert len(fields) > 5000 and len(repr(sink)) < 600
    assert "model='toy-offset-rope'" in repr(sink) and "prepend_bos=True" in repr(sink)


@pytest.mark.parametrize("name", _names())
def test_to_frame(results, name):
    df = results[name].to_frame()
    assert isinstance(df, pd.DataFrame) and len(df) > 0


def test_frames_hold_the_numbers(results):
    h = results["PositionalHeadsResult"]
    df = h.to_frame()
    assert len(df) == h.scores.shape[0] * h.scores.shape[1]
    row = df[(df["layer"] == 0) & (df["head"] == 1)].iloc[0]
    assert row["previous_token"] == pytest.approx(float(h.score("previous_token")[0, 1]))
    assert row["head_label"] == "L0H1"
    s = results["SinkResult"]
    sf = s.to_frame()
    assert sf.loc[(sf["layer"] == 0) & (sf["head"] == 1) & (sf["key"] == 0), "alpha"].item() == pytest.approx(
        float(s.alpha_mean[0, 1, 0]))
    g = results["AttributionGraph"]
    gf = g.to_frame()
    assert len(gf) == g.n_edges() and set(gf.kind) <= {"same", "q", "k", "v"}
    assert gf.score.abs().iloc[0] == pytest.approx(abs(g.top_edges(1)[0].score))
    c = results["Circuit"]
    assert len(c.to_frame()) == c.n_edges
    cv = results["FaithfulnessCurve"].to_frame()
    assert list(cv.f) == results["FaithfulnessCurve"].f
    ab = results["BandAblationResult"].to_frame()  # generic frame, axes labelled from the result
    assert set(ab.condition) == set(results["BandAblationResult"].conditions)
    assert set(ab.score) == set(results["BandAblationResult"].score_names)
    sw = results["SweepResult"].to_frame()
    assert {"hook", "metric", "fold", "value"} <= set(sw.columns)


def test_neurons_json_keeps_top_curves_only():
    """PositionalNeuronsResult JSON stores firing curves of the top 50 neurons (size); the rebuilt
    result has NaN curves for the others and the same info/rates."""
    info = torch.rand(2, 40)
    fr = torch.rand(2, 40, 5)
    r = neurons_mod.PositionalNeuronsResult("m", True, "positive", 0.05, info, fr, torch.rand(2, 40), torch.ones(5))
    back = type(r).from_json(json.loads(json.dumps(r.to_json())))
    top = {n for n, _ in r.top(50)}
    for l in range(2):
        for n in range(40):
            got = back.firing_rate[l, n]
            if f"L{l}N{n}" in top:
                assert torch.allclose(got, fr[l, n], atol=1e-6)
            else:
                assert torch.isnan(got).all()
    assert torch.allclose(back.info, info, atol=1e-6) and torch.allclose(back.overall_rate, r.overall_rate, atol=1e-6)


@pytest.mark.real_model
@pytest.mark.slow
def test_repr_under_1000_characters_on_smollm2(smollm2, toy_model):
    prompts = ["The cat sat on the mat because it was warm.", "When Mary and John went to the store, John gave",
               "1 2 3 4 5 6 7 8", "def f(x):\n    return x + 1"]
    got = _all_results(smollm2, prompts, graph_model=smollm2, atlas_model=toy_model("toy-offset-rope"), gb=2, gt=6)
    assert set(got) == set(result_types())
    for name, r in got.items():
        text = repr(r)
        assert len(text) < 1000, (name, len(text), text)
        assert "tensor(" not in text
