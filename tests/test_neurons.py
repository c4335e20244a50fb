"""Positional neurons: I(act; pos) against scikit-learn's mutual information and closed forms,
firing counts against brute force over cached MLP activations, GELU (GPT-2) and bad input."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from interp import neurons  # noqa: E402

from helpers import PROMPTS, _tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_llama(tmp_path_factory.mktemp("tiny-llama-neurons"), seed=2)


def test_mutual_information_matches_sklearn():
    """With equal tokens per position, Voita et al.'s I equals I(pos; fires) for uniform pos."""
    from sklearn.metrics import mutual_info_score

    g = torch.Generator().manual_seed(0)
    n, T = 40, 7
    rates = torch.linspace(0.05, 0.95, T)
    fires = (torch.rand(n, T, 3, generator=g) < rates[None, :, None]).float()  # [sample pos neuron]
    got = neurons.position_mutual_information(fires.sum(0).T, torch.full((T,), float(n)))
    pos = torch.arange(T).repeat(n).numpy()
    for j in range(3):
        ref = mutual_info_score(pos, fires[:, :, j].flatten().numpy())
        assert float(got[j]) == pytest.approx(ref, abs=1e-6)


def test_mutual_information_closed_forms():
    T = 10
    half = torch.cat([torch.ones(5), torch.zeros(5)]) * 8  # fires at every token of the first half
    const = torch.full((T,), 4.0)  # fires half the time everywhere
    never = torch.zeros(T)
    got = neurons.position_mutual_information(torch.stack([half, const, never]), torch.full((T,), 8.0))
    assert float(got[0]) == pytest.approx(math.log(2), rel=1e-6)
    assert float(got[1]) == pytest.approx(0.0, abs=1e-7)
    assert float(got[2]) == pytest.approx(0.0, abs=1e-7)
    # positions without tokens are skipped
    got2 = neurons.position_mutual_information(torch.cat([half, torch.zeros(3)])[None], torch.cat([torch.full((T,), 8.0), torch.zeros(3)]))
    assert float(got2[0]) == pytest.approx(math.log(2), rel=1e-6)


def test_small_sample_bias_matches_simulated_null():
    """The expected plug-in I of position-independent firing, simulated, against the closed form
    (1/T) Σ_pos (1/(2 n_pos) − 1/(2 N)); Miller–Madow's (T − 1)/(2N) only when n_pos are equal."""
    g = torch.Generator().manual_seed(0)
    n_pos = torch.tensor([200.0] * 20 + [60.0] * 10 + [30.0] * 10)  # short prompts: late positions sparse
    n_neurons = 20000
    p = 0.1 + 0.8 * torch.rand(n_neurons, 1, generator=g)  # firing rate, the same at every position
    fires = torch.binomial(n_pos.expand(n_neurons, -1), p.expand(-1, n_pos.numel()), generator=g)
    mean_info = float(neurons.position_mutual_information(fires, n_pos).double().mean())
    closed = neurons.small_sample_bias(n_pos)
    mm = (n_pos.numel() - 1) / (2 * float(n_pos.sum()))
    assert closed == pytest.approx(float((0.5 / n_pos).mean() - 0.5 / n_pos.sum()))
    assert mean_info == pytest.approx(closed, rel=0.05)
    assert abs(mean_info - mm) > 0.5 * mm  # the equal-count formula is far off here
    # equal counts: the closed form is Miller–Madow's
    eq = torch.full((40,), 80.0)
    assert neurons.small_sample_bias(eq) == pytest.approx(39 / (2 * 3200))
    fires_eq = torch.binomial(eq.expand(n_neurons, -1), p.expand(-1, 40), generator=g)
    assert float(neurons.position_mutual_information(fires_eq, eq).double().mean()) == pytest.approx(
        neurons.small_sample_bias(eq), rel=0.05)
    with pytest.raises(ValueError):
        neurons.small_sample_bias(torch.zeros(3))


def test_small_sample_bias_of_a_weighted_replicate():
    """Poisson(1)-weighted prompts (a bootstrap replicate): the simulated null mean of the weighted
    plug-in I matches the bias with Kish's effective counts (Σw)²/Σw², about twice the unweighted one."""
    g = torch.Generator().manual_seed(1)
    n_prompts, T, n_neurons = 120, 16, 4000
    w = torch.poisson(torch.ones(n_prompts), generator=g)
    p = 0.2 + 0.6 * torch.rand(n_neurons, 1, 1, generator=g)
    x = (torch.rand(n_neurons, n_prompts, T, generator=g) < p).float()
    fires = torch.einsum("i,kit->kt", w, x)
    tot = torch.full((T,), float(w.sum()))
    sq = torch.full((T,), float((w * w).sum()))
    mean_info = float(neurons.position_mutual_information(fires, tot).double().mean())
    kish = neurons.small_sample_bias(tot, sq)
    assert mean_info == pytest.approx(kish, rel=0.08)
    assert kish > 1.5 * neurons.small_sample_bias(tot)
    ones = torch.full((T,), float(n_prompts))
    assert neurons.small_sample_bias(ones, ones) == pytest.approx(neurons.small_sample_bias(ones))


