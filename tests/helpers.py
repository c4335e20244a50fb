"""Helpers shared by several test modules (tiny random-init models, shared prompts, the
EAP-is-the-derivative-of-exact-patching check). Import as ``from helpers import ...``."""

from __future__ import annotations

import torch

from circuits._activations import Activations
from circuits.metrics import MetricBatch

#: word prompts for the tiny word-level Llama (repeats for induction/duplicate heads)
PROMPTS = ["w1 w2 w3 . w4 w1 w2 w3 w9 w10 w11", "w5 w6 w7 w8 w5 w6 w12"]


def _tiny_llama(path, seed: int = 0, n_vocab: int = 40):
    """A random-init GQA Llama (4 query / 2 KV heads) with a whitespace word tokenizer."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    torch.manual_seed(seed)
    names = ["<bos>", "<pad>", "<unk>", "."] + [f"w{i}" for i in range(n_vocab - 4)]
    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(names)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<bos>",
                                  pad_token="<pad>", unk_token="<unk>", model_max_length=128)
    cfg = transformers.LlamaConfig(
        vocab_size=n_vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=0, eos_token_id=0, pad_token_id=1, tie_word_embeddings=False)
    hf = transformers.LlamaForCausalLM(cfg)
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    from interp import load_model

    return load_model(str(path), device="cpu")


# Gemma 3 layer types
LOCAL, GLOBAL = "sliding_attention", "full_attention"


def _tiny_gemma(layer_types=(LOCAL, GLOBAL, LOCAL), window=3, attn_cap=None, final_cap=None, seed=0,
                bias=False):
    """A randomly initialised 3-layer Gemma3ForCausalLM (4 query / 1 KV head, tiny sliding
    window, different local/global RoPE bases, random norm weights so ``1 + w`` matters)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=len(layer_types),
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=24,
        sliding_window=window, layer_types=list(layer_types), max_position_embeddings=64,
        rope_parameters={LOCAL: {"rope_type": "default", "rope_theta": 10.0},
                         GLOBAL: {"rope_type": "default", "rope_theta": 1000.0}},
        attn_logit_softcapping=attn_cap, final_logit_softcapping=final_cap,
        attention_bias=bias, attn_implementation="eager", pad_token_id=0, bos_token_id=2)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        m = Gemma3ForCausalLM(cfg).eval()
        with torch.no_grad():
            for n, w in m.named_parameters():
                if "norm" in n or n.endswith("bias"):
                    w.normal_(0, 0.5)
    return m


def assert_eap_is_patching_derivative(pm, clean, corrupt, met, edges, *, eps, rtol, atol=1e-6):
    """Each edge score equals d/dε M(edge fed z + ε(z* − z)) at ε = 0, by central differences of
    exact edge patching (``PatchableModel.run`` with that one edge ablated toward the
    counterfactual activations by ±ε)."""
    from circuits.attribution import one_edge_keep

    c, x = pm.activations(clean), pm.activations(corrupt)
    n, p = clean.shape
    mb = MetricBatch.from_mask(torch.ones(n, p, dtype=torch.long), None, None)

    def toward(e):
        f = lambda a, b: a + e * (b - a)  # noqa: E731
        return Activations(f(c.senders, x.senders), f(c.q, x.q), f(c.k, x.k), f(c.v, x.v), c.z,
                           c.pattern, c.attention_mask)

    for e in edges:
        kw = one_edge_keep(pm, e, n, p)
        up = met(pm.run(clean, ablated=toward(eps), **kw), mb).mean()
        down = met(pm.run(clean, ablated=toward(-eps), **kw), mb).mean()
        fd = float(up - down) / (2 * eps)
        assert abs(fd - e.score) <= rtol * abs(e.score) + atol, (e, fd)
