"""Deterministic training of the zoo's toy models (plain torch loop on the HF module).

``train(name, out_dir=None, seed=0)`` builds the HF model and tokenizer of
:data:`interp.zoo.TOY_MODELS[name] <interp.zoo.TOY_MODELS>`, trains it on fresh seeded batches
of its task (AdamW, linear warm-up then cosine decay, cross-entropy on the task targets), saves
a Hugging Face directory (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``) and writes the ground-truth ``manifest.json`` measured on the saved
model (see :mod:`interp.zoo._manifest`).

Determinism: ``torch.manual_seed(seed)`` for the initialisation, one ``torch.Generator`` per
batch (seeded from ``seed`` and the step), ``torch.use_deterministic_algorithms(True)`` and one
intra-op thread during training, so the same seed gives bit-identical weights on one machine.

Attention-only models keep the HF MLP modules (so the checkpoint is a plain ``LlamaForCausalLM``
/ ``GPT2LMHeadModel``) with the MLP output projection (and bias) zeroed and frozen: every MLP
outputs exactly zero. NoPE: GPT-2 with ``wpe`` zeroed and frozen.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from einops import einsum

from interp.zoo import tasks as T
from interp.zoo._specs import TOY_MODELS, ToyInfo

__all__ = ["train", "build_model", "build_tokenizer", "make_batch", "head_ov_norms",
           "head_sparsity_penalty", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def _info(name: str) -> ToyInfo:
    if name not in TOY_MODELS:
        raise KeyError(f"unknown toy model {name!r}; choose one of {sorted(TOY_MODELS)}")
    return TOY_MODELS[name]


def build_tokenizer(n_vocab: int, n_ctx: int) -> Any:
    """WordLevel tokenizer ``<bos> <pad> <unk> t0 … t{n_vocab-1}`` split on whitespace, wrapped as
    a ``PreTrainedTokenizerFast``. It adds no BOS itself (like SmolLM2's), so
    ``model.to_tokens`` / ``interp.tokenize(prepend_bos=True)`` prepend it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(T.token_names(n_vocab))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins tokens with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<bos>", pad_token="<pad>",
        unk_token="<unk>", model_max_length=n_ctx,
    )


def _n_vocab(info: ToyInfo) -> int:
    return int(info.task_params["n_vocab"])


def build_model(info: ToyInfo, *, seed: int = 0) -> torch.nn.Module:
    """Randomly initialised HF model for ``info`` (attention-only / NoPE surgery applied)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    m = info.model
    vocab_size = T.N_SPECIAL + _n_vocab(info)
    torch.manual_seed(seed)
    common = dict(bos_token_id=T.BOS_ID, eos_token_id=T.BOS_ID, pad_token_id=T.PAD_ID)
    if info.arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size, hidden_size=m["d_model"], intermediate_size=m["d_mlp"],
            num_hidden_layers=m["n_layers"], num_attention_heads=m["n_heads"],
            num_key_value_heads=m["n_kv_heads"], max_position_embeddings=m["n_ctx"],
            rope_theta=float(m["rope_theta"]), tie_word_embeddings=False,
            attn_implementation="eager", **common,
        )
        model = LlamaForCausalLM(cfg)
        mlp_out = [(layer.mlp.down_proj, None) for layer in model.model.layers]
    else:
        cfg = GPT2Config(
            vocab_size=vocab_size, n_embd=m["d_model"], n_layer=m["n_layers"], n_head=m["n_heads"],
            n_positions=m["n_ctx"], n_inner=m["d_mlp"], resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, attn_implementation="eager", **common,
        )
        model = GPT2LMHeadModel(cfg)
        mlp_out = [(blk.mlp.c_proj, blk.mlp.c_proj.bias) for blk in model.transformer.h]
        if info.positional == "none":
            with torch.no_grad():
                model.transformer.wpe.weight.zero_()
            model.transformer.wpe.weight.requires_grad_(False)
    if info.attention_only:
        for lin, bias in mlp_out:
            with torch.no_grad():
                lin.weight.zero_()
                if bias is not None:
                    bias.zero_()
            lin.weight.requires_grad_(False)
            if bias is not None:
                bias.requires_grad_(False)
    return model


def make_batch(info: ToyInfo, n: int, seed: int) -> T.TaskBatch:
    """A batch of ``info``'s task (the bigram of backcopy tasks is fixed by ``bigram_seed``)."""
    p = dict(info.task_params)
    if info.task == "induction":
        return T.induction_batch(n, seed=seed, **p)
    if info.task == "offset":
        return T.offset_batch(n, seed=seed, **p)
    bg = _bigram(info)
    return T.backcopy_batch(n, bigram=bg, length=p["length"], seed=seed)


