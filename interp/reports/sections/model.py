"""Section ``model``: what the model is (layers, heads, GQA, positional encoding, RoPE, BOS)."""

from __future__ import annotations

from typing import Any

from interp.reports._core import ReportContext, SectionOutput, Table, section
from interp.reports._meta import jsonable


def _hf_config(model: Any) -> Any:
    hf = getattr(model, "original_model", None)
    return getattr(hf, "config", None)


def _summary_from_cfg(model: Any) -> dict[str, Any]:
    """Fallback when ``interp.model_spec`` is absent: TransformerLens cfg + the HF config."""
    cfg = model.cfg
    hf = _hf_config(model)
    rope_params = getattr(hf, "rope_parameters", None) or {}
    theta = getattr(hf, "rope_theta", None)
    if theta is None and isinstance(rope_params, dict):
        theta = rope_params.get("rope_theta")
    return {
        "source": "model.cfg + Hugging Face config",
        "architecture": (getattr(hf, "architectures", None) or [None])[0],
        "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
        "n_kv_heads": getattr(hf, "num_key_value_heads", None) or getattr(cfg, "n_key_value_heads", None),
        "d_head": cfg.d_head, "d_model": cfg.d_model, "d_mlp": getattr(cfg, "d_mlp", None),
        "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx,
        "positional_embedding_type": getattr(cfg, "positional_embedding_type", None),
        "rope_theta (HF config)": theta,
        "bos_token": getattr(getattr(model, "tokenizer", None), "bos_token", None),
    }


@section("model", "Model summary",
         "Architecture read from interp.model_spec (layers, query and KV heads, head dim, positional "
         "encoding, RoPE bases per layer from the Hugging Face config, BOS token).", order=10)
def run(ctx: ReportContext) -> SectionOutput:
    model = ctx.model
    notes: list[str] = []
    try:
        from interp.spec import model_spec
    except ImportError:
        spec_dict = _summary_from_cfg(model)
        notes.append("interp.model_spec is not available; summary read from model.cfg and the HF config.")
    else:
        spec = model_spec(model)
        spec_dict = jsonable(spec)
        if not isinstance(spec_dict, dict):
            spec_dict = {"spec": spec_dict}
        spec_dict = {"source": "interp.model_spec", **spec_dict}
    n_params = sum(p.numel() for p in model.parameters())
    spec_dict["n_parameters"] = n_params
    spec_dict["prepend_bos (report policy)"] = ctx.prepend_bos
    rows = []
    for k, v in spec_dict.items():
        if isinstance(v, (list, dict)):
            s = str(v)
            v = s if len(s) <= 160 else s[:157] + "…"
        rows.append([k, v])
    return SectionOutput(data=spec_dict, tables=[Table("model specification", ["field", "value"], rows)],
                         notes=notes)