def _bruteforce(model, prompts, hook):
    counts, totals = None, torch.zeros(20)
    L = model.cfg.n_layers
    for p in prompts:
        toks = model.to_tokens(p)
        _, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith(("mlp.hook_pre", "mlp.hook_post", "gate.hook_out", "mlp.in.hook_out", "out.hook_in")))
        x = torch.stack([cache[f"blocks.{l}.mlp.{hook}"][0] for l in range(L)])  # [layer pos neuron]
        T = x.shape[1]
        if counts is None:
            counts = torch.zeros(L, x.shape[-1], 20)
        counts[:, :, :T] += (x > 0).float().transpose(1, 2)
        totals[:T] += 1
    return counts, totals


@pytest.mark.slow
def test_positive_rule_bruteforce(tiny):
    with pytest.warns(UserWarning, match="small-sample bias"):
        r = neurons.positional_neurons(tiny, PROMPTS, batch_size=2)
    counts, totals = _bruteforce(tiny, PROMPTS, "hook_pre")
    T = r.firing_rate.shape[-1]
    assert torch.allclose(r.tokens_per_position, totals[:T])
    assert torch.allclose(r.firing_rate, counts[:, :, :T] / totals[:T], atol=1e-6)
    ref = neurons.position_mutual_information(counts[:, :, :T], totals[:T])
    assert torch.allclose(r.info, ref, atol=1e-6)
    assert torch.allclose(r.overall_rate, counts.sum(-1) / totals.sum(), atol=1e-6)
    assert r.info.shape == (2, 48) and r.rule == "positive" and r.prepend_bos is True
    # the gate pre-activation sign is the SiLU sign: act(x) > 0 <=> x > 0
    c_post, _ = _bruteforce(tiny, PROMPTS, "hook_post")  # silu(gate) * up: a different (signed) rule
    assert not torch.equal(c_post, counts)
    top = r.top(3)
    assert top[0][0].startswith("L") and "N" in top[0][0] and top[0][1] >= top[1][1]
    s = json.dumps(r.to_json())
    assert '"prepend_bos": true' in s
    assert r.plot().layout.title.text and r.plot_curves([top[0][0]]).layout.title.text
    kept = totals[totals > 0]
    assert r.bias == pytest.approx(float((0.5 / kept).mean() - 0.5 / kept.sum()))
    assert r.count_per_layer() == [int((r.info[l] - r.bias > 0.05).sum()) for l in range(2)]
    assert torch.equal(r.positional(corrected=False), (r.info > 0.05).float())


@pytest.mark.filterwarnings("ignore:I\\(act")
def test_quantile_rule_and_layers(tiny):
    r = neurons.positional_neurons(tiny, PROMPTS, rule="quantile", quantile=0.8, batch_size=8, layers=[1])
    assert torch.isnan(r.info[0]).all() and not torch.isnan(r.info[1]).any()
    # with one mini-batch the threshold is the 0.8-quantile over every token: ~20 % fire overall
    assert float(r.overall_rate[1].mean()) == pytest.approx(0.2, abs=0.05)


@pytest.mark.filterwarnings("ignore:I\\(act")
def test_gelu_gpt2(random_toy):
    m = random_toy("toy-nope")
    r = neurons.positional_neurons(m, ["t1 t2 t3 t4 t5 t6", "t7 t8 t9"], batch_size=2)
    assert r.info.shape[0] == 2 and torch.isfinite(r.info).all()


def test_bad_input(tiny):
    with pytest.raises(ValueError, match="rule"):
        neurons.positional_neurons(tiny, PROMPTS, rule="relu")
    with pytest.raises(ValueError, match="quantile"):
        neurons.positional_neurons(tiny, PROMPTS, rule="quantile", quantile=1.0)
    with pytest.raises(ValueError, match="threshold"):
        neurons.positional_neurons(tiny, PROMPTS, threshold=2.0)
    with pytest.raises(ValueError, match="layer 9"):
        neurons.positional_neurons(tiny, PROMPTS, layers=[9])
    with pytest.raises(ValueError, match="No position"):
        neurons.position_mutual_information(torch.zeros(2, 3), torch.zeros(3))