_BIGRAMS: dict[tuple[Any, ...], T.Bigram] = {}


def _bigram(info: ToyInfo) -> T.Bigram:
    p = info.task_params
    key = (p["n_vocab"], p["n_triggers"], p["concentration"], p["bigram_seed"])
    if key not in _BIGRAMS:
        _BIGRAMS[key] = T.make_bigram(p["n_vocab"], n_triggers=p["n_triggers"],
                                      concentration=p["concentration"], seed=p["bigram_seed"])
    return _BIGRAMS[key]


def head_ov_norms(model: torch.nn.Module) -> torch.Tensor:
    """``‖W_V^{g(h)} W_O^h‖_F`` for every layer and query head: ``[layer, head]`` (differentiable).

    ``g(h)`` is the KV head of query head ``h`` (GQA)."""
    cfg = model.config
    rows = []
    if hasattr(model, "model"):  # Llama: v_proj [n_kv*dh, d], o_proj [d, n_heads*dh]
        nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
        for layer in model.model.layers:
            dh = layer.self_attn.head_dim
            wv = layer.self_attn.v_proj.weight.reshape(nkv, dh, -1)
            wo = layer.self_attn.o_proj.weight.reshape(-1, nh, dh).permute(1, 0, 2)
            rep = nh // nkv
            ov = einsum(wo, wv.repeat_interleave(rep, 0), "head d_out d_head, head d_head d_in -> head d_out d_in")
            rows.append(ov.flatten(1).norm(dim=-1))
    else:  # GPT-2 Conv1D: c_attn [d, 3d], c_proj [d, d] (in, out)
        nh = cfg.n_head
        for blk in model.transformer.h:
            d = blk.attn.c_attn.weight.shape[0]
            dh = d // nh
            wv = blk.attn.c_attn.weight[:, 2 * d:].reshape(d, nh, dh).permute(1, 0, 2)
            wo = blk.attn.c_proj.weight.reshape(nh, dh, d)
            ov = einsum(wv, wo, "head d_in d_head, head d_head d_out -> head d_in d_out")
            rows.append(ov.flatten(1).norm(dim=-1))
    return torch.stack(rows)


def head_sparsity_penalty(model: torch.nn.Module) -> torch.Tensor:
    """Concave group penalty ``Σ_{l,h} sqrt(‖W_V W_O‖_F)`` on per-head OV circuits.

    Unlike an L1/group-lasso penalty, which is indifferent to splitting one function over
    identical copies, the square root is concave in the norms, so gradient descent prefers one
    head per job: without it the toys grow redundant copies (e.g. both heads of a 2-head offset
    model attend to t-3 and ablating either one changes nothing), which makes "ablate the planted
    head" checks meaningless."""
    return (head_ov_norms(model) + 1e-6).sqrt().sum()


def _o_proj_slices(model: torch.nn.Module, layer: int, head: int) -> tuple[torch.Tensor, slice]:
    """The output projection weight of ``layer`` and the input columns of query head ``head``."""
    if hasattr(model, "model"):  # Llama o_proj: [d_model, n_heads * d_head]
        attn = model.model.layers[layer].self_attn
        dh = attn.head_dim
        return attn.o_proj.weight, slice(head * dh, (head + 1) * dh)
    raise NotImplementedError("head pruning is implemented for the Llama-style toys only")


def _zero_heads(model: torch.nn.Module, heads: list[tuple[int, int]]) -> None:
    """Zero the output-projection columns of ``heads`` (re-applied after every optimiser step,
    so Adam's momentum cannot revive them): a pruned head computes its pattern but writes 0."""
    with torch.no_grad():
        for layer, head in heads:
            w, cols = _o_proj_slices(model, layer, head)
            w[:, cols] = 0.0


