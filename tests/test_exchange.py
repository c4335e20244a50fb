"""Exchange formats (circuits.exchange): EAP-IG / MIB graph JSON and Neuronpedia-style graph JSON.

The EAP-IG checks follow the public loader (hannamw/EAP-IG ``src/eap/graph.py``): ``Graph.from_json``
asserts the keys ``cfg``/``nodes``/``edges``, builds the full graph from ``cfg`` (n_layers,
n_heads, parallel_attn_mlp, d_model), sets ``in_graph`` (and an optional ``score``) of every
node but ``logits`` by name and ``score``/``in_graph`` of every listed edge by name. The expected
names are generated here from the loader's documented rules, independently of the exporter.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import circuits
from circuits.attribution import patchable
from circuits.exchange import (circuit_from_eap_ig, graph_from_eap_ig, save_eap_ig, save_graph_json,
                               save_mib_submission, to_eap_ig, to_graph_json)
from circuits.faithfulness import FaithfulnessEvaluator
from circuits.graph import AttributionGraph

B, T = 3, 7


def metric(logits):
    return logits[:, -1, 3] - logits[:, -1, 5]


def _tiny(tmp_path_factory, name, **sizes):
    from interp import load_model
    from interp.zoo import TOY_MODELS
    from interp.zoo._train import build_model, build_tokenizer

    base = TOY_MODELS[name]
    info = dataclasses.replace(base, attention_only=False, model={**base.model, **sizes})
    hf = build_model(info, seed=3)
    tok = build_tokenizer(int(info.task_params["n_vocab"]), int(info.model["n_ctx"]))
    d = tmp_path_factory.mktemp(f"exchange-{name}")
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    return load_model(str(d))


@pytest.fixture(scope="module")
def gpt2_tiny(tmp_path_factory):
    """GPT-2 architecture (no GQA), random weights: 2 layers, 3 heads, MLPs."""
    return _tiny(tmp_path_factory, "toy-nope", d_model=48, n_layers=2, n_heads=3, n_kv_heads=3, d_mlp=32)


@pytest.fixture(scope="module")
def gqa_tiny(tmp_path_factory):
    """Llama architecture with GQA (4 query / 2 KV heads), random weights, MLPs."""
    return _tiny(tmp_path_factory, "toy-induction", d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_mlp=32)


def _data(model):
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(1, 30, (B, T), generator=g)
    corrupt = torch.randint(1, 30, (B, T), generator=g)
    clean[:, 0] = corrupt[:, 0] = model.tokenizer.bos_token_id
    return clean, corrupt


@pytest.fixture(scope="module", params=["gpt2", "gqa"])
def case(request, gpt2_tiny, gqa_tiny):
    model = gpt2_tiny if request.param == "gpt2" else gqa_tiny
    clean, corrupt = _data(model)
    graphs = {g: circuits.attribute(model, clean, corrupt, metric, granularity=g, batch_size=B)
              for g in ("position", "none")}
    return request.param, model, clean, corrupt, graphs


# ------------------------------------------------------------------ the loader's expectations
def expected_eap_ig(L: int, H: int, parallel: bool = False) -> tuple[list[str], set[str]]:
    """Node names and edge names of EAP-IG's Graph.from_model for a model shape (its documented
    rules: residual = input, then per layer the heads and the MLP; heads read q/k/v from every
    earlier node; the MLP also from the same layer's heads unless parallel; logits from all)."""
    nodes = ["input"]
    edges: set[str] = set()
    upstream = ["input"]
    for l in range(L):
        heads = [f"a{l}.h{h}" for h in range(H)]
        for p in upstream:
            edges |= {f"{p}->{c}<{x}>" for c in heads for x in "qkv"}
        mlp_parents = upstream if parallel else upstream + heads
        edges |= {f"{p}->m{l}" for p in mlp_parents}
        upstream = upstream + heads + [f"m{l}"]
        nodes += heads + [f"m{l}"]
    edges |= {f"{p}->logits" for p in upstream}
    return nodes + ["logits"], edges


def loader_check(d: dict) -> None:
    """What EAP-IG's Graph.from_json needs from a file, checked without EAP-IG installed."""
    assert set(d) == {"cfg", "nodes", "edges"}
    cfg = d["cfg"]
    assert set(cfg) == {"n_layers", "n_heads", "parallel_attn_mlp", "d_model"}
    assert isinstance(cfg["n_layers"], int) and isinstance(cfg["n_heads"], int)
    assert isinstance(cfg["parallel_attn_mlp"], bool) and isinstance(cfg["d_model"], int)
    nodes, edges = expected_eap_ig(cfg["n_layers"], cfg["n_heads"], cfg["parallel_attn_mlp"])
    assert list(d["nodes"]) == nodes  # EAP-IG's to_json writes them in this order
    for name, info in d["nodes"].items():
        assert set(info) == {"in_graph"} and isinstance(info["in_graph"], bool), name
    assert set(d["edges"]) == edges
    L, H = cfg["n_layers"], cfg["n_heads"]
    n_backward = L * (3 * H + 1) + 1  # the loader's score matrix is [n_forward, n_backward]
    assert len({e.split("->")[1] for e in edges}) == n_backward
    assert len({e.split("->")[0] for e in edges}) == 1 + L * (H + 1)
    for name, info in d["edges"].items():
        assert set(info) == {"score", "in_graph"}, name
        assert isinstance(info["score"], float) and isinstance(info["in_graph"], bool), name


