"""circuits.resample: bootstrap selection frequencies, score CIs, select(method="stable")."""

from __future__ import annotations

import json

import pytest
import torch

from circuits import attribute, resample, select
from circuits.metrics import logit_diff


def _offset_task(n=8):
    from interp.zoo import manifest, model_dir
    from interp.zoo import tasks as T

    name = "toy-offset-rope"
    if not (model_dir(name) / "model.safetensors").exists():
        pytest.skip(f"{name} weights not trained/shipped yet")
    from interp import load_model

    model, man = load_model(name), manifest(name)
    off, V = int(man["task"]["params"]["offset"]), man["task"]["params"]["n_vocab"]
    b = T.offset_batch(n, n_vocab=V, length=12, offset=off, seed=3)
    clean, j = b.tokens, 4
    corrupt = clean.clone()
    corrupt[:, j] = (clean[:, j] - T.N_SPECIAL + 7) % V + T.N_SPECIAL
    met = logit_diff(clean[:, j], corrupt[:, j], position=torch.full((n,), j + off))
    head = man["heads"][0]
    g = head["head"] // (man["model"]["n_heads"] // man["model"]["n_kv_heads"])
    lab, t = head["label"], j + off
    planted = [("v", lab, lab, t, j), ("same", "embed", f"L0KV{g}.v", j, j), ("same", lab, "logits", t, t)]
    return model, clean, corrupt, met, planted


@pytest.mark.parametrize("method", ["eap", "atp*"])
def test_planted_edges_selected_in_every_resample(method):
    """toy-offset-rope: the planted circuit (embed → value at j, the offset head's value edge
    j → j+3, head → logits at j+3) is selected in 100 % of 20 bootstrap resamples (top-5 edges),
    the full-data graph equals attribute() on all examples, CIs bracket the mean, and
    select(method="stable") keeps the planted edges."""
    model, clean, corrupt, met, planted = _offset_task()
    st = resample(model, clean, method, n=20, corrupt=corrupt, metric=met, n_edges=5, seed=0)
    for kind, s, r, p, kp in planted:
        assert st.freq_of(kind, s, r, p, kp) == 1.0, (kind, s, r, p, kp, st.edges()[:8])
    ref = attribute(model, clean, corrupt, met, method=method)
    torch.testing.assert_close(st.graph.same_pos, ref.same_pos, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(st.graph.cross, ref.cross, rtol=1e-4, atol=1e-6)
    assert (st.same_lo <= st.same_mean + 1e-6).all() and (st.same_mean <= st.same_hi + 1e-6).all()
    c = select(st, method="stable", min_freq=1.0)
    for kind, s, r, p, kp in planted:
        if kind == "same":
            assert c.same_pos[p, c.senders.index(s), c.receivers.index(r)], (kind, s, r, p)
        else:
            l, h = (int(x) for x in s[1:].split("H"))
            assert c.cross[l, h, "qkv".index(kind), p, kp], (kind, s, p, kp)
    assert c.meta["method"] == "stable"
    d = st.to_json()
    json.dumps(d)
    assert d["edges"][0]["freq"] == 1.0 and d["meta"]["n"] == 20
    st.plot()
    c.plot(stability=st)


def test_resample_bad_inputs():
    model, clean, corrupt, met, _ = _offset_task(n=3)
    with pytest.raises(ValueError, match="n_edges"):
        resample(model, clean, "eap", n=2, corrupt=corrupt, metric=met)
    with pytest.raises(TypeError, match="Stability"):
        select(attribute(model, clean, corrupt, met), method="stable")
