"""probes: fits vs scikit-learn and closed forms, planted directions, targets, splits, controls,
bad input. Synthetic data only (fast); real-model tests live in test_probes_models.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

import probes
from probes import metrics as M
from probes.errors import LabelAlignmentError, ProbeInputError

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def _aniso(n: int, d: int, seed: int, spread: float = 4.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(d, generator=g) * spread + 0.2
    shift = torch.randn(d, generator=g) * 3
    return torch.randn(n, d, generator=g) * scale + shift


# ---------------------------------------------------------------------------------------
# planted directions
# ---------------------------------------------------------------------------------------


def test_logistic_recovers_planted_direction():
    n, d = 20000, 24
    x = _aniso(n, d, 0, spread=1.0)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(d, generator=g)
    w /= w.norm()
    # logits 4 * w.(x - mean) -> labels; the MLE of a well-specified logistic model is consistent
    logits = 4 * (x - x.mean(0)) @ w / ((x - x.mean(0)) @ w).std()
    y = (torch.rand(n, generator=g) < torch.sigmoid(logits)).long()
    p = probes.fit_logistic(x, y, l2=1e-6)
    assert p.converged
    assert _cos(p.raw_weight[0], w) > 0.99


def test_multinomial_and_ridge_recover_planted_directions():
    n, d, k = 6000, 16, 3
    x = _aniso(n, d, 2)
    g = torch.Generator().manual_seed(3)
    W = torch.randn(k, d, generator=g)
    xc = (x - x.mean(0)) / x.std(0)
    y = torch.distributions.Categorical(logits=3 * xc @ W.T / math.sqrt(d)).sample()
    p = probes.fit_logistic(x, y, l2=1e-6)
    # softmax weights are identified up to a shared shift: compare centred class weights
    est = p.weight - p.weight.mean(0)
    true = W - W.mean(0)
    for c in range(k):
        assert _cos(est[c], true[c]) > 0.97
    yr = x @ W[0] + 0.1 * torch.randn(n, generator=g)
    r = probes.fit_ridge(x, yr, l2=1e-8)
    assert _cos(r.raw_weight[0], W[0]) > 0.999


# ---------------------------------------------------------------------------------------
# independent reference: scikit-learn
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, 5])
def test_logistic_matches_sklearn(n_classes: int):
    n, d = 3000, 40
    x = _aniso(n, d, 4)
    g = torch.Generator().manual_seed(5)
    W = torch.randn(n_classes, d, generator=g) / math.sqrt(d)
    y = (((x - x.mean(0)) / x.std(0)) @ W.T + 0.7 * torch.randn(n, n_classes, generator=g)).argmax(1)
    l2 = 1e-3
    tr, te = slice(0, 2000), slice(2000, None)
    p = probes.fit_logistic(x[tr], y[tr], l2=l2, tol=1e-7, max_iter=1000)
    sc = StandardScaler().fit(x[tr].numpy())
    sk = LogisticRegression(C=1 / (l2 * 2000), tol=1e-8, max_iter=5000).fit(sc.transform(x[tr].numpy()), y[tr].numpy())
    ours = (p.predict(x[te]) == y[te]).double().mean().item()
    theirs = (torch.as_tensor(sk.predict(sc.transform(x[te].numpy()))) == y[te]).double().mean().item()
    assert abs(ours - theirs) <= 0.01
    coef = torch.as_tensor(sk.coef_).double()
    assert torch.allclose(p.weight.double(), coef, atol=2e-3 * float(coef.abs().max()))
    assert torch.allclose(p.bias.double(), torch.as_tensor(sk.intercept_).double(), atol=2e-3 * (1 + float(coef.abs().max())))
    proba = torch.as_tensor(sk.predict_proba(sc.transform(x[te].numpy()))).double()
    assert torch.allclose(p.predict_proba(x[te]).double(), proba, atol=2e-3)


def test_ridge_matches_sklearn_closed_form():
    n, d = 2500, 30
    x = _aniso(n, d, 6)
    y = torch.stack([x @ torch.randn(d), x[:, 0] ** 2], 1) + torch.randn(n, 2)
    l2 = 1e-2
    p = probes.fit_ridge(x, y, l2=l2)
    z = StandardScaler().fit_transform(x.numpy().astype("float64"))
    sk = Ridge(alpha=l2 * n).fit(z, y.numpy().astype("float64"))
    assert torch.allclose(p.weight.double(), torch.as_tensor(sk.coef_), rtol=1e-4, atol=1e-4)
    assert torch.allclose(p.bias.double(), torch.as_tensor(sk.intercept_), rtol=1e-4, atol=1e-4)
    assert p.predict(x).shape == (n, 2)
    p1 = probes.fit_ridge(x, y[:, 0], l2=l2)
    assert p1.predict(x).shape == (n,)


def test_metrics_match_sklearn():
    from scipy.stats import spearmanr
    from sklearn import metrics as skm

    g = torch.Generator().manual_seed(7)
    n, k = 400, 4
    y = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g) + 1.5 * torch.nn.functional.one_hot(y, k)
    proba = torch.softmax(logits, 1)
    pred = proba.argmax(1)
    assert M.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert M.macro_f1(y, pred) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert M.roc_auc(y, proba) == pytest.approx(skm.roc_auc_score(y, proba.numpy(), multi_class="ovr", average="macro"))
    yb = (y > 1).long()
    pb = torch.stack([1 - proba[:, 0], proba[:, 0]], 1).round(decimals=1)  # ties on purpose
    assert M.roc_auc(yb, pb) == pytest.approx(skm.roc_auc_score(yb, pb[:, 1]))
    t = torch.randn(n, generator=g).round(decimals=1)
    u = t + torch.randn(n, generator=g)
    assert M.r2_score(t, u) == pytest.approx(skm.r2_score(t, u))
    assert M.mae(t, u) == pytest.approx(skm.mean_absolute_error(t, u))
    assert M.spearman(t, u) == pytest.approx(spearmanr(t, u).statistic)
    cm = M.confusion_matrix(y, pred, k)
    assert torch.equal(cm, torch.as_tensor(skm.confusion_matrix(y, pred, labels=list(range(k)))))


# ---------------------------------------------------------------------------------------
# persistence, low rank, devices
# ---------------------------------------------------------------------------------------


def test_save_load_roundtrip(tmp_path):
    x = _aniso(500, 12, 8)
    y = (x[:, 0] > x[:, 0].median()).long() + 2 * (x[:, 1] > x[:, 1].median()).long()
    p = probes.fit_logistic(x, y, l2=1e-3)
    path = p.save(tmp_path / "probe")
    assert path.suffix == ".safetensors" and path.with_suffix(".json").exists()
    q = probes.load_probe(path)
    assert isinstance(q, probes.LogisticProbe)
    assert torch.equal(q.predict(x), p.predict(x))
    assert torch.allclose(q.predict_proba(x), p.predict_proba(x))
    assert json.loads(path.with_suffix(".json").read_text())["kind"] == "logistic"
    r = probes.fit_ridge(x, x[:, 2] * 2.0, l2=1e-3)
    r2 = probes.load_probe(r.save(tmp_path / "ridge.safetensors"))
    # bit-identical parameters; predictions equal up to float32 round-off (the saved weight is
    # contiguous, the fitted one may be a strided view, so matmul may sum in another order)
    assert torch.equal(r2.weight, r.weight) and torch.equal(r2.bias, r.bias)
    torch.testing.assert_close(r2.predict(x), r.predict(x), atol=1e-5, rtol=1e-5)
    assert r2.predict(x).shape == (500,)


@pytest.mark.slow
def test_low_rank_probes():
    n, d, k = 3000, 20, 6
    x = _aniso(n, d, 9)
    g = torch.Generator().manual_seed(10)
    # classes differ along a single direction: a rank-1 weight matrix suffices
    u = torch.randn(d, generator=g)
    s = ((x - x.mean(0)) / x.std(0)) @ u / math.sqrt(d)
    y = torch.bucketize(s, torch.quantile(s, torch.linspace(0, 1, k + 1)[1:-1]))
    p = probes.fit_logistic(x, y, l2=1e-4, rank=1)
    assert torch.linalg.matrix_rank(p.weight.double(), rtol=1e-6) == 1
    full = probes.fit_logistic(x, y, l2=1e-4)
    assert (p.predict(x) == y).double().mean() > (full.predict(x) == y).double().mean() - 0.05
    Y = torch.stack([s, 2 * s, -s], 1) + 0.01 * torch.randn(n, 3, generator=g)
    r = probes.fit_ridge(x, Y, l2=1e-4, rank=1)
    assert torch.linalg.matrix_rank(r.weight.double(), rtol=1e-6) == 1
    assert M.r2_score(Y[:, 1], r.predict(x)[:, 1]) > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():  # pragma: no cover - needs a GPU
    x = _aniso(2000, 32, 11)
    y = (x[:, :3].sum(1) > x[:, :3].sum(1).median()).long()
    a = probes.fit_logistic(x, y, l2=1e-3)
    b = probes.fit_logistic(x, y, l2=1e-3, device="cuda")
    assert b.weight.is_cuda
    assert torch.allclose(a.weight, b.weight.cpu(), atol=1e-3)


# ---------------------------------------------------------------------------------------
# datasets, targets
# ---------------------------------------------------------------------------------------


def _toy_data(P: int = 30, L: int = 10, d: int = 16, seed: int = 0, pos_signal: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    groups = torch.arange(P).repeat_interleave(L)
    pos = torch.arange(L).repeat(P)
    toks = torch.randint(0, 25, (P * L,), generator=g)
    emb = torch.randn(25, d, generator=g)
    pdir = torch.randn(d, generator=g)
    x = emb[toks] + pos_signal * pos[:, None].float() * pdir + 0.3 * torch.randn(P * L, d, generator=g)
    return probes.ProbeData.from_tensors({"hook_embed": emb[toks], "blocks.0.hook_resid_post": x},
                                         groups=groups, positions=pos, tokens=toks, prepend_bos=False)


def test_targets_hand_checked():
    data = probes.ProbeData.from_tensors(torch.zeros(7, 2), groups=torch.tensor([0, 0, 0, 0, 1, 1, 1]),
                                         tokens=torch.tensor([5, 6, 7, 8, 9, 10, 11]), prepend_bos=True)
    ap = probes.absolute_position(data)
    assert ap.valid.tolist() == [False, True, True, True, False, True, True]
    assert ap.values.tolist() == [0, 1, 2, 3, 0, 1, 2]
    prev = probes.token_at_offset(data, -1)
    assert prev.valid.tolist() == [False, True, True, True, False, True, True]
    assert prev.values[prev.valid].tolist() == [5, 6, 7, 9, 10]
    nxt2 = probes.token_at_offset(data, 2)
    assert nxt2.valid.tolist() == [True, True, False, False, True, False, False]
    assert nxt2.values[nxt2.valid].tolist() == [7, 8, 11]
    spans = [{"BOS": (0, 1), "a": (1, 3), "b": (3, 4)}, {"BOS": (0, 1), "a": (1, 2), "b": (2, 3)}]
    rel = probes.relative_position(data, spans, "b")
    assert rel.values.tolist() == [-3, -2, -1, 0, -2, -1, 0]
    rel_end = probes.relative_position(data, spans, "a", anchor="end", window=(-1, 1))
    assert rel_end.values.tolist() == [-2, -1, 0, 1, -1, 0, 1]
    assert rel_end.valid.tolist() == [False, True, True, True, True, True, True]
    sid = probes.span_identity(data, spans)
    assert sid.class_names == ["BOS", "a", "b"] and sid.values.tolist() == [0, 1, 1, 2, 0, 1, 2]
    per_ex = probes.labels(data, ["x", "y"])
    assert per_ex.class_names == ["x", "y"] and per_ex.values.tolist() == [0, 0, 0, 0, 1, 1, 1]
    per_tok = probes.labels(data, [[1.0, 2.0, None, 4.0], [0.5, float("nan"), 1.5]])
    assert per_tok.kind == "regression"
    assert per_tok.valid.tolist() == [True, True, False, True, True, False, True]
    flat = probes.labels(data, torch.tensor([0, 1, 0, 1, 0, 1, 0]))
    assert flat.kind == "classification" and flat.values.tolist() == [0, 1, 0, 1, 0, 1, 0]


def test_spans_from_schema():
    from interp.schema import SchemaSpans

    ss = SchemaSpans(names=["BOS", "a", "b"], spans=[[(0, 1), (1, 3), (3, 4)], [(0, 1), (1, 2), (2, 3)]],
                     lengths=[4, 3], prepend_bos=True, prompts=["p", "q"], str_tokens=[["<s>"] * 4, ["<s>"] * 3])
    data = probes.ProbeData.from_tensors(torch.zeros(7, 2), groups=torch.tensor([0, 0, 0, 0, 1, 1, 1]), prepend_bos=True)
    assert probes.span_identity(data, ss).values.tolist() == [0, 1, 1, 2, 0, 1, 2]


# ---------------------------------------------------------------------------------------
# sweeps, splits, controls
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_position_regression_and_outputs():
    data = _toy_data()
    res = probes.probe_sweep(data, probes.absolute_position(data), folds=3)
    r2 = res.mean("r2")
    assert r2[1] > 0.9 and r2[0] < 0.1  # embed baseline carries no position
    assert res.labels == ["embed", "L0"] and res.layers == [-1, 0]
    assert res.mean("shuffled.r2").max() < 0.1
    assert res.mean("random_direction.r2")[1] < r2[1]
    lo, hi = res.ci["r2"][1]
    assert lo <= r2[1] <= hi
    js = res.to_json()
    json.dumps(js)
    assert js["prepend_bos"] is False and js["meta"]["folds"] == 3
    fig = res.plot()
    assert len(fig.data) == 5 and fig.layout.title.text  # task + 3 controls + selectivity
    assert res.top(1)[0][0] == "L0"


@pytest.mark.slow
def test_sweep_classification_bootstrap_confusion_and_grid():
    data = _toy_data(pos_signal=1.0)
    tgt = probes.absolute_position(data, kind="classification")
    res = probes.probe_sweep(data, tgt, folds=3, ci="bootstrap", n_boot=30, controls=("shuffled",))
    assert res.mean("accuracy")[1] > 0.6 > res.mean("accuracy")[0]
    assert res.confusion is not None and res.confusion.shape == (2, 10, 10)
    assert int(res.confusion[1].sum()) == data.n_rows
    assert res.ci["accuracy"].shape == (2, 2)
    res.plot_confusion("L0")
    grid = probes.probe_sweep(data, probes.token_at_offset(data, 0, top_k=5), by="position", folds=3)
    assert grid.grid["accuracy"].shape == (2, 10, 3)
    assert grid.plot().data[0].type == "heatmap"
    json.dumps(grid.to_json())
    spans = [{"first": (0, 5), "second": (5, 10)}] * data.n_prompts
    by_span = probes.probe_sweep(data, probes.absolute_position(data), by="span", spans=spans, folds=3)
    assert by_span.cells == ["first", "second"] and by_span.grid_mean("r2").shape == (2, 2)


@pytest.mark.slow
def test_grouped_split_prevents_duplicate_prompt_leakage():
    """Prompts duplicated 3x with a random per-prompt label: the activations identify the prompt,
    so any split that puts copies on both sides "decodes" the label. Grouping by content must not."""
    g = torch.Generator().manual_seed(12)
    P, L, d, copies = 40, 6, 300, 3  # d > P*L: rows are linearly memorisable
    toks = torch.randint(0, 1000, (P, L), generator=g)
    feats = torch.randn(P, L, d, generator=g)
    lab = torch.randint(0, 2, (P,), generator=g)
    order = torch.arange(P).repeat(copies)  # prompt index of each copy
    x = feats[order].reshape(-1, d)
    groups = torch.arange(P * copies).repeat_interleave(L)
    data = probes.ProbeData.from_tensors({"x": x}, groups=groups, tokens=toks[order].reshape(-1))
    assert int(torch.unique(data.split_groups).numel()) == P
    tgt = probes.labels(data, lab[order])
    folds = probes.group_folds(data.split_groups, 5, seed=0)
    for f in range(5):
        assert not set(data.split_groups[folds == f].tolist()) & set(data.split_groups[folds != f].tolist())
    res = probes.probe_sweep(data, tgt, folds=5, controls=(), l2=1e-4)
    assert res.mean("accuracy")[0] < 0.7
    leaky = probes.ProbeData(data.features, data.groups, data.positions, data.tokens, False, split_groups=data.groups)
    res_leaky = probes.probe_sweep(leaky, tgt, folds=5, controls=(), l2=1e-4)
    assert res_leaky.mean("accuracy")[0] > 0.9  # the test can fail: row-identity splits leak
    tr, te = probes.grouped_split(data.split_groups, test_fraction=0.3, seed=1)
    assert not set(data.split_groups[tr].tolist()) & set(data.split_groups[te].tolist())


@pytest.mark.slow
def test_selectivity_positive_for_real_task_and_zero_for_shuffled():
    g = torch.Generator().manual_seed(13)
    P, L, d = 60, 10, 24
    n = P * L
    toks = torch.randint(0, 30, (n,), generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    direction = torch.randn(d, generator=g)
    x = torch.randn(n, d, generator=g) + 2.0 * (y[:, None].float() - 0.5) * direction / direction.norm()
    data = probes.ProbeData.from_tensors({"x": x}, groups=torch.arange(P).repeat_interleave(L), tokens=toks)
    real = probes.probe_sweep(data, probes.labels(data, y), folds=5, controls=("control_task", "shuffled"))
    assert real.mean("selectivity")[0] > 0.3
    assert real.ci["selectivity"][0, 0] > 0
    shuf = probes.labels(data, probes.shuffled_labels(y, torch.ones(n, dtype=torch.bool), seed=3))
    res = probes.probe_sweep(data, shuf, folds=5, controls=("control_task",))
    assert abs(float(res.mean("selectivity")[0])) < 0.06
    assert abs(float(res.mean("accuracy")[0]) - 0.5) < 0.08


def test_control_task_labels_are_per_type():
    toks = torch.tensor([3, 4, 3, 5, 4, 3])
    vals = torch.tensor([0, 1, 2, 3, 4, 5])
    c = probes.control_task_labels(toks, vals, torch.ones(6, dtype=torch.bool), seed=0)
    assert c[0] == c[2] == c[5] and c[1] == c[4]
    assert set(c.tolist()) <= set(vals.tolist())
    assert torch.equal(c, probes.control_task_labels(toks, vals, torch.ones(6, dtype=torch.bool), seed=0))


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    data = _toy_data(P=6, L=5)
    with pytest.raises(LabelAlignmentError, match="align"):
        probes.labels(data, [1, 2, 3])
    with pytest.raises(LabelAlignmentError, match="prompt 0 has 5 captured tokens but 4 labels"):
        probes.labels(data, [[0] * 4] + [[0] * 5] * 5)
    other = probes.ProbeData.from_tensors(torch.zeros(20, 3), groups=torch.arange(4).repeat_interleave(5))
    with pytest.raises(LabelAlignmentError, match="rows"):
        probes.probe_sweep(data, probes.absolute_position(other), folds=2)
    shifted = probes.absolute_position(data)
    shifted.positions = shifted.positions.roll(1)
    with pytest.raises(LabelAlignmentError, match="not aligned"):
        probes.probe_sweep(data, shifted, folds=2)
    with pytest.raises(ProbeInputError, match="single class"):
        probes.probe_sweep(data, probes.labels(data, [1] * 6), folds=2)
    with pytest.raises(ProbeInputError, match="2 classes"):
        probes.fit_logistic(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))
    bad = data.features["blocks.0.hook_resid_post"].clone()
    bad[7, 2] = float("nan")
    nan_data = data.with_features({"blocks.0.hook_resid_post": bad})
    with pytest.raises(ProbeInputError, match="NaN"):
        probes.probe_sweep(nan_data, probes.absolute_position(nan_data), folds=2)
    with pytest.raises(ProbeInputError, match="NaN"):
        probes.fit_ridge(bad, torch.randn(30))
    # under the test suite's runtime shape checking jaxtyping reports the mismatch first
    with pytest.raises((ProbeInputError, TypeError), match="misaligned|row"):
        probes.fit_logistic(torch.randn(10, 3), torch.tensor([0, 1] * 4))
    with pytest.raises(ProbeInputError, match="distinct prompts"):
        probes.group_folds(torch.tensor([0, 0, 1, 1]), 3)
    with pytest.raises(KeyError, match="not in the data"):
        probes.probe_sweep(data, probes.absolute_position(data), hooks=["nope"], folds=2)


@pytest.mark.parametrize("n", [40, 400])  # dual (n < d) and primal paths
def test_ridge_path_equals_individual_fits(n: int):
    x = _aniso(n, 60, 14)
    y = x[:, :5].sum(1) + torch.randn(n)
    l2s = [1e-3, 1e-1, 10.0]
    for p, l2 in zip(probes.fit_ridge_path(x, y, l2s), l2s):
        q = probes.fit_ridge(x, y, l2=l2)
        assert torch.allclose(p.weight, q.weight, rtol=1e-3, atol=1e-3) and p.l2 == l2  # float32 Gram in fit_ridge
        assert torch.allclose(p.predict(x), q.predict(x), rtol=1e-3, atol=1e-3)


def test_ridge_path_shared_decomposition_is_bit_identical_and_checks_its_rows():
    """A task and its label controls on the same rows share one Gram eigendecomposition: the
    probes (and the cross-validated predictions) are exactly those of separate calls."""
    x = _aniso(400, 60, 14)
    ys = [x[:, :5].sum(1) + torch.randn(400), torch.randn(400)]
    l2s = [1e-3, 1e-1, 10.0]
    shared: dict = {}
    for y in ys:
        for p, q in zip(probes.fit_ridge_path(x, y, l2s, decomposition=shared), probes.fit_ridge_path(x, y, l2s)):
            assert torch.equal(p.weight, q.weight) and torch.equal(p.bias, q.bias)
    assert set(shared) >= {"evals", "evecs", "std"}
    with pytest.raises(ValueError, match="new dict"):
        probes.fit_ridge_path(x[:300], ys[0][:300], l2s, decomposition=shared)
    groups = torch.arange(40).repeat_interleave(10)
    folds = probes.group_folds(groups, 4)
    cache: dict = {}
    for y in ys:
        a = probes.cross_validate(x, y, folds, kind="regression", l2=l2s, groups=groups, decompositions=cache)
        b = probes.cross_validate(x, y, folds, kind="regression", l2=l2s, groups=groups)
        assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert len(cache) == 4 and all(len(v) == 3 for v in cache.values())  # outer folds x inner folds


@pytest.mark.slow
def test_from_tensors_without_tokens_splits_by_prompt_and_repr():
    g = torch.arange(12).repeat_interleave(4)
    x = torch.randn(48, 3) + torch.arange(4).repeat(12)[:, None].float()
    d = probes.ProbeData.from_tensors(x, groups=g)  # no token ids: cannot dedupe, so one group per prompt
    assert torch.equal(d.split_groups, g)
    r = probes.probe_sweep(d, probes.absolute_position(d), folds=3, controls=("shuffled",))
    assert "absolute_position" in repr(r) and "3-fold" in repr(r)
    assert r.l2_chosen is not None and r.l2_chosen.shape == (1, 3)