def test_edge_set_matches_mib_gpt2_example():
    """MIB's published GPT-2 small importance file (circuits/ioi-eap-ig.json of the circuit track)
    has 158 nodes and 32,491 edges: our generator and the exporter's layout both give that."""
    from circuits.exchange import EAPIGLayout, eap_ig_edge_names

    nodes, edges = expected_eap_ig(12, 12)
    assert len(nodes) == 158 and len(edges) == 32491
    assert set(eap_ig_edge_names(12, 12)) == edges and len(eap_ig_edge_names(12, 12)) == 32491
    assert "a3.h2->m3" in edges and "a3.h2->a3.h5<q>" not in edges and "m3->a3.h0<k>" not in edges
    lay = EAPIGLayout(12, 12, 4)  # GQA does not change EAP-IG's names, only the mapping
    assert [e[0] for e in lay.edges] == eap_ig_edge_names(12, 12)


# ------------------------------------------------------------------ export / import
def test_eap_ig_export_format_and_projection(case, tmp_path):
    name, model, _, _, graphs = case
    pm = patchable(model)
    g = graphs["position"]
    path = save_eap_ig(g, tmp_path / "graph.json", d_model=int(model.cfg.d_model))
    d = json.loads(path.read_text())
    loader_check(d)
    assert d["cfg"]["n_heads"] == pm.n_heads and d["cfg"]["d_model"] == int(model.cfg.d_model)
    summed = (g.same_pos * g.valid).sum(0)
    group = pm.n_heads // pm.n_kv_heads
    assert (group > 1) == (name == "gqa")
    S, R = pm.sender_index, pm.receiver_index
    for l in range(pm.n_layers):
        for h in range(pm.n_heads):
            q = d["edges"][f"input->a{l}.h{h}<q>"]["score"]
            assert q == pytest.approx(float(summed[S["embed"], R[f"L{l}H{h}.q"]]), rel=1e-6, abs=1e-9)
            for x in "kv":
                sc = d["edges"][f"input->a{l}.h{h}<{x}>"]["score"]
                kv = float(summed[S["embed"], R[f"L{l}KV{h // group}.{x}"]])
                assert sc == pytest.approx(kv / group, rel=1e-6, abs=1e-9)
    last = pm.n_layers - 1
    assert d["edges"][f"a0.h1->m{last}"]["score"] == pytest.approx(float(summed[S["L0H1"], R[f"M{last}"]]), rel=1e-6)
    assert d["edges"][f"m{last}->logits"]["score"] == pytest.approx(float(summed[S[f"M{last}"], R["logits"]]), rel=1e-6)
    # the projection of the positional graph is the position-agnostic ("none") graph: EAP sums over positions
    d_none = to_eap_ig(graphs["none"])
    a = torch.tensor([d["edges"][k]["score"] for k in d["edges"]])
    b = torch.tensor([d_none["edges"][k]["score"] for k in d["edges"]])
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * float(a.abs().max()))


def test_eap_ig_round_trip_scores(case):
    name, model, _, _, graphs = case
    for g in graphs.values():
        d = to_eap_ig(g)
        back = graph_from_eap_ig(json.loads(json.dumps(d)), model=model, prepend_bos=True)
        assert back.positions == ["all"] and back.granularity == "none" and back.meta["prepend_bos"] is True
        want = (g.same_pos * g.valid).sum(0).float()
        if name == "gpt2":
            assert torch.equal(back.same_pos[0], want)
        else:  # equal GQA split summed back (k/v of 2 query heads: x/2 + x/2 is exact in float)
            assert torch.allclose(back.same_pos[0], want, rtol=1e-6, atol=0)
        assert torch.equal(back.valid, g.valid)
        assert to_eap_ig(back)["edges"] == d["edges"]  # export(import(export(g))) == export(g)