def head_ablation_losses(model: torch.nn.Module, tokens: torch.Tensor,
                         targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with each head's output zeroed (input columns of ``o_proj``), minus the
    clean cross-entropy: ``[layer, head]``. Llama-style models."""
    cfg = model.config
    nl, nh = cfg.num_hidden_layers, cfg.num_attention_heads

    def ce() -> float:
        lg = model(tokens).logits
        return float(torch.nn.functional.cross_entropy(
            lg.reshape(-1, lg.shape[-1]), targets.reshape(-1), ignore_index=T.IGNORE))

    out = torch.zeros(nl, nh)
    with torch.no_grad():
        base = ce()
        for layer in range(nl):
            for head in range(nh):
                _, cols = _o_proj_slices(model, layer, head)

                def pre(mod: Any, args: tuple[Any, ...], cols: slice = cols) -> Any:
                    x = args[0].clone()
                    x[..., cols] = 0.0
                    return (x,)

                hnd = model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(pre)
                try:
                    out[layer, head] = ce() - base
                finally:
                    hnd.remove()
    return out


def _prune_heads(model: torch.nn.Module, info: ToyInfo, seed: int, *,
                 keep: int = 1) -> list[tuple[int, int]]:
    """Keep the ``keep`` heads of each layer whose zero-ablation raises the loss most (measured on
    a fixed batch); zero the output projection of the others from now on. Makes one head carry
    each mechanism instead of redundant copies sharing it (e.g. two layer-0 heads each putting
    ~0.5 on t-1), so that "ablate the planted head" is a meaningful check."""
    batch = make_batch(info, 256, seed=7_777_777 + seed)
    was = model.training
    model.eval()
    imp = head_ablation_losses(model, batch.tokens, batch.targets)
    model.train(was)
    order = imp.argsort(dim=1, descending=True)
    pruned = sorted((l, int(h)) for l in range(imp.shape[0]) for h in order[l, keep:])
    _zero_heads(model, pruned)
    return pruned


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train_model(
    info: ToyInfo, *, seed: int = 0, log: Callable[[str], None] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train ``info``'s model in memory; returns ``(hf_model, training_record)``."""
    tr = info.train
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        model = build_model(info, seed=seed)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=tr["lr"], weight_decay=tr["weight_decay"],
                                betas=(0.9, 0.98))
        losses: list[float] = []
        pruned: list[tuple[int, int]] = []
        prune_at = int(tr.get("prune_at", 0))
        t0 = time.time()
        for step in range(tr["steps"]):
            if prune_at and step == prune_at:
                pruned = _prune_heads(model, info, seed, keep=int(tr.get("prune_keep", 1)))
                if log is not None:
                    log(f"{info.name} step {step}: pruned heads {pruned}")
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, tr["steps"], tr["lr"], tr["warmup"])
            batch = make_batch(info, tr["batch"], seed=1_000_003 * (seed + 1) + step)
            logits = model(batch.tokens).logits
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1),
                ignore_index=T.IGNORE,
            )
            lam = float(tr.get("head_sparsity", 0.0))
            start = int(tr.get("head_sparsity_start", 0))  # prune only after the circuit formed
            lam *= min(1.0, max(0.0, (step - start) / 500.0)) if start > 0 else 1.0
            total = loss + lam * head_sparsity_penalty(model) if lam > 0 else loss
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if pruned:
                _zero_heads(model, pruned)
            losses.append(loss.item())
            if log is not None and (step % 250 == 0 or step == tr["steps"] - 1):
                log(f"{info.name} step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
        model.eval()
        record = dict(
            seed=seed, **tr, optimizer="AdamW(betas=(0.9, 0.98)), grad clip 1.0, warm-up + cosine",
            final_loss=sum(losses[-50:]) / min(50, len(losses)), seconds=round(time.time() - t0, 1),
            pruned_heads=[f"L{l}H{h}" for l, h in pruned],
            torch=torch.__version__,
        )
        return model, record
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


def train(
    name: str,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    steps: int | None = None,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Train toy model ``name`` deterministically and save it as a HF directory (the manifest is
    written by :func:`interp.zoo.train`, which wraps this).

    Args:
        name: a key of :data:`interp.zoo.TOY_MODELS`.
        out_dir: target directory; default: the packaged ``interp/zoo/weights/<name>/``.
        seed: initialisation and data seed (same seed → same weights).
        steps: override the number of steps (e.g. a short smoke run).
        log: progress callback (``None`` = silent).

    Returns:
        the directory written.
    """
    info = trained_info(name, steps)
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    model, record = train_model(info, seed=seed, log=log)
    model.save_pretrained(out)
    build_tokenizer(_n_vocab(info), info.model["n_ctx"]).save_pretrained(out)
    (out / "training_record.json").write_text(json.dumps(record, indent=1) + "\n")
    gen = out / "generation_config.json"
    if gen.exists():
        gen.unlink()
    return out


def trained_info(name: str, steps: int | None) -> ToyInfo:
    """The spec ``train`` used (``steps`` overridden when given)."""
    info = _info(name)
    if steps is not None:
        info = replace(info, train={**info.train, "steps": int(steps),
                                    "warmup": min(info.train["warmup"], int(steps))})
    return info
