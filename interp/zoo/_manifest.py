"""Ground-truth manifests: measure a trained toy model and record what its heads do.

Everything in a manifest is *measured* on the saved model through a ``TransformerBridge``
(hook names as for the real models) on a held-out batch (``eval.seed``), not asserted:

* task accuracy (top-1 on the task's scored positions) and chance level;
* per-head attention statistics (to ``t-1``, ``t-3``, the induction target ``t-ℓ+1``, BOS);
* zero-ablation of every head (``hook_z`` of that head set to 0) and the accuracy after it;
* for ``toy-induction``, K-composition by path patching: the layer-1 key (``hook_k``) /
  query (``hook_q``) / value (``hook_v``) inputs of the induction head's KV group are replaced
  by their values from a run with the previous-token head ablated;
* for ``toy-backcopy``, BOS sink vs trigger attention and the value-output norm at BOS;
* for ``toy-nope``, a least-squares position probe per layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interp.zoo import measure as M
from interp.zoo import tasks as T
from interp.zoo._specs import ToyInfo
from interp.types import Model

EVAL_SEED = 20_251_126
EVAL_N = 256
MANIFEST_VERSION = 1


def _label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def load_dir(path: Path) -> Any:
    """Load a saved toy directory as a TransformerBridge (same path as ``interp.load_model``)."""
    from interp.models import load_model

    return load_model(str(path), device="cpu")


def _round(x: float | Tensor, nd: int = 4) -> float:
    return round(float(x), nd)


def _ablation_table(model: Any, batch: T.TaskBatch, masks: dict[str, Tensor],
                    targets: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    cfg = model.cfg
    out: dict[str, dict[str, float]] = {}
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            lg = M.logits_with(model, batch.tokens, M.ablate_heads_hooks([(layer, head)]))
            out[_label(layer, head)] = {
                k: _round(M.accuracy(lg, targets[k], m)) for k, m in masks.items()
            }
    return out


def _common(info: ToyInfo, model: Any, record: dict[str, Any]) -> dict[str, Any]:
    from interp.families import family_of

    fam = family_of(model)
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": info.name,
        "description": info.description,
        "architecture": type(model.original_model).__name__,
        "positional_encoding": info.positional,
        "attention_only": info.attention_only,
        "attention_only_note": (
            "MLP modules exist in the checkpoint but their output projection (and bias) is zero "
            "and was frozen during training, so hook_mlp_out is exactly 0."
            if info.attention_only else None
        ),
        "nope_note": ("GPT-2 position embedding wpe is all zeros and was frozen: no positional "
                      "encoding." if info.positional == "none" else None),
        "model": {
            "n_layers": int(model.cfg.n_layers), "n_heads": int(model.cfg.n_heads),
            "n_kv_heads": int(fam.n_kv_heads),
            "d_model": int(model.cfg.d_model), "d_head": int(model.cfg.d_head),
            "d_vocab": int(model.cfg.d_vocab), "n_ctx": int(info.model["n_ctx"]),
            **({"rope_theta": float(info.model["rope_theta"])} if "rope_theta" in info.model
               else {}),
        },
        "bos_policy": {
            "prepend_bos": True, "bos_token": "<bos>", "bos_id": T.BOS_ID,
            "tokenizer_adds_bos": False,
            "note": "Task tokens start with BOS at position 0; text from TaskBatch.texts() has no "
                    "BOS, so tokenize it with prepend_bos=True (model.to_tokens does by default).",
        },
        "task": {"name": info.task, "generator": f"interp.zoo.tasks.{info.task}_batch",
                 "params": dict(info.task_params)},
        "eval": {"seed": EVAL_SEED, "n": EVAL_N},
        "training": record,
        "head_ov_norm": _ov_norms(model),
        "spec": info.to_dict(),
    }


def _ov_norms(model: Any) -> dict[str, float]:
    """``‖W_V W_O‖_F`` per head: a head near 0 writes (almost) nothing to the residual."""
    from interp.zoo._train import head_ov_norms

    with torch.no_grad():
        n = head_ov_norms(model.original_model)
    return {_label(l, h): _round(n[l, h]) for l in range(n.shape[0]) for h in range(n.shape[1])}


# ----------------------------------------------------------------------------- per task


def _induction(info: ToyInfo, model: Any) -> dict[str, Any]:
    from interp.zoo._train import make_batch

    b = make_batch(info, EVAL_N, EVAL_SEED)
    ell = b.extra["segment_len"]
    base = M.logits_with(model, b.tokens)
    acc = M.accuracy(base, b.targets, b.eval_mask)
    pats = M.patterns(model, b.tokens)
    Tn = b.tokens.shape[1]
    content = torch.zeros_like(b.eval_mask)
    content[:, 2:] = True  # queries t >= 2 (key t-1 is a content token)
    prev = M.attention_to_offset(pats[0], 1, content)
    ind = M.attention_to_offset(pats[1], ell - 1, b.eval_mask)
    # previous-token attention of L0 at the first-copy keys the induction head reads
    first_copy = (torch.arange(Tn)[None] >= (b.extra["second_start"] - ell)[:, None] + 1) & (
        torch.arange(Tn)[None] < b.extra["second_start"][:, None])
    prev_first = M.attention_to_offset(pats[0], 1, first_copy)
    ablate = _ablation_table(model, b, {"induction": b.eval_mask}, {"induction": b.targets})
    nh = int(model.cfg.n_heads)
    # Heads pruned during training (output projection exactly 0) write nothing: no role.
    ov = _ov_norms(model)
    pruned = [(l, h) for l in range(2) for h in range(nh) if ov[_label(l, h)] == 0.0]
    live = {l: [h for h in range(nh) if (l, h) not in pruned] for l in range(2)}
    # A role may be spread over several live heads (redundant copies): every layer-0 head with
    # substantial previous-token attention at the first-copy keys, and every layer-1 head with
    # induction attention > 0.5, belongs to the mechanism; they are ablated together.
    prev_set = ([h for h in live[0] if float(prev_first[h]) > 0.3]
                or [max(live[0], key=lambda h: float(prev_first[h]))])
    ind_set = ([h for h in live[1] if float(ind[h]) > 0.5]
               or [max(live[1], key=lambda h: float(ind[h]))])
    p_head = max(prev_set, key=lambda h: float(prev_first[h]))
    i_head = max(ind_set, key=lambda h: float(ind[h]))
    joint = {
        "previous_token_heads": _round(M.accuracy(M.logits_with(
            model, b.tokens, M.ablate_heads_hooks([(0, h) for h in prev_set])), b.targets,
            b.eval_mask)),
        "induction_heads": _round(M.accuracy(M.logits_with(
            model, b.tokens, M.ablate_heads_hooks([(1, h) for h in ind_set])), b.targets,
            b.eval_mask)),
    }
    # K-composition: patch layer-1 q/k/v with values from a run where the prev head is ablated
    abl_hooks = M.ablate_heads_hooks([(0, h) for h in prev_set])
    names = [f"blocks.1.attn.hook_{x}" for x in ("q", "k", "v")]
    cache = _cache_with_hooks(model, b.tokens, names, abl_hooks)
    g = M.kv_group(model, i_head)
    groups = sorted({M.kv_group(model, h) for h in ind_set})
    patched: dict[str, Any] = {}
    for x in ("q", "k", "v"):
        idx = ind_set if x == "q" else groups
        name = f"blocks.1.attn.hook_{x}"

        def fn(t: Tensor, hook: Any, name: str = name, idx: list[int] = idx) -> Tensor:
            t = t.clone()
            t[:, :, idx] = cache[name][:, :, idx]
            return t

        hooks = [(name, fn)]
        lg = M.logits_with(model, b.tokens, hooks)
        pat_name = "blocks.1.attn.hook_pattern"
        _, pc = _run_cache_hooks(model, b.tokens, [pat_name], hooks)
        ind_att = M.attention_to_offset(pc[pat_name], ell - 1, b.eval_mask)[ind_set].mean()
        patched[x] = {"accuracy": _round(M.accuracy(lg, b.targets, b.eval_mask)),
                      "induction_attention": _round(ind_att)}
    n_vocab = info.task_params["n_vocab"]
    pls = [_label(0, h) for h in prev_set]
    ils = [_label(1, h) for h in ind_set]
    return {
        "accuracy": {"induction": _round(acc), "chance": _round(1 / n_vocab),
                     "scored_positions": "second copy of the repeated segment, all but its last "
                                         "token (TaskBatch.eval_mask)"},
        "heads": [
            {"layer": 0, "head": h, "label": _label(0, h), "role": "previous_token",
             "redundant_with": [_label(0, o) for o in prev_set if o != h],
             "positions": "query t >= 2 attends to key t-1, sharpest at the first copy whose "
                          "t-1 the induction head reads as keys"
                          + (" (shared with the other previous-token heads)"
                             if len(prev_set) > 1 else ""),
             "attention_to_prev": _round(prev[h]),
             "attention_to_prev_at_first_copy": _round(prev_first[h])} for h in prev_set
        ] + [
            {"layer": 1, "head": h, "label": _label(1, h), "role": "induction",
             "kv_head": M.kv_group(model, h),
             "redundant_with": [_label(1, o) for o in ind_set if o != h],
             "positions": "query t in the second copy attends to key t-ell+1 (the token after "
                          "the earlier occurrence of x_t)",
             "induction_attention": _round(ind[h])} for h in ind_set
        ] + [
            {"layer": l, "head": h, "label": _label(l, h), "role": "pruned",
             "kv_head": M.kv_group(model, h),
             "positions": None,
             "note": "pruned during training (output projection zeroed and kept at 0 from step "
                     f"{info.train.get('prune_at')}): it still computes a pattern from the "
                     "shared KV head but writes nothing; the ablation control."}
            for l, h in pruned
        ],
        "joint_ablation_accuracy": joint,
        "attention": {
            "L0_to_prev": {_label(0, h): _round(v) for h, v in enumerate(prev.tolist())},
            "L1_induction": {_label(1, h): _round(v) for h, v in enumerate(ind.tolist())},
        },
        "ablation_accuracy": ablate,
        "composition": {
            "note": f"layer-1 q (induction heads {ind_set}) / k, v (their KV heads {groups}) "
                    f"taken from a run with the previous-token heads {prev_set} zero-ablated; "
                    "everything else clean. induction_attention: mean over the induction heads.",
            "patched_from_prev_head_ablation": patched,
        },
        "circuit": {
            "nodes": ["embed"] + pls + ils + ["logits"],
            "edges": [
                {"src": "embed", "dst": pl, "input": "v",
                 "positions": "key t-1 -> query t (token identity of the previous token)"}
                for pl in pls
            ] + [
                {"src": pl, "dst": il, "input": "k",
                 "positions": "written at first-copy positions, read as keys by second-copy "
                              "queries (K-composition)",
                 "effect": patched["k"]} for pl in pls for il in ils
            ] + [
                {"src": "embed", "dst": il, "input": x, "positions": pos}
                for il in ils for x, pos in (("q", "query t (current token)"),
                                             ("v", "key t-ell+1 (the token to copy)"))
            ] + [
                {"src": il, "dst": "logits", "input": None, "positions": "query t",
                 "effect": {"accuracy_when_ablated": ablate[il]["induction"],
                            "accuracy_when_all_induction_heads_ablated":
                                joint["induction_heads"]}} for il in ils
            ],
        },
    }


def _cache_with_hooks(model: Any, tokens: Tensor, names: list[str],
                      hooks: list[tuple[str, Any]]) -> dict[str, Tensor]:
    _, cache = _run_cache_hooks(model, tokens, names, hooks)
    return cache


@torch.no_grad()
def _run_cache_hooks(model: Any, tokens: Tensor, names: list[str],
                     hooks: list[tuple[str, Any]]) -> tuple[Tensor, dict[str, Tensor]]:
    cache: dict[str, Tensor] = {}

    def saver(name: str) -> Any:
        def save(t: Tensor, hook: Any) -> None:  # hook.name may be the alias target
            cache[name] = t.detach().clone()

        return save

    out = M.run_tokens(model, tokens, list(hooks) + [(n, saver(n)) for n in names], logits=True)
    assert out is not None
    return out, cache


def _backcopy_stats(model: Any, b: T.TaskBatch) -> dict[str, Any]:
    trig, bim = b.extra["trigger_mask"], b.extra["bigram_mask"]
    pats = M.patterns(model, b.tokens)
    out: dict[str, Any] = {"per_head": {}}
    for layer in range(int(model.cfg.n_layers)):
        for h in range(int(model.cfg.n_heads)):
            p = pats[layer][:, h:h + 1]
            out["per_head"][_label(layer, h)] = {
                "bos_attention_non_trigger": _round(M.attention_to_position(p, 0, bim)[0]),
                "bos_attention_trigger": _round(M.attention_to_position(p, 0, trig)[0]),
                "prev_attention_trigger": _round(M.attention_to_offset(p, 1, trig)[0]),
                "prev_attention_non_trigger": _round(
                    M.attention_to_offset(p, 1, bim & (torch.arange(p.shape[-1]) >= 1)[None])[0]),
                "bos_attention_non_trigger_by_query_position": [
                    _round(float(p[:, 0, t, 0][bim[:, t]].mean()), 3) if bool(bim[:, t].any())
                    else None for t in range(p.shape[-1])],
            }
    return out


def _backcopy(info: ToyInfo, model: Any) -> dict[str, Any]:
    from interp.zoo._train import make_batch

    b = make_batch(info, EVAL_N, EVAL_SEED)
    trig, bim, bayes = b.extra["trigger_mask"], b.extra["bigram_mask"], b.extra["bayes"]
    base = M.logits_with(model, b.tokens)
    masks = {"backcopy": trig, "bigram_bayes_agreement": bim}
    targets = {"backcopy": b.targets, "bigram_bayes_agreement": bayes}
    acc = {k: _round(M.accuracy(base, targets[k], m)) for k, m in masks.items()}
    stats = _backcopy_stats(model, b)
    n_vocab = info.task_params["n_vocab"]
    res: dict[str, Any] = {
        "accuracy": {**acc, "chance": _round(1 / n_vocab),
                     "scored_positions": "backcopy: query t >= 2 holding a trigger (answer "
                                         "x_{t+1} = x_{t-1}); bigram_bayes_agreement: argmax "
                                         "equals argmax P(.|x_t) at non-trigger positions"},
        "triggers": [f"t{int(i)}" for i in make_bigram_of(info).triggers],
        "attention": stats["per_head"],
        "ablation_accuracy": _ablation_table(model, b, masks, targets),
    }
    # value-output norm at BOS vs content keys, per head of the last layer... all layers
    vn: dict[str, Any] = {}
    for layer in range(int(model.cfg.n_layers)):
        norms = M.value_output_norms(model, b.tokens, layer)  # [batch pos head]
        for h in range(int(model.cfg.n_heads)):
            vn[_label(layer, h)] = {"bos": _round(norms[:, 0, h].mean()),
                                    "content_mean": _round(norms[:, 1:, h].mean())}
    res["value_output_norm"] = vn
    resid = _resid_norms(model, b.tokens)
    res["residual_norm"] = resid
    return res


def make_bigram_of(info: ToyInfo) -> T.Bigram:
    from interp.zoo._train import _bigram

    return _bigram(info)


@torch.no_grad()
def _resid_norms(model: Any, tokens: Tensor) -> dict[str, dict[str, float]]:
    L = int(model.cfg.n_layers)
    names = [f"blocks.{l}.hook_resid_post" for l in range(L)]
    _, cache = _run_cache_hooks(model, tokens, names, [])
    return {n: {"bos": _round(cache[n][:, 0].norm(dim=-1).mean()),
                "content_mean": _round(cache[n][:, 1:].norm(dim=-1).mean())} for n in names}


def _backcopy_roles(info: ToyInfo, res: dict[str, Any]) -> None:
    """Name the back-copy (active/dormant) head: largest trigger prev-attention."""
    att = res["attention"]
    best = max(att, key=lambda k: att[k]["prev_attention_trigger"])
    layer, head = (int(s) for s in best[1:].split("H"))
    a = att[best]
    res["heads"] = [{
        "layer": layer, "head": head, "label": best, "role": "backcopy_sink",
        "positions": "non-trigger queries: attention sink on BOS (dormant); trigger queries "
                     "t: attends to t-1 and copies it (active)",
        **a,
        "value_output_norm": res["value_output_norm"][best],
    }]
    res["circuit"] = {
        "nodes": ["embed", best, "mlp" if not info.attention_only else None, "logits"],
        "edges": [
            {"src": "embed", "dst": best, "input": "q", "positions": "query t (is x_t a trigger?)"},
            {"src": "embed", "dst": best, "input": "v", "positions": "key t-1 (token to copy)"},
            {"src": best, "dst": "logits", "input": None, "positions": "trigger queries",
             "effect": {"accuracy_when_ablated": res["ablation_accuracy"][best]}},
            {"src": "embed", "dst": "mlp", "input": None,
             "positions": "every query: bigram prediction P(.|x_t)"},
        ],
    }


def _offset(info: ToyInfo, model: Any) -> dict[str, Any]:
    from interp.zoo._train import make_batch

    b = make_batch(info, EVAL_N, EVAL_SEED)
    off = int(info.task_params["offset"])
    base = M.logits_with(model, b.tokens)
    acc = M.accuracy(base, b.targets, b.eval_mask)
    pats = M.patterns(model, b.tokens)
    per: dict[str, Any] = {}
    for layer in range(int(model.cfg.n_layers)):
        a = M.attention_to_offset(pats[layer], off, b.eval_mask)
        for h, v in enumerate(a.tolist()):
            per[_label(layer, h)] = _round(v)
    ablate = _ablation_table(model, b, {"offset": b.eval_mask}, {"offset": b.targets})
    # planted head = the one whose zero-ablation hurts most
    lab_best = min(ablate, key=lambda k: ablate[k]["offset"])
    best = tuple(int(x) for x in lab_best[1:].split("H"))
    best_v = per[lab_best]
    lab = _label(*best)
    return {
        "accuracy": {"offset": _round(acc), "chance": _round(1 / info.task_params["n_vocab"]),
                     "scored_positions": f"content queries t with t-{off} >= 1"},
        "heads": [{"layer": best[0], "head": best[1], "label": lab, "role": f"offset_{off}",
                   "positions": f"query t attends to key t-{off} and copies it",
                   f"attention_to_t_minus_{off}": _round(best_v)}],
        "attention": {f"to_t_minus_{off}": per},
        "ablation_accuracy": ablate,
        "circuit": {"nodes": ["embed", lab, "logits"], "edges": [
            {"src": "embed", "dst": lab, "input": "k",
             "positions": f"key t-{off} (position via {info.positional})"},
            {"src": "embed", "dst": lab, "input": "v", "positions": f"key t-{off} (token)"},
            {"src": lab, "dst": "logits", "input": None, "positions": "query t",
             "effect": {"accuracy_when_ablated": ablate[lab]["offset"]}},
        ]},
    }


@torch.no_grad()
def position_probe(model: Model, tokens: Tensor, *, train_frac: float = 0.5,
                   ridge: float = 1e-2) -> dict[str, dict[str, float]]:
    """Least-squares (ridge) probe ``pos ≈ [h, 1] w`` per layer, split by prompt.

    Layers: ``hook_embed`` (token embedding only) and every ``blocks.{l}.hook_resid_post``.
    Returns mean absolute error on held-out prompts and the error of predicting the mean train
    position (the baseline), Haviv et al. 2022.
    """
    L = int(model.cfg.n_layers)
    names = ["hook_embed"] + [f"blocks.{l}.hook_resid_post" for l in range(L)]
    _, cache = _run_cache_hooks(model, tokens, names, [])
    B, P = tokens.shape
    n_tr = int(B * train_frac)
    pos = torch.arange(P, dtype=torch.float64)
    out: dict[str, dict[str, float]] = {}
    for n in names:
        h = cache[n][:, 1:].double()  # drop BOS (position 0 is trivially identifiable)
        y = pos[1:].expand(B, P - 1)
        Xtr = h[:n_tr].reshape(-1, h.shape[-1])
        ytr = y[:n_tr].reshape(-1)
        mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
        def feat(x: Tensor) -> Tensor:
            z = (x - mu) / sd
            return torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], 1)
        A = feat(Xtr)
        w = torch.linalg.solve(A.T @ A + ridge * torch.eye(A.shape[1], dtype=A.dtype), A.T @ ytr)
        Xte = h[n_tr:].reshape(-1, h.shape[-1])
        yte = y[n_tr:].reshape(-1)
        pred = feat(Xte) @ w
        out[n] = {"mae": _round(float((pred - yte).abs().mean()), 3),
                  "baseline_mae": _round(float((ytr.mean() - yte).abs().mean()), 3)}
    return out


def _nope(info: ToyInfo, model: Any) -> dict[str, Any]:
    from interp.zoo._train import make_batch

    res = _backcopy(info, model)
    wpe = model.original_model.transformer.wpe.weight
    res["wpe_max_abs"] = float(wpe.abs().max())
    b = make_batch(info, EVAL_N, EVAL_SEED + 1)
    res["position_probe"] = position_probe(model, b.tokens)
    res["heads"] = []
    res["circuit"] = None
    res["claims"] = [
        "wpe is identically zero (no positional encoding)",
        "hook_embed carries no position: probe MAE ~ baseline",
        "after layer 0 a linear probe recovers position (MAE well below baseline)",
    ]
    return res


def write_manifest(info: ToyInfo, out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Measure the model saved in ``out`` and write ``out/manifest.json``."""
    if not record and (out / "training_record.json").is_file():
        record = json.loads((out / "training_record.json").read_text())
    model = load_dir(out)
    man = _common(info, model, record)
    if info.name == "toy-nope":
        man.update(_nope(info, model))
    elif info.task == "induction":
        man.update(_induction(info, model))
    elif info.task == "backcopy":
        res = _backcopy(info, model)
        _backcopy_roles(info, res)
        man.update(res)
    else:
        man.update(_offset(info, model))
    (out / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    return man