def test_eap_ig_import_needs_kv_heads_and_rejects_bad_files(gqa_tiny):
    g = AttributionGraph.from_json(_random_graph(gqa_tiny).to_json())
    d = to_eap_ig(g)
    with pytest.raises(ValueError, match="n_kv_heads"):
        graph_from_eap_ig(d, model=gqa_tiny, n_kv_heads=4)
    ok = graph_from_eap_ig(d, n_kv_heads=2)
    assert ok.receivers == g.receivers
    bad = json.loads(json.dumps(d))
    bad["edges"]["m1->a0.h0<q>"] = {"score": 1.0, "in_graph": False}
    with pytest.raises(ValueError, match="not in the EAP-IG graph"):
        graph_from_eap_ig(bad, n_kv_heads=2)
    with pytest.raises(ValueError, match="missing key"):
        graph_from_eap_ig({"cfg": d["cfg"], "nodes": {}}, n_kv_heads=2)


def _random_graph(model, positions=("0:a", "1:b", "2:c")):
    pm = patchable(model)
    P, S, R = len(positions), len(pm.senders), len(pm.receivers)
    gen = torch.Generator().manual_seed(1)
    cv = torch.tril(torch.ones(P, P, dtype=torch.bool))
    return AttributionGraph(list(pm.senders), list(pm.receivers), list(positions),
                            torch.randn(P, S, R, generator=gen) * pm.valid, pm.valid.clone(),
                            torch.randn(pm.n_layers, pm.n_heads, 3, P, P, generator=gen) * cv, cv,
                            torch.ones(P), cv.float(),
                            {"granularity": "position", "method": "eap", "model": "random", "prepend_bos": True})


