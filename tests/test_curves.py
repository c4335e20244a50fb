"""Faithfulness curves: sizes, areas (closed forms), end points, attribution → select → curve."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from circuits.curves import MIB_GRID, FaithfulnessCurve, area, faithfulness_curve, plot_curves
from circuits.faithfulness import FaithfulnessEvaluator

T, B = 8, 4


def metric(logits):
    return logits[:, -1, 3] - logits[:, -1, 5]


@pytest.fixture(scope="module")
def data(random_toy):
    model = random_toy("toy-induction", seed=2)
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(1, 60, (B, T), generator=g)
    corrupt = torch.randint(1, 60, (B, T), generator=g)
    clean[:, 0] = corrupt[:, 0] = model.tokenizer.bos_token_id
    ev = FaithfulnessEvaluator(model, clean, corrupt, metric, prepend_bos=True, n_boot=100)
    return model, clean, corrupt, ev


def random_graph(pm, positions, seed=0, granularity="position"):
    g = torch.Generator().manual_seed(seed)
    P = len(positions)
    same = torch.randn(P, len(pm.senders), len(pm.receivers), generator=g) * pm.valid
    cv = torch.tril(torch.ones(P, P, dtype=torch.bool))
    cross = torch.randn(pm.n_layers, pm.n_heads, 3, P, P, generator=g) * cv
    return SimpleNamespace(same_pos=same, valid=pm.valid, cross=cross, cross_valid=cv,
                           senders=list(pm.senders), receivers=list(pm.receivers),
                           positions=list(positions), meta={"granularity": granularity})


def test_area_closed_forms():
    assert area([0, 1], [0, 1]) == pytest.approx(0.5)
    assert area([0, 0.5, 1], [1, 1, 1]) == pytest.approx(1.0)
    assert area([1, 0], [0, 2]) == pytest.approx(1.0)  # unsorted input is sorted


@pytest.mark.slow
def test_curve_end_points_areas_and_plot(data):
    model, clean, corrupt, ev = data
    gpos = random_graph(ev.pm, list(range(T)), seed=0)
    c = faithfulness_curve(model, gpos, evaluator=ev, sizes=(0.01, 0.1, 0.5, 1.0), label="position",
                           skip_full=False)
    assert isinstance(c, FaithfulnessCurve) and len(c.f) == 4
    assert c.f[-1] == pytest.approx(1.0, abs=1e-5)  # 100 % of edges = the full model
    assert c.concrete_fraction[-1] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(c.n_requested, c.n_requested[1:]))
    xs, fs = [0.0] + c.concrete_fraction, [0.0] + c.f
    assert c.cpr == pytest.approx(np.trapezoid(fs, xs) if hasattr(np, "trapezoid") else np.trapz(fs, xs))
    assert c.cmd == pytest.approx(area(xs, [abs(1 - f) for f in fs]))
    assert c.edges_for(-1e9) == c.concrete_edges[0] and c.edges_for(1e9) is None
    # non-positional graph on the same evaluator; both on one figure
    gnone = random_graph(ev.pm, ["all"], seed=1, granularity="none")
    c2 = faithfulness_curve(model, gnone, evaluator=ev, sizes=(0.05, 0.5, 1.0), label="none")
    assert c2.total_concrete == pytest.approx(c.total_concrete)  # same concrete graph
    assert c2.f[-1] == pytest.approx(1.0, abs=1e-5)
    fig = plot_curves([c, c2])
    assert len(fig.data) == 4 and "CPR" in fig.data[1].name
    d = c.to_json()
    assert d["type"] == "FaithfulnessCurve" and d["meta"]["ablation"] == "counterfactual"
    assert "| % edges |" in c.table()


def test_absolute_sizes_topn_and_bad_sizes(data):
    model, clean, corrupt, ev = data
    g = random_graph(ev.pm, list(range(T)), seed=2)
    c = faithfulness_curve(model, g, evaluator=ev, sizes=[5, 50], method="topn")
    assert c.fractions == [None, None] and all(n <= r for n, r in zip(c.n_edges, c.n_requested))
    with pytest.raises(ValueError, match="sizes"):
        faithfulness_curve(model, g, evaluator=ev, sizes=[0.5, 2.5])
    assert MIB_GRID[0] == 0.001 and MIB_GRID[-1] == 1.0 and len(MIB_GRID) == 10


def test_attribute_select_curve_end_to_end(data):
    """Real EAP graph → greedy circuits → faithfulness; greedy circuits beat random circuits of
    the same size on average over sizes."""
    import circuits
    from circuits.select import select

    model, clean, corrupt, ev = data
    graph = circuits.attribute(model, clean, corrupt, metric, granularity="position")
    curve = faithfulness_curve(model, graph, evaluator=ev, sizes=(0.02, 0.1, 0.3, 1.0))
    assert curve.f[-1] == pytest.approx(1.0, abs=1e-5)
    c = select(graph, 40)
    assert 0 < c.n_edges <= 40
    r = ev(c)
    assert np.isfinite(r.f)
