"""Specifications of the zoo's toy models (architecture, task, training hyper-parameters)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class ToyInfo:
    """What a zoo model is and how it is trained.

    Attributes:
        name: ``toy-...`` name accepted by ``interp.load_model``.
        description: one line.
        arch: ``"llama"`` (``LlamaForCausalLM``, RoPE, RMSNorm, gated MLP) or ``"gpt2"``
            (``GPT2LMHeadModel``, learned absolute positions, LayerNorm).
        positional: ``"rope"``, ``"absolute"`` or ``"none"`` (GPT-2 with ``wpe`` zeroed+frozen).
        attention_only: MLPs present in the HF module (so the checkpoint loads everywhere) but
            their output projection is zeroed and frozen, so every MLP outputs exactly 0.
        task: generator in :mod:`interp.zoo.tasks` (``induction``, ``backcopy``, ``offset``).
        model: architecture sizes (d_model, n_layers, n_heads, n_kv_heads, d_mlp, n_ctx, ...).
        task_params: keyword arguments of the task generator.
        train: steps, batch, lr, warmup, weight_decay; ``prune_at``/``prune_keep``: at that
            step keep the ``prune_keep`` most important heads of each layer (loss increase when
            zero-ablated) and zero the others' output projection for the rest of training
            (``_train._prune_heads``); ``head_sparsity`` λ: weight of the
            concave per-head penalty ``λ Σ_{l,h} sqrt(‖W_V W_O‖_F)`` that makes one head carry
            each mechanism instead of redundant copies (see ``_train.head_sparsity_penalty``).
    """

    name: str
    description: str
    arch: Literal["llama", "gpt2"]
    positional: Literal["rope", "absolute", "none"]
    attention_only: bool
    task: Literal["induction", "backcopy", "offset"]
    model: dict[str, Any] = field(default_factory=dict)
    task_params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_BIGRAM = dict(n_vocab=64, n_triggers=3, concentration=0.3, bigram_seed=1234, length=48)

TOY_MODELS: dict[str, ToyInfo] = {
    "toy-induction": ToyInfo(
        name="toy-induction",
        description="2-layer attention-only Llama (RoPE, GQA: 2 query heads share 1 KV head per "
                    "layer) trained on repeated random segments: a previous-token head in layer "
                    "0 and an induction head in layer 1 (K-composition); the other query head "
                    "of each layer was pruned during training (writes 0), the ablation control.",
        arch="llama", positional="rope", attention_only=True, task="induction",
        model=dict(d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, d_mlp=8, n_ctx=64,
                   rope_theta=10000.0),
        task_params=dict(n_vocab=64, length=40, min_segment=6, max_segment=16),
        train=dict(steps=3000, batch=64, lr=1e-3, warmup=100, weight_decay=0.01,
                   prune_at=1000, prune_keep=1),
    ),
    "toy-backcopy": ToyInfo(
        name="toy-backcopy",
        description="1-layer, 1-head Llama (RoPE, with MLP) on Bigram-Backcopy (Guo et al. 2024):"
                    " attention sink on BOS at non-trigger positions (dormant), back-copy "
                    "attention to t-1 at trigger positions (active), small BOS value norm.",
        arch="llama", positional="rope", attention_only=False, task="backcopy",
        model=dict(d_model=64, n_layers=1, n_heads=1, n_kv_heads=1, d_mlp=256, n_ctx=64,
                   rope_theta=10000.0),
        task_params=dict(_BIGRAM),
        # long, fast, no weight decay: the sink's logit margin grows slowly over training (Guo
        # et al. 2024); 3000 steps at lr 1e-3 left BOS attention at 0.36 at non-triggers
        train=dict(steps=16000, batch=64, lr=3e-3, warmup=100, weight_decay=0.0),
    ),
    "toy-offset-rope": ToyInfo(
        name="toy-offset-rope",
        description="1-layer attention-only Llama (RoPE, 2 heads) trained to output the token 3 "
                    "positions back: one head attends to t-3.",
        arch="llama", positional="rope", attention_only=True, task="offset",
        model=dict(d_model=64, n_layers=1, n_heads=2, n_kv_heads=2, d_mlp=8, n_ctx=64,
                   rope_theta=10000.0),
        task_params=dict(n_vocab=32, length=32, offset=3),
        train=dict(steps=800, batch=64, lr=3e-3, warmup=100, weight_decay=0.01,
                   head_sparsity=0.01),
    ),
    "toy-offset-abs": ToyInfo(
        name="toy-offset-abs",
        description="1-layer attention-only GPT-2 (learned absolute positions, 2 heads) trained "
                    "to output the token 3 positions back: one head attends to t-3.",
        arch="gpt2", positional="absolute", attention_only=True, task="offset",
        model=dict(d_model=64, n_layers=1, n_heads=2, n_kv_heads=2, d_mlp=8, n_ctx=64),
        task_params=dict(n_vocab=32, length=32, offset=3),
        train=dict(steps=1200, batch=64, lr=3e-3, warmup=100, weight_decay=0.01,
                   head_sparsity=0.003),
    ),
    "toy-nope": ToyInfo(
        name="toy-nope",
        description="2-layer GPT-2 with no positional encoding (wpe zeroed and frozen) on the "
                    "Bigram-Backcopy language; position is still linearly recoverable from the "
                    "residual stream after layer 0 (Haviv et al. 2022).",
        arch="gpt2", positional="none", attention_only=False, task="backcopy",
        model=dict(d_model=64, n_layers=2, n_heads=2, n_kv_heads=2, d_mlp=256, n_ctx=64),
        task_params=dict(_BIGRAM),
        train=dict(steps=2000, batch=64, lr=1e-3, warmup=100, weight_decay=0.01),
    ),
}


_WEIGHTS = Path(__file__).parent / "weights"


def _check(name: str) -> None:
    if name not in TOY_MODELS:
        raise KeyError(f"unknown toy model {name!r}; choose one of {sorted(TOY_MODELS)}")


def model_dir(name: str) -> Path:
    """Packaged Hugging Face directory of toy model ``name``.

    Raises:
        KeyError: unknown name.
        FileNotFoundError: the weights are not shipped (train them: ``interp zoo train NAME``).
    """
    _check(name)
    d = _WEIGHTS / name
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"toy model {name!r} has no packaged weights at {d}; "
            f"run `interp zoo train {name}` (or interp.zoo.train({name!r}))."
        )
    return d
