"""Tiny random-init models of every supported decoder family, for tests (no downloads).

``tiny_hf(family)`` builds a ``transformers`` model (eager attention, float32) from the family's
config class with a few layers and heads, chosen so that each family's structural quirk is live:
GQA/MQA, partial rotary (NeoX, Phi, StableLM, Phi-3), interleaved pairing (GPT-J), parallel
blocks, q/k norms, soft-caps, sliding windows short enough to bite, Granite's multipliers. Norm
weights and biases get random offsets so a wrong norm convention (``1 + w``, bias, eps) shows.

``save_tiny(family, directory)`` writes it with a small word-level tokenizer so that
``interp.load_model(directory)`` boots it as a TransformerBridge; ``tiny_model(family)`` does that
once per process (memoised) in a temporary directory.

Used by ``tests/test_families.py`` and by the circuits tests; ``FAMILIES`` lists every family.
Phi is built with ``qk_layernorm=False`` (as Phi-1/1.5/2 ship): TransformerLens' Phi bridge refuses
to boot a Phi whose attention has ``q_layernorm``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

N_VOCAB = 64
N_VOCAB_BYTES = 260  # byte-level BPE tokenizer: 3 specials + 256 byte symbols (+1 spare)
# transformers forces Qwen2's own tokenizer class (byte-level BPE rebuilt from vocab/merges) on
# model_type qwen2, which cannot run a word-level tokenizer: these families get a byte-level one
BYTE_LEVEL = {"qwen2"}
BOS, PAD, UNK = 0, 1, 2
N_CTX = 64

LOCAL, GLOBAL = "sliding_attention", "full_attention"


def _common(**kw: Any) -> dict[str, Any]:
    base = dict(vocab_size=N_VOCAB, bos_token_id=BOS, eos_token_id=BOS, pad_token_id=PAD)
    base.update(kw)
    return base


def _llama() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                 max_position_embeddings=N_CTX, tie_word_embeddings=False,
                                 rope_parameters={"rope_type": "default", "rope_theta": 100.0}))


def _mistral() -> Any:
    from transformers import MistralConfig

    return MistralConfig(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                   max_position_embeddings=N_CTX, sliding_window=4,
                                   rope_parameters={"rope_type": "default", "rope_theta": 100.0}))


def _qwen2() -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(**_common(vocab_size=N_VOCAB_BYTES, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=N_CTX, tie_word_embeddings=True,
                                 rope_parameters={"rope_type": "default", "rope_theta": 100.0}))


def _qwen3() -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                 max_position_embeddings=N_CTX,
                                 rope_parameters={"rope_type": "default", "rope_theta": 100.0}))


def _gemma() -> Any:
    from transformers import GemmaConfig

    return GemmaConfig(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                                 max_position_embeddings=N_CTX,
                                 rope_parameters={"rope_type": "default", "rope_theta": 100.0}))


def _gemma2() -> Any:
    from transformers import Gemma2Config

    return Gemma2Config(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                  query_pre_attn_scalar=12, sliding_window=4, layer_types=[LOCAL, GLOBAL],
                                  attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
                                  max_position_embeddings=N_CTX,
                                  rope_parameters={"rope_type": "default", "rope_theta": 100.0}))


def _gemma3_text() -> Any:
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(**_common(
        hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=24, sliding_window=3,
        layer_types=[LOCAL, GLOBAL, LOCAL], max_position_embeddings=N_CTX, final_logit_softcapping=3.0,
        rope_parameters={LOCAL: {"rope_type": "default", "rope_theta": 10.0},
                         GLOBAL: {"rope_type": "default", "rope_theta": 1000.0}}))


def _olmo2() -> Any:
    from transformers import Olmo2Config

    return Olmo2Config(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=N_CTX,
                                 rope_parameters={"rope_type": "default", "rope_theta": 100.0}))


def _phi3() -> Any:
    from transformers import Phi3Config

    return Phi3Config(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=N_CTX, original_max_position_embeddings=N_CTX,
                                rope_parameters={"rope_type": "default", "rope_theta": 100.0,
                                                 "partial_rotary_factor": 0.5}))


def _phi() -> Any:
    from transformers import PhiConfig

    return PhiConfig(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=4, qk_layernorm=False,
                               max_position_embeddings=N_CTX,
                               rope_parameters={"rope_type": "default", "rope_theta": 100.0,
                                                "partial_rotary_factor": 0.5}))


def _gpt_neox() -> Any:
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, max_position_embeddings=N_CTX,
                                   use_parallel_residual=True,
                                   rope_parameters={"rope_type": "default", "rope_theta": 100.0,
                                                    "partial_rotary_factor": 0.25}))


def _gptj() -> Any:
    from transformers import GPTJConfig

    return GPTJConfig(**_common(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_inner=48,
                                n_positions=N_CTX))


def _gpt2() -> Any:
    from transformers import GPT2Config

    return GPT2Config(**_common(n_embd=32, n_layer=2, n_head=4, n_inner=48, n_positions=N_CTX,
                                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def _stablelm() -> Any:
    from transformers import StableLmConfig

    return StableLmConfig(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, use_qkv_bias=True,
                                    qk_layernorm=True, use_parallel_residual=True,
                                    max_position_embeddings=N_CTX,
                                    rope_parameters={"rope_type": "default", "rope_theta": 100.0,
                                                     "partial_rotary_factor": 0.25}))


def _granite() -> Any:
    from transformers import GraniteConfig

    return GraniteConfig(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=N_CTX, embedding_multiplier=3.0,
                                   residual_multiplier=0.5, attention_multiplier=0.2, logits_scaling=4.0,
                                   rope_parameters={"rope_type": "default", "rope_theta": 100.0}))


def _starcoder2() -> Any:
    # the worked example of CONTRIBUTING.md "Adding a model family"
    from transformers import Starcoder2Config

    return Starcoder2Config(**_common(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
                                      max_position_embeddings=N_CTX, use_bias=True,
                                      rope_parameters={"rope_type": "default", "rope_theta": 100.0}))


CONFIGS: dict[str, Callable[[], Any]] = {
    "llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "gemma": _gemma,
    "gemma2": _gemma2, "gemma3_text": _gemma3_text, "olmo2": _olmo2, "phi3": _phi3, "phi": _phi,
    "gpt_neox": _gpt_neox, "gptj": _gptj, "gpt2": _gpt2, "stablelm": _stablelm, "granite": _granite,
}
FAMILIES: tuple[str, ...] = tuple(CONFIGS)  # the 15 families of the README table
ROTARY_FAMILIES: tuple[str, ...] = tuple(f for f in FAMILIES if f != "gpt2")
# families beyond the 15 (analyses only; circuits need not support them)
EXTRA_CONFIGS: dict[str, Callable[[], Any]] = {"starcoder2": _starcoder2}
EXTRA_FAMILIES: tuple[str, ...] = tuple(EXTRA_CONFIGS)


def tiny_config(family: str) -> Any:
    """The tiny HF config of ``family`` (eager attention)."""
    make = CONFIGS.get(family) or EXTRA_CONFIGS.get(family)
    if make is None:
        raise KeyError(f"no tiny config for family {family!r}; known: {', '.join(FAMILIES + EXTRA_FAMILIES)}")
    cfg = make()
    cfg._attn_implementation = "eager"
    return cfg


def tiny_hf(family: str, seed: int = 0) -> Any:
    """Random-init ``AutoModelForCausalLM`` of ``family`` in eval mode, float32, with random offsets
    on every norm weight and bias (so ``1 + w`` vs ``w``, or a dropped bias, changes the output)."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(family)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        m = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
        with torch.no_grad():
            for n, w in m.named_parameters():
                if "norm" in n or ".ln" in n or n.endswith("bias"):
                    w.add_(torch.randn_like(w) * 0.3)
    return m


