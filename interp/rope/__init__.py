"""RoPE frequency usage: which rotary frequencies each head uses, what breaks without them, and
the bounds on the base.

Three lines in a notebook::

    m = interp.load_model()
    u = interp.rope.frequency_usage(m, prompts, decompose=True)
    u.plot("q"); u.plot("k"); u.plot_profile(0, 3); u.summary(); u.decomposition.max_abs_error

Everything reads the model's :class:`interp.spec.RopeSpec` (per-layer bases, rotary dim, pairing),
so Gemma 3's sliding (base 1e4) and global (base 1e6) layers are each analysed with their own
frequencies. Chunk k is the 2-D pair rotated at θ_k = base^(−2k/d_rot); chunk 0 is the highest
frequency. A model without rotary embeddings raises :class:`interp.spec.NoRotaryError` naming its
positional-encoding kind.

* :func:`frequency_usage` → :class:`FrequencyUsage` — mean ‖q^(k)‖, ‖k^(k)‖ (Barbero et al. 2025)
* :func:`logit_decomposition` / :func:`chunk_logits` → exact per-chunk attention logits
* :func:`band_ablation` → :class:`BandAblationResult` — p-RoPE style rotation removal / zeroing
* :func:`positional_frequency_heads` → :class:`PositionalFrequencyResult`
* :func:`base_bounds`, :func:`men_b`, :func:`min_base`, :func:`critical_dimension` — Men et al. 2024,
  Liu et al. 2023
* :func:`shift_invariance` → :class:`ShiftInvarianceResult` — Wang et al. 2024 (fp32 vs bf16)
"""

from interp.rope._common import select_chunks
from interp.rope.ablation import (
    BandAblationResult,
    PositionalFrequencyResult,
    band_ablation,
    positional_frequency_heads,
)
from interp.rope.bounds import BaseBoundsResult, base_bounds, critical_dimension, first_negative, men_b, min_base
from interp.rope.precision import ShiftInvarianceResult, shift_invariance
from interp.rope.usage import FrequencyUsage, LogitDecomposition, chunk_logits, frequency_usage, logit_decomposition

__all__ = [
    "select_chunks",
    "BandAblationResult",
    "PositionalFrequencyResult",
    "band_ablation",
    "positional_frequency_heads",
    "BaseBoundsResult",
    "base_bounds",
    "critical_dimension",
    "first_negative",
    "men_b",
    "min_base",
    "ShiftInvarianceResult",
    "shift_invariance",
    "FrequencyUsage",
    "LogitDecomposition",
    "chunk_logits",
    "frequency_usage",
    "logit_decomposition",
]
