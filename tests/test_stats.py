"""interp.stats against closed forms on synthetic data, and the "too noisy" wording rule."""

from __future__ import annotations

import math

import pytest
import torch

from interp import stats


def test_bootstrap_mean_matches_normal_interval():
    g = torch.Generator().manual_seed(0)
    x = 2.0 + 3.0 * torch.randn(400, generator=g, dtype=torch.float64)
    p, lo, hi = stats.bootstrap_ci(x, n_boot=4000, seed=1)
    se = float(x.std(unbiased=False)) / math.sqrt(len(x))
    assert float(p) == pytest.approx(float(x.mean()), abs=1e-12)
    assert float(hi - lo) / 2 == pytest.approx(1.959964 * se, rel=0.08)
    assert (float(lo) + float(hi)) / 2 == pytest.approx(float(x.mean()), abs=0.15 * se)


def test_bootstrap_proportion_matches_wald_interval():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(900, generator=g) < 0.3).double()
    est = stats.estimate(x, n_boot=4000, seed=3)
    ph = float(x.mean())
    assert est.half_width == pytest.approx(1.959964 * math.sqrt(ph * (1 - ph) / 900), rel=0.08)


def test_bootstrap_ratio_of_sums_matches_delta_method():
    # per-prompt token means x_i with token counts w_i: the per-token mean Σw x / Σw and its
    # delta-method standard error sqrt(Σ w_i² (x_i − R)²) / Σ w_i
    g = torch.Generator().manual_seed(4)
    w = torch.randint(5, 60, (500,), generator=g).double()
    x = torch.randn(500, generator=g, dtype=torch.float64) + 1.0
    p, lo, hi = stats.bootstrap_ci(x, weights=w, n_boot=4000, seed=5)
    R = float((w * x).sum() / w.sum())
    se = float(torch.sqrt((w ** 2 * (x - R) ** 2).sum()) / w.sum())
    assert float(p) == pytest.approx(R, abs=1e-12)
    assert float(hi - lo) / 2 == pytest.approx(1.959964 * se, rel=0.08)


def test_bootstrap_coverage_near_nominal():
    hits = 0
    trials = 200
    for t in range(trials):
        g = torch.Generator().manual_seed(100 + t)
        x = torch.randn(60, generator=g, dtype=torch.float64).exp()  # skewed, true mean e^{1/2}
        _, lo, hi = stats.bootstrap_ci(x, n_boot=400, seed=t)
        hits += float(lo) <= math.exp(0.5) <= float(hi)
    assert 0.85 <= hits / trials <= 0.99


def test_nan_entries_are_left_out_and_maps_keep_shape():
    x = torch.tensor([[1.0, float("nan")], [3.0, 2.0], [5.0, 4.0], [7.0, float("nan")]])
    p, lo, hi = stats.bootstrap_ci(x, n_boot=200)
    assert p.shape == (2,) and lo.shape == (2,)
    assert p.tolist() == pytest.approx([4.0, 3.0])
    assert float(lo[1]) >= 2.0 and float(hi[1]) <= 4.0


def test_split_half_matches_direct_halves():
    x = torch.arange(10, dtype=torch.float64)
    a, b = stats.split_half(x, seed=0)
    assert (a * 5 + b * 5) / 10 == pytest.approx(4.5)
    assert a != b


def test_split_half_map_spearman_brown():
    g = torch.Generator().manual_seed(6)
    signal = torch.randn(200, generator=g, dtype=torch.float64)
    # per-prompt maps = signal + noise; two halves of 50 prompts each have noise var 1/50 per entry
    x = signal[None] + torch.randn(100, 200, generator=g, dtype=torch.float64)
    out = stats.split_half_map(x, seed=0)
    r_expected = 1 / (1 + 1 / 50)  # var(signal) / (var(signal) + var(noise of a half mean))
    assert out["r"] == pytest.approx(r_expected, abs=0.03)
    assert out["spearman_brown"] == pytest.approx(2 * out["r"] / (1 + out["r"]))


def test_too_noisy_rule_and_wording():
    sure = stats.Estimate(0.50, 0.48, 0.52, 256, halves=(0.49, 0.51))
    wide = stats.Estimate(0.10, -0.30, 0.50, 7, halves=(0.0, 0.2))
    split = stats.Estimate(0.50, 0.49, 0.51, 256, halves=(0.40, 0.60))
    assert not stats.too_noisy(sure)
    assert stats.too_noisy(wide)
    assert stats.too_noisy(split)
    assert stats.too_noisy(stats.Estimate(float("nan"), 0.0, 1.0, 3))
    # an absolute tolerance keeps a well-measured value near 0 readable
    near0 = stats.Estimate(0.004, 0.0, 0.008, 256, halves=(0.003, 0.005))
    assert stats.too_noisy(near0)
    assert not stats.too_noisy(near0, abs_tol=0.01)
    s = stats.describe("Sink_0", sure)
    assert "0.500" in s and "95% CI [0.480, 0.520]" in s and "too noisy" not in s
    w = stats.describe("probe R²", wide)
    assert "too noisy to read" in w and "[-0.300, 0.500]" in w and "= 0.100" not in w
    assert wide.text().startswith("too noisy")
    assert wide.to_json()["too_noisy"] is True and sure.to_json()["too_noisy"] is False


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least 2 prompts"):
        stats.bootstrap_ci(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci(torch.ones(5), level=1.5)
    with pytest.raises(ValueError, match="weights"):
        stats.bootstrap_ci(torch.ones(5), weights=-torch.ones(5))