def test_exported_circuit_faithfulness_unchanged(case, tmp_path):
    """A position-agnostic circuit, exported with its in_graph flags and re-imported, is the
    same circuit, so real-patching faithfulness is the same number."""
    name, model, clean, corrupt, graphs = case
    g = graphs["none"]
    circ = circuits.select(g, n_edges=max(4, g.n_edges() // 6))
    assert 0 < circ.n_edges
    ev = FaithfulnessEvaluator(model, clean, corrupt, metric, prepend_bos=True, n_boot=50)
    f1 = ev(circ)
    path = save_eap_ig(circ, tmp_path / "circuit.json")
    d = json.loads(path.read_text())
    loader_check(d)
    assert any(e["in_graph"] for e in d["edges"].values())
    back = circuit_from_eap_ig(path, model=model, prepend_bos=True)
    assert torch.equal(back.same_pos, circ.same_pos) and torch.equal(back.cross, circ.cross)
    f2 = ev(back)
    assert f2.f == f1.f and torch.equal(f2.per_example, f1.per_example)
    # sanity: a different circuit gives a different number (the check can fail)
    smaller = circuits.select(g, n_edges=2)
    assert ev(smaller).f != f1.f


def test_positional_circuit_projects_to_superset(case):
    _, model, _, _, graphs = case
    circ = circuits.select(graphs["position"], n_edges=12)
    back = circuit_from_eap_ig(to_eap_ig(circ), model=model, prune=False)
    assert bool((back.same_pos[0] | ~circ.same_pos.any(0)).all()) or circ.n_edges == 0


# ------------------------------------------------------------------ MIB
def test_mib_submission_layout(case, tmp_path):
    """MIB circuit track (README 'Submitting to the MIB Leaderboard'): one folder per task/model
    named '{task}_{model}' holding a single .json (or .pt) file of floating-point importance
    scores for every edge; run_attribution.py names it '{task with - for _}_{model}/importances.json'."""
    _, model, _, _, graphs = case
    p = save_mib_submission(graphs["none"], tmp_path, task="arc_easy", model="gpt2", method="posinterp-eap",
                            d_model=int(model.cfg.d_model))
    assert p == tmp_path / "posinterp-eap" / "arc-easy_gpt2" / "importances.json"
    assert [f.name for f in p.parent.iterdir()] == ["importances.json"]
    task, mname = p.parent.name.split("_")
    assert task.replace("-", "_") in circuits.exchange.MIB_TASKS and mname in circuits.exchange.MIB_MODELS
    d = json.loads(p.read_text())
    loader_check(d)  # every edge of the model present with a float score
    assert all(isinstance(e["score"], float) for e in d["edges"].values())
    with pytest.raises(ValueError, match="not an MIB task"):
        save_mib_submission(graphs["none"], tmp_path, task="sst2", model="gpt2")
    with pytest.raises(ValueError, match="not an MIB model"):
        save_mib_submission(graphs["none"], tmp_path, task="ioi", model="smollm2")
    q = save_mib_submission(graphs["none"], tmp_path, task="ioi", model="smollm2", strict=False)
    assert q.parent.name == "ioi_smollm2"


# ------------------------------------------------------------------ Neuronpedia / circuit-tracer graph JSON
NODE_TYPES = {"node_id": str, "feature": int, "layer": str, "ctx_idx": int, "feature_type": str,
              "token_prob": float, "is_target_logit": bool, "run_idx": int, "reverse_ctx_idx": int,
              "jsNodeId": str, "clerp": str}


def _graph_json_check(d, n_positions):
    assert {"metadata", "qParams", "nodes", "links"} <= set(d)
    for k, tp in (("slug", str), ("scan", str), ("prompt_tokens", list), ("prompt", str), ("schema_version", int)):
        assert isinstance(d["metadata"][k], tp), k
    assert set(d["qParams"]) == {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"}
    ids = [n["node_id"] for n in d["nodes"]]
    assert len(ids) == len(set(ids))
    for n in d["nodes"]:
        for k, tp in NODE_TYPES.items():
            assert isinstance(n[k], tp), (k, n)
        assert 0 <= n["ctx_idx"] < n_positions
        assert n["influence"] is None or isinstance(n["influence"], float)
    for link in d["links"]:
        assert link["source"] in ids and link["target"] in ids and isinstance(link["weight"], float)


def test_graph_json_positional(case, tmp_path):
    _, model, _, _, graphs = case
    g = graphs["position"]
    path = save_graph_json(g, tmp_path / "g.json", max_links=40)
    d = json.loads(path.read_text())
    _graph_json_check(d, len(g.positions))
    assert len(d["links"]) == 40
    assert [l["weight"] for l in d["links"]] == [pytest.approx(e.score) for e in g.top_edges(40)]
    assert d["metadata"]["prepend_bos"] == g.meta["prepend_bos"] and len(d["metadata"]["prompt_tokens"]) == len(g.positions)
    # a crossing edge links the key's k receiver at kpos to the head at qpos
    cross = next(e for e in g.top_edges(None, kinds=("k",)) if e.pos != e.kpos)
    d_all = to_graph_json(g, max_links=None)
    _graph_json_check(d_all, len(g.positions))
    by_id = {n["node_id"]: n for n in d_all["nodes"]}
    l, h = (int(x) for x in cross.sender[1:].split("H"))
    hits = [k for k in d_all["links"] if k["kind"] == "k" and by_id[k["target"]]["name"] == cross.sender
            and by_id[k["target"]]["ctx_idx"] == g.positions.index(cross.pos)
            and by_id[k["source"]]["ctx_idx"] == g.positions.index(cross.kpos)]
    assert hits and by_id[hits[0]["source"]]["feature_type"] == "attention k"
    # a circuit exports its own edges
    circ = circuits.select(g, n_edges=15)
    dc = to_graph_json(circ)
    _graph_json_check(dc, len(g.positions))
    assert len(dc["links"]) == circ.n_edges


# ------------------------------------------------------------------ SmolLM2 (GQA 9 q / 3 kv heads)
@pytest.mark.real_model
def test_smollm2_eap_ig_and_graph_json_format(smollm2, tmp_path):
    pm = patchable(smollm2)
    assert (pm.n_heads, pm.n_kv_heads) == (9, 3)
    g = _random_graph(smollm2)
    d = json.loads(save_eap_ig(g, tmp_path / "s.json", d_model=576).read_text())
    loader_check(d)
    assert (d["cfg"]["n_layers"], d["cfg"]["n_heads"], d["cfg"]["d_model"]) == (30, 9, 576)
    back = graph_from_eap_ig(d, model=smollm2)
    assert torch.allclose(back.same_pos[0], (g.same_pos * g.valid).sum(0), rtol=1e-5, atol=1e-6)
    circ = circuits.select(g, n_edges=300)
    dc = to_eap_ig(circ)
    loader_check(dc)
    _graph_json_check(to_graph_json(g, max_links=100), 3)


# ------------------------------------------------------------------ CLI
@pytest.mark.parametrize("fmt", ["eap-ig", "mib", "graph-json"])
@pytest.mark.slow
def test_cli_circuit_export(fmt, tmp_path, monkeypatch, toy_model):
    from typer.testing import CliRunner

    from interp import cli

    m = toy_model("toy-induction")
    monkeypatch.setattr(cli, "_load_model", lambda name, debug, dtype="float32": m)
    dest = tmp_path / ("subs" if fmt == "mib" else "g.json")
    res = CliRunner().invoke(cli.app, ["circuit", "toy-induction", "--task", "induction", "--n", "2",
                                       "--granularity", "position", "--export", fmt, str(dest), "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)["sections"][0]["data"]
    written = data["export"]["path"]
    d = json.loads(open(written).read())
    if fmt == "graph-json":
        _graph_json_check(d, len(data["circuit"]["positions"]))
        assert len(d["links"]) == data["circuit"]["n_edges"]
    else:
        loader_check(d)
        if fmt == "mib":
            assert written == str(dest / "induction_toy-induction" / "importances.json")
        else:
            assert any(e["in_graph"] for e in d["edges"].values())
    bad = CliRunner().invoke(cli.app, ["circuit", "toy-induction", "--export", "eap-ig", str(tmp_path)])
    assert bad.exit_code == 2 and "is a directory" in bad.stderr
