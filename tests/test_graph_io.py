"""AttributionGraph on disk: safetensors round trip, errors, size against JSON."""

from __future__ import annotations

import json

import pytest
import torch

from circuits import AttributionGraph, attribute
from circuits.metrics import logit_diff


@pytest.mark.slow
def test_save_load_roundtrip_and_errors(random_toy, tmp_path):
    m = random_toy("toy-induction")
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(3, 60, (3, 7), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2:4] = torch.randint(3, 60, (3, 2), generator=g)
    graph = attribute(m, clean, corrupt, logit_diff([5, 6, 7], [8, 9, 10]), task="io-test")
    p = graph.save(tmp_path / "g")  # suffix added
    assert p.name == "g.safetensors" and p.is_file()
    assert not list(tmp_path.glob("*.partial"))
    g2 = AttributionGraph.load(p)
    for name in ("same_pos", "valid", "cross", "cross_valid", "span_sizes", "cross_pairs"):
        a, b = getattr(graph, name), getattr(g2, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert (g2.senders, g2.receivers, g2.positions) == (graph.senders, graph.receivers,
                                                        graph.positions)
    assert g2.meta["task"] == "io-test" and g2.meta["prepend_bos"] == graph.meta["prepend_bos"]
    assert g2.top_edges(5) == graph.top_edges(5)
    # binary is smaller than nested-list JSON (3.2x on SmolLM2 IOI, where few scores are 0)
    js = tmp_path / "g.json"
    js.write_text(json.dumps(graph.to_json()))
    assert p.stat().st_size < js.stat().st_size
    with pytest.raises(FileNotFoundError, match="AttributionGraph.save"):
        AttributionGraph.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="AttributionGraph.save"):
        AttributionGraph.load(tmp_path / "other.safetensors")