def tokenizer(n_vocab: int = N_VOCAB, byte_level: bool = False) -> Any:
    """Whitespace word-level tokenizer: ``<bos> <pad> <unk> .`` then ``w0 … w{n-5}``; or with
    ``byte_level`` a merge-free byte-level BPE (``<bos> <pad> <unk>`` then the 256 byte symbols)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if byte_level:
        names = ["<bos>", "<pad>", "<unk>"] + sorted(pre_tokenizers.ByteLevel.alphabet())
        tk = Tokenizer(models.BPE({t: i for i, t in enumerate(names)}, [], unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<bos>",
                                       pad_token="<pad>", unk_token="<unk>", model_max_length=N_CTX)

    names = ["<bos>", "<pad>", "<unk>", "."] + [f"w{i}" for i in range(n_vocab - 4)]
    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(names)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<bos>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=N_CTX)


def save_tiny(family: str, directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny ``family`` model and its tokenizer to ``directory`` (``save_pretrained``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tiny_hf(family, seed).save_pretrained(d)
    tokenizer(byte_level=family in BYTE_LEVEL).save_pretrained(d)
    return d


_MODELS: dict[tuple[str, int], Any] = {}
_TMP: list[Any] = []


def tiny_model(family: str, seed: int = 0) -> Any:
    """``interp.load_model`` of the saved tiny ``family`` model (memoised per process)."""
    key = (family, seed)
    if key not in _MODELS:
        from interp import load_model

        tmp = tempfile.TemporaryDirectory(prefix=f"tiny-{family}-")
        _TMP.append(tmp)
        _MODELS[key] = load_model(str(save_tiny(family, Path(tmp.name) / family, seed)), device="cpu")
    return _MODELS[key]


def prompts(n: int = 3, length: int = 9, seed: int = 0) -> list[str]:
    """``n`` word prompts of varied lengths (≤ ``length`` words) with a repeated half (so induction
    and previous-token statistics are non-trivial)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = max(2, (length - i) // 2)
        words = [f"w{int(t)}" for t in torch.randint(0, N_VOCAB - 4, (k,), generator=g)]
        out.append(" ".join(words + words)[: None])
    return out
